"""Farm chunk benchmark: a render engine kept for the session against one process per chunk.

Run:  python bench/farm.py [--frames 24] [--chunk 4] [--rounds 2]

Builds the astronaut shot (conftest's builder: an HDR ACEScg plate sequence and its faceset) and
a quick model trained for 2 iterations (the weights do not matter, their loading does). Then,
interleaved over --rounds, renders the range in chunks of --chunk frames two ways into fresh
folders:
  per-process  `vfxswap render --frames <chunk> --skip-existing` in a new process per chunk: what a
               farm task without a session engine runs (import torch, load model, landmarks, OCIO)
  engine       `vfxswap farm session start` once (counted), then `farm session render` per chunk
               (a new small client process per chunk, as the farm task runs it)
Both write identical bytes (checked). Figures: seconds per chunk (median over rounds), the
engine's start cost, and the ratio per-process / engine. Exits 0 whatever the result.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def _run(*args) -> None:
    out = subprocess.run([sys.executable, "-m", "vfxswap", *map(str, args)], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{' '.join(map(str, args[:3]))}: {out.stderr.strip()[-400:]}")


def _digests(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("face.*.exr"))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--chunk", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2)
    opts = ap.parse_args()

    from conftest import make_astronaut_shot
    from vfxswap.farm.job import FarmJob
    from vfxswap.jobspec import TrainOptions
    from vfxswap.train.trainer import train

    work = Path(tempfile.mkdtemp(prefix="vfxswap-bench-farm-"))
    try:
        shot = make_astronaut_shot(work, frames=opts.frames)
        train(TrainOptions(src=str(shot / "faceset"), dst=str(shot / "faceset"), model_dir=str(work / "model"),
                           release_ref="REL-BENCH", iters=2, batch=2, workers=0,
                           quiet=True, preview_every=1000, save_every=1000))
        last = 1000 + opts.frames
        job = FarmJob(plates=str(shot / "plates" / "plate.####.exr"), model=str(work / "model"),
                      faceset=str(shot / "faceset"), out="", frames=f"1001-{last}", chunk=opts.chunk)
        chunks = [f"{a}-{b}" for a, b in job.chunks()]
        per_process, engine, starts = [], [], []
        for r in range(opts.rounds):
            out = work / f"proc{r}"
            job.out = str(out)
            t0 = time.perf_counter()
            for c in chunks:
                _run(*job.render_args(c)[1:])
            per_process.append((time.perf_counter() - t0) / len(chunks))

            out_e, sess = work / f"engine{r}", work / f"session{r}"
            job.out = str(out_e)
            argv = job.render_args(job.frames)[2:]
            t0 = time.perf_counter()
            _run("farm", "session", "start", sess, "--", *argv)
            started = time.perf_counter()
            for c in chunks:
                _run("farm", "session", "render", sess, "--frames", c)
            engine.append((time.perf_counter() - started) / len(chunks))
            starts.append(started - t0)
            _run("farm", "session", "stop", sess)
            if _digests(out) != _digests(out_e) or len(_digests(out)) != opts.frames:
                raise SystemExit("engine and per-process renders differ")
        pp, en, st = statistics.median(per_process), statistics.median(engine), statistics.median(starts)
        total_pp, total_en = pp * len(chunks), st + en * len(chunks)
        print(f"{opts.frames} frames in {len(chunks)} chunks of {opts.chunk}, {opts.rounds} round(s), identical bytes")
        print(f"  per-process: {pp:6.2f} s/chunk   ({total_pp:6.1f} s for the range)")
        print(f"  engine:      {en:6.2f} s/chunk + {st:.2f} s start once ({total_en:6.1f} s for the range)")
        print(f"  per-chunk speed-up {pp / en:.2f}x; whole range {total_pp / total_en:.2f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
