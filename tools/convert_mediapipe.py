"""Convert MediaPipe's face networks (BlazeFace full range, Face Mesh, Iris) into vfxswap graphs.

Run once by a developer, not at run time; its outputs ship in vfxswap/faces/mesh_models/:

    python -m venv /tmp/mpv && /tmp/mpv/bin/pip install tflite ai-edge-litert safetensors torch
    pip download --no-deps mediapipe==0.10.21 -d /tmp/mp    # the last wheel that bundles .tflite files
    /tmp/mpv/bin/python tools/convert_mediapipe.py /tmp/mp/mediapipe-0.10.21-*.whl

It reads each .tflite file's operator list and options with the `tflite` flatbuffer schema, and
the weights (fp16, some stored sparse) as the TFLite runtime itself dequantizes and densifies them,
so no sparse format is re-implemented here. Weights are stored as float16 (as in the wheel); the
graph runs in float32. Each converted graph is checked against the TFLite runtime on a real face
(scikit-image's astronaut) and on noise; the largest output difference is printed and must be small.
The wheel's Apache-2.0 licence is copied beside the weights with a NOTICE saying what was taken.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

OUT = Path(__file__).resolve().parents[1] / "vfxswap" / "faces" / "mesh_models"
MODELS = {  # our name -> path inside the wheel
    "blazeface_full": "mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite",
    "face_mesh": "mediapipe/modules/face_landmark/face_landmark.tflite",
    "iris": "mediapipe/modules/iris_landmark/iris_landmark.tflite",
}
ACT = {0: "none", 1: "relu", 2: "relu_n1_to_1", 3: "relu6", 4: "tanh"}
PADDING = {0: "same", 1: "valid"}
FOLDED = ("DEQUANTIZE", "DENSIFY")  # ops that only decode a constant: their output is stored


def _op_names():
    import tflite

    return {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}


def _options(op, cls):
    table = op.BuiltinOptions()
    opts = cls()
    opts.Init(table.Bytes, table.Pos)
    return opts


def convert(tflite_bytes: bytes, tflite_path: str) -> tuple[dict, dict]:
    """(graph spec, weights) of one .tflite model."""
    import tflite
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    names = _op_names()
    model = tflite.Model.GetRootAsModel(tflite_bytes, 0)
    graph = model.Subgraphs(0)

    interp = Interpreter(model_path=tflite_path, experimental_preserve_all_tensors=True,
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interp.allocate_tensors()
    detail = interp.get_input_details()[0]
    interp.set_tensor(detail["index"], np.zeros(detail["shape"], np.float32))
    interp.invoke()

    def has_data(tid):
        buf = model.Buffers(graph.Tensors(tid).Buffer())
        return buf is not None and (buf.DataLength() > 0 or buf.Offset() > 0)

    constant = {tid for tid in range(graph.TensorsLength()) if has_data(tid)}
    weights, ops = {}, []

    def const(tid):
        key = f"t{tid}"
        if key not in weights:
            weights[key] = np.asarray(interp.get_tensor(tid), np.float32).astype(np.float16)
        return key

    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        name = names[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())]
        ins = [int(t) for t in op.InputsAsNumpy()]
        out = int(op.OutputsAsNumpy()[0])
        if name in FOLDED:
            if ins[0] in constant:
                constant.add(out)
                continue
            raise SystemExit(f"{tflite_path}: {name} of a non-constant tensor is not supported")
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            cls = tflite.Conv2DOptions if name == "CONV_2D" else tflite.DepthwiseConv2DOptions
            o = _options(op, cls)
            if name == "DEPTHWISE_CONV_2D" and o.DepthMultiplier() not in (0, 1):
                raise SystemExit(f"{tflite_path}: depth multiplier {o.DepthMultiplier()} not supported")
            entry = {"op": "conv" if name == "CONV_2D" else "depthwise", "in": [ins[0]], "out": out,
                     "weight": const(ins[1]), "stride": [o.StrideH(), o.StrideW()],
                     "dilation": [o.DilationHFactor(), o.DilationWFactor()],
                     "padding": PADDING[o.Padding()], "act": ACT[o.FusedActivationFunction()]}
            if len(ins) > 2 and ins[2] >= 0:
                entry["bias"] = const(ins[2])
        elif name in ("ADD", "MUL"):
            cls = tflite.AddOptions if name == "ADD" else tflite.MulOptions
            act = ACT[_options(op, cls).FusedActivationFunction()] if op.BuiltinOptions() else "none"
            entry = {"op": name.lower(), "in": ins, "out": out, "act": act}
        elif name == "RELU":
            entry = {"op": "relu", "in": ins, "out": out}
        elif name == "PRELU":
            entry = {"op": "prelu", "in": [ins[0]], "out": out, "alpha": const(ins[1])}
        elif name == "PAD":
            entry = {"op": "pad", "in": [ins[0]], "out": out,
                     "paddings": np.asarray(interp.get_tensor(ins[1])).astype(int).tolist()}
        elif name == "MAX_POOL_2D":
            o = _options(op, tflite.Pool2DOptions)
            entry = {"op": "maxpool", "in": [ins[0]], "out": out, "filter": [o.FilterHeight(), o.FilterWidth()],
                     "stride": [o.StrideH(), o.StrideW()], "padding": PADDING[o.Padding()],
                     "act": ACT[o.FusedActivationFunction()]}
        elif name == "RESHAPE":
            shape = graph.Tensors(out).ShapeAsNumpy().astype(int).tolist()
            entry = {"op": "reshape", "in": [ins[0]], "out": out, "shape": shape}
        elif name == "CONCATENATION":
            o = _options(op, tflite.ConcatenationOptions)
            entry = {"op": "concat", "in": ins, "out": out, "axis": o.Axis(), "act": ACT[o.FusedActivationFunction()]}
        elif name == "RESIZE_BILINEAR":
            o = _options(op, tflite.ResizeBilinearOptions)
            size = np.asarray(interp.get_tensor(ins[1])).astype(int).tolist()
            entry = {"op": "resize_bilinear", "in": [ins[0]], "out": out, "size": size,
                     "align_corners": bool(o.AlignCorners()), "half_pixel_centers": bool(o.HalfPixelCenters())}
        elif name == "DEPTH_TO_SPACE":
            entry = {"op": "depth_to_space", "in": [ins[0]], "out": out,
                     "block": _options(op, tflite.DepthToSpaceOptions).BlockSize()}
        else:
            raise SystemExit(f"{tflite_path}: op {name} is not supported by vfxswap.faces.graphnet")
        bad = [t for t in entry["in"] if t in constant]
        if bad:
            raise SystemExit(f"{tflite_path}: {name} takes constant activations {bad}; not supported")
        ops.append(entry)

    inputs = [int(t) for t in graph.InputsAsNumpy()]
    outputs = [int(t) for t in graph.OutputsAsNumpy()]
    spec = {
        "format": "vfxswap-graphnet", "version": 1,
        "inputs": inputs, "outputs": outputs,
        "input_shapes": [graph.Tensors(t).ShapeAsNumpy().astype(int).tolist() for t in inputs],
        "output_names": [graph.Tensors(t).Name().decode() for t in outputs],
        "output_shapes": [graph.Tensors(t).ShapeAsNumpy().astype(int).tolist() for t in outputs],
        "ops": ops,
    }
    return spec, weights


def check(spec: dict, weights: dict, tflite_path: str) -> float:
    """Largest |graphnet - TFLite| over the outputs, on the astronaut's face and on noise."""
    import torch
    from ai_edge_litert.interpreter import Interpreter
    from skimage import data

    from vfxswap.faces.graphnet import GraphNet

    net = GraphNet(spec, {k: v.astype(np.float32) for k, v in weights.items()})
    interp = Interpreter(model_path=tflite_path)
    interp.allocate_tensors()
    shape = spec["input_shapes"][0]
    h, w = shape[1], shape[2]
    face = data.astronaut()[20:220, 140:340].astype(np.float32) / 127.5 - 1.0  # about the face
    import cv2

    samples = [cv2.resize(face, (w, h), interpolation=cv2.INTER_AREA),
               np.random.default_rng(0).uniform(-1, 1, (h, w, 3)).astype(np.float32)]
    worst = 0.0
    for sample in samples:
        interp.set_tensor(interp.get_input_details()[0]["index"], sample[None])
        interp.invoke()
        ours = net(torch.from_numpy(sample[None].transpose(0, 3, 1, 2).copy()))
        by_index = {d["index"]: d for d in interp.get_output_details()}
        for tid, mine in zip(spec["outputs"], ours):
            ref = interp.get_tensor(by_index[tid]["index"])
            scale = max(1.0, float(np.abs(ref).max()))
            worst = max(worst, float(np.abs(mine.numpy().reshape(ref.shape) - ref).max()) / scale)
    return worst


