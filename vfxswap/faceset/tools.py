"""Curating a faceset: what it holds (`info`), ordering for review (`sort`), keeping one
identity (`filter --like`). Exclusion is a flag, so nothing is lost until `--delete`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vfxswap.errors import VfxSwapError
from vfxswap.faceset.store import Faceset

YAW_BINS = np.arange(-90, 91, 15)
SORT_KEYS = ("yaw", "blur", "identity", "size")


def info(fs: Faceset) -> dict:
    faces = fs.faces(include_excluded=False)
    counts = fs.counts()
    yaws = np.array([f.yaw for f in faces if f.yaw is not None])
    hist, _ = np.histogram(np.clip(yaws, -89.9, 89.9), YAW_BINS) if len(yaws) else (np.zeros(len(YAW_BINS) - 1), None)
    # Stills have one frame per source: their tracks are identities across sources.
    stills = all(n <= 1 for (n,) in fs.db.execute("SELECT COUNT(*) FROM frames GROUP BY source"))
    tracks: dict[str, int] = {}
    for f in faces:
        key = f"identity {f.track_id}" if stills else f"{Path(f.source).name} track {f.track_id}"
        tracks[key] = tracks.get(key, 0) + 1
    blur = [f.blur for f in faces if f.blur is not None]
    return {
        "folder": str(fs.folder), "counts": counts, "face_type": fs.meta("face_type"), "size": fs.meta("size"),
        "encoding": fs.meta("encoding"), "sources": fs.sources(), "tracks": tracks,
        "yaw_histogram": {f"{a:+d}..{b:+d}": int(n) for a, b, n in zip(YAW_BINS[:-1], YAW_BINS[1:], hist)},
        "pitch_range": _range([f.pitch for f in faces]), "blur_range": _range(blur), "masker": fs.meta("masker"),
    }


def _range(values) -> tuple[float, float] | None:
    values = [v for v in values if v is not None]
    return (float(min(values)), float(max(values))) if values else None


def format_info(data: dict) -> str:
    c = data["counts"]
    lines = [f"faceset    {data['folder']} ({data['face_type']}, {data['size']} px, {data['encoding']})",
             f"faces      {c['faces'] - c['excluded']} kept, {c['excluded']} excluded, {c['aligned']} aligned"
             + (f", {c['filled']} filled in over short track gaps (not detected)" if c.get("filled") else ""),
             f"frames     {c['frames']} ({c['frames_without_faces']} without a face), {len(data['sources'])} source(s)",
             f"masks      {c.get('labelled', 0)} labelled, {c.get('segmented', 0)} with a segmentation matte"
             + (f" (masker {data['masker']['id']})" if data.get("masker") else ""),
             "tracks     " + ", ".join(f"{k}: {v}" for k, v in data["tracks"].items())]
    peak = max(data["yaw_histogram"].values() or [1]) or 1
    lines.append("yaw        (degrees, + = face turned to its left)")
    for span, n in data["yaw_histogram"].items():
        lines.append(f"  {span:>9} {'#' * round(30 * n / peak):<30} {n}")
    if data["pitch_range"]:
        lines.append(f"pitch      {data['pitch_range'][0]:.1f} .. {data['pitch_range'][1]:.1f}")
    if data["blur_range"]:
        lines.append(f"blur       {data['blur_range'][0]:.4g} .. {data['blur_range'][1]:.4g} (variance of Laplacian)")
    return "\n".join(lines)


def ordered(faces: list, by: str) -> list:
    """`faces` in review order, nothing written: yaw (left to right), blur (sharpest first), size
    (largest first), identity (most typical of the kept faces first); "frame": as given. Faces
    without the value go last, in the order given. `faceset sort` and the mask editor both use it."""
    if by == "frame":
        return list(faces)
    if by not in SORT_KEYS:
        raise VfxSwapError(f"unknown sort key {by!r} (choose from {', '.join(SORT_KEYS)})")
    if by == "identity":
        kept = [f.embedding for f in faces if f.embedding is not None and not f.excluded]
        centre = np.median(np.stack(kept), axis=0) if kept else None
        value = lambda f: None if f.embedding is None or centre is None else float(np.linalg.norm(f.embedding - centre))
    else:
        value = {"yaw": lambda f: f.yaw, "blur": lambda f: None if f.blur is None else -f.blur,
                 "size": lambda f: None if f.face_size is None else -f.face_size}[by]
    keyed = [(value(f), i, f) for i, f in enumerate(faces)]
    keyed.sort(key=lambda t: (t[0] is None, t[0] or 0.0, t[1]))
    return [f for _, _, f in keyed]


def sort(fs: Faceset, by: str) -> list:
    """Rank kept faces for review (see `ordered`); the rank is stored."""
    faces = ordered([f for f in fs.faces(include_excluded=False) if f.image is not None], by)
    for rank, f in enumerate(faces):
        f.rank = rank
    fs.update_faces(faces, ["rank"])
    return faces


def filter_like(fs: Faceset, references: list[np.ndarray], threshold: float, delete: bool = False) -> tuple[int, int]:
    """Keep faces within `threshold` of the references' mean embedding; exclude (or delete) the rest."""
    from vfxswap.faces.identity import distance

    if not references:
        raise VfxSwapError("filter --like: no face found in the reference images")
    centre = np.mean(np.stack(references), axis=0)
    keep, drop = [], []
    for f in fs.faces():
        (keep if f.embedding is not None and distance(f.embedding, centre) <= threshold else drop).append(f)
    for f in keep:
        f.excluded = 0
    for f in drop:
        f.excluded = 1
    fs.update_faces(keep + drop, ["excluded"])
    if delete and drop:
        with fs.transaction() as db:
            db.executemany("DELETE FROM faces WHERE id = ?", [(f.id,) for f in drop])
        for f in drop:
            if f.image:
                fs.image_path(f).unlink(missing_ok=True)
    return len(keep), len(drop)
