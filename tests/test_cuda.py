"""CUDA smoke tests of the trainer's fast path: bf16 autocast, channels_last, fused AdamW, pinned
batches, torch.compile, save/resume on the GPU, and the saved model used on CPU and for rendering.

Why a file of its own: CI has no GPU, so these skip there; a GPU session runs them in one go
(bench/gpu_session.sh). VFXSWAP_TEST_DEVICE=cpu runs the same tests on CPU to check their logic
without a GPU: each fast-path assertion then checks what the trainer does on CPU instead (no
pinning, no channels_last; bf16 only where the CPU has it in hardware; fused AdamW on both), and
runs are shortened.
"""

from __future__ import annotations

import json
import math
import os
import shutil

import numpy as np
import pytest
import torch

from conftest import write_faceset
from vfxswap.models.device import bf16_by_default
from vfxswap.models.store import load_model
from vfxswap.train.data import FaceSamples
from vfxswap.jobspec import TrainOptions
from vfxswap.train.trainer import Trainer

DEVICE = os.environ.get("VFXSWAP_TEST_DEVICE", "cuda")
CUDA = DEVICE.startswith("cuda")
pytestmark = pytest.mark.skipif(CUDA and not torch.cuda.is_available(),
                                reason="no CUDA device (VFXSWAP_TEST_DEVICE=cpu checks these tests on CPU)")

REF = {"A": "REL-2026-0042 (test)", "B": "REL-2026-0043 (test)"}
REFS = {"release_ref_src": REF["A"], "release_ref_dst": REF["B"]}  # as TrainOptions takes them
SIZE = 96  # the quick preset's resolution: faces are used unresized
# A CPU step of the quick model takes seconds; there the run is cut to what still shows the loss falling.
ITERS, BATCH, LOG_EVERY = (60, 8, 5) if CUDA else (16, 4, 2)
RESUME_ITERS = 10 if CUDA else 4
COMPILE_ITERS = 6 if CUDA else 2
CL = torch.channels_last
BF16 = bf16_by_default(torch.device(DEVICE))  # CUDA; on CPU only where bf16 is in hardware


def _options(a, b, model, **kw) -> TrainOptions:
    base = dict(src=str(a), dst=str(b), model_dir=str(model), **REFS, preset="quick", device=DEVICE,
                workers=2, iters=ITERS, batch=BATCH, lr=3e-4, warmup=10 if CUDA else 4, log_every=LOG_EVERY,
                preview_every=1000, save_every=1000, quiet=True)
    base.update(kw)
    return TrainOptions(**base)


def _close(trainer: Trainer) -> None:
    """Stop the loaders of a trainer whose run() did not (a failed or never-started run): no worker
    processes left for garbage collection."""
    for loader in trainer.data.values():
        loader.close()


def _history(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / "history.jsonl").read_text(encoding="utf-8").splitlines()]


def _layouts_differ(p: torch.Tensor) -> bool:
    """A 4-D weight whose NCHW and channels_last strides differ (not 1x1, more than one input channel):
    only for these does "is channels_last" say anything."""
    return p.dim() == 4 and p.shape[1] > 1 and p.shape[2] * p.shape[3] > 1


@pytest.fixture(scope="module")
def facesets(tmp_path_factory):
    root = tmp_path_factory.mktemp("cuda_faces")
    yaws = [float(y) for y in np.linspace(-30, 30, 24)]
    return (write_faceset(root / "A", yaws=yaws, size=SIZE, seed=1),
            write_faceset(root / "B", yaws=yaws, size=SIZE, seed=2))


@pytest.fixture(scope="module")
def trained(facesets, tmp_path_factory):
    """One real run, watched from the inside: what the first training step's forward and its batch
    looked like (hooks on an encoder conv, a decoder conv and the model; a spy on the device copy)."""
    a, b = facesets
    folder = tmp_path_factory.mktemp("cuda_model") / "m"
    trainer = Trainer(_options(a, b, folder))
    seen: dict = {}
    model = trainer.model

    def watch(name):
        def hook(module, args, out):
            if name not in seen:  # the first forward is the first training step (previews come later)
                outs = out if isinstance(out, tuple) else (out,)
                seen[name] = {"dtypes": [t.dtype for t in outs], "channels_last": outs[0].is_contiguous(memory_format=CL),
                              "autocast": torch.is_autocast_enabled(trainer.device.type)}
        return hook

    hooks = [model.encoder.downs[0].register_forward_hook(watch("encoder_conv")),
             model.decoder_A.rgb.register_forward_hook(watch("decoder_conv")),
             model.register_forward_hook(watch("model"))]
    real_to = trainer._to

    def spy(batch):
        moved = real_to(batch)
        if "batch" not in seen:
            seen["batch"] = {"pinned": batch["input"].is_pinned(), "device": moved["input"].device.type,
                             "channels_last": moved["input"].is_contiguous(memory_format=CL)}
        return moved

    trainer._to = spy
    try:
        reached = trainer.run()
    finally:
        for h in hooks:
            h.remove()
        _close(trainer)
    yield {"trainer": trainer, "seen": seen, "reached": reached, "folder": folder, "faces": facesets}


