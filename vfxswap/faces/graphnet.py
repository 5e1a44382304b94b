"""A small convolutional network stored as an op list (JSON) plus weights (safetensors), run in torch.

MediaPipe's face networks (BlazeFace, Face Mesh, Iris) ship as TensorFlow Lite files; tools/
convert_mediapipe.py turns each once into this form, so vfxswap runs them with torch on CPU or
CUDA, batched, with no TensorFlow Lite runtime and no run-time download. The op list keeps the
TFLite graph's order and semantics (NHWC shapes, TensorFlow's SAME padding, fused activations);
4-D activations live in torch's NCHW and are permuted only where an op's meaning depends on the
layout (reshape, concatenation, depth-to-space). The batch dimension is free: every op here
works on any batch, so a graph converted at batch 1 runs at any.

File layout (`NAME.json` beside `NAME.safetensors`):
    {"format": "vfxswap-graphnet", "version": 1, "inputs": [tensor id], "outputs": [...],
     "input_shapes": [[1, H, W, C]], "ops": [{"op": "conv", "in": [id], "out": id, ...}], ...}
Weights are named `t<id>` (the TFLite tensor index) and stored in TFLite's layout: conv kernels
(O, KH, KW, I), depthwise (1, KH, KW, C), PReLU alphas (..., C); converted to torch's on load.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np

from vfxswap.errors import VfxSwapError

ACTIVATIONS = ("none", "relu", "relu6", "relu_n1_to_1", "tanh")


def _same_pad(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow's SAME padding along one axis: (before, after); the extra pixel goes after."""
    out = math.ceil(size / stride)
    effective = (kernel - 1) * dilation + 1
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def _activate(x, name: str):
    import torch

    if name == "none":
        return x
    if name == "relu":
        return torch.relu(x)
    if name == "relu6":
        return torch.clamp(x, 0.0, 6.0)
    if name == "relu_n1_to_1":
        return torch.clamp(x, -1.0, 1.0)
    if name == "tanh":
        return torch.tanh(x)
    raise VfxSwapError(f"graphnet: unknown activation {name!r}")


def _nhwc_axis(axis: int, rank: int) -> int:
    """The NCHW axis of an NHWC axis for a 4-D tensor."""
    axis %= rank
    return (0, 2, 3, 1)[axis] if rank == 4 else axis