def main(wheel: str) -> None:
    from safetensors.numpy import save_file

    OUT.mkdir(parents=True, exist_ok=True)
    sums = {}
    with zipfile.ZipFile(wheel) as z, tempfile.TemporaryDirectory() as tmp:
        for ours, inner in MODELS.items():
            path = Path(tmp) / Path(inner).name
            path.write_bytes(z.read(inner))
            spec, weights = convert(path.read_bytes(), str(path))
            spec["source"] = {"package": "mediapipe==0.10.21", "file": inner,
                              "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "licence": "Apache-2.0"}
            error = check(spec, weights, str(path))
            print(f"{ours}: {len(spec['ops'])} ops, {sum(v.size for v in weights.values())} weights, "
                  f"max relative difference to TFLite {error:.2e}")
            if error > 1e-3:
                raise SystemExit(f"{ours}: the converted graph differs from TFLite by {error:.2e}")
            (OUT / f"{ours}.json").write_text(json.dumps(spec, indent=1) + "\n")
            save_file(weights, str(OUT / f"{ours}.safetensors"), metadata={"source": inner})
            sums[ours] = spec["source"]["sha256"]
        licence = next(n for n in z.namelist() if n.endswith(".dist-info/LICENSE"))
        (OUT / "LICENSE").write_bytes(z.read(licence))
    (OUT / "NOTICE").write_text(
        "The networks in this folder are converted from MediaPipe (https://github.com/google-ai-edge/mediapipe),\n"
        "Copyright The MediaPipe Authors, licensed under the Apache License, Version 2.0 (LICENSE here).\n"
        "Taken from the mediapipe 0.10.21 wheel on PyPI and changed in form only: the TensorFlow Lite\n"
        "graphs were rewritten as vfxswap graph files (JSON op list + float16 safetensors weights) by\n"
        "tools/convert_mediapipe.py. Source files and their SHA-256:\n"
        + "".join(f"  {MODELS[k]}  {v}\n" for k, v in sums.items()))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(sys.argv[1])
