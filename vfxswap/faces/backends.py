"""Face detection and 68-point landmarks behind one small interface.

Backends see display-referred 8-bit RGB (the colour pipeline's view transform), never raw
linear values: detectors were trained on photographs. Boxes and points come back in the
pixel coordinates of the image they were given; the caller maps them to plate pixels.

- `dlib`: HOG (or the MMOD CNN) detector + the 68-point shape predictor from
  `face-recognition-models`; fully offline, the default here and in CI.
- `fan`: face-alignment's S3FD detector + 2D-FAN; needs its weights cached (see `weights`).
- `auto`: `fan` when its weights are present, else `dlib`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from vfxswap.errors import VfxSwapError
from vfxswap.faces import weights

log = logging.getLogger("vfxswap")
BACKENDS = ("auto", "dlib", "dlib-cnn", "fan")


@dataclass
class Face:
    """One detected face: box (x0, y0, x1, y1), detector score, and (68, 2) landmarks."""

    box: np.ndarray
    score: float
    landmarks: np.ndarray | None = None


class DlibBackend:
    """dlib HOG (or MMOD CNN) detection and the iBUG 68-point regression-tree predictor."""

    name = "dlib"
    min_score = 0.0  # dlib's own HOG threshold: real faces seen here score 0.08 to 3

    def __init__(self, cnn: bool = False):
        import dlib

        files = weights.backend_status()[0].files
        if "landmarks68" not in files:
            raise VfxSwapError("dlib backend: shape_predictor_68_face_landmarks.dat not found "
                               "(pip install face-recognition-models)")
        self._dlib = dlib
        self.cnn = cnn
        if cnn:
            self.name, self.min_score = "dlib-cnn", 0.3  # MMOD confidences
            self._detector = dlib.cnn_face_detection_model_v1(str(files["mmod_detector"]))
        else:
            self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(files["landmarks68"]))

    def detect(self, image: np.ndarray, upsample: int = 0) -> list[Face]:
        """(H, W, 3) uint8 RGB -> faces, best first. `upsample` doubles the image per step so
        faces down to ~40 px (1) or ~20 px (2) are found; HOG's native minimum is ~80 px."""
        image = np.ascontiguousarray(image)
        faces = []
        if self.cnn:
            for det in self._detector(image, upsample):
                r = det.rect
                faces.append(Face(np.array([r.left(), r.top(), r.right() + 1, r.bottom() + 1], np.float32),
                                  float(det.confidence)))
        else:
            # HOG on luminance: dlib would take the strongest channel's gradient per pixel;
            # luminance finds the same faces here and runs ~17% faster.
            gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
            rects, scores, _ = self._detector.run(gray, upsample, 0.0)
            for r, s in zip(rects, scores):
                faces.append(Face(np.array([r.left(), r.top(), r.right() + 1, r.bottom() + 1], np.float32), float(s)))
        faces.sort(key=lambda f: -f.score)
        return faces

    def landmarks(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        """(68, 2) float32 points for the face in `box` (pixel-centre coordinates)."""
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        shape = self._predictor(np.ascontiguousarray(image), self._dlib.rectangle(x0, y0, x1 - 1, y1 - 1))
        return np.array([(p.x, p.y) for p in shape.parts()], np.float32)


class FanBackend:
    """face-alignment: S3FD (or BlazeFace) detection and the 2D-FAN-4 heatmap network."""

    name = "fan"
    min_score = 0.5  # S3FD probabilities

    def __init__(self, device: str = "cpu", detector: str = "sfd"):
        status = {b.name: b for b in weights.backend_status()}["fan"]
        if not status.available:
            raise VfxSwapError(f"fan backend unavailable: {status.detail}; or use --backend dlib")
        import face_alignment
        import torch

        # face-alignment looks in the torch hub cache; point it at the folder holding the weights.
        torch.hub.set_dir(str(status.files["2dfan4"].parent.parent))
        self._fa = face_alignment.FaceAlignment(face_alignment.LandmarksType.TWO_D, device=device,
                                                face_detector=detector, compile=False)

    def detect(self, image: np.ndarray, upsample: int = 0) -> list[Face]:
        dets = self._fa.face_detector.detect_from_image(np.ascontiguousarray(image[..., ::-1]))  # it wants BGR
        faces = [Face(np.asarray(d[:4], np.float32), float(d[4])) for d in dets]
        faces.sort(key=lambda f: -f.score)
        return faces

    def landmarks(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        pts = self._fa.get_landmarks_from_image(np.ascontiguousarray(image), detected_faces=[list(box) + [1.0]])
        if not pts:
            raise VfxSwapError("fan backend returned no landmarks for a detected face")
        return np.asarray(pts[0][:, :2], np.float32)


_loaded: dict[tuple[str, str], object] = {}  # backends are loaded once per process (about 1 s each)


def load_backend(name: str = "auto", device: str = "cpu"):
    """A backend by name (cached for the process); `auto` says which it picked and why."""
    if name not in BACKENDS:
        raise VfxSwapError(f"unknown face backend {name!r} (choose from {', '.join(BACKENDS)})")
    if name == "auto":
        fan = {b.name: b for b in weights.backend_status()}["fan"]
        if fan.available:
            log.info("face backend: fan (weights found in %s)", fan.files["2dfan4"].parent)
            name = "fan"
        else:
            log.info("face backend: dlib (fan weights not cached)")
            name = "dlib"
    if (name, device) not in _loaded:
        _loaded[(name, device)] = FanBackend(device) if name == "fan" else DlibBackend(cnn=name == "dlib-cnn")
    return _loaded[(name, device)]
