"""Model-size benchmark: parameters, FLOPs per sample and CPU training memory of the presets (the
sym presets against sae-256 and sae-512 by default). Figures, not timings: nothing here is a test.

Run:  python bench/models.py [--presets sym-256,sym-512,sym-1024,sae-256,sae-512]
                             [--memory sym-256:1,2,4 sym-512:1,2,4 sym-1024:1,2,4 sae-256:1] [--limit-gib 16]
                             [--steps 1] [--json out.json]

Size (no weights allocated: every model is built on the meta device):
  params        every parameter, both decoders included (count_params)
  fwd GFLOP     one sample through encoder, inter and ONE decoder (rgb + mask), as
                vfxswap.models.nets.flops_per_sample counts it; cross-checked against
                torch.utils.flop_counter.FlopCounterMode on the same forward
  train GFLOP   FlopCounterMode over forward + backward of that sample (a sum of both outputs as the
                loss: the losses themselves are left out), about 3x fwd; a training step runs two
                such samples per batch item, one per identity
  ratios        against sae-512 and sae-256

Memory (each case in a fresh subprocess, so one case's allocator state never hides another's):
the trainer's own step code (vfxswap.train.trainer.forward_losses + guarded_update: both
identities forward, reconstruction + mask losses, backward, clip, fused AdamW step), fp32 (bf16
off), on the CPU, with a synthetic batch per identity; --steps steps, with AdamW's moments and
the gradients allocated beforehand (a step on zero gradients), so the first step is already a
steady one, as a trainer's second step would be. The figure is the process's peak resident set size
(getrusage ru_maxrss: the high-water mark of real memory, which counts what torch's CPU allocator
takes from the system; tracemalloc would see none of it), with glibc's mmap threshold fixed
(MALLOC_MMAP_THRESHOLD_=131072: large blocks go back to the system when freed, so the peak is live
memory, not freed blocks the allocator kept), less the RSS after the imports: weights,
gradients, AdamW moments, the batch, activations and temporaries. `state` is the part that does
not depend on the batch: parameters x 16 bytes (weights, gradients and two AdamW moments, fp32).
A case whose estimate (from the smaller batches already measured) passes --limit-gib is skipped
and says so. On a GPU under bf16 autocast the network's activations take about half as much, but
the losses stay fp32 (at 1024 px they are about a third of the batch-1 peak: sym-1024 peaks at
1.7 GiB with a plain MSE instead of 2.6): these are a CPU fp32 upper bound for the same step.
`step s` is one step's wall time, for scale only (2 shared cores here).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from vfxswap.models import build_model
from vfxswap.models.config import PRESETS
from vfxswap.models.nets import count_params, flops_per_sample

DEFAULT_PRESETS = "sym-256,sym-512,sym-1024,sae-256,sae-512"
DEFAULT_MEMORY = ["sym-256:1,2,4", "sym-512:1,2,4", "sym-1024:1,2,4", "sae-256:1"]
GIB = 2**30


def _rss_peak() -> int:
    """This process's peak resident set size in bytes (Linux reports KiB)."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib * (1 if sys.platform == "darwin" else 1024)


def size(name: str) -> dict:
    config = PRESETS[name]
    with torch.device("meta"):
        model = build_model(config)
        x = torch.empty(1, 3, config.resolution, config.resolution)
    fwd = FlopCounterMode(display=False)
    with fwd:
        model(x, "B")
    train = FlopCounterMode(display=False)
    with train:
        rgb, mask = model(x, "B")
        (rgb.sum() + mask.sum()).backward()
    counted = flops_per_sample(config)
    return {"preset": name, "config": config.to_dict(), "params": count_params(model),
            "parts": {k: count_params(v) for k, v in model.parts.items()},
            "fwd_flops": counted, "fwd_flops_counter": fwd.get_total_flops(), "train_flops": train.get_total_flops()}


