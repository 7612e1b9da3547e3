"""Write-then-rename: the previous file survives a failed write, nothing is left behind, modes are kept."""
import os
import threading

import pytest

from maskfr.fileio import write_then_rename, written_then_renamed


def test_failed_write_keeps_the_previous_file_and_leaves_nothing(tmp_path):
    p = tmp_path / "thr.json"
    write_then_rename(p, b"old")
    with pytest.raises(OSError, match="disk full"):
        with written_then_renamed(p) as tmp:
            open(tmp, "wb").write(b"half")
            raise OSError("disk full")
    assert p.read_bytes() == b"old" and os.listdir(tmp_path) == ["thr.json"]


def test_threads_saving_one_path_do_not_share_a_temporary(tmp_path):
    """The temporary was named by process id only: two threads wrote into one file and renamed it twice."""
    p, start = tmp_path / "g.bin", threading.Barrier(8)
    errors = []

    def save(k: int) -> None:
        try:
            with written_then_renamed(p) as tmp:
                start.wait()
                with open(tmp, "wb") as f:
                    f.write(bytes([k]) * 100_000)
        except Exception as e:  # noqa: BLE001  collected for the assertion below
            errors.append(e)

    threads = [threading.Thread(target=save, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    data = p.read_bytes()
    assert not errors and len(data) == 100_000 and len(set(data)) == 1 and os.listdir(tmp_path) == ["g.bin"]


def test_mode_is_the_replaced_file_s_or_the_umask_s(tmp_path):
    p, old = tmp_path / "m.onnx", os.umask(0o027)
    try:
        write_then_rename(p, b"a")
        assert p.stat().st_mode & 0o777 == 0o640
        p.chmod(0o604)
        write_then_rename(p, b"b")
        assert p.stat().st_mode & 0o777 == 0o604 and p.read_bytes() == b"b"
    finally:
        os.umask(old)


def test_an_unwritable_folder_is_named_with_the_file_asked_for(tmp_path):
    with pytest.raises(FileNotFoundError) as exc:
        write_then_rename(tmp_path / "missing" / "g.npz", b"x")
    assert exc.value.filename == str(tmp_path / "missing" / "g.npz") and ".tmp" not in str(exc.value)
