"""Reader for dlib's DNN serialization format (no dlib needed).

Written from dlib's own definitions (``serialize.h``, ``float_details.h``,
``dnn/core.h``, ``dnn/tensor.h``, ``dnn/layers.h``, ``dnn/input.h``, ``dnn/loss.h``):

* integers: one control byte ``size | (0x80 if negative)`` then ``size`` magnitude
  bytes, little endian (unsigned readers mask the control byte with ``0x8F``);
* floats/doubles (``float_details``): signed int64 mantissa then int16 exponent, both
  as integers, value ``mantissa * 2**exponent``; exponents 32000/32001/32002 are
  +inf/-inf/nan;
* strings: integer length then raw bytes; bools: the characters ``'1'``/``'0'``;
* tensors: version int (1: float_details per value, 2: little-endian float32),
  then ``num_samples, k, nr, nc``; alias tensors: version 1 and the four sizes only.

A network is nested: ``add_loss_layer`` (version 1, loss details, subnet);
``add_layer`` (version 2: subnet, details, 3 bools, x_grad, cached_output,
params_grad); the bottom ``add_layer`` over the input layer (version 2/3: input
layer, details, 3 bools, x_grad, cached_output, grad_final[, sample factor]);
``add_tag_layer``/``add_skip_layer`` (version 1, subnet). So the stream holds every
wrapper's version first (output to input), then each layer's details from the
input up. Tag and skip wrappers serialize identically and neither (nor
``add_prev_``) stores its tag id: the reader reports them as ``"tag_or_skip"`` and
the network definition resolves them.
"""
from __future__ import annotations

import io
import math
import os
import re
from dataclasses import dataclass, field

import numpy as np

INF_EXP, NINF_EXP, NAN_EXP = 32000, 32001, 32002


class DlibFormatError(ValueError):
    """The byte stream is not what dlib's serializer would have written."""


@dataclass
class Layer:
    """One record of the network, input first: ``kind`` is dlib's name without version."""

    kind: str
    version: str = ""
    attrs: dict = field(default_factory=dict)
    params: dict[str, np.ndarray] = field(default_factory=dict)


class Reader:
    """Sequential decoder of dlib's primitive encodings over a bytes buffer."""

    def __init__(self, data: bytes):
        self.buf = io.BytesIO(data)

    def _take(self, n: int) -> bytes:
        b = self.buf.read(n)
        if len(b) != n:
            raise DlibFormatError(f"unexpected end of stream at byte {self.buf.tell()}")
        return b

    def peek(self, n: int) -> bytes:
        pos = self.buf.tell()
        b = self.buf.read(n)
        self.buf.seek(pos)
        return b

    def int(self, signed: bool = True) -> int:
        ctrl = self._take(1)[0]
        size = ctrl & 0x0F
        if size > 8 or ctrl & 0x70:
            raise DlibFormatError(f"bad integer control byte 0x{ctrl:02x} at byte {self.buf.tell() - 1}")
        value = int.from_bytes(self._take(size), "little")
        return -value if (signed and ctrl & 0x80) else value

    def uint(self) -> int:
        return self.int(signed=False)

    def float(self) -> float:
        mantissa, exponent = self.int(), self.int()
        if exponent == INF_EXP:
            return math.inf
        if exponent == NINF_EXP:
            return -math.inf
        if exponent == NAN_EXP:
            return math.nan
        return math.ldexp(float(mantissa), exponent)

    def string(self) -> str:
        return self._take(self.uint()).decode("latin-1")

    def bool(self) -> bool:
        ch = self._take(1)
        if ch not in (b"0", b"1"):
            raise DlibFormatError(f"bad bool byte {ch!r}")
        return ch == b"1"

    def tensor(self) -> np.ndarray:
        version = self.int()
        shape = tuple(self.int() for _ in range(4))
        count = int(np.prod(shape))
        if version == 2:
            data = np.frombuffer(self._take(4 * count), dtype="<f4").astype(np.float32)
        elif version == 1:
            data = np.array([self.float() for _ in range(count)], np.float32)
        else:
            raise DlibFormatError(f"unknown tensor version {version}")
        return data.reshape(shape)

    def alias(self) -> tuple[int, int, int, int]:
        if (v := self.int()) != 1:
            raise DlibFormatError(f"unknown alias_tensor version {v}")
        return tuple(self.int() for _ in range(4))

    def at_end(self) -> bool:
        return not self.peek(1)


