"""A tiny G2D run on generated faces: every stage runs, losses fall, resuming gives identical weights."""
import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import draw_face, face_landmarks

from maskfr.align import similarity_transform, template, to_input, warp_face
from maskfr.training.dlib_models import five_from_68
from maskfr.training.masks import MaskSynth
from maskfr.training.train import (STAGES, Trainer, TrainSet, check_config, interpolate_weights, load_config,
                                   load_inpainter)


def _tiny_data(n_ids=4, per=4) -> TrainSet:
    rng = np.random.default_rng(0)
    imgs, lms, labels = [], [], []
    for k in range(n_ids * per):
        lm = face_landmarks(cx=100 + rng.uniform(-5, 5), cy=95, s=rng.uniform(0.9, 1.1), angle=rng.uniform(-.1, .1))
        img = draw_face(lm, seed=k // per)  # background colour = identity
        M = similarity_transform(five_from_68(lm), template(112))
        imgs.append(warp_face(img, M))
        lms.append(lm @ M[:, :2].T + M[:, 2])
        labels.append(k // per)
    teacher = rng.normal(size=(n_ids, 128)).astype(np.float32)[labels]
    teacher /= np.linalg.norm(teacher, axis=1, keepdims=True)
    return TrainSet(np.stack(imgs), np.stack(lms).astype(np.float32), teacher, np.array(labels), n_ids)


def _cfg(epochs=3):
    st = dict(epochs=epochs, max_steps=None)
    return dict(name="tiny", seed=0, batch_size=8, p_mask=0.75, generative_pretraining=True, threads=2, workers=0,
                log_every=1, train_lfw_folds=[1],
                stages=dict(inpaint=dict(st, lr_encoder=1e-3, lr_decoder=3e-3, hole_weight=5.0),
                            reformer=dict(st, lr_encoder=1e-4, lr_reformer=1e-3, tau=0.1, w_relation=1.0,
                                          w_instance=1.0),
                            classifier=dict(st, lr_head=1e-2, lr_reformer=1e-4, margin=0.2, scale=30.0, w_kd=1.0)))


def _losses(run, stage):
    recs = [json.loads(ln) for ln in (run / "log.jsonl").read_text().splitlines()]
    recs = [r for r in recs if r["stage"] == stage]
    first = np.mean([r["loss"] for r in recs if r["epoch"] == 0])
    last = np.mean([r["loss"] for r in recs if r["epoch"] == max(r["epoch"] for r in recs)])
    return first, last


def test_all_stages_run_and_losses_fall(tmp_path):
    torch.set_num_threads(2)
    data = _tiny_data()
    trainer = Trainer(_cfg(), data, MaskSynth(None), tmp_path, pretrained=False)
    final = trainer.fit()
    for stage in STAGES:
        first, last = _losses(tmp_path, stage)
        assert last < first, f"{stage}: loss did not fall ({first:.4f} -> {last:.4f})"
    ck = torch.load(final, weights_only=False)
    assert ck["stage"] == "final" and ck["config"]["name"] == "tiny" and "git_rev" in ck
    emb = trainer.student(torch.zeros(2, 3, 112, 112))
    assert emb.shape == (2, 128) and torch.allclose(emb.norm(dim=1), torch.ones(2), atol=1e-5)
    # inpaint-then-teacher and the PNG grid use the encoder the decoder was trained with, not the final one
    inpainter, decoder = load_inpainter(tmp_path / "inpaint.pt")
    stage = torch.load(tmp_path / "inpaint.pt", weights_only=False)
    assert all(torch.equal(v, stage["model"][k]) for k, v in inpainter.state_dict().items())
    assert all(torch.equal(v, stage["decoder"][k]) for k, v in decoder.state_dict().items())
    moved = trainer.student.encoder.state_dict()
    assert any(not torch.equal(v, moved[k]) for k, v in inpainter.encoder.state_dict().items())
    assert not inpainter.training and not decoder.training


def _killed_after_first_epoch_then_resumed(cfg: dict, data, run, stage: str, monkeypatch) -> Trainer:
    """Run ``stage`` in ``run`` until its first epoch's checkpoint is written, kill it, and resume it to the end."""
    real_save = Trainer._save

    def crash_after_first_epoch(self, state, path):
        real_save(self, state, path)
        if path.name.endswith(".partial.pt"):
            raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_save", crash_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg, data, MaskSynth(None), run, pretrained=False).run_stage(stage, None)
    monkeypatch.setattr(Trainer, "_save", real_save)
    resumed = Trainer(cfg, data, MaskSynth(None), run, pretrained=False)
    resumed.run_stage(stage, None)
    return resumed

def test_resume_gives_identical_weights(tmp_path, monkeypatch):
    torch.set_num_threads(2)
    data = _tiny_data()
    cfg = _cfg(epochs=2)
    cfg["generative_pretraining"] = False
    cfg["stages"]["reformer"]["warmup_steps"] = 3  # the crash lands mid warm-up: the schedule must resume too
    straight = Trainer(cfg, data, MaskSynth(None), tmp_path / "a", pretrained=False)
    straight.run_stage("reformer", None)

    resumed = _killed_after_first_epoch_then_resumed(cfg, data, tmp_path / "b", "reformer", monkeypatch)
    for (k, a), b in zip(straight.student.state_dict().items(), resumed.student.state_dict().values()):
        assert torch.equal(a, b), f"{k} differs after resume"


def test_wise_alpha_interpolates_the_final_weights_towards_the_start(tmp_path):
    """cfg["wise_alpha"] = a: final = (1 - a) * start + a * trained (WiSE-FT); a rerun reuses the stages."""
    torch.set_num_threads(2)
    data = _tiny_data()
    cfg = _cfg(epochs=1)
    cfg["generative_pretraining"] = False
    plain = Trainer(cfg, data, MaskSynth(None), tmp_path, pretrained=False)
    start = {k: v.clone() for k, v in plain.student.state_dict().items()}
    tuned = torch.load(plain.fit(), weights_only=False)["model"]
    wise = Trainer({**cfg, "wise_alpha": 0.25}, data, MaskSynth(None), tmp_path, pretrained=False)
    mixed = torch.load(wise.fit(), weights_only=False)["model"]
    moved = 0
    for k, v in mixed.items():
        torch.testing.assert_close(v, 0.75 * start[k] + 0.25 * tuned[k])
        moved += not torch.equal(start[k], tuned[k])
    assert moved > 10  # training changed the weights, so the test tells the two ends apart
    assert all(torch.equal(v, mixed[k]) for k, v in wise.student.state_dict().items())  # what --eval scores
    with pytest.raises(ValueError, match="wise_alpha"):
        interpolate_weights(start, tuned, 1.5)


def test_max_steps_beyond_one_epoch_is_refused(tmp_path):
    """max_steps caps each epoch; asking for more than an epoch holds must not silently run fewer."""
    cfg = _cfg(epochs=1)
    cfg["stages"]["reformer"]["max_steps"] = 3  # 16 faces in batches of 8: 2 per epoch
    trainer = Trainer(cfg, _tiny_data(), MaskSynth(None), tmp_path, pretrained=False)
    with pytest.raises(ValueError, match=r"max_steps=3 is more than one epoch .*\(2 batches of 8\)"):
        trainer.run_stage("reformer", None)
    assert not (tmp_path / "reformer.partial.pt").exists()


def test_teacher_centring_is_shared_by_student_and_targets(tmp_path):
    data = _tiny_data()
    data.teacher[:] = data.teacher + 2.0  # a narrow cone, like dlib's
    data.teacher /= np.linalg.norm(data.teacher, axis=1, keepdims=True)
    trainer = Trainer(_cfg(), data, MaskSynth(None), tmp_path, pretrained=False)
    center = data.teacher.mean(0)
    np.testing.assert_allclose(trainer.student.reformer.center.numpy(), center, atol=1e-6)
    want = (data.teacher - center) / np.linalg.norm(data.teacher - center, axis=1, keepdims=True)
    np.testing.assert_allclose(trainer.data.teacher, want, atol=1e-6)
    assert abs(float((trainer.data.teacher @ trainer.data.teacher.T).mean())) < 0.2  # the cone is opened up
    # the student applies the same map to its own unit vectors
    ref = trainer.student.reformer
    f = torch.randn(3, 32, 35, 35)
    e = torch.nn.functional.normalize(ref.fc(ref.blocks(f).mean(dim=(2, 3))), dim=1)
    torch.testing.assert_close(ref(f), torch.nn.functional.normalize(e - torch.from_numpy(center), dim=1))


def test_inpaint_stage_keeps_dlib_layers_on_a_small_rate(tmp_path):
    cfg = _cfg()
    cfg["stages"]["inpaint"].update(lr_encoder=1e-5, lr_new=2e-4)
    trainer = Trainer(cfg, _tiny_data(), MaskSynth(None), tmp_path, pretrained=False)
    rate = {id(p): g["lr"] for g in trainer._optimizer("inpaint").param_groups for p in g["params"]}
    enc = trainer.student.encoder
    assert rate[id(enc.conv.weight)] == 1e-5 and rate[id(enc.level[0].conv1.weight)] == 1e-5
    assert all(rate[id(p)] == 2e-4 for p in enc.dilated.parameters())
    assert all(rate[id(p)] == 3e-3 for p in trainer.decoder.parameters())
    assert len(rate) == sum(1 for _ in enc.parameters()) + sum(1 for _ in trainer.decoder.parameters())


def test_perceptual_term_trains_the_inpainter_against_a_frozen_dlib(tmp_path):
    """``w_perceptual``: the inpainting stage adds losses.perceptual_loss through dlib's network, which neither
    trains nor sits in the optimiser; without the key no such network is loaded."""
    cfg = _cfg(epochs=1)
    cfg["stages"]["inpaint"]["w_perceptual"] = 0.5
    check_config(cfg)
    trainer = Trainer(cfg, _tiny_data(), MaskSynth(None), tmp_path, pretrained=False)
    before = {k: v.clone() for k, v in trainer.perceiver.state_dict().items()}
    in_opt = {id(p) for g in trainer._optimizer("inpaint").param_groups for p in g["params"]}
    assert not any(id(p) in in_opt for p in trainer.perceiver.parameters())
    trainer.run_stage("inpaint", None)
    recs = [json.loads(ln) for ln in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert all(r["loss"] == pytest.approx(r["l1"] + 0.5 * r["perceptual"], rel=1e-5) for r in recs)
    assert all(torch.equal(v, trainer.perceiver.state_dict()[k]) for k, v in before.items())
    assert Trainer(_cfg(), _tiny_data(), MaskSynth(None), tmp_path / "b", pretrained=False).perceiver is None



def test_adversarial_term_trains_a_critic_alongside_and_resumes_exactly(tmp_path, monkeypatch):
    """``w_adversarial``: the inpainter's loss adds the critic's hinge term; the critic (not in the inpainter's
    optimiser) steps once per batch, and a run killed after its first epoch resumes to the same inpainter and
    critic, both optimisers' states saved."""
    torch.set_num_threads(2)
    cfg = _cfg(epochs=2)
    cfg["stages"]["inpaint"].update(w_adversarial=0.1, lr_critic=1e-3)
    check_config(cfg)
    data = _tiny_data()
    straight = Trainer(cfg, data, MaskSynth(None), tmp_path / "a", pretrained=False)
    start = {k: v.clone() for k, v in straight.critic.state_dict().items()}
    in_opt = {id(p) for g in straight._optimizer("inpaint").param_groups for p in g["params"]}
    assert not any(id(p) in in_opt for p in straight.critic.parameters())
    straight.run_stage("inpaint", None)
    recs = [json.loads(ln) for ln in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    assert all(r["loss"] == pytest.approx(r["l1"] + 0.1 * r["adversarial"], rel=1e-5) and r["critic"] >= 0
               for r in recs)
    assert any(not torch.equal(v, straight.critic.state_dict()[k]) for k, v in start.items())

    resumed = _killed_after_first_epoch_then_resumed(cfg, data, tmp_path / "b", "inpaint", monkeypatch)
    for a, b in ((straight.student, resumed.student), (straight.decoder, resumed.decoder),
                 (straight.critic, resumed.critic)):
        for (k, x), y in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(x, y), f"{k} differs after resume"
    assert Trainer(_cfg(), data, MaskSynth(None), tmp_path / "c", pretrained=False).critic is None

def test_alignment_jitter_moves_only_the_masked_input():
    from maskfr.training.train import MaskedFaces
    data = _tiny_data()
    plain = MaskedFaces(data, MaskSynth(None), p_mask=1.0, seed=0, stage=1)
    jit = dict(p=1.0, rot_deg=5.0, scale=0.06, shift_px=3.0)
    shaken = MaskedFaces(data, MaskSynth(None), p_mask=1.0, seed=0, stage=1, jitter=jit)
    a, b, again = plain[3], shaken[3], MaskedFaces(data, MaskSynth(None), 1.0, 0, 1, jitter=jit)[3]
    assert not torch.equal(a[0], b[0]) and torch.equal(b[0], again[0])  # moved, reproducibly
    assert torch.equal(a[1], b[1]) and torch.equal(a[3], b[3])  # clean target and teacher embedding untouched
    assert b[2].sum() > 0  # the occlusion map moved with the face, not lost


def test_mirroring_swaps_sides_and_targets():
    from maskfr.training.dlib_models import MIRROR68
    from maskfr.training.train import MaskedFaces, centred, mirror_face
    assert sorted(MIRROR68) == list(range(68)) and (MIRROR68[MIRROR68] == np.arange(68)).all()
    data = _tiny_data()
    img, lm = data.img112[5], data.lm68_112[5]
    m_img, m_lm = mirror_face(img, lm)
    np.testing.assert_array_equal(m_img[:, 111 - 30], img[:, 30])
    np.testing.assert_allclose(m_lm[36:42].mean(0), [111 - lm[42:48, 0].mean(), lm[42:48, 1].mean()], atol=1e-4)
    np.testing.assert_allclose(m_lm[48], [111 - lm[54, 0], lm[54, 1]], atol=1e-4)  # mouth corners swap too
    # the five points of the mirrored face land on the (symmetric) template again, each where it belongs
    off = lambda pts: np.abs(five_from_68(pts) - template(112)).max()  # noqa: E731
    assert off(m_lm) < off(lm) + 1.5
    back_img, back_lm = mirror_face(m_img, m_lm)
    np.testing.assert_array_equal(back_img, img)
    np.testing.assert_allclose(back_lm, lm, atol=1e-4)
    # the dataset: mirrored face with the teacher's embedding of the mirrored face, and the draws of p_mirror=0
    # exactly as before the option existed
    with pytest.raises(ValueError, match="teacher_mirror"):
        MaskedFaces(data, MaskSynth(None), p_mask=0.0, seed=0, stage=1, p_mirror=0.5)
    rng = np.random.default_rng(1)
    mirror_t = rng.normal(size=data.teacher.shape).astype(np.float32)
    data = replace(data, teacher_mirror=mirror_t / np.linalg.norm(mirror_t, axis=1, keepdims=True))
    always = MaskedFaces(data, MaskSynth(None), p_mask=0.0, seed=0, stage=1, p_mirror=1.0)[5]
    np.testing.assert_allclose(always[1].numpy(), to_input(m_img)[0])
    assert torch.equal(always[3], torch.from_numpy(data.teacher_mirror[5]))
    old = MaskedFaces(replace(data, teacher_mirror=None), MaskSynth(None), p_mask=0.5, seed=0, stage=1)
    zero = MaskedFaces(data, MaskSynth(None), p_mask=0.5, seed=0, stage=1, p_mirror=0.0)
    for i in range(len(data.labels)):
        assert all(torch.equal(a, b) for a, b in zip(old[i][:4], zero[i][:4]))
    c = centred(data)  # one centring for both targets
    want = data.teacher_mirror - c.center
    np.testing.assert_allclose(c.teacher_mirror, want / np.linalg.norm(want, axis=1, keepdims=True), atol=1e-6)


def test_degrade_changes_only_the_input_and_keeps_the_masks():
    from maskfr.training.train import MaskedFaces
    data = _tiny_data()
    plain = MaskedFaces(data, MaskSynth(None), p_mask=0.5, seed=0, stage=1)
    cam = dict(min_scale=0.25, p_blur=0.5, max_blur_px=7.0, p_jpeg=0.5)
    never = MaskedFaces(data, MaskSynth(None), p_mask=0.5, seed=0, stage=1, degrade=dict(cam, p=0.0))
    always = MaskedFaces(data, MaskSynth(None), p_mask=0.5, seed=0, stage=1, degrade=dict(cam, p=1.0))
    for i in range(len(data.labels)):
        a, b, c = plain[i], never[i], always[i]
        assert torch.equal(a[0], b[0]) and torch.equal(a[2], c[2])  # drawn last: same masks as without it
        assert torch.equal(a[1], c[1]) and torch.equal(a[3], c[3])  # clean target and teacher embedding untouched
        assert not torch.equal(a[0], c[0])  # the input itself degraded (what each step does: the test below)


def test_degrade_steps_do_what_they_say():
    from maskfr.training.train import degrade, motion_kernel
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)
    np.testing.assert_array_equal(degrade(img, 1.0), img)  # nothing asked: unchanged
    for length, deg in ((5.0, 0.0), (6.5, 30.0), (3.0, 90.0)):
        k = motion_kernel(length, deg)
        assert k.sum() == pytest.approx(1.0) and k.shape[0] % 2 == 1
        ys, xs = np.nonzero(k > 0.05)
        c = (k.shape[0] - 1) / 2
        extent = np.hypot(xs - c, ys - c).max() * 2 + 1
        assert length - 1.5 <= extent <= length + 1.5  # as long as asked
        if deg == 0.0:
            assert (ys == c).all()  # horizontal
    # a horizontal blur smooths along rows, not down columns
    h = degrade(img, 1.0, 7.0, 0.0).astype(float)
    along, across = np.abs(np.diff(h, axis=1)).mean(), np.abs(np.diff(h, axis=0)).mean()
    assert along < 0.5 * across
    # JPEG at low quality loses detail, more than at high quality; shrinking keeps the size
    err = lambda q: np.abs(degrade(img, 1.0, jpeg_quality=q).astype(float) - img).mean()  # noqa: E731
    assert err(20) > err(90) > 0
    # ... as a camera's encoder would on the frame: luma and chroma of the real colours (OpenCV reads BGR)
    bgr = cv2.imdecode(cv2.imencode(".jpg", np.ascontiguousarray(img[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 40])[1],
                       cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(degrade(img, 1.0, jpeg_quality=40), bgr[..., ::-1])
    assert degrade(img, 0.25, 3.0, 45.0, 50).shape == img.shape
    # a monochrome sensor: the RGB image's luma in every channel
    luma = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    np.testing.assert_array_equal(degrade(img, 1.0, grey=True), np.repeat(luma[..., None], 3, 2))


def test_random_degrade_draws_grey_last_and_only_when_asked():
    from maskfr.training.train import random_degrade
    img = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    cam = dict(min_scale=0.5, p_blur=0.5, max_blur_px=5.0, p_jpeg=0.5)
    before, after = np.random.default_rng(3), np.random.default_rng(3)
    for _ in range(5):  # p_grey=0 leaves the draws (and images) of configs written before it exactly as they were
        np.testing.assert_array_equal(random_degrade(img, before, **cam), random_degrade(img, after, **cam, p_grey=0.0))
    assert before.random() == after.random()
    out = random_degrade(img, np.random.default_rng(0), **cam, p_grey=1.0)
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "configs").glob("*.py")), ids=lambda p: p.stem)
def test_shipped_configs_load_and_hold_every_stage(path):
    """Configs derive from each other (runpy); a typo in one would only surface an hour into a run."""
    cfg = load_config(path)
    assert cfg["name"] == path.stem
    assert set(cfg["stages"]) == set(STAGES)
    assert not set(cfg["train_lfw_folds"]) & set(range(6, 11)), "folds 6-10 are the test people"
    for stage, keys in {"inpaint": ("lr_encoder", "lr_decoder", "hole_weight"),
                        "reformer": ("lr_encoder", "lr_reformer", "tau", "w_relation", "w_instance"),
                        "classifier": ("lr_head", "lr_reformer", "margin", "scale", "w_kd")}.items():
        assert {"epochs", *keys} <= set(cfg["stages"][stage]), stage


def test_a_stage_trained_with_other_settings_is_not_reused_in_silence(tmp_path, capsys):
    """A rerun with a changed config into the same run folder returned the old stages (the old model) unsaid."""
    torch.set_num_threads(2)
    cfg = _cfg(epochs=1)
    cfg["generative_pretraining"] = False
    Trainer(cfg, _tiny_data(), MaskSynth(None), tmp_path, pretrained=False).run_stage("reformer", None)
    capsys.readouterr()
    same = dict(cfg, threads=1, wise_alpha=0.5)  # run-only settings: the stage is the same
    Trainer(same, _tiny_data(), MaskSynth(None), tmp_path, pretrained=False).run_stage("reformer", None)
    assert "reusing" not in capsys.readouterr().err
    other = dict(cfg, p_mask=0.25, stages=dict(cfg["stages"], reformer=dict(cfg["stages"]["reformer"], tau=0.05)))
    Trainer(other, _tiny_data(), MaskSynth(None), tmp_path, pretrained=False).run_stage("reformer", None)
    err = capsys.readouterr().err
    assert f"reusing {tmp_path / 'reformer.pt'}, trained with other settings (p_mask, stages.reformer)" in err


class _RunsCode:
    """A pickled object whose unpickling would run code (here: make a folder)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os
        return os.makedirs, (str(self.marker),)


@pytest.mark.parametrize("kind", ["truncated", "foreign", "pickled object", "other data"])
def test_a_damaged_or_foreign_checkpoint_is_named_and_kept(tmp_path, kind):
    """Resuming from a truncated <stage>.partial.pt was a torch zip-error traceback naming no file, a foreign one a
    bare KeyError ('head'), one of another run's identities a size-mismatch traceback; a pickled object in it ran."""
    torch.set_num_threads(2)
    cfg = _cfg(epochs=1)
    cfg["generative_pretraining"] = False
    trainer = Trainer(cfg, _tiny_data(), MaskSynth(None), tmp_path, pretrained=False)
    partial = tmp_path / "reformer.partial.pt"
    trainer._save(trainer._state("reformer", 0, trainer._optimizer("reformer")), partial)
    if kind == "truncated":
        partial.write_bytes(partial.read_bytes()[:300_000])
    elif kind == "foreign":
        torch.save({"net": {}, "opt": {}, "sched": {}, "epoch": 1}, partial)  # an MTCNN fine-tuning checkpoint
    elif kind == "pickled object":
        torch.save({"model": _RunsCode(tmp_path / "ran")}, partial)
    before = partial.read_bytes()
    n_ids = 5 if kind == "other data" else 4  # the classifier head of another set of identities
    resumed = Trainer(cfg, _tiny_data(n_ids=n_ids), MaskSynth(None), tmp_path, pretrained=False)
    message = {"truncated": "damaged", "foreign": "lacks", "pickled object": "Python objects",
               "other data": "does not fit"}[kind]
    with pytest.raises(ValueError, match=f"checkpoint {partial}.*{message}"):
        resumed.run_stage("reformer", None)
    assert partial.read_bytes() == before and not (tmp_path / "reformer.pt").exists()
    assert not (tmp_path / "ran").exists()


def test_a_damaged_or_foreign_teacher_cache_is_named(tmp_path):
    """A truncated teacher-*.npy failed without its name; one of other faces (another row count) was used, and
    training died in a DataLoader worker with an IndexError."""
    from maskfr.training.train import teacher_embeddings
    chips = np.zeros((3, 150, 150, 3), np.uint8)
    cached = tmp_path / "teacher-lfw-0123456789ab.npy"
    for bad in (np.zeros((10, 128), np.float32), np.zeros((3, 64), np.float32)):
        np.save(cached, bad)
        with pytest.raises(ValueError, match=f"{cached} holds .*, not 3 faces' 128-d embeddings"):
            teacher_embeddings(chips, cached)
    cached.write_bytes(cached.read_bytes()[:200])
    with pytest.raises(ValueError, match=f"{cached}.*damaged"):
        teacher_embeddings(chips, cached)
    good = np.eye(3, 128, dtype=np.float32)
    np.save(cached, good)
    np.testing.assert_array_equal(teacher_embeddings(chips, cached), good)