def test_trainer_takes_the_fast_path_on_the_device(trained):
    trainer, seen = trained["trainer"], trained["seen"]
    assert trainer.device.type == DEVICE.split(":")[0]
    assert {p.device.type for p in trainer.model.parameters()} == {trainer.device.type}
    assert trainer.bf16 is BF16
    convs = [p for p in trainer.model.parameters() if p.dim() == 4]
    assert convs
    if CUDA:
        assert all(p.is_contiguous(memory_format=CL) for p in convs)
    else:  # the CPU trainer keeps the default layout
        assert all(p.is_contiguous() and not p.is_contiguous(memory_format=CL) for p in convs if _layouts_differ(p))
    assert trainer.optimizer.defaults["fused"] is True
    assert seen["batch"] == {"pinned": CUDA, "device": trainer.device.type, "channels_last": CUDA}
    compute = torch.bfloat16 if BF16 else torch.float32
    for name in ("encoder_conv", "decoder_conv"):  # convs at both ends really run in bf16 under autocast
        assert seen[name]["autocast"] is BF16
        assert seen[name]["dtypes"] == [compute], name
        assert seen[name]["channels_last"] is CUDA, name
    assert seen["model"]["dtypes"] == [torch.float32, torch.float32]  # rgb and mask come back in fp32


def test_short_run_has_finite_falling_losses(trained):
    assert trained["reached"] == ITERS
    history = _history(trained["folder"])
    assert not [r for r in history if "event" in r]  # no roll-back
    logged = [r for r in history if "loss" in r]
    assert [r["iter"] for r in logged] == list(range(LOG_EVERY, ITERS + 1, LOG_EVERY))
    losses = [r["loss"] for r in logged]
    assert all(math.isfinite(x) for x in losses) and all(math.isfinite(r["grad_norm"]) for r in logged)
    first, last = np.mean(losses[:3]), np.mean(losses[-3:])
    print(f"{DEVICE}: loss {first:.4f} (first 3 logs) -> {last:.4f} (last 3) over {ITERS} its, "
          f"{logged[-1]['samples_per_s']:.1f} samples/s")
    assert last < 0.8 * first
    assert logged[-1]["samples_per_s"] > 0


def test_a_step_queues_its_work_without_waiting_for_the_device(facesets, tmp_path, monkeypatch):
    """Between its checkpoints the loop never waits for the device: a step, from the batch's copy
    to the update (and its non-finite skip), reads nothing back. On CUDA, torch's sync debug mode
    turns any synchronising call into an error; on any device, the ways Python code reads a tensor
    (item, tolist, bool, float, int) are refused while the steps are queued."""
    a, b = facesets
    trainer = Trainer(_options(a, b, tmp_path / "m"))
    try:
        raw = [(next(trainer.data["A"]), next(trainer.data["B"])) for _ in range(4)]
        first = trainer.step(trainer._to(raw[0][0]), trainer._to(raw[0][1]))  # lazy set-up may wait (cudnn timing)
        assert first.read()["bad"] is False

        def refuse(*args, **kwargs):
            raise AssertionError("a training step read a value back from the device")

        with monkeypatch.context() as m:
            for name in ("item", "tolist", "__bool__", "__float__", "__int__"):
                m.setattr(torch.Tensor, name, refuse)
            if CUDA:
                torch.cuda.set_sync_debug_mode("error")
            try:
                queued = [trainer.step(trainer._to(x), trainer._to(y)) for x, y in raw[1:]]
            finally:
                if CUDA:
                    torch.cuda.set_sync_debug_mode("default")
        stats = [q.read() for q in queued]
        assert [q.iteration for q in queued] == [1, 1, 1]  # step() does not count; the loop does
        assert all(s["bad"] is False and math.isfinite(s["loss"]) and s["grad_norm"] > 0 for s in stats)
    finally:
        _close(trainer)