def _slice(params: np.ndarray, shape: tuple[int, ...], offset: int) -> np.ndarray:
    """What an ``alias_tensor`` of this shape at this offset sees of the flat params."""
    n = int(np.prod(shape))
    flat = params.reshape(-1)
    if offset + n > flat.size:
        raise DlibFormatError(f"alias {shape}@{offset} overruns {flat.size} params")
    return flat[offset:offset + n].reshape(shape).copy()


def _con(r: Reader, version: str) -> Layer:
    if version not in ("con_4", "con_5", "con_6"):
        raise DlibFormatError(f"unsupported convolution record {version!r}")
    params = r.tensor()
    attrs = {"num_filters": r.int(), "nr": r.int(), "nc": r.int(), "stride_y": r.int(), "stride_x": r.int(),
             "padding_y": r.int(), "padding_x": r.int()}
    fshape, bshape = r.alias(), r.alias()
    attrs.update(lr_mult=r.float(), wd_mult=r.float(), bias_lr_mult=r.float(), bias_wd_mult=r.float())
    use_bias = r.bool() if version in ("con_5", "con_6") else True
    attrs["use_relu"] = r.bool() if version == "con_6" else False
    out = {"weight": _slice(params, fshape, 0)}  # (out, in, nr, nc): dlib's filter layout
    if use_bias and int(np.prod(bshape)):
        out["bias"] = _slice(params, bshape, int(np.prod(fshape))).reshape(-1)
    return Layer("con", version, attrs, out)


def _fc(r: Reader, version: str) -> Layer:
    if version != "fc_2":
        raise DlibFormatError(f"unsupported fc record {version!r}")
    n_out, n_in = r.uint(), r.uint()
    params = r.tensor()
    wshape, bshape = r.alias(), r.alias()
    bias_mode = r.int()  # FC_HAS_BIAS = 0, FC_NO_BIAS = 1
    attrs = {"num_outputs": n_out, "num_inputs": n_in, "bias_mode": bias_mode,
             "lr_mult": r.float(), "wd_mult": r.float(), "bias_lr_mult": r.float(), "bias_wd_mult": r.float()}
    # dlib computes out = in @ W with W of shape (num_inputs, num_outputs).
    out = {"weight": _slice(params, wshape, 0).reshape(n_in, n_out)}
    if bias_mode == 0:
        out["bias"] = _slice(params, bshape, n_in * n_out).reshape(-1)
    return Layer("fc_no_bias" if bias_mode == 1 else "fc", version, attrs, out)


def _affine(r: Reader, version: str) -> Layer:
    if version != "affine_":
        raise DlibFormatError(f"unsupported affine record {version!r} (bn_ conversion not implemented)")
    params = r.tensor()
    gshape, bshape = r.alias(), r.alias()
    mode = r.int()  # CONV_MODE = 0 (per channel), FC_MODE = 1 (per element)
    gamma = _slice(params, gshape, 0)
    beta = _slice(params, bshape, int(np.prod(gshape)))
    return Layer("affine", version, {"mode": mode}, {"gamma": gamma.reshape(-1), "beta": beta.reshape(-1)})


def _pool(kind: str):
    def parse(r: Reader, version: str) -> Layer:
        if version != f"{kind}_2":
            raise DlibFormatError(f"unsupported pooling record {version!r}")
        keys = ("nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")
        return Layer(kind, version, {k: r.int() for k in keys})
    return parse


def _plain(kind: str):
    return lambda r, version: Layer(kind, version)


