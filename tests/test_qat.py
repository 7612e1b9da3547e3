"""Quantization-aware fine-tuning (maskfr.training.qat): the fake quantizers round as the INT8 export does,
attach/detach leave a plain float model, and fine-tuning brings the quantized model closer to the float one."""
from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402
from torch.nn.utils import parametrize  # noqa: E402

from maskfr.training import qat  # noqa: E402


def test_weight_quant_rounds_per_output_channel() -> None:
    w = torch.tensor([[1.0, -0.5, 0.26], [0.1, 0.04, -0.02]])
    got = qat.WeightQuant(levels=2)(w)  # steps of max|w| / 2 per row: 0.5 and 0.05
    assert torch.allclose(got, torch.tensor([[1.0, -0.5, 0.5], [0.1, 0.05, -0.0]]))


def test_act_quant_uint8_and_symmetric_ranges() -> None:
    x = torch.tensor([-1.0, 0.0, 0.5, 3.0])
    asym = qat.ActQuant((0, 255)).train()
    y = asym(x)  # range [-1, 3]: 255 steps of 4/255, zero point 64
    assert float(asym.lo) == -1.0 and float(asym.hi) == 3.0
    assert torch.allclose(y, torch.round(x * 255 / 4) * 4 / 255, atol=1e-6)
    sym = qat.ActQuant((-127, 127)).train()
    y = sym(x)  # range [-3, 3]
    assert float(sym.lo) == -3.0 and torch.allclose(y, torch.round(x * 127 / 3) * 3 / 127, atol=1e-6)
    sym.eval()(torch.full((4,), 100.0))  # eval: the range stays
    assert float(sym.hi) == 3.0


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3, 2), nn.ReLU(), nn.Flatten(),
                         nn.Linear(8 * 5 * 5, 16))


def test_attach_detach_leaves_a_plain_float_model() -> None:
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    handles = qat.attach(net)
    assert sum(parametrize.is_parametrized(m, "weight") for m in net.modules()) == 3
    x = torch.randn(2, 3, 14, 14)
    net(x)
    qat.detach(net, handles)
    after = net.state_dict()
    assert sorted(after) == sorted(before) and all(torch.equal(after[k], before[k]) for k in before)
    assert not any(hasattr(m, "act_quant") for m in net.modules())


def test_finetune_brings_the_quantized_model_closer_and_resumes(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(qat.FLAVOURS, "coarse", (3, (0, 15)))  # 3-bit weights, 4-bit activations: a clear gap
    gen = torch.Generator().manual_seed(1)
    loader = [(torch.randn(16, 3, 14, 14, generator=gen),) for _ in range(4)]
    net, reference = _net(), _net()

    def gap(model: nn.Module) -> float:
        """Mean 1 - cosine between the fake-quantized model (ranges from the data) and the float reference."""
        handles = qat.attach(model, "coarse")
        for m in model.modules():
            if isinstance(m, qat.ActQuant):
                m.momentum = 1.0 / len(loader)
                m.train()
        with torch.no_grad():
            for (x,) in loader:
                model(x)
            model.eval()
            out = torch.cat([model(x) for (x,) in loader])
            want = torch.cat([reference(x) for (x,) in loader])
        qat.detach(model, handles)
        return float((1 - torch.nn.functional.cosine_similarity(out, want)).mean())

    before = gap(_net())
    tuned = qat.finetune(net, loader, steps=60, lr=1e-3, flavour="coarse", ckpt=tmp_path / "q.pt", log=lambda s: None)
    assert gap(tuned) < 0.5 * before  # measured: 0.039 -> 0.013
    assert torch.load(tmp_path / "q.pt", weights_only=True)["step"] == 60
    again = qat.finetune(_net(), loader, steps=60, lr=1e-3, flavour="coarse", ckpt=tmp_path / "q.pt", log=lambda s: None)
    for a, b in zip(tuned.state_dict().values(), again.state_dict().values()):  # resumed at the end: same weights
        assert torch.equal(a, b)


def test_a_damaged_checkpoint_is_named_and_kept(tmp_path: Path) -> None:
    """Resuming from a truncated or foreign .qat.pt was a torch traceback (a zip error, a KeyError)."""
    ckpt = tmp_path / "q.qat.pt"
    torch.save({"net": {}, "epoch": 1}, ckpt)
    with pytest.raises(ValueError, match=f"checkpoint {ckpt} .*lacks"):
        qat.finetune(_net(), [], steps=1, ckpt=ckpt, log=lambda s: None)
    ckpt.write_bytes(ckpt.read_bytes()[:50])
    with pytest.raises(ValueError, match=f"checkpoint {ckpt} is damaged"):
        qat.finetune(_net(), [], steps=1, ckpt=ckpt, log=lambda s: None)
    assert len(ckpt.read_bytes()) == 50
