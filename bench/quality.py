"""Swap quality: train on real speakers for a fixed budget and seed, render held-out footage
through the real CLI, and measure the face itself.

Run:  python bench/quality.py [--budget short|long] [--iters N] [--seed 0] [--work DIR]
                              [--data ../shared/data] [--json out.json] [--train-args "..."]
                              [--faces-from DIR] [--measure-only]

Material (../shared/data, CC BY 4.0 GRID corpus):
  A = speaker s1: the 90 stills of identities/A_grid_s1 (training), and videos/grid/bbaf2n.mpg,
      an s1 sentence none of those stills come from (held out: rendered A->A).
  B = videos/grid/brbk7n.mpg: frames 1001-1050 for training, 1051-1075 held out (rendered B->A).
Every stage is the CLI a user runs (`python -m vfxswap extract | train | render`), in a fresh work
folder, so extraction, alignment, training and render changes all show here.

Figures (in the display encoding, the plate's OCIO view, where a viewer judges them):
  A->A PSNR / SSIM   held-out reconstruction: comp against plate, weighted by the layer's alpha
                     (SSIM: Gaussian 11-tap window, sigma 1.5, per channel, data range 1)
  identity           dlib embeddings of each swapped B frame: dA, dB = distances to the mean of
                     A's and of B's training faces; score = dB / (dA + dB) (1: A, 0: B, 0.5: neither);
                     share of frames closer to A than to B
  flicker            frame-to-frame change of the comp inside the alpha (max of both frames) over
                     the plate's own change there: 1 = the face changes as the plate does
  temporal error     A->A: frame-to-frame change of the comp the plate's own change does not explain,
                     over the plate's change, both blurred 2 px (compression noise out): 0 the face
                     moves exactly as the plate, 1 a frozen face. Flicker alone cannot tell a face
                     that moves too little (blur) from one that follows the plate; this can
  forehead darkening B->A: how much darker the comp is than the plate inside the alpha above the
                     brows (display luma, 0..1): A's fringe drawn over B's bare forehead
  crop jitter        speech (bbaf2n, A->A): RMS frame-to-frame motion of the aligned crop's corners
                     in plate pixels, as % of the crop's side (from the layers' vfxswap:alignment)
  crop vs rigid      how far the crop moves against a fit on the points fixed to the skull alone (nose
                     bridge and tip, eye corners; not the eyelids, which blink): RMS over frames of
                     the corners' deviation from their mean offset, % of the side; speech and
                     expression moving the crop show here, head motion does not
  samples/s          training throughput from the model's history.jsonl
A contact sheet (plate | comp | alpha, four frames of each render) is written beside the report:
look at it. Exits 0 whatever the figures; it is a report.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BUDGETS = {"short": 300, "long": 1500}  # training iterations (quick preset, batch 8)
B_TRAIN, B_HELD = "1001-1050", "1051-1075"
RELEASE = "GRID corpus speakers, CC BY 4.0 (Cooke et al. 2006); benchmark only"
RIGID = np.r_[27:31, 33, 36, 39, 42, 45]  # nose bridge and tip, eye corners: fixed to the skull


def run(cmd: list[str], log: Path) -> float:
    """One CLI call, its output to `log`; fails loudly with the log's tail."""
    t = time.perf_counter()
    with open(log, "w") as f:
        rc = subprocess.call([sys.executable, "-m", "vfxswap", *cmd], stdout=f, stderr=subprocess.STDOUT,
                             cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if rc:
        tail = log.read_text()[-3000:]
        raise SystemExit(f"vfxswap {' '.join(cmd[:1])} failed (rc {rc}), log {log}:\n{tail}")
    return time.perf_counter() - t


def commit() -> str:
    try:
        sha = subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True).strip()
        dirty = subprocess.call(["git", "diff", "--quiet", "HEAD"], cwd=ROOT)
        return sha + ("+changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# --- reading renders ------------------------------------------------------------------------------


class Render:
    """A render folder: plates (decoded by the render into OUT/.plates), comps and layers, per frame,
    on the plate's display window, plus each layer's alignment matrices."""

    def __init__(self, out: Path, movie: Path):
        from vfxswap.plates.frames import FramePattern

        self.out = out
        self.plates = FramePattern.parse(str(out / ".plates" / f"{movie.stem}.####.exr"))
        self.frames = sorted(int(p.name.split(".")[-2]) for p in out.glob("face.*.exr"))
        self._pipe = None

    def _display(self, pixels: np.ndarray, image) -> np.ndarray:
        from vfxswap.color import ColorPipeline

        if self._pipe is None:
            self._pipe = ColorPipeline.for_image(image)
        return self._pipe.to_display(pixels, exact=True).astype(np.float32) / 255.0

    def frame(self, f: int) -> dict:
        """plate and comp (H, W, 3) display 0..1, alpha (H, W), matrices [(2, 3)]."""
        from vfxswap.plates import read_image

        plate = read_image(self.plates.path(f))
        comp = read_image(self.out / f"comp.{f:04d}.exr")
        layer = read_image(self.out / f"face.{f:04d}.exr")
        alpha = layer.on_window(plate.display_window)[..., layer.channels.index("A")]
        matrices = [np.array(m, np.float64).reshape(2, 3) for m in json.loads(layer.attribute("vfxswap:alignment"))]
        return {"plate": self._display(plate.on_display_window(), plate),
                "comp": self._display(comp.on_display_window(), plate), "alpha": alpha, "matrices": matrices}


# --- figures ------------------------------------------------------------------------------------------


def weighted_psnr_ssim(plate: np.ndarray, comp: np.ndarray, alpha: np.ndarray) -> tuple[float, float, float]:
    """(PSNR dB, SSIM, weight) of comp against plate weighted by alpha, over the alpha's box."""
    from skimage.metrics import structural_similarity

    ys, xs = np.nonzero(alpha > 1e-3)
    if not len(ys):
        return float("nan"), float("nan"), 0.0
    y0, y1, x0, x1 = max(0, ys.min() - 8), ys.max() + 9, max(0, xs.min() - 8), xs.max() + 9
    p, c, w = plate[y0:y1, x0:x1], comp[y0:y1, x0:x1], alpha[y0:y1, x0:x1]
    mse = float((((p - c) ** 2).mean(2) * w).sum() / w.sum())
    _, smap = structural_similarity(p, c, data_range=1.0, channel_axis=2, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False, full=True)
    ssim = float((smap.mean(2) * w).sum() / w.sum())
    return 10 * np.log10(1.0 / max(mse, 1e-12)), ssim, float(w.sum())


def flicker(frames: list[dict]) -> float:
    """sum |comp_t+1 - comp_t| / sum |plate_t+1 - plate_t| inside max(alpha_t, alpha_t+1)."""
    num = den = 0.0
    for a, b in zip(frames, frames[1:]):
        w = np.maximum(a["alpha"], b["alpha"])[..., None]
        num += float((np.abs(b["comp"] - a["comp"]) * w).sum())
        den += float((np.abs(b["plate"] - a["plate"]) * w).sum())
    return num / max(den, 1e-12)


def temporal_error(frames: list[dict], sigma: float = 2.0) -> float:
    """sum |(comp_t+1 - comp_t) - (plate_t+1 - plate_t)| / sum |plate_t+1 - plate_t| inside the
    alpha, both blurred (Gaussian `sigma` px) first: the change the plate does not explain, at a
    scale where the plate's compression noise, which no model reproduces, is gone (unblurred it
    swamps the figure: about 1 for any face). For A->A, where the plate is the truth, it tells
    flicker from following the plate's own motion (a frozen face scores 1, a perfect one 0)."""
    blur = lambda image: cv2.GaussianBlur(image, (0, 0), sigma)
    num = den = 0.0
    for a, b in zip(frames, frames[1:]):
        w = np.maximum(a["alpha"], b["alpha"])[..., None]
        plate = blur(b["plate"]) - blur(a["plate"])
        num += float((np.abs(blur(b["comp"]) - blur(a["comp"]) - plate) * w).sum())
        den += float((np.abs(plate) * w).sum())
    return num / max(den, 1e-12)


def forehead_darkening(frames: list[dict], rows) -> float:
    """Mean darkening of the comp against the plate (display luma, 0..1) inside the alpha above
    the brows: where A's fringe, drawn over B's bare forehead, shows as dark streaks."""
    by_frame = {r.frame: r for r in rows if r.landmarks is not None}
    num = den = 0.0
    for f, fr in frames:
        if f not in by_frame:
            continue
        brow = float(by_frame[f].landmarks[17:27, 1].min())
        a = fr["alpha"].copy()
        a[int(np.ceil(brow)):] = 0.0
        dark = np.clip((fr["plate"] - fr["comp"]).mean(2), 0.0, None)
        num += float((dark * a).sum())
        den += float(a.sum())
    return num / max(den, 1e-9)


def crop_corners(matrix: np.ndarray, size: int) -> np.ndarray:
    from vfxswap.faces import align

    lo, hi = -0.5, size - 0.5
    return align.transform_points(np.array([[lo, lo], [hi, lo], [hi, hi], [lo, hi]]), align.invert(matrix))


def crop_stability(matrices: list[np.ndarray], landmarks: list[np.ndarray], size: int, face_type: str) -> dict:
    """Crop jitter and crop-vs-rigid (both % of the crop's side) over a speech clip."""
    from vfxswap.faces import align

    corners = np.stack([crop_corners(m, size) for m in matrices])  # (T, 4, 2)
    side = float(np.mean(np.linalg.norm(corners[:, 1] - corners[:, 0], axis=1)))
    step = np.linalg.norm(np.diff(corners, axis=0), axis=2).mean(1)  # (T-1,) mean corner motion
    template = align.template_points(size, face_type)
    rigid = np.stack([crop_corners(align.umeyama(pts[RIGID], template[RIGID]), size) for pts in landmarks])
    dev = corners - rigid
    dev = dev - dev.mean(0)
    return {"crop_jitter_pct": 100 * float(np.sqrt((step ** 2).mean())) / side,
            "crop_vs_rigid_pct": 100 * float(np.sqrt((np.linalg.norm(dev, axis=2) ** 2).mean())) / side}


def faceset_rows(folder: Path):
    from vfxswap.faceset.store import Faceset

    with Faceset(folder) as fs:
        return fs.faces(include_excluded=False)


def identity(render: Render, frames: list[dict], rows_b_test, rows_a, rows_b) -> dict:
    from vfxswap.faces.identity import FaceEmbedder, distance, mean_embedding

    by_frame = {r.frame: r for r in rows_b_test if r.landmarks is not None}
    ref_a = mean_embedding([r.embedding for r in rows_a if r.embedding is not None])
    ref_b = mean_embedding([r.embedding for r in rows_b if r.embedding is not None])
    emb = FaceEmbedder()
    da, db = [], []
    for f, fr in zip(render.frames, frames):
        if f not in by_frame or fr["alpha"].max() <= 0:
            continue
        e = emb.embed((np.clip(fr["comp"], 0, 1) * 255 + 0.5).astype(np.uint8), by_frame[f].landmarks)
        da.append(float(distance(e, ref_a)))
        db.append(float(distance(e, ref_b)))
    da, db = np.array(da), np.array(db)
    return {"id_frames": len(da), "dA": float(da.mean()), "dB": float(db.mean()),
            "id_score": float(np.mean(db / (da + db))), "closer_to_A_pct": 100 * float((da < db).mean()),
            "ref_dAB": float(distance(ref_a, ref_b))}


def contact_sheet(path: Path, renders: list[tuple[str, list[dict]]], cell: int = 160) -> None:
    """Rows: `label frame`, then plate | comp | alpha cut around the face, four frames per render."""
    rows = []
    for label, frames in renders:
        for i in np.linspace(0, len(frames) - 1, 4).astype(int):
            fr = frames[i]
            ys, xs = np.nonzero(fr["alpha"] > 1e-3)
            h, w = fr["alpha"].shape
            if len(ys):
                cy, cx, r = (ys.min() + ys.max()) // 2, (xs.min() + xs.max()) // 2, max(np.ptp(ys), np.ptp(xs)) // 2 + 12
            else:
                cy, cx, r = h // 2, w // 2, min(h, w) // 2
            y0, x0 = max(0, cy - r), max(0, cx - r)
            y1, x1 = min(h, cy + r), min(w, cx + r)
            tiles = [fr["plate"][y0:y1, x0:x1], fr["comp"][y0:y1, x0:x1],
                     np.repeat(fr["alpha"][y0:y1, x0:x1, None], 3, 2)]
            tiles = [cv2.resize(np.clip(t, 0, 1), (cell, cell), interpolation=cv2.INTER_AREA) for t in tiles]
            row = (np.concatenate(tiles, 1) * 255 + 0.5).astype(np.uint8)
            cv2.putText(row, f"{label} #{i}", (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 0), 1, cv2.LINE_AA)
            rows.append(row)
    sheet = np.concatenate(rows, 0)
    cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))


