"""Render benchmark: frames/s of `Renderer.run()` at 1080p and 4K, against plain plate I/O of the same frames.

Run:  python bench/render.py [--frames 24] [--sizes 1080,2160] [--workdir DIR] [--keep] [--json out.json]

Plates (made once, untimed): N frames per size of the real GRID clip (one talking face), sRGB code
values -> scene-linear ACEScg (OCIO), the 360x288 frame scaled to the plate's height (1350x1080,
2700x2160) and centred on a dark-grey 1920x1080 / 3840x2160 canvas, alpha 1, half ZIP EXR tagged
ACEScg, plate.####.exr from 1001. Without the shared data, skimage's astronaut drifting 3 px a frame
stands in (the output says which). Each size is extracted (untimed) into its own faceset with the
dlib detector and landmarker (ExtractOptions(detector="dlib", landmarker="dlib"), size 256).
Model: the `quick` preset (df-ud 96, whole_face) trained for 1 iteration by the trainer itself
(train(TrainOptions(iters=1, ...)), A = B = the first size's faceset), so its manifest holds what
the trainer records and the render reads (the facesets' crop size, B's identity); should the
trainer fail, a fresh one built with build_model(seed=0) and saved with save_model and a manifest
like the trainer's (the output says which). Untrained weights cost what trained ones do; the
pictures are not the point.
A --workdir keeps all of that; a later run with the same frames and source reuses it.

Timed, per size: Renderer(RenderOptions(model, plates, faceset, out, device="cpu")) construction
(model load = ModelPredictor.__init__, faceset read = Renderer._faces, reported apart); one
untimed warm-up frame (run(frames=[first]): numba, OCIO processors, torch's first call; frames the
renderer predicted ahead for the colour match's pooling are then dropped from its cache, so the
timed run does all of its own work); then one run() over all N frames. fps = N / wall of that run().
Stages (ms/frame, wall time per stage / N): render.py is not edited; the functions it calls are
wrapped by name for the timed run (and restored after), whatever of them exists:
  plate read        vfxswap.render.render.read_info (the header) and read_image (only the rows the
                    faces' crops need; the header alone for a frame without a face)
  colour to model   ColorPipeline.to_model (and to_model_torch)
  crop in           align.cut_face / resize_crop, or align.warp_exact / warp_to_aligned before the
                    face's predict
  model predict     the predictor's __call__ (torch forward, on the CPU)
  colour match      vfxswap.render.render.color_transfer (and masked_samples, pool_samples, limited:
                    the pixels it matches on)
  mask              the renderer's masker (learned x landmark hull by default)
  warp back         align.warp_exact / warp_to_plate after the face's predict (colour and matte)
  colour from model ColorPipeline.from_model (and from_model_torch)
  layer build       Renderer._layer (RGBA concat over the faces' box, header, provenance)
  layer write       vfxswap.render.render.write_image
  other             wall minus the sum: landmarks -> matrix (Renderer._cut_region: the rows to read),
                    the face-box accumulators, the matte's reach (_reach), the over, run()'s own
                    bookkeeping (orphan scan, events, manifest)
Only the outermost wrapped call is timed (cut_face calling warp_exact counts once, as crop in);
a call in another thread counts in full, so with threads the stages could add up to more than
the wall and `other` go negative.
`bare predict`: the renderer's predictor alone on one face, median of 7, with the intra-op threads
it renders with (ModelPredictor.threads, set per call), with 1 thread and with the process's
torch count, interleaved (2 threads on 2 shared cores wait for each other at every op when
another job holds a core: compare with the in-render figure).
Baseline, same process, same frames, timed the same way (one warm-up frame, then all N): plain
plate I/O, read_image(plate) + write_image(the plate's RGBA as a half ZIP EXR of the plate's size)
per frame, run before and after the render (their mean is the baseline; both are in --json). It
is the floor of a render that reads the plate and writes a full frame; the face layer's data
window is only the face's box, so its write is cheaper than a full frame's (the table shows the
I/O's read and write apart). ratio = render fps / I/O fps. Goal on this CPU (2 slow cores):
>= 4 frames/s at 1080p. Timings are noisy (other jobs share the machine); the ratios are the
result; each timed part also shows this process's CPU time over its wall (cores busy on average:
well under what it could use when other jobs took the cores; torch's CPU threads spin while they
wait for each other, so a loaded machine slows `model predict` most). Exits 0 whatever the
result; it is a report.
"""