class GraphNet:
    """Runs one converted network; call it with NCHW float32 input(s), get its outputs in the
    graph's own (TFLite) layout with the batch first. Load with `GraphNet.load(path_without_suffix)`."""

    def __init__(self, spec: dict, weights: dict, device: str = "cpu", outputs: list[int] | None = None):
        """`outputs`: indices of the graph's outputs wanted (default all); ops only the others
        need are left out (Iris's eye-contour head, when only the iris is wanted)."""
        import torch

        if spec.get("format") != "vfxswap-graphnet" or spec.get("version") != 1:
            raise VfxSwapError(f"graphnet: not a version-1 vfxswap graph ({spec.get('format')!r})")
        if outputs is not None:
            spec = dict(spec, outputs=[spec["outputs"][i] for i in outputs])
            needed, kept = set(spec["outputs"]), []
            for op in reversed(spec["ops"]):
                if op["out"] in needed:
                    kept.append(op)
                    needed.update(op["in"])
            spec["ops"] = kept[::-1]
        self.spec = spec
        self.trace = True  # run a traced copy (see `_traced`); False: op by op in Python
        self._cache: dict = {}
        self.device = torch.device(device)
        self.params: dict[str, torch.Tensor] = {}
        for op in spec["ops"]:
            for key in ("weight", "bias", "alpha"):
                if key in op:
                    self.params[op[key]] = self._torch_weight(op, key, weights[op[key]])

    def _torch_weight(self, op: dict, key: str, value: np.ndarray):
        import torch

        value = np.asarray(value, np.float32)
        if key == "weight" and op["op"] == "conv":
            value = value.transpose(0, 3, 1, 2)  # (O, KH, KW, I) -> (O, I, KH, KW)
        elif key == "weight" and op["op"] == "depthwise":
            value = value.transpose(3, 0, 1, 2)  # (1, KH, KW, C) -> (C, 1, KH, KW)
        elif key == "alpha":
            value = value.reshape(-1) if value.size == value.shape[-1] else value
            if value.ndim == 3:  # (H, W, C) per-position alphas -> (C, H, W)
                value = value.transpose(2, 0, 1)
            elif value.ndim == 1:
                value = value.reshape(-1, 1, 1)
        return torch.from_numpy(np.ascontiguousarray(value)).to(self.device)

    @classmethod
    def load(cls, stem: str | Path, device: str = "cpu", outputs: list[int] | None = None) -> "GraphNet":
        from safetensors.numpy import load_file

        stem = Path(stem)
        json_path, weights_path = stem.with_suffix(".json"), stem.with_suffix(".safetensors")
        for path in (json_path, weights_path):
            if not path.is_file():
                raise VfxSwapError(f"graphnet: {path} is missing")
        return cls(json.loads(json_path.read_text()), load_file(str(weights_path)), device, outputs)

    def __call__(self, *inputs):
        import torch

        threads = torch.get_num_threads()
        if self.device.type == "cpu":
            # One thread: these nets are small, one thread runs them about as fast as two, and
            # the extractor's reader and cutter threads keep the other cores (measured in
            # extraction: 23 ms of landmarks a frame with one, 41 with two on 2 cores).
            torch.set_num_threads(1)
        try:
            run = self._traced(inputs) if self.trace else None
            return list(run(*inputs) if run is not None else self._run(inputs))
        finally:
            torch.set_num_threads(threads)

    def _traced(self, inputs):
        """The op list traced once per input shape (TorchScript): the same arithmetic without
        Python's dispatch per op, which is a third of a Face Mesh pass on a CPU (measured:
        7.3 -> 4.2 ms; in extraction 23 -> 17 ms of landmarks a frame). Shapes are few (batch =
        faces in a frame), so the cache stays small. torch 2.13 marks tracing deprecated: where
        it is gone or fails, None, and the ops run one by one (same results, a little slower)."""
        import torch

        key = tuple((tuple(x.shape), str(x.device)) for x in inputs)
        if key not in self._cache:
            net = self

            class Run(torch.nn.Module):
                def forward(self, *xs):
                    return tuple(net._run(xs))

            try:
                with torch.inference_mode(), warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # TracerWarning (shapes are constants: one trace per shape), deprecation
                    self._cache[key] = torch.jit.trace(Run(), tuple(inputs), check_trace=False)
            except Exception:  # noqa: BLE001 - any failure to trace falls back to the plain op list
                self.trace = False
                return None
        return self._cache[key]

    def _run(self, inputs):
        import torch
        import torch.nn.functional as F

        values = {}
        for tid, x in zip(self.spec["inputs"], inputs):
            x = x.to(self.device, torch.float32)
            # channels-last: these depthwise-separable nets run ~1.4-1.7x faster so on a CPU (measured)
            values[tid] = x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x
        with torch.inference_mode():
            for op in self.spec["ops"]:
                xs = [values[i] for i in op["in"]]
                kind = op["op"]
                if kind in ("conv", "depthwise"):
                    x = xs[0]
                    w = self.params[op["weight"]]
                    kh, kw = w.shape[-2:]
                    sh, sw = op["stride"]
                    dh, dw = op.get("dilation", (1, 1))
                    pad = 0
                    if op["padding"] == "same":
                        top, bottom = _same_pad(x.shape[2], kh, sh, dh)
                        left, right = _same_pad(x.shape[3], kw, sw, dw)
                        if top == bottom and left == right:
                            pad = (top, left)  # symmetric: the convolution pads (no copy)
                        else:
                            x = F.pad(x, (left, right, top, bottom))
                    groups = x.shape[1] if kind == "depthwise" else 1
                    bias = self.params.get(op.get("bias"))
                    y = F.conv2d(x, w, bias, (sh, sw), pad, (dh, dw), groups)
                    y = _activate(y, op.get("act", "none"))
                elif kind == "add":
                    y = _activate(xs[0] + xs[1], op.get("act", "none"))
                elif kind == "mul":
                    y = _activate(xs[0] * xs[1], op.get("act", "none"))
                elif kind == "relu":
                    y = torch.relu(xs[0])
                elif kind == "prelu":
                    alpha = self.params[op["alpha"]]  # (C, 1, 1) per channel, or (C, H, W) per position
                    y = F.prelu(xs[0], alpha.reshape(-1)) if alpha.shape[1:] == (1, 1) \
                        else torch.where(xs[0] >= 0, xs[0], xs[0] * alpha)
                elif kind == "pad":
                    # NHWC paddings [[n0, n1], [h0, h1], [w0, w1], [c0, c1]]
                    (n0, n1), (h0, h1), (w0, w1), (c0, c1) = op["paddings"]
                    if n0 or n1:
                        raise VfxSwapError("graphnet: padding the batch is not supported")
                    y = F.pad(xs[0], (w0, w1, h0, h1, c0, c1))
                elif kind == "maxpool":
                    x = xs[0]
                    kh, kw = op["filter"]
                    sh, sw = op["stride"]
                    if op["padding"] == "same":
                        top, bottom = _same_pad(x.shape[2], kh, sh)
                        left, right = _same_pad(x.shape[3], kw, sw)
                        if top or bottom or left or right:
                            x = F.pad(x, (left, right, top, bottom), value=float("-inf"))
                    y = _activate(F.max_pool2d(x, (kh, kw), (sh, sw)), op.get("act", "none"))
                elif kind == "reshape":
                    x = xs[0]
                    if x.ndim == 4:
                        x = x.permute(0, 2, 3, 1)
                    shape = [-1, *op["shape"][1:]]
                    y = x.reshape(shape)
                    if y.ndim == 4:
                        y = y.permute(0, 3, 1, 2)
                elif kind == "concat":
                    y = torch.cat(xs, dim=_nhwc_axis(op["axis"], xs[0].ndim))
                    y = _activate(y, op.get("act", "none"))
                elif kind == "resize_bilinear":
                    if op.get("half_pixel_centers"):
                        y = F.interpolate(xs[0], size=tuple(op["size"]), mode="bilinear", align_corners=False)
                    elif op.get("align_corners"):
                        y = F.interpolate(xs[0], size=tuple(op["size"]), mode="bilinear", align_corners=True)
                    else:  # TF's legacy mapping: src = dst * in / out, no half-pixel offset
                        y = _legacy_resize(xs[0], tuple(op["size"]))
                elif kind == "depth_to_space":
                    b = op["block"]
                    n, c, h, w = xs[0].shape
                    # TF (NHWC, DCR): channel index = (i * b + j) * C' + c'
                    y = xs[0].reshape(n, b, b, c // (b * b), h, w).permute(0, 3, 4, 1, 5, 2)
                    y = y.reshape(n, c // (b * b), h * b, w * b)
                else:
                    raise VfxSwapError(f"graphnet: unsupported op {kind!r}")
                values[op["out"]] = y
        outs = []
        for tid in self.spec["outputs"]:
            y = values[tid]
            outs.append(y.permute(0, 2, 3, 1) if y.ndim == 4 else y)
        return outs


def _legacy_resize(x, size: tuple[int, int]):
    """TensorFlow's resize_bilinear without align_corners or half-pixel centres: sample at
    dst * in / out (so the last row and column repeat the edge)."""
    import torch

    n, c, h, w = x.shape
    oh, ow = size
    ys = torch.arange(oh, device=x.device, dtype=torch.float32) * (h / oh)
    xs = torch.arange(ow, device=x.device, dtype=torch.float32) * (w / ow)
    y0 = ys.floor().long().clamp(max=h - 1)
    x0 = xs.floor().long().clamp(max=w - 1)
    y1 = (y0 + 1).clamp(max=h - 1)
    x1 = (x0 + 1).clamp(max=w - 1)
    fy = (ys - y0.float()).view(1, 1, oh, 1)
    fx = (xs - x0.float()).view(1, 1, 1, ow)
    top = x[:, :, y0][:, :, :, x0] * (1 - fx) + x[:, :, y0][:, :, :, x1] * fx
    bottom = x[:, :, y1][:, :, :, x0] * (1 - fx) + x[:, :, y1][:, :, :, x1] * fx
    return top * (1 - fy) + bottom * fy
