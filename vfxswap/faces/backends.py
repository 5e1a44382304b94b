"""Face detectors and landmarkers: what they share, and loading them by name.

Two separate choices, registered in `vfxswap.faces` (`DETECTORS`, `LANDMARKERS`); any detector's
boxes go to any landmarker. Both see display-referred 8-bit RGB (the colour pipeline's view
transform), never raw linear values: they were trained on photographs. Boxes and points come
back in the pixel coordinates of the image they were given; the caller maps them to plate pixels.

A detector has `name`, `min_score` (its own default confidence cut), `native_min_face` (the
smallest face in pixels it finds without upsampling; None when `upsample` does not help it) and
`detect(image, upsample) -> list[Face]`, best first. A landmarker has `name` and
`landmarks(image, box, detector=None) -> (68, 2) float32`, where `detector` names the detector
that drew the box (box conventions differ; see `dlib_backend`). Constructors take `device`.
Either may have a classmethod `available() -> (bool, why)` (its package and model files are
here; loads nothing), which `auto` and `vfxswap doctor` ask.

A landmarker may also have `measure(image, boxes) -> [(68 points, dense points, presence)]`
(batched, with its dense points and how sure it is a face is there: below its `min_presence` the
face is dropped) and `track(image, dense_points) -> same`, which follows a face from its last
dense points without a detector; the extractor uses them when they are there.

`auto` picks the first of AUTO[kind] that can load here (MediaPipe's, which ships inside vfxswap,
unless its files are missing; then face-alignment's when its weights are cached, else dlib's)
and logs which and why.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from vfxswap.faces import DETECTORS, LANDMARKERS
from vfxswap.registry import Registry

log = logging.getLogger("vfxswap")

# kind -> the preference order of `auto` (each name an entry of that kind's registry)
AUTO = {"detector": ("mesh", "s3fd", "dlib"), "landmarker": ("mesh", "fan", "dlib")}
REGISTRIES: dict[str, Registry] = {"detector": DETECTORS, "landmarker": LANDMARKERS}


@dataclass
class Face:
    """One detected face: box (x0, y0, x1, y1; x1, y1 exclusive), detector score, and (68, 2) landmarks."""

    box: np.ndarray
    score: float
    landmarks: np.ndarray | None = None


_loaded: dict[tuple[str, str, str], object] = {}  # (kind, name, device) -> instance; about 1 s each to load


def _available(kind: str, name: str) -> tuple[bool, str]:
    implementation = REGISTRIES[kind].get(name)
    check = getattr(implementation, "available", None)
    return check() if check is not None else (True, "no requirements declared")


def status(kind: str) -> dict[str, tuple[bool, str]]:
    """name -> (can load here, why) for each registered detector or landmarker; loads no model."""
    return {name: _available(kind, name) for name in REGISTRIES[kind]}


def auto_choice(kind: str) -> tuple[str | None, str]:
    """What `auto` picks for `kind` here (None: nothing can load) and why, in one line."""
    reasons = []
    for choice in AUTO[kind]:
        ok, detail = _available(kind, choice)
        if ok:
            return choice, "; ".join([detail, *reasons])
        reasons.append(f"not {choice}: {detail}")
    return None, "; ".join(reasons)


def resolve(kind: str, name: str = "auto") -> str:
    """The registered name `name` stands for (`auto`: the first of AUTO[kind] that can load
    here, said in the log with the reason). Unknown names: one line naming the choices."""
    if name != "auto":
        return REGISTRIES[kind].check(name, f"--{kind}")
    choice, why = auto_choice(kind)
    if choice is None:
        return AUTO[kind][-1]  # none can load: the last one says why when it is built
    log.info("face %s: %s (%s)", kind, choice, why)
    return choice


def _load(kind: str, name: str, device: str):
    name = resolve(kind, name)
    key = (kind, name, device)
    if key not in _loaded:
        _loaded[key] = REGISTRIES[kind].get(name)(device=device)
    return _loaded[key]


def load_detector(name: str = "auto", device: str = "cpu"):
    """A face detector by name (cached for the process)."""
    return _load("detector", name, device)


def load_landmarker(name: str = "auto", device: str = "cpu"):
    """A 68-point landmarker by name (cached for the process)."""
    return _load("landmarker", name, device)