def _input_rgb(r: Reader, version: str) -> Layer:
    attrs = {"avg_red": r.float(), "avg_green": r.float(), "avg_blue": r.float()}
    if version == "input_rgb_image_sized":
        attrs["nr"], attrs["nc"] = r.uint(), r.uint()
    return Layer(version, version, attrs)


def _loss_metric(r: Reader, version: str) -> Layer:
    attrs = {"margin": r.float(), "dist_thresh": r.float()} if version == "loss_metric_2" else {}
    return Layer("loss_metric", version, attrs)


_DETAILS = {
    "con": _con, "fc": _fc, "affine": _affine, "relu": _plain("relu"), "add_prev": _plain("add_prev"),
    "max_pool": _pool("max_pool"), "avg_pool": _pool("avg_pool"),
}
_INPUTS = {"input_rgb_image_sized": _input_rgb, "input_rgb_image": _input_rgb}
_LOSSES = {"loss_metric_": _loss_metric, "loss_metric_2": _loss_metric}
_NAME = re.compile(rb"[a-z][a-z0-9_]{2,63}")


def _details(r: Reader) -> Layer:
    version = r.string()
    base = re.sub(r"_\d*$", "", version)
    if base not in _DETAILS:
        raise DlibFormatError(f"unsupported layer record {version!r}")
    return _DETAILS[base](r, version)


def _skip_runtime_state(r: Reader, input_level: int | None = None) -> None:
    """Consume what add_layer stores after its details (flags and cached tensors)."""
    for _ in range(3):  # this_layer_setup_called, gradient_input_is_stale, output getters disabled
        r.bool()
    r.tensor()  # x_grad
    r.tensor()  # cached_output
    r.tensor()  # params_grad, or grad_final for the layer over the input
    if input_level == 3:
        r.uint()  # _sample_expansion_factor


def _next_is_name(r: Reader) -> bool:
    head = r.peek(66)
    if len(head) < 2 or head[0] != 1:
        return False
    n = head[1]
    return 3 <= n <= 64 and _NAME.fullmatch(head[2:2 + n]) is not None


def read_network(source: str | os.PathLike | bytes) -> list[Layer]:
    """Parse a serialized dlib network into layers ordered from input to output.

    The list starts with the input layer, then one entry per ``add_layer`` details
    record and one ``Layer("tag_or_skip")`` per tag/skip wrapper at its position;
    a loss layer, when the stream has one, comes last.
    """
    data = source if isinstance(source, bytes) else open(source, "rb").read()
    r = Reader(data)
    loss = None
    if not _next_is_name(r):  # a network with a loss starts with add_loss_layer's version
        pos = r.buf.tell()
        if r.int() == 1 and _next_is_name(r):
            name = r.string()
            if name not in _LOSSES:
                raise DlibFormatError(f"unsupported loss {name!r}")
            loss = _LOSSES[name](r, name)
        else:
            r.buf.seek(pos)
    wrappers: list[int] = []
    while not _next_is_name(r):
        wrappers.append(r.int())
    if not wrappers or wrappers[-1] not in (2, 3):
        raise DlibFormatError("no add_layer over an input layer found")
    input_level = wrappers.pop()
    name = r.string()
    if name not in _INPUTS:
        raise DlibFormatError(f"unsupported input layer {name!r}")
    layers = [_INPUTS[name](r, name), _details(r)]
    _skip_runtime_state(r, input_level)
    for version in reversed(wrappers):  # unwind from the input side up
        if version == 1:
            layers.append(Layer("tag_or_skip"))
        elif version == 2:
            layers.append(_details(r))
            _skip_runtime_state(r)
        else:
            raise DlibFormatError(f"unknown wrapper version {version}")
    if loss is not None:
        layers.append(loss)
    if not r.at_end():
        raise DlibFormatError(f"{len(data) - r.buf.tell()} trailing bytes after the network")
    return layers


__all__ = ["DlibFormatError", "Layer", "Reader", "read_network"]
