"""Data-loader benchmark: can the training loader keep a model step fed?

Run:  python bench/loader.py [--size 256] [--resolutions 96,256] [--faces 48] [--batch 16]
                             [--workers 0,1,2] [--seconds 3] [--need 2000]

Builds a synthetic faceset (conftest's builder: textured HDR faces with landmark hull masks,
--size pixels, --faces faces) in a temp folder. Then, per model resolution R:
  plain       the cached face to tensors, no augmentation, no warp (the floor: decode once, copy)
  augmented   what training draws: random warp, affine, flip, colour jitter, priority map
both in this process on one thread (cv2 and torch limited to one, as in a loader worker), on warm
caches, interleaved, median over rounds: ms per sample and the ratio augmented / plain. Then the real loader (`make_loader`, spawned workers, one identity) for each
--workers count: batches of --batch, samples/s over --seconds after a warm-up batch per worker.
Training draws A and B, so two such loaders run; a model step of `s` samples/s (bench/train.py
counts both identities) needs `s / 2` from each. --need prints how many workers per identity that
takes at the measured per-worker rate. The trainer's default (data.default_workers) is shown for
this machine. Exits 0 whatever the result; it is a report.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

now = time.perf_counter


def per_sample(ds, seconds: float) -> float:
    """Seconds per sample of `ds`, drawing fresh keys (the cache is warmed first)."""
    for i in range(len(ds)):
        ds[(0, 0, i, i)]
    n, t0 = 0, now()
    while now() - t0 < seconds:
        ds[(0, 1, n, n % len(ds))]
        n += 1
    return (now() - t0) / n


def loader_rate(ds, batch: int, workers: int, seconds: float) -> float:
    """Samples/s of one identity's loader with `workers` spawned processes."""
    from vfxswap.train.data import make_loader

    with make_loader(ds, batch, workers=workers, seed=1) as batches:
        for _ in range(max(1, workers)):  # every worker started and warm
            next(batches)
        n, t0 = 0, now()
        while now() - t0 < seconds:
            n += next(batches)["input"].shape[0]
        return n / (now() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=256, help="faceset face size in pixels")
    ap.add_argument("--resolutions", default="96,256", help="model resolutions R to sample at")
    ap.add_argument("--faces", type=int, default=48)
    ap.add_argument("--batch", type=int, default=16, help="per identity")
    ap.add_argument("--workers", default="0,1,2", help="loader worker counts to time")
    ap.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved single-process rounds")
    ap.add_argument("--need", type=float, default=2000.0,
                    help="model-step samples/s (both identities) to feed, e.g. bench/train.py's figure")
    args = ap.parse_args()

    import cv2
    import torch
    from conftest import write_faceset

    cv2.setNumThreads(1)  # one core, as each loader worker has (data._worker_init)
    torch.set_num_threads(1)

    from vfxswap.train.data import FaceSamples, default_workers

    with tempfile.TemporaryDirectory() as tmp:
        folder = write_faceset(Path(tmp) / "faceset", yaws=[float(i % 60 - 30) for i in range(args.faces)],
                               size=args.size)
        print(f"faceset: {args.faces} synthetic faces of {args.size} px; default workers per identity here: "
              f"{default_workers()}", flush=True)
        summary = []
        for r in [int(v) for v in args.resolutions.split(",") if v.strip()]:
            sets = {"plain": FaceSamples(folder, r, augment=False, warp=False),
                    "augmented": FaceSamples(folder, r)}
            times = {k: [] for k in sets}
            for i in range(args.rounds):
                for k in (list(sets) if i % 2 == 0 else list(sets)[::-1]):
                    times[k].append(per_sample(sets[k], args.seconds / args.rounds))
            med = {k: statistics.median(v) for k, v in times.items()}
            print(f"\nR {r}: plain {med['plain'] * 1e3:.2f} ms/sample, augmented {med['augmented'] * 1e3:.2f} "
                  f"ms/sample ({med['augmented'] / med['plain']:.1f}x plain); one core: "
                  f"{1 / med['augmented']:.0f} samples/s")
            print(f"{'workers':>7} {'samples/s':>10} {'per worker':>11}")
            best = 0.0
            for w in [int(v) for v in args.workers.split(",") if v.strip()]:
                rate = loader_rate(sets["augmented"], args.batch, w, args.seconds)
                each = rate / max(1, w)
                best = max(best, each)
                print(f"{w:7d} {rate:10.0f} {each:11.0f}", flush=True)
            need = math.ceil(args.need / 2 / best) if best else None
            summary.append(f"R {r} {1e3 * med['augmented']:.2f} ms/sample augmented "
                           f"({med['augmented'] / med['plain']:.1f}x plain), {need} workers/identity for "
                           f"{args.need:g} samples/s")
        print("\nSUMMARY: " + "; ".join(summary))


if __name__ == "__main__":
    main()