def test_save_then_resume_on_the_device_continues_the_same_run(trained, tmp_path):
    first = trained["trainer"]
    folder = tmp_path / "m"
    shutil.copytree(trained["folder"], folder)  # the other tests keep the original
    saved, manifest = load_model(folder, device="cpu")
    assert manifest["iteration"] == ITERS
    assert manifest["train"]["device"].startswith(DEVICE.split(":")[0]) and manifest["train"]["bf16"] is BF16
    a, b = trained["faces"]
    trainer = Trainer(_options(a, b, folder, resume=True, iters=ITERS + RESUME_ITERS))
    try:
        assert trainer.iteration == ITERS
        loaded = trainer.model.state_dict()
        for k, v in saved.state_dict().items():
            assert torch.equal(loaded[k].cpu(), v), k
        for p_saved, p in zip(first.model.parameters(), trainer.model.parameters()):
            before, after = first.optimizer.state[p_saved], trainer.optimizer.state[p]
            assert float(after["step"]) == ITERS
            for key in ("exp_avg", "exp_avg_sq"):
                assert after[key].device == p.device and torch.equal(after[key].cpu(), before[key].cpu()), key
                # the fused CUDA AdamW refuses (and a fused CPU one silently mixes up elements of)
                # moments whose strides differ from their parameter's
                assert after[key].stride() == p.stride(), (
                    f"{key} of a {tuple(p.shape)} parameter restored with strides {after[key].stride()}, "
                    f"the parameter has {p.stride()} (saved contiguous, parameter channels_last?)")
        assert trainer.run() == ITERS + RESUME_ITERS
    finally:
        _close(trainer)
    logged = [r for r in _history(folder) if "loss" in r]
    assert [r["iter"] for r in logged] == list(range(LOG_EVERY, ITERS + RESUME_ITERS + 1, LOG_EVERY))
    resumed = [r["loss"] for r in logged if r["iter"] > ITERS]
    assert all(math.isfinite(x) for x in resumed)
    assert np.mean(resumed) < np.mean([r["loss"] for r in logged[:3]])  # continued training, not a restart
    assert load_model(folder)[1]["iteration"] == ITERS + RESUME_ITERS


def test_compiled_step_trains_and_agrees_with_eager(facesets, tmp_path):
    """torch.compile on the Pair: the same weights give the eager outputs within bf16 rounding, then
    it trains. Tolerance: inductor keeps fused intermediates in fp32, so compiled bf16 sits between
    eager bf16 and fp32; for the untrained quick model those two differ by 0.05 max, 2e-3 mean
    (measured on CPU autocast). Allowed: 0.15 max, 0.01 mean on the 0..1 sigmoid outputs; other
    weights or a scrambled layout differ by ~0.4 mean."""
    a, b = facesets
    folder = tmp_path / "m"
    trainer = Trainer(_options(a, b, folder, compile=True, iters=COMPILE_ITERS, log_every=1))
    try:
        assert trainer.step_fn is not trainer.pair and getattr(trainer.step_fn, "_orig_mod", None) is trainer.pair
        xa = trainer._to(next(trainer.data["A"]))["input"]
        xb = trainer._to(next(trainer.data["B"]))["input"]
        # grad mode as in training, so the graph compiled here is the one the run reuses
        with torch.autocast(trainer.device.type, dtype=torch.bfloat16, enabled=trainer.bf16):
            eager = [t.detach().float() for pair in trainer.pair(xa, xb) for t in pair]
            compiled = [t.detach().float() for pair in trainer.step_fn(xa, xb) for t in pair]
        for e, c in zip(eager, compiled):
            assert c.dtype == torch.float32 and c.shape == e.shape
            diff = (c - e).abs()
            print(f"{DEVICE}: compiled vs eager first step: max {diff.max().item():.2e}, mean {diff.mean().item():.2e}")
            assert diff.max().item() < 0.15 and diff.mean().item() < 0.01
        assert trainer.run() == COMPILE_ITERS
    finally:
        _close(trainer)
    losses = [r["loss"] for r in _history(folder) if "loss" in r]
    assert len(losses) == COMPILE_ITERS and all(math.isfinite(x) for x in losses)
    assert load_model(folder)[1]["train"]["compile"] is True


def _dst_faces(trained, n: int = 8) -> torch.Tensor:
    ds = FaceSamples(trained["faces"][1], SIZE, augment=False, warp=False, flip=False)
    return torch.stack([ds[i]["target"] for i in range(n)])


# CUDA runs these fp32 models with TF32 convolutions (cuDNN's default; dense layers stay fp32)
# against plain fp32 on CPU. Emulating TF32's 10-bit mantissa on the conv operands on CPU moves
# the trained quick model's swap by ~2e-4 max, 4e-5 mean; cuDNN's choice of algorithm (Winograd,
# FFT) adds its own rounding. Allowed: 1e-2 max, 1e-3 mean on the 0..1 sigmoid outputs, well
# under what another decoder or other weights give (~0.4 mean).
SWAP_MAX, SWAP_MEAN = 1e-2, 1e-3


