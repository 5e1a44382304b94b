"""Training-step benchmark: samples/s per preset, the trainer's fast path against plain fp32 eager, in one process.

Run:  python bench/train.py [--presets quick,sae-256] [--arch df|liae] [--batch 8] [--steps 10] [--warmup 2]
                            [--compile] [--batches 8,16,32] [--peak-tflops 989] [--json out.json]

No facesets: each step gets the same synthetic batch (smooth random images in 0..1, soft elliptic
masks, a priority map of 3 over eyes and mouth, 1 elsewhere) made once on the device, so this
measures the model step, not decoding or augmentation. A step is the trainer's own step code
(vfxswap.train.trainer.forward_losses + guarded_update): Pair (both identities forward),
reconstruction_loss + mask_loss for A and B, zero_grad, backward, grad-norm clip 1.0, AdamW
(betas 0.5, 0.999) with the non-finite skip (on the device when fused; an unfused AdamW must read
the verdict back first, as plain PyTorch code would).
Variants, each with its own model (same seed) and optimiser, steps interleaved round-robin with
a rotating order so drift cancels out:
  fp32 eager   baseline: fp32, contiguous tensors, no autocast, AdamW not fused (on CUDA, cuDNN's
               default TF32 convolutions apply, as in any plain PyTorch run)
  CUDA         bf16 autocast + channels_last + fused AdamW + cudnn.benchmark (what the trainer does
               there; the flag is set before each variant's step, so the baseline runs without it),
               and with --compile the same under torch.compile
  CPU          bf16 autocast + fused AdamW (what the trainer does by default on CPUs with bf16 in
               hardware, AMX or AVX512-BF16; elsewhere it stays fp32), and the same + channels_last
               (which the trainer does not use on CPU: the row says whether it would pay).
Figures: median step time over --steps after --warmup untimed steps; samples/s = 2 * batch / step
(two identities a step); speed-up = baseline step / variant step. TFLOP/s = flops_per_sample * 3
(forward + backward) * 2 * batch / step (convs and dense layers only; LIAE's A path is counted with
inter_B, ~2% high); % of the GPU's dense bf16 peak (by device name, or --peak-tflops). On CUDA the
last variant is also swept over --batches, fresh model each, stopping at the first OOM: peak memory
is torch.cuda.max_memory_allocated (weights, AdamW state, activations). Target: >= 40% of peak for
sae-256 at a batch whose peak fits in 12 GiB. Timings are noisy; ratios are the result. Exits 0
whatever the result; it is a report.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from vfxswap.models import ARCHITECTURES, build_model
from vfxswap.models.config import PRESETS
from vfxswap.models.nets import FaceModel, count_params, flops_per_sample
from vfxswap.train.trainer import Pair, forward_losses, guarded_update

TARGET, BUDGET = 0.40, 12 * 2**30
PEAKS = [(("H100", "PCIe"), 756), (("H100", "HBM3"), 989), (("H100", "SXM"), 989), (("H200",), 989),
         (("A100",), 312), (("L40S",), 362), (("4090",), 165)]  # dense bf16 TFLOP/s
now = time.perf_counter


def meta_model(config) -> FaceModel:
    with torch.device("meta"):  # shapes only: nothing allocated, nothing initialised
        return build_model(config)


def synthetic(n: int, r: int, device: torch.device, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    smooth = lambda: F.interpolate(torch.rand(n, 3, r // 8, r // 8, generator=g), size=(r, r), mode="bicubic",
                                   align_corners=False).clamp(0, 1)
    target = smooth()
    inp = (0.8 * target + 0.2 * smooth()).clamp(0, 1)
    y, x = torch.meshgrid(torch.linspace(-1, 1, r), torch.linspace(-1, 1, r), indexing="ij")
    c = (torch.rand(n, 2, 1, 1, generator=g) - 0.5) * 0.2
    mask = torch.sigmoid((0.8 - torch.hypot((x - c[:, :1]) / 0.8, (y - c[:, 1:]) / 0.95)) * 20)
    weights = torch.ones(n, 1, r, r)
    weights[..., r * 35 // 100:r * 45 // 100, r // 4:3 * r // 4] = 3  # eyes
    weights[..., r * 65 // 100:r * 78 // 100, 3 * r // 8:5 * r // 8] = 3  # mouth
    return {k: v.to(device) for k, v in dict(input=inp, target=target, mask=mask, weights=weights).items()}


class Runner:
    """One variant: its own model, optimiser and copy of the batches; `step()` -> seconds."""

    def __init__(self, config, device, batches, *, bf16=False, cl=False, fused=False, compile=False,
                 benchmark=False):
        self.device, self.bf16, self.benchmark, self.skipped = device, bf16, benchmark, 0
        self.model = build_model(config, seed=0).to(device)
        fmt = torch.channels_last if cl else torch.contiguous_format
        self.model.to(memory_format=fmt)
        self.params = list(self.model.parameters())
        self.opt = torch.optim.AdamW(self.params, lr=5e-5, betas=(0.5, 0.999), fused=fused)
        self.fn = torch.compile(Pair(self.model)) if compile else Pair(self.model)
        self.a, self.b = ({k: v.contiguous(memory_format=fmt) if v.shape[1] == 3 else v for k, v in d.items()}
                          for d in batches)

    def step(self) -> float:
        a, b, cuda = self.a, self.b, self.device.type == "cuda"
        torch.backends.cudnn.benchmark = self.benchmark
        if cuda:
            torch.cuda.synchronize()
        t0 = now()
        loss_a, loss_b, _ = forward_losses(self.fn, a, b, self.bf16)
        _, bad = guarded_update(self.opt, self.params, loss_a + loss_b, 1.0)
        self.skipped += int(bad.item())  # after the step: the trainer reads it a step later
        if cuda:
            torch.cuda.synchronize()
        return now() - t0


def variants(device: torch.device, compile: bool) -> dict[str, dict]:
    out = {"fp32 eager": {}}
    if device.type == "cuda":
        out["bf16 cl fused"] = dict(bf16=True, cl=True, fused=True, benchmark=True)
    else:
        out["bf16 fused"] = dict(bf16=True, fused=True)
        out["bf16 cl fused"] = dict(bf16=True, cl=True, fused=True)
    if compile:
        out[list(out)[-1] + " compiled"] = dict(list(out.values())[-1], compile=True)
    return out


def time_runners(runners: dict[str, Runner], steps: int, warmup: int) -> dict[str, float]:
    for r in runners.values():
        for _ in range(warmup):
            r.step()
    times = {k: [] for k in runners}
    names = list(runners)
    for i in range(steps):
        for k in names[i % len(names):] + names[:i % len(names)]:
            times[k].append(runners[k].step())
    return {k: statistics.median(v) for k, v in times.items()}


def sweep(config, device, variant, args, peak) -> list[dict]:
    """The fast path alone at each --batches size (fresh model each): step time, TFLOP/s, peak memory."""
    name, kw = variant
    print(f"\n{name} by batch size (fresh model each)\n{'batch':>5} {'ms/step':>9} {'samples/s':>10} "
          f"{'TFLOP/s':>8} {'% peak':>7} {'peak alloc':>11} {'reserved':>9}")
    out = []
    for n in [int(s) for s in args.batches.split(",") if s.strip()]:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        try:
            r = Runner(config, device, [synthetic(n, config.resolution, device, s) for s in (1, 2)], **kw)
            t = time_runners({name: r}, args.steps, args.warmup)[name]
        except torch.cuda.OutOfMemoryError:
            print(f"{n:5d}  out of memory; sweep stopped")
            out.append({"batch": n, "oom": True})
            break
        finally:
            r = None
        mem, rsv = torch.cuda.max_memory_allocated(device), torch.cuda.max_memory_reserved(device)
        tf = flops_per_sample(config) * 3 * 2 * n / t / 1e12
        print(f"{n:5d} {t * 1e3:9.1f} {2 * n / t:10.2f} {tf:8.1f} " + (f"{tf / peak:7.1%}" if peak else f"{'-':>7}")
              + f" {mem / 2**30:7.2f} GiB {rsv / 2**30:5.2f} GiB")
        out.append({"batch": n, "step_s": t, "tflops": tf, "peak_alloc": mem, "reserved": rsv})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cuda = torch.cuda.is_available()
    ap.add_argument("--presets", default="quick,sae-256" if cuda else "quick", help=f"from {', '.join(PRESETS)}")
    ap.add_argument("--arch", choices=ARCHITECTURES.names(), default="df")
    ap.add_argument("--device", default="cuda" if cuda else "cpu")
    ap.add_argument("--batch", type=int, default=16 if cuda else 8, help="per identity (default 16 CUDA, 8 CPU)")
    ap.add_argument("--steps", type=int, default=30 if cuda else 10, help="timed steps per variant")
    ap.add_argument("--warmup", type=int, default=3 if cuda else 2, help="untimed steps per variant first")
    ap.add_argument("--compile", action="store_true", help="also time the fast path under torch.compile")
    ap.add_argument("--batches", default="8,16,32", help="CUDA memory/throughput sweep (per identity)")
    ap.add_argument("--peak-tflops", type=float, help="dense bf16 peak of this device, if not in the table")
    ap.add_argument("--json", help="also write the results to this JSON file")
    args = ap.parse_args()
    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    if not presets or [p for p in presets if p not in PRESETS] or min(args.batch, args.steps) < 1:
        ap.error(f"--presets takes {', '.join(PRESETS)}; --batch and --steps must be >= 1")
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    peak = args.peak_tflops or next((p for keys, p in PEAKS if all(k in name for k in keys)), None)
    print(f"device {name} ({torch.get_num_threads()} threads), torch {torch.__version__}, dense bf16 peak "
          f"{f'{peak:g} TFLOP/s' if peak else 'unknown (--peak-tflops)'}; batch {args.batch} per identity; "
          f"median of {args.steps} steps after {args.warmup} warm-up", flush=True)
    results, summary = [], []
    for preset in presets:
        config = copy.deepcopy(PRESETS[preset])
        config.arch = args.arch
        fps = flops_per_sample(config)
        print(f"\n{preset} ({config.name}): {count_params(meta_model(config)) / 1e6:.1f}M params, "
              f"{fps / 1e9:.1f} GFLOP/sample forward; timing ...", flush=True)
        try:
            batches = [synthetic(args.batch, config.resolution, device, s) for s in (1, 2)]
            runners = {k: Runner(config, device, batches, **kw) for k, kw in variants(device, args.compile).items()}
            med = time_runners(runners, args.steps, args.warmup)
            bad = {k: r.skipped for k, r in runners.items() if r.skipped}
        except torch.cuda.OutOfMemoryError:
            print(f"out of memory with all variants resident at batch {args.batch}; try a smaller --batch")
            summary.append(f"{preset} OOM at batch {args.batch}")
            continue
        finally:
            batches = runners = None
        if bad:
            print(f"WARNING: non-finite loss, steps without backward (times too short): {bad}")
        tflops = lambda b, t: fps * 3 * 2 * b / t / 1e12
        print(f"{'variant':22} {'ms/step':>9} {'samples/s':>10} {'speed-up':>9} {'TFLOP/s':>8} {'% peak':>7}")
        for k, t in med.items():
            tf = tflops(args.batch, t)
            print(f"{k:22} {t * 1e3:9.1f} {2 * args.batch / t:10.2f} {med['fp32 eager'] / t:8.2f}x {tf:8.3f} "
                  + (f"{tf / peak:7.1%}" if peak else f"{'-':>7}"))
        best = min(med, key=med.get)
        res = {"preset": preset, "config": config.to_dict(), "flops_per_sample": fps, "batch": args.batch,
               "median_s": med, "best": best, "speedup": med["fp32 eager"] / med[best], "sweep": []}
        summary.append(f"{preset} {best} {res['speedup']:.2f}x")
        if device.type == "cuda":
            res["sweep"] = sweep(config, device, list(variants(device, args.compile).items())[-1], args, peak)
            fits = [r for r in res["sweep"] if "oom" not in r and r["peak_alloc"] <= BUDGET]
            if preset == "sae-256" and peak:
                top = max(fits, key=lambda r: r["tflops"], default=None)
                frac = top["tflops"] / peak if top else 0.0
                where = f"{frac:.1%} of peak at batch {top['batch']}" if top else "no batch fits 12 GiB"
                summary.append(f"sae-256 {where} {'PASS' if frac >= TARGET else 'FAIL'} (>= {TARGET:.0%}, <= 12 GiB)")
        results.append(res)
    print(f"\nSUMMARY: {args.arch}, {name}, speed-up of the fastest variant over fp32 eager: " + "; ".join(summary))
    if args.json:
        Path(args.json).write_text(json.dumps({"device": name, "peak_tflops": peak, "results": results}, indent=2))


if __name__ == "__main__":
    main()