# --- the run ------------------------------------------------------------------------------------------


def sharpen_share(train_args: str) -> float:
    """The share of the iterations the run trains without the random warp, as `train` reads it."""
    from vfxswap.jobspec import TrainOptions, from_argv

    asked = from_argv(TrainOptions, ["--src", "A", "--dst", "B", "--model", "M", *shlex.split(train_args)])
    return asked.sharpen if asked.warp else 1.0


def produce(a, work: Path, iters: int, a_stills: Path, a_held: Path, b_movie: Path) -> dict[str, float]:
    """Facesets, model and the two renders in a fresh `work` folder -> seconds per stage."""
    if work.exists():
        import shutil

        shutil.rmtree(work)
    work.mkdir(parents=True)
    t: dict[str, float] = {"extract": 0.0}
    if a.faces_from:  # training/render ablations: the same facesets, copied, not extracted again
        import shutil

        for name in ("A", "B", "A_held", "B_held"):
            shutil.copytree(a.faces_from / name, work / name)
    else:
        t["extract"] = sum([
            run(["extract", str(a_stills), "--out", str(work / "A")], work / "extract_A.log"),
            run(["extract", str(b_movie), "--out", str(work / "B"), "--frames", B_TRAIN], work / "extract_B.log"),
            run(["extract", str(a_held), "--out", str(work / "A_held")], work / "extract_A_held.log"),
            run(["extract", str(b_movie), "--out", str(work / "B_held"), "--frames", B_HELD], work / "extract_B_held.log"),
        ])
    model = work / "model"
    t["train"] = run(["train", "--src", str(work / "A"), "--dst", str(work / "B"), "--model", str(model),
                      "--iters", str(iters), "--seed", str(a.seed), "--release-ref", RELEASE,
                      "--preview-every", str(max(iters, 1)), *shlex.split(a.train_args)], work / "train.log")
    extra = shlex.split(a.render_args)
    # A's own footage is not the model's identity B: the render is asked for every face
    every = ["--all-faces"] if "--all-faces" in subprocess.check_output(
        [sys.executable, "-m", "vfxswap", "render", "--help"], cwd=ROOT, text=True) else []
    t["render"] = run(["render", "--model", str(model), "--plates", str(a_held), "--faceset", str(work / "A_held"),
                       "--out", str(work / "render_AA"), "--comp", *every, *extra], work / "render_AA.log")
    t["render"] += run(["render", "--model", str(model), "--plates", str(b_movie), "--faceset", str(work / "B_held"),
                        "--frames", B_HELD, "--out", str(work / "render_BA"), "--comp", *extra], work / "render_BA.log")
    return t


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", choices=tuple(BUDGETS), default="short")
    ap.add_argument("--iters", type=int, help="training iterations (default: the budget's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, help="work folder (default: /tmp/vfxswap-quality-<budget>); emptied first")
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("VFXSWAP_SHARED_DATA", ROOT.parent / "shared" / "data")))
    ap.add_argument("--train-args", default="", help="extra `vfxswap train` options, e.g. \"--batch 16\" or "
                    "\"--sharpen 0\" (warp throughout)")
    ap.add_argument("--render-args", default="", help="extra `vfxswap render` options, e.g. \"--color none\"")
    ap.add_argument("--json", type=Path, help="also write the report here")
    ap.add_argument("--faces-from", type=Path, help="copy the four facesets from this earlier --work folder instead of "
                    "extracting (for training and render variants; not after an extraction or alignment change)")
    ap.add_argument("--measure-only", action="store_true", help="measure a finished --work folder again")
    a = ap.parse_args(argv)
    iters = a.iters or BUDGETS[a.budget]
    work = a.work or Path(f"/tmp/vfxswap-quality-{a.budget}")
    a_stills, a_held = a.data / "identities" / "A_grid_s1", a.data / "videos" / "grid" / "bbaf2n.mpg"
    b_movie = a.data / "videos" / "grid" / "brbk7n.mpg"
    for p in (a_stills, a_held, b_movie):
        if not p.exists():
            raise SystemExit(f"{p}: not found (the shared data is needed; --data or VFXSWAP_SHARED_DATA)")
    t: dict[str, float] = {"extract": 0.0, "train": 0.0, "render": 0.0}
    if not a.measure_only:
        t = produce(a, work, iters, a_stills, a_held, b_movie)
    model = work / "model"
    manifest = json.loads((model / "manifest.json").read_text())
    iters = int(manifest["iteration"])  # what the model was trained to (--measure-only: whatever that was)
    size, face_type = manifest["config"]["resolution"], manifest["config"]["face_type"]
    history = [json.loads(line) for line in (model / "history.jsonl").read_text().splitlines() if line.strip()]
    rates = [h["samples_per_s"] for h in history if "samples_per_s" in h]
    sharpen = sharpen_share(a.train_args)

    aa, ba = Render(work / "render_AA", a_held), Render(work / "render_BA", b_movie)
    aa_frames, ba_frames = [aa.frame(f) for f in aa.frames], [ba.frame(f) for f in ba.frames]
    scores = np.array([weighted_psnr_ssim(f["plate"], f["comp"], f["alpha"]) for f in aa_frames])
    rows_aa = {r.frame: r for r in faceset_rows(work / "A_held")}
    speech = [(f, fr) for f, fr in zip(aa.frames, aa_frames) if f in rows_aa and len(fr["matrices"]) == 1]
    stability = crop_stability([fr["matrices"][0] for _, fr in speech], [rows_aa[f].landmarks for f, _ in speech],
                               size, face_type)
    report = {
        "commit": commit(), "budget": "measured again" if a.measure_only else a.budget, "iters": iters, "seed": a.seed,
        "sharpen": sharpen, "model": f"{manifest['config']['arch']} {size} px {face_type}", "train_args": a.train_args, "render_args": a.render_args,
        "AA_psnr_db": float(np.nanmean(scores[:, 0])), "AA_ssim": float(np.nanmean(scores[:, 1])),
        "AA_alpha_px": float(np.mean(scores[:, 2])), "AA_frames": len(aa_frames),
        **identity(ba, ba_frames, faceset_rows(work / "B_held"), faceset_rows(work / "A"), faceset_rows(work / "B")),
        "flicker_BA": flicker(ba_frames), "flicker_AA": flicker(aa_frames),
        "temporal_error_AA": temporal_error(aa_frames), **stability,
        "forehead_darkening_BA": forehead_darkening(list(zip(ba.frames, ba_frames)), faceset_rows(work / "B_held")),
        "samples_per_s": float(rates[-1]) if rates else float("nan"),
        "seconds": {k: round(v, 1) for k, v in t.items()}, "work": str(work),
    }
    contact_sheet(work / "contact_sheet.png", [("A->A", aa_frames), ("B->A", ba_frames)])
    report["contact_sheet"] = str(work / "contact_sheet.png")
    print(f"bench/quality.py  commit {report['commit']}  budget {report['budget']} ({iters} iters"
          f"{f', the last {sharpen:.0%} without warp' if sharpen else ', warped throughout'})  seed {a.seed}  model {report['model']}"
          f"{'  train: ' + a.train_args if a.train_args else ''}{'  render: ' + a.render_args if a.render_args else ''}")
    lines = [("A->A held-out PSNR (dB, display, in alpha)", report["AA_psnr_db"], "{:.2f}"),
             ("A->A held-out SSIM", report["AA_ssim"], "{:.4f}"),
             ("A->A mean alpha area (px)", report["AA_alpha_px"], "{:.0f}"),
             ("B->A identity score dB/(dA+dB)", report["id_score"], "{:.3f}"),
             ("B->A frames closer to A (%)", report["closer_to_A_pct"], "{:.0f}"),
             ("B->A mean dA / dB", f"{report['dA']:.3f} / {report['dB']:.3f}", "{}"),
             ("flicker B->A (comp/plate change)", report["flicker_BA"], "{:.3f}"),
             ("flicker A->A", report["flicker_AA"], "{:.3f}"),
             ("A->A temporal error (vs the plate's change)", report["temporal_error_AA"], "{:.3f}"),
             ("B->A forehead darkening (display, in alpha)", report["forehead_darkening_BA"], "{:.4f}"),
             ("crop jitter on speech (% of side)", report["crop_jitter_pct"], "{:.3f}"),
             ("crop vs rigid fit on speech (% of side)", report["crop_vs_rigid_pct"], "{:.3f}"),
             ("training samples/s", report["samples_per_s"], "{:.1f}"),
             ("seconds extract / train / render", f"{t['extract']:.0f} / {t['train']:.0f} / {t['render']:.0f}", "{}")]
    for name, value, fmt in lines:
        print(f"  {name:<44} {fmt.format(value)}")
    print(f"  contact sheet: {report['contact_sheet']}")
    text = json.dumps(report, indent=2)
    (work / "quality.json").write_text(text)
    if a.json:
        a.json.write_text(text)
    return report


if __name__ == "__main__":
    main()