from __future__ import annotations

import argparse
import copy
import functools
import itertools
import json
import os
import shutil
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

GRID = Path("/work/shared/data/videos/grid/bbaf2n.mpg")
SRGB, FIRST, GOAL_FPS, GOAL_SIZE = "sRGB Encoded Rec.709 (sRGB)", 1001, 4.0, 1080
WIDTH = {1080: 1920, 2160: 3840}
LABEL = {1080: "1080p", 2160: "4K"}
STAGES = ("plate read", "colour to model", "crop in", "model predict", "colour match", "mask", "warp back",
          "colour from model", "layer build", "layer write")
RELEASE_REF = "benchmark only: GRID corpus (CC BY 4.0) / scikit-image astronaut (public domain); not for release"
now = time.perf_counter


# --- plates, facesets, model (untimed) -----------------------------------------------------------


def source_frames(n: int):
    """(description, n float32 sRGB code-value frames, 0-1)."""
    if GRID.is_file():
        from vfxswap.plates.video import read_video

        clip = [px for _, px in itertools.islice(read_video(GRID, FIRST), n)]
        what = f"GRID {GRID.name}" + (f" ({len(clip)} frames, cycled)" if len(clip) < n else "")
        return what, [clip[i % len(clip)] for i in range(n)]
    from skimage import data

    astro = data.astronaut().astype(np.float32) / 255
    return "SYNTHETIC astronaut (shared data absent)", [np.roll(astro, 3 * i, axis=1) for i in range(n)]


def make_plates(folder: Path, linear: list[np.ndarray], height: int) -> str:
    """Each ACEScg frame scaled to `height` and centred on a dark 16:9 canvas; half ZIP EXR."""
    from vfxswap.plates import Image, write_image

    width = WIDTH.get(height, round(height * 16 / 9))
    folder.mkdir(parents=True, exist_ok=True)
    for i, lin in enumerate(linear):
        h, w = lin.shape[:2]
        nw = round(w * height / h)
        big = np.maximum(cv2.resize(lin, (nw, height), interpolation=cv2.INTER_CUBIC), 0)
        canvas = np.full((height, width, 4), 0.02, np.float32)
        canvas[..., 3] = 1
        x0 = (width - nw) // 2
        canvas[:, max(0, x0):x0 + nw, :3] = big[:, max(0, -x0):max(0, -x0) + min(nw, width)]
        img = Image.from_array(canvas, ("R", "G", "B", "A"))
        img.set_attribute("oiio:ColorSpace", "ACEScg")
        img.set_attribute("framesPerSecond", (24, 1), "rational")
        write_image(folder / f"plate.{FIRST + i:04d}.exr", img, dtype="half", compression="zip")
    return str(folder / "plate.####.exr")


def make_model(folder: Path, faceset: str) -> tuple[str, str]:
    """(folder, how): a quick-preset model trained 1 iteration (A = B = `faceset`) by the trainer
    itself, so its manifest is whatever the trainer records (the render reads the facesets' crop
    size and B's identity from it); if the trainer fails, a fresh one built and saved directly."""
    from vfxswap.jobspec import TrainOptions
    from vfxswap.train.trainer import train

    try:
        train(TrainOptions(src=faceset, dst=faceset, model_dir=str(folder), release_ref=RELEASE_REF,
                           name_src="bench A", name_dst="bench B", preset="quick", iters=1, batch=2, workers=0,
                           device="cpu", warmup=1, save_every=1, preview_every=10**6, log_every=10**6,
                           snapshot_every=10**6, quiet=True))
        return str(folder), f"quick preset trained 1 iteration by the trainer (A = B = {Path(faceset).name})"
    except Exception as exc:  # noqa: BLE001  the bench measures the render: any model will do
        print(f"trainer failed ({type(exc).__name__}: {exc}); building the model directly", flush=True)
        shutil.rmtree(folder, ignore_errors=True)
        return build_model_folder(folder, faceset), "quick preset, untrained, built and saved directly"