def _batch(n: int, r: int, seed: int) -> dict[str, torch.Tensor]:
    """Smooth random faces in 0..1, a soft elliptic mask, eyes and mouth weighted 3 (as bench/train.py)."""
    g = torch.Generator().manual_seed(seed)
    smooth = lambda: F.interpolate(torch.rand(n, 3, r // 8, r // 8, generator=g), size=(r, r), mode="bicubic",
                                   align_corners=False).clamp(0, 1)
    target = smooth()
    inp = (0.8 * target + 0.2 * smooth()).clamp(0, 1)
    y, x = torch.meshgrid(torch.linspace(-1, 1, r), torch.linspace(-1, 1, r), indexing="ij")
    mask = torch.sigmoid((0.8 - torch.hypot(x / 0.8, y / 0.95)) * 20).expand(n, 1, r, r).contiguous()
    weights = torch.ones(n, 1, r, r)
    weights[..., r * 35 // 100:r * 45 // 100, r // 4:3 * r // 4] = 3
    weights[..., r * 65 // 100:r * 78 // 100, 3 * r // 8:5 * r // 8] = 3
    return dict(input=inp, target=target, mask=mask, weights=weights)


def memory_case(name: str, batch: int, steps: int) -> dict:
    """One training case in this process (the child side of `measure`)."""
    from vfxswap.train.trainer import Pair, forward_losses, guarded_update

    base = _rss_peak()
    config = PRESETS[name]
    model = build_model(config, seed=0)
    params = list(model.parameters())
    opt = torch.optim.AdamW(params, lr=2e-4, betas=(0.5, 0.999), fused=True)
    # a steady step from the first: AdamW's moments exist (made by a step on zero gradients, which
    # moves nothing), and so do last step's gradients during the forward (the trainer frees them
    # only in guarded_update, after its forward)
    for p in params:
        p.grad = torch.zeros_like(p)
    opt.step()
    pair = Pair(model)
    a, b = _batch(batch, config.resolution, 1), _batch(batch, config.resolution, 2)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        loss_a, loss_b, _ = forward_losses(pair, a, b, False)
        guarded_update(opt, params, loss_a + loss_b, 1.0)
        times.append(time.perf_counter() - t0)
    peak = _rss_peak()
    return {"preset": name, "batch": batch, "rss_base": base, "rss_peak": peak, "train_peak": peak - base,
            "state": 16 * count_params(model), "step_s": times}


def measure(name: str, batch: int, steps: int) -> dict:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    out = subprocess.run([sys.executable, __file__, "--_case", f"{name}:{batch}", "--steps", str(steps)],
                         capture_output=True, text=True, env=env)
    if out.returncode != 0:
        return {"preset": name, "batch": batch, "error": (out.stderr.strip().splitlines() or ["?"])[-1],
                "returncode": out.returncode}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _estimate(done: list[dict], batch: int) -> float | None:
    """Linear in the batch from the two largest measured batches (one: proportional above the state)."""
    ok = sorted((r["batch"], r["train_peak"]) for r in done if "train_peak" in r)
    if not ok:
        return None
    if len(ok) == 1:
        (b0, m0), state = ok[0], done[0]["state"]
        return state + (m0 - state) * batch / b0
    (b0, m0), (b1, m1) = ok[-2:]
    return m1 + (m1 - m0) / (b1 - b0) * (batch - b1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", default=DEFAULT_PRESETS, help=f"from {', '.join(PRESETS)}")
    ap.add_argument("--memory", nargs="*", default=DEFAULT_MEMORY, help="PRESET:BATCH,BATCH ... (none: skip)")
    ap.add_argument("--limit-gib", type=float, default=16.0, help="skip a memory case estimated above this")
    ap.add_argument("--steps", type=int, default=1, help="training steps per memory case")
    ap.add_argument("--json", help="also write the results to this JSON file")
    ap.add_argument("--_case", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._case:
        name, batch = args._case.split(":")
        print(json.dumps(memory_case(name, int(batch), args.steps)))
        return

    t0 = time.perf_counter()
    sizes = [size(p) for p in args.presets.split(",")]
    ref = {r["preset"]: r for r in sizes}
    print(f"threads {torch.get_num_threads()}, torch {torch.__version__}\n")
    print(f"{'preset':10} {'config':14} {'params':>8} {'fwd GFLOP':>10} {'train GFLOP':>12}"
          + "".join(f" {'x ' + k + ' p/f':>16}" for k in ("sae-512", "sae-256") if k in ref))
    for r in sizes:
        c = r["config"]
        line = (f"{r['preset']:10} {c['arch'] + '-' + c['variants'] + ' ' + str(c['resolution']):14} "
                f"{r['params'] / 1e6:7.1f}M {r['fwd_flops'] / 1e9:10.1f} {r['train_flops'] / 1e9:12.1f}")
        for k in ("sae-512", "sae-256"):
            if k in ref:
                line += f" {r['params'] / ref[k]['params']:7.2f}/{r['fwd_flops'] / ref[k]['fwd_flops']:<8.2f}"
        print(line)
        if r["fwd_flops"] != r["fwd_flops_counter"]:
            print(f"  ! flops_per_sample {r['fwd_flops']} != FlopCounterMode {r['fwd_flops_counter']}")

    memory = []
    if args.memory:
        print(f"\nCPU training step, fp32, both identities, fused AdamW; peak RSS over the post-import "
              f"baseline (ru_maxrss), steps: {args.steps}")
        print(f"{'preset':10} {'batch':>5} {'state GiB':>10} {'peak GiB':>9} {'step s':>8}")
    for spec in args.memory or []:
        name, _, batches = spec.partition(":")
        done: list[dict] = []
        for batch in (int(b) for b in batches.split(",")):
            guess = _estimate(done, batch)
            if guess is not None and guess > args.limit_gib * GIB:
                r = {"preset": name, "batch": batch, "skipped": f"estimated {guess / GIB:.1f} GiB"}
                print(f"{name:10} {batch:5} {'':>10} {'skipped':>9}  (estimated {guess / GIB:.1f} GiB > "
                      f"{args.limit_gib:g})")
            else:
                r = measure(name, batch, args.steps)
                if "error" in r:
                    print(f"{name:10} {batch:5} failed: {r['error']}")
                else:
                    print(f"{name:10} {batch:5} {r['state'] / GIB:10.2f} {r['train_peak'] / GIB:9.2f} "
                          f"{r['step_s'][-1]:8.1f}")
            done.append(r)
            memory.append(r)
    print(f"\n{time.perf_counter() - t0:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"threads": torch.get_num_threads(), "torch": torch.__version__,
                                               "cpu_count": os.cpu_count(), "sizes": sizes, "memory": memory},
                                              indent=2))


if __name__ == "__main__":
    main()
