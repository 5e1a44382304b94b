"""Segmentation masker against ground truth: FaceSynthetics' per-pixel classes (issue 17).

Run:  python bench/masks.py [--iters 1500] [--resolution 256] [--seed 0] [--work DIR] [--json F]

The 20 Face Synthetics renders in ../shared/data/synthetic/facesynthetics_dev are extracted as
stills (each its own person) into a faceset with the default backend. The first 10 are labelled
from their class maps as an artist would draw them (face skin, brows, eyes, nose, lips, mouth,
beard included; glasses, headwear, hair, ears and hands left out): the class mask is cut into each
aligned face and traced into include polygons, with exclude polygons for its holes. The masker
is trained on those 10 and on the hulls of the others (the weak prior for unlabelled faces), then
applied to every face. Printed per face and as a mean over the 10 held-out renders, in plate
space at 512 px (matte > 0.5 against the truth, `ignore` pixels left out):

  IoU       the segmentation matte, and the extended landmark hull (today's mask) beside it
  glasses   on renders with glasses: the share of glasses pixels the matte keeps out (> 0.5
            counts as kept in), and the IoU over the glasses' bounding box only

The held-out renders are never labelled and never their truth is read before the evaluation.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SHARED = Path(os.environ.get("VFXSWAP_SHARED_DATA", ROOT.parent / "shared" / "data"))
FOLDER = "synthetic/facesynthetics_dev"
FACE_CLASSES = (1, 2, 3, 4, 5, 6, 9, 10, 11, 14)  # skin, nose, eyes, brows, mouth, lips, beard
GLASSES = 16
IGNORE = 255
LABELLED = 10  # the first renders, by name, are labelled; the rest are held out


def renders(shared: Path = SHARED) -> list[Path]:
    return sorted((shared / FOLDER).glob("[0-9]" * 6 + ".png"))


def classes(render: Path) -> np.ndarray:
    """The render's (512, 512) uint8 class map."""
    return cv2.imread(str(render.with_name(render.stem + "_seg.png")), cv2.IMREAD_UNCHANGED)


def build_faceset(work: Path, shared: Path = SHARED) -> Path:
    """The renders extracted as stills into WORK/faceset (a folder of links: the class maps beside
    them must not be taken for faces). Reused when already there."""
    from vfxswap.faces.extract import extract
    from vfxswap.jobspec import ExtractOptions

    stills, folder = work / "renders", work / "faceset"
    if (folder / "faceset.db").exists():
        return folder
    stills.mkdir(parents=True, exist_ok=True)
    for path in renders(shared):
        link = stills / path.name
        if not link.exists():
            link.symlink_to(path)
    extract(str(stills), str(folder), ExtractOptions())
    return folder