def build_model_folder(folder: Path, faceset: str) -> str:
    """A fresh quick-preset model saved as the trainer would save iteration 0."""
    from vfxswap.color import ENCODING_NAME, resolve_config
    from vfxswap.models import build_model
    from vfxswap.models.config import PRESETS
    from vfxswap.models.store import save_model

    config = copy.deepcopy(PRESETS["quick"])
    model = build_model(config, seed=0)
    ident = lambda name: {"name": name, "faceset": str(Path(faceset).resolve()), "release_ref": RELEASE_REF}
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    manifest = {"config": config.to_dict(), "identities": {"A": ident("bench A"), "B": ident("bench B")},
                "colour": {"encoding": ENCODING_NAME, "ocio_config": resolve_config().name}, "iteration": 0,
                "created": stamp, "updated": stamp, "train": {"preset": "quick", "note": "untrained (render bench)"}}
    save_model(folder, model, manifest, keep_backups=0)
    return str(folder)


def prepare(work: Path, n: int, sizes: list[int]) -> dict:
    """Plates and a faceset per size, and the model; reused from a --workdir made with the same
    frames and source (a marker file records what was made)."""
    from vfxswap.color.pipeline import ColorPipeline
    from vfxswap.faces.extract import extract
    from vfxswap.jobspec import ExtractOptions

    marker = work / "made.json"
    made = json.loads(marker.read_text()) if marker.is_file() else {}
    want_source = f"GRID {GRID.name}" if GRID.is_file() else "SYNTHETIC"
    if made.get("frames") != n or not str(made.get("source", "")).startswith(want_source):
        made = {"frames": n, "sizes": {}}
    what = linear = None
    for size in sizes:
        if str(size) in made["sizes"]:
            print(f"{LABEL.get(size, size)}: reusing plates and faceset in {work}", flush=True)
            continue
        if linear is None:
            what, frames = source_frames(n)
            pipe = ColorPipeline(SRGB)
            linear = [pipe.convert(px, SRGB, "ACEScg") for px in frames]
            made["source"] = what
        t0 = now()
        shutil.rmtree(work / f"plates-{size}", ignore_errors=True)
        shutil.rmtree(work / f"faceset-{size}", ignore_errors=True)  # facesets resume: start clean
        print(f"{LABEL.get(size, size)}: making {n} plates ...", flush=True)
        pattern = make_plates(work / f"plates-{size}", linear, size)
        t1 = now()
        print(f"{LABEL.get(size, size)}: extracting (dlib detector + landmarker, untimed) ...", flush=True)
        rep = extract(pattern, str(work / f"faceset-{size}"),
                      ExtractOptions(frames=f"{FIRST}-{FIRST + n - 1}", detector="dlib", landmarker="dlib"))
        made["sizes"][str(size)] = {"plates": pattern, "faceset": str(work / f"faceset-{size}"),
                                    "faces": rep.faces, "frames_aligned": rep.frames_aligned,
                                    "make_s": t1 - t0, "extract_s": now() - t1}
        marker.write_text(json.dumps(made, indent=2))
    if not (work / "model" / "manifest.json").is_file() or "model" not in made:
        shutil.rmtree(work / "model", ignore_errors=True)
        print("making the model (quick preset) ...", flush=True)
        first = made["sizes"][str(sizes[0])]["faceset"]
        made["model"], made["model_how"] = make_model(work / "model", first)
        marker.write_text(json.dumps(made, indent=2))
    return made


# --- stage timing by wrapping ---------------------------------------------------------------------