def test_saved_model_loads_on_cpu_and_swaps_like_the_device(trained):
    folder = trained["folder"]
    cpu_model, _ = load_model(folder, device="cpu")
    dev_model, _ = load_model(folder, device=DEVICE)
    assert {p.device.type for p in cpu_model.parameters()} == {"cpu"}
    assert {p.device.type for p in dev_model.parameters()} == {DEVICE.split(":")[0]}
    x = _dst_faces(trained)
    with torch.no_grad():
        cpu_rgb, cpu_mask = cpu_model.eval().swap(x, "A")
        dev_rgb, dev_mask = (t.cpu() for t in dev_model.eval().swap(x.to(DEVICE), "A"))
        own_rgb, _ = cpu_model(x, "B")  # B decoded as B: what a mix-up of decoders would give
    for name, c, d in (("rgb", cpu_rgb, dev_rgb), ("mask", cpu_mask, dev_mask)):
        assert d.dtype == torch.float32 and d.shape == c.shape
        diff = (d - c).abs()
        print(f"{DEVICE} vs cpu swap {name}: max {diff.max().item():.2e}, mean {diff.mean().item():.2e}")
        assert diff.max().item() < SWAP_MAX and diff.mean().item() < SWAP_MEAN, name
    assert (own_rgb - cpu_rgb).abs().mean().item() > 5 * SWAP_MEAN  # the tolerance tells decoders apart


def test_render_predictor_on_the_device(trained):
    from vfxswap.render.render import ModelPredictor

    predictor = ModelPredictor(str(trained["folder"]), device=DEVICE)
    assert {p.device.type for p in predictor.model.parameters()} == {DEVICE.split(":")[0]}
    assert predictor.resolution == SIZE and predictor.provenance["iteration"] == ITERS
    x = _dst_faces(trained, 5)
    faces = np.ascontiguousarray(x.permute(0, 2, 3, 1).numpy())
    rgb, mask = predictor(faces)
    assert isinstance(rgb, np.ndarray) and isinstance(mask, np.ndarray)
    assert rgb.dtype == np.float32 and mask.dtype == np.float32
    assert rgb.shape == (5, SIZE, SIZE, 3) and mask.shape == (5, SIZE, SIZE)
    assert np.isfinite(rgb).all() and ((mask >= 0) & (mask <= 1)).all()
    cpu_model, _ = load_model(trained["folder"], device="cpu")
    with torch.no_grad():
        want = cpu_model.eval().swap(x, "A")[0].permute(0, 2, 3, 1).numpy()
    assert np.abs(rgb - want).max() < SWAP_MAX and np.abs(rgb - want).mean() < SWAP_MEAN


def test_upscales_keep_channels_last():
    """CUDA has no pixel_shuffle kernel of its own, and the generic one returns NCHW: every conv
    after an upscale then transposed its input back (forward and backward). The model's
    upscales hand channels_last on, the double-resolution variant's last shuffle too."""
    from vfxswap.models import build_model
    from vfxswap.models.config import ModelConfig
    from vfxswap.models.nets import Upscale

    model = build_model(ModelConfig("df", 64, ae_dims=32, e_dims=8, d_dims=8, d_mask_dims=8, variants="d"), seed=0)
    model = model.to(DEVICE).to(memory_format=CL)
    seen = []
    for module in model.modules():
        if isinstance(module, Upscale):
            module.register_forward_hook(lambda m, i, out: seen.append(out.is_contiguous(memory_format=CL)))
    x = torch.rand(2, 3, 64, 64, device=DEVICE).contiguous(memory_format=CL)
    with torch.autocast(torch.device(DEVICE).type, dtype=torch.bfloat16, enabled=BF16):
        rgb, _ = model(x, "A")
    assert seen and all(seen)
    assert rgb.shape == (2, 3, 64, 64)


def test_the_mesh_face_backend_runs_on_the_device_as_on_cpu():
    """MediaPipe's networks (graphnet) on the device: the same faces and points as on CPU, batched."""
    import skimage.data

    from vfxswap.faces.mesh_backend import MeshDetector, MeshLandmarker

    image = skimage.data.astronaut()
    cpu_found, dev_found = MeshDetector("cpu").detect_raw(image, 1), MeshDetector(DEVICE).detect_raw(image, 1)
    assert len(cpu_found) == len(dev_found) >= 1
    for (box, keypoints, score), (dbox, dkeypoints, dscore) in zip(cpu_found, dev_found):
        assert np.abs(box - dbox).max() < 0.5 and np.abs(keypoints - dkeypoints).max() < 0.5 and abs(score - dscore) < 1e-3
    box = cpu_found[0][0]
    boxes = [box, box + np.array([3, 2, 3, 2], np.float32)]
    cpu, dev = MeshLandmarker("cpu").measure(image, boxes), MeshLandmarker(DEVICE).measure(image, boxes)
    for (p, d, s), (dp, dd, ds) in zip(cpu, dev):
        assert np.abs(p - dp).max() < 0.1 and np.abs(d - dd).max() < 0.1 and abs(s - ds) < 1e-3