def polygons_from_mask(mask: np.ndarray) -> list[dict]:
    """A binary (S, S) mask traced into label polygons as an artist would draw them: outer
    outlines include, holes exclude, islands in holes include again (drawing order by depth).
    Traced on a 4x grid so the outline runs on the mask's edge, not through its edge pixels."""
    from vfxswap.masks.labels import polygon

    ss = 4
    big = cv2.resize(mask.astype(np.uint8) * 255, None, fx=ss, fy=ss, interpolation=cv2.INTER_NEAREST)
    contours, hierarchy = cv2.findContours(big, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None:
        return []
    depth = []
    for i in range(len(contours)):
        d, parent = 0, hierarchy[0][i][3]
        while parent >= 0:
            d, parent = d + 1, hierarchy[0][parent][3]
        depth.append(d)
    out = []
    for i in sorted(range(len(contours)), key=lambda i: depth[i]):
        c = cv2.approxPolyDP(contours[i], 1.5, True)[:, 0].astype(np.float64)
        if len(c) < 3 or cv2.contourArea(c.astype(np.float32)) < 4 * ss * ss:
            continue
        # fine pixel (edge pixel centre) -> crop pixels; +0.5 fine px puts the line on the edge
        pts = (c + 0.5) / ss - 0.5
        out.append(polygon("include" if depth[i] % 2 == 0 else "exclude", pts))
    return out


def label_from_classes(faceset: Path, chosen: list[str], shared: Path = SHARED) -> int:
    """Label the faces of the renders named in `chosen` (stems) from their class maps -> count."""
    from vfxswap.faces import align
    from vfxswap.faceset.store import Faceset

    labels = {}
    with Faceset(faceset) as fs:
        for row in fs.faces():
            stem = Path(row.source).stem
            if stem not in chosen:
                continue
            truth = np.isin(classes(shared / FOLDER / f"{stem}.png"), FACE_CLASSES).astype(np.float32)
            cut = align.cut_face(truth[..., None], row.matrix, row.size)[..., 0] > 0.5
            labels[row.id] = {"polygons": polygons_from_mask(cut), "matte": None, "origin": "classes"}
        fs.set_labels(labels)
    return len(labels)


def plate_matte(matte: np.ndarray, matrix: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """An aligned matte over the plate as `vfxswap masks export` puts it (zero outside the square)."""
    from vfxswap.masks.plate import aligned_to_plate

    return aligned_to_plate(matte, matrix, shape)


def scores(faceset: Path, shared: Path = SHARED) -> dict[str, dict]:
    """Per render: IoU of the seg matte and of the hull, and glasses figures, in plate space."""
    from vfxswap.faceset.store import Faceset
    from vfxswap.masks.hull import hull_mask
    from vfxswap.masks.labels import read_matte

    out = {}
    with Faceset(faceset) as fs:
        for row in fs.faces():
            stem = Path(row.source).stem
            seg = classes(shared / FOLDER / f"{stem}.png")
            truth, valid = np.isin(seg, FACE_CLASSES), seg != IGNORE
            ours = plate_matte(read_matte(fs.folder / row.seg, row.size), row.matrix, seg.shape) if row.seg else None
            hull = hull_mask(row.landmarks, seg.shape, "extended")

            def iou(m, within=None):
                keep = valid if within is None else valid & within
                inter = ((m > 0.5) & truth & keep).sum()
                union = (((m > 0.5) | truth) & keep).sum()
                return float(inter / union) if union else float("nan")

            item = {"iou_hull": iou(hull)}
            if ours is not None:
                item["iou_seg"] = iou(ours)
            glasses = seg == GLASSES
            if glasses.sum() > 200 and ours is not None:
                ys, xs = np.nonzero(glasses)
                box = np.zeros_like(glasses)
                box[ys.min():ys.max() + 1, xs.min():xs.max() + 1] = True
                item["glasses_kept_out"] = float((ours[glasses] <= 0.5).mean())
                item["glasses_kept_out_hull"] = float((hull[glasses] <= 0.5).mean())
                item["iou_glasses_box"] = iou(ours, box)
                item["iou_glasses_box_hull"] = iou(hull, box)
            out.setdefault(stem, item)  # a second face in a render (none here) would not replace the first
    return out


def run(work: Path, *, iters: int, resolution: int, seed: int, shared: Path = SHARED) -> dict:
    from vfxswap.masks.seg import apply_masker, train_masker

    names = [p.stem for p in renders(shared)]
    chosen, held = names[:LABELLED], names[LABELLED:]
    faceset = build_faceset(work, shared)
    n = label_from_classes(faceset, chosen, shared)
    t0 = time.time()
    config = train_masker([faceset], work / "masker", iters=iters, resolution=resolution, seed=seed, device="cpu")
    train_s = time.time() - t0
    apply_masker(faceset, work / "masker", device="cpu", redo=True)
    per = scores(faceset, shared)
    test = [per[s] for s in held if s in per]
    mean = lambda key, items: float(np.mean([i[key] for i in items if key in i])) if any(key in i for i in items) \
        else None
    return {"iters": iters, "resolution": resolution, "seed": seed, "labelled_faces": n,
            "held_out": len(held), "held_out_found": len(test), "missed": [s for s in held if s not in per],
            "train_seconds": round(train_s, 1), "masker_id": config.id,
            "held_iou_seg": mean("iou_seg", test), "held_iou_hull": mean("iou_hull", test),
            "labelled_iou_seg": mean("iou_seg", [per[s] for s in chosen if s in per]),
            "held_glasses_kept_out": mean("glasses_kept_out", test),
            "held_glasses_kept_out_hull": mean("glasses_kept_out_hull", test),
            "held_iou_glasses_box": mean("iou_glasses_box", test),
            "held_iou_glasses_box_hull": mean("iou_glasses_box_hull", test),
            "per_render": per}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iters", type=int, default=1500)
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", help="work folder (kept; default a temporary one)")
    ap.add_argument("--json", help="write the figures here too")
    args = ap.parse_args(argv)
    if not renders():
        print(f"no FaceSynthetics renders in {SHARED / FOLDER}", file=sys.stderr)
        return 2
    work = Path(args.work or tempfile.mkdtemp(prefix="vfxswap_masks_"))
    res = run(work, iters=args.iters, resolution=args.resolution, seed=args.seed)
    for stem, item in res["per_render"].items():
        print(f"{stem}: " + "  ".join(f"{k} {v:.3f}" for k, v in item.items()))
    for key, value in res.items():
        if key != "per_render":
            print(f"{key:28s} {value:.3f}" if isinstance(value, float) else f"{key:28s} {value}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