class Stages:
    """Wraps functions by name, adding each outermost call's time to its stage; `restore()` undoes it."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.by_function: dict[str, float] = defaultdict(float)  # "stage: function" -> seconds (for --json)
        self.wrapped: list[str] = []
        self._undo: list[tuple[object, str, object]] = []
        self._local = threading.local()
        self._lock = threading.Lock()

    def _phase(self) -> bool:
        return getattr(self._local, "predicted", False)

    def wrap(self, owner, name: str, stage, *, resets: bool = False, predicts: bool = False) -> bool:
        """Wrap `owner.name` when it is a plain function there (a module's, a class's own or an
        instance's); `stage` is a name or a callable choosing one at call time. `resets`: a call
        starts a face (the next warp is a crop in); `predicts`: after it, warps are warps back."""
        if isinstance(owner, type):  # the class that defines it (a subclass may inherit it)
            owner = next((c for c in owner.__mro__ if name in c.__dict__), owner)
            fn = owner.__dict__.get(name)
        else:
            fn = getattr(owner, name, None)
        if not callable(fn) or isinstance(fn, (staticmethod, classmethod)) or getattr(fn, "_bench_timed", False):
            return False
        local, lock, seconds, calls, by_function = self._local, self._lock, self.seconds, self.calls, self.by_function

        @functools.wraps(fn)
        def timed(*args, **kwargs):
            if getattr(local, "depth", 0):
                return fn(*args, **kwargs)
            label = stage() if callable(stage) else stage
            if resets:
                local.predicted = False
            local.depth = 1
            t0 = now()
            try:
                return fn(*args, **kwargs)
            finally:
                dt = now() - t0
                local.depth = 0
                if predicts:
                    local.predicted = True
                with lock:
                    seconds[label] += dt
                    calls[label] += 1
                    by_function[f"{label}: {name}"] += dt

        timed._bench_timed = True
        self._undo.append((owner, name, owner.__dict__[name] if isinstance(owner, type) else
                           vars(owner).get(name, _ABSENT) if hasattr(owner, "__dict__") else fn))
        setattr(owner, name, timed)
        self.wrapped.append(f"{getattr(owner, '__name__', type(owner).__name__)}.{name}")
        return True

    def restore(self) -> None:
        for owner, name, original in reversed(self._undo):
            if original is _ABSENT:
                delattr(owner, name)
            else:
                setattr(owner, name, original)
        self._undo.clear()


_ABSENT = object()


def instrument(renderer) -> Stages:
    """The render stages, wrapped on what render.py calls (module names looked up at call time)."""
    import vfxswap.faces.align as align
    import vfxswap.render.render as rmod
    from vfxswap.color.pipeline import ColorPipeline

    st = Stages()
    warp = lambda: "warp back" if st._phase() else "crop in"
    for name in ("read_info", "read_image"):  # the header (the rows are chosen from it), then the rows
        st.wrap(rmod, name, "plate read", resets=True)
    for name in ("to_model", "to_model_torch"):
        st.wrap(ColorPipeline, name, "colour to model", resets=True)
    for name in ("from_model", "from_model_torch"):
        st.wrap(ColorPipeline, name, "colour from model")
    warps = {"cut_face": "crop in", "crop_face": "crop in", "resize_crop": "crop in", "warp_to_aligned": "crop in",
             "warp_exact": warp, "warp_to_plate": "warp back", "paste_back": "warp back"}
    # align's functions, and those render.py imported by name from it (found before any is wrapped)
    imported = [n for n in warps if hasattr(align, n) and getattr(rmod, n, None) is getattr(align, n)]
    for name, stage in warps.items():
        st.wrap(align, name, stage)
    for name in imported:
        st.wrap(rmod, name, warps[name])
    st.wrap(type(renderer.predict), "__call__", "model predict", predicts=True)
    for name in ("color_transfer", "masked_samples", "pool_samples", "limited"):  # the match and its samples
        st.wrap(rmod, name, "colour match")
    st.wrap(renderer, "masker", "mask")
    st.wrap(type(renderer), "_layer", "layer build")
    st.wrap(rmod, "write_image", "layer write")
    return st


# --- the timed parts ------------------------------------------------------------------------------


def io_pass(plates: str, n: int, out: Path) -> dict:
    """read_image(plate) + write_image(its RGBA, half ZIP, same size) per frame: one warm-up frame,
    then all N timed."""
    from vfxswap.plates import Image, read_image, write_image
    from vfxswap.plates.frames import FramePattern

    seq = FramePattern.parse(plates)
    out.mkdir(parents=True, exist_ok=True)

    def one(frame: int) -> tuple[float, float]:
        t0 = now()
        img = read_image(seq.path(frame))
        t1 = now()
        layer = Image(img.pixels, img.channels, img.data_window, img.display_window, dict(img.attributes))
        write_image(out / f"io.{frame:04d}.exr", layer, dtype="half", compression="zip")
        return t1 - t0, now() - t1

    one(FIRST)
    reads = writes = 0.0
    t0, c0 = now(), time.process_time()
    for f in range(FIRST, FIRST + n):
        r, w = one(f)
        reads, writes = reads + r, writes + w
    wall = now() - t0
    return {"wall_s": wall, "cpu_s": time.process_time() - c0, "read_s": reads, "write_s": writes, "fps": n / wall}


def bare_predict(predict, repeats: int = 7) -> dict[str, float]:
    """Median time of the renderer's own predictor on one (1, R, R, 3) face, alone, with the
    intra-op threads it renders with (its `threads`, else torch's count), with 1 thread and with
    the process's count, interleaved: how much of `model predict` is the network and how much
    its threads waiting for cores other jobs hold."""
    import torch

    x = np.random.default_rng(0).random((1, predict.resolution, predict.resolution, 3), np.float32)
    process = torch.get_num_threads()
    own = getattr(predict, "threads", None)
    counts = {f"{own or process} threads (as rendered)": own or process, "1 thread": 1,
              f"{process} threads (the process's)": process}
    times = {k: [] for k in counts}
    try:
        for _ in range(repeats + 1):
            for key, count in counts.items():
                torch.set_num_threads(count)
                if own is not None:
                    predict.threads = count
                t0 = now()
                predict(x)
                times[key].append(now() - t0)
    finally:
        torch.set_num_threads(process)
        if own is not None:
            predict.threads = own
    return {k: float(np.median(v[1:])) for k, v in times.items()}


def render_size(made: dict, size: int, n: int, work: Path, model: str) -> dict:
    from vfxswap.jobspec import RenderOptions
    from vfxswap.render.render import ModelPredictor, Renderer

    info = made["sizes"][str(size)]
    out = work / f"render-{size}"
    shutil.rmtree(out, ignore_errors=True)
    opts = RenderOptions(model=model, plates=info["plates"], faceset=info["faceset"], out=str(out), device="cpu")
    build = Stages()
    build.wrap(ModelPredictor, "__init__", "model load")
    build.wrap(Renderer, "_faces", "faceset read")
    t0 = now()
    try:
        renderer = Renderer(opts)
    finally:
        build.restore()
    construct = now() - t0
    t0 = now()
    renderer.run(frames=[FIRST])  # warm-up, untimed in the figures
    warm = now() - t0
    cache = getattr(renderer, "_work", None)  # frames predicted ahead for the colour match's pooling:
    if isinstance(cache, dict):  # dropped, so the timed run predicts every frame itself
        cache.clear()
    res = {"plates": info["plates"], "size": [WIDTH.get(size, round(size * 16 / 9)), size],
           "faces_in_faceset": info.get("faces"),
           "construct_s": construct, "model_load_s": build.seconds.get("model load", 0.0),
           "faceset_read_s": build.seconds.get("faceset read", 0.0), "warmup_frame_s": warm}
    load0 = os.getloadavg()[0]
    print(f"{LABEL.get(size, size)}: plate I/O baseline (before) ...", flush=True)
    io_before = io_pass(info["plates"], n, work / f"io-{size}")
    print(f"{LABEL.get(size, size)}: timed render of {n} frames ...", flush=True)
    st = instrument(renderer)
    try:
        t0, c0 = now(), time.process_time()
        report = renderer.run()
        wall, cpu = now() - t0, time.process_time() - c0
    finally:
        st.restore()
    res["bare_predict_s"] = bare_predict(renderer.predict)
    print(f"{LABEL.get(size, size)}: plate I/O baseline (after) ...", flush=True)
    io_after = io_pass(info["plates"], n, work / f"io-{size}")
    io = {k: (io_before[k] + io_after[k]) / 2 for k in ("wall_s", "cpu_s", "read_s", "write_s")}
    io["fps"] = n / io["wall_s"]
    res.update({"wall_s": wall, "cpu_s": cpu, "fps": n / wall, "stages_s": dict(st.seconds), "calls": dict(st.calls),
                "by_function_s": dict(st.by_function),
                "wrapped": st.wrapped, "written": len(report.written), "without_faces": len(report.without_faces),
                "failed": {str(k): v for k, v in report.failed.items()},
                "load": [load0, os.getloadavg()[0]], "io": io, "io_before": io_before, "io_after": io_after,
                "ratio": (n / wall) / io["fps"]})
    return res


# --- report ---------------------------------------------------------------------------------------


def table(res: dict, n: int, size: int) -> None:
    w, h = res["size"]
    ms = lambda s: f"{s * 1e3 / n:9.1f}"
    wall, t = res["wall_s"], res["stages_s"]
    print(f"\n== {LABEL.get(size, size)} ({w}x{h}, {n} frames) ==")
    rest = res["construct_s"] - res["model_load_s"] - res["faceset_read_s"]
    print(f"construction {res['construct_s'] * 1e3:.0f} ms (model load {res['model_load_s'] * 1e3:.0f} ms, "
          f"faceset read {res['faceset_read_s'] * 1e3:.0f} ms, the rest {rest * 1e3:.0f} ms); warm-up frame "
          f"{res['warmup_frame_s'] * 1e3:.0f} ms (untimed); load average {res['load'][0]:.1f} before, "
          f"{res['load'][1]:.1f} after (2 cores: above 2, other jobs shared them)")
    print(f"{'stage':18} {'ms/frame':>9} {'share':>7} {'calls/frame':>12}")
    rows = [k for k in STAGES if k in t] + sorted(k for k in t if k not in STAGES)
    for k in rows:
        print(f"{k:18} {ms(t[k])} {t[k] / wall:7.1%} {res['calls'][k] / n:12.2f}")
    other = wall - sum(t.values())
    print(f"{'other':18} {ms(other)} {other / wall:7.1%}")
    print(f"{'total (wall)':18} {ms(wall)} {1:7.1%}   {res['fps']:.2f} frames/s; this process's CPU "
          f"{res['cpu_s'] * 1e3 / n:.0f} ms/frame ({res['cpu_s'] / wall:.2f} cores busy on average)")
    io = res["io"]
    print(f"plate I/O only     {ms(io['wall_s'])}          {io['fps']:.2f} frames/s (read "
          f"{io['read_s'] * 1e3 / n:.1f} + write {io['write_s'] * 1e3 / n:.1f} ms/frame; before "
          f"{res['io_before']['fps']:.2f}, after {res['io_after']['fps']:.2f} frames/s; CPU "
          f"{io['cpu_s'] / io['wall_s']:.2f} cores)")
    bare = ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in res["bare_predict_s"].items())
    print(f"bare predict, one face alone (median): {bare} (vs {t.get('model predict', 0) * 1e3 / n:.1f} ms/frame "
          f"in the render)")
    print(f"render / I/O: {res['ratio']:.2f} (the render runs at {res['ratio']:.0%} of the plate-I/O floor; "
          f"{(wall - io['wall_s']) * 1e3 / n:.1f} ms/frame above it)")
    faces = f"{res['written'] - res['without_faces']} of {res['written']} frames had a face"
    print(f"layers written {res['written']} ({faces})" + (f"; FAILED {res['failed']}" if res["failed"] else ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=24, help="plates per size (default 24)")
    ap.add_argument("--sizes", default="1080,2160", help="plate heights, comma-separated (default 1080,2160)")
    ap.add_argument("--workdir", help="where plates, facesets, model and outputs go; kept and reused "
                                      "(default: a temporary folder, removed unless --keep)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (its path is printed)")
    ap.add_argument("--json", help="also write the results to this JSON file")
    args = ap.parse_args()
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        ap.error(f"--sizes takes plate heights such as 1080,2160 (got {args.sizes!r})")
    if args.frames < 2 or not sizes or min(sizes) < 256:
        ap.error(f"--frames must be >= 2 and --sizes heights >= 256 (got {args.frames}, {args.sizes})")
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="vfxswap-bench-render-"))
    work.mkdir(parents=True, exist_ok=True)
    n, results = args.frames, {}
    try:
        import torch

        made = prepare(work, n, sizes)
        print(f"\nplates: {made['source']}; {n} frames per size, half ZIP ACEScg; faces extracted with dlib "
              f"(detector + landmarker); model: {made.get('model_how', 'quick preset')} (df-ud 96, whole_face), "
              f"on the CPU, torch {torch.__version__} with {torch.get_num_threads()} threads", flush=True)
        for size in sizes:
            results[size] = render_size(made, size, n, work, made["model"])
        for size in sizes:
            table(results[size], n, size)
        print("\nstages: outermost wrapped calls of render.py's functions; `other` = wall minus their sum")
        print("\nSUMMARY: " + "; ".join(f"{LABEL.get(s, s)} {r['fps']:.2f} frames/s (I/O only {r['io']['fps']:.2f}, "
                                          f"ratio {r['ratio']:.2f})" for s, r in results.items()))
        if GOAL_SIZE in results:
            fps = results[GOAL_SIZE]["fps"]
            print(f">= {GOAL_FPS:g} frames/s at 1080p: {'met' if fps >= GOAL_FPS else 'not met'} ({fps:.2f})")
        else:
            print(f">= {GOAL_FPS:g} frames/s at 1080p: not measured (1080 not in --sizes)")
        if args.json:
            out = {"args": vars(args), "source": made["source"], "prepared": made,
                   "results": {str(k): v for k, v in results.items()}, "goal_fps_1080": GOAL_FPS}
            Path(args.json).write_text(json.dumps(out, indent=2, default=str))
    finally:
        if args.workdir is None:
            if args.keep:
                print(f"kept {work}")
            else:
                shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
