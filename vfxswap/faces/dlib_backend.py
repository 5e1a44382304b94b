"""dlib's face detectors (HOG, MMOD CNN) and its 68-point shape predictor; fully offline.

The models ship in `face-recognition-models` (see `weights`); the HOG detector is built into
dlib. Boxes are (x0, y0, x1, y1) in pixels with x1, y1 exclusive: dlib's inclusive
rectangle (left, top, right, bottom) is (left, top, right + 1, bottom + 1) here.

Box conventions, measured (the 19 300-W images with human landmarks where both HOG and MMOD
find the face: 18 HELEN test images and LFPW image_0010, faces brought to about 160 px;
normalised mean error, NME, is the mean point error over the inter-ocular distance; jitter on
the 75 frames of GRID clip brbk7n at 2x):
- the shape predictor was trained on HOG boxes: HOG box -> predictor, NME 0.0340;
- MMOD boxes sit higher and to the left of HOG's (centre -0.06 w in x, -0.08 w in y, sd 0.05 and
  0.07; same size on average): MMOD box -> predictor as it is, NME 0.0381 (worst 0.086), and on the
  GRID clip its landmarks jitter 3.7x as much as from HOG boxes (mean second difference over
  the inter-ocular distance 0.063 vs 0.017);
- the predictor fails on boxes a little off its convention: a HOG box moved up by 0.2 of its
  size gives NME 0.16 (worst 0.65), 0.8x its size 0.051 (worst 0.28). S3FD's boxes take in the
  forehead (taller and higher than HOG's); its weights are not on this machine, so they could
  not be measured directly.
So a box from any detector but HOG is re-fitted (`ShapePredictor.landmarks`): the points found
give the box HOG would have drawn around them (`hog_box`, fitted on the same 19 faces), and the
predictor runs again on it, at most twice, until the box stops moving (IoU >= 0.9). Measured:
MMOD boxes 0.0381 -> 0.0322 (worst 0.051; GRID jitter 0.063 -> 0.019), a box 0.2 too high
0.16 -> 0.034, 0.8x too small 0.051 -> 0.033, a box shaped as S3FD's are thought to be (a guess:
centre 0.15 w higher, 1.2x as wide, 1.44x as tall) 0.14 -> 0.034. HOG boxes
are used as they are (re-fitting them gains 0.0340 -> 0.0327 but jitters more, 0.017 -> 0.019),
about 2 ms a pass on a 256 px crop.
"""

from __future__ import annotations

import numpy as np

from vfxswap.errors import VfxSwapError
from vfxswap.faces import weights
from vfxswap.faces.backends import Face

# hog_box: HOG's box around a face, from its 68 points (fitted on 300-W human landmarks):
# square, HOG_BOX_SIDE x the points' RMS radius, centred HOG_BOX_DY x that radius above the points' mean.
HOG_BOX_SIDE = 2.82
HOG_BOX_DY = -0.11
REFIT_IOU = 0.9  # a re-fitted box this close to the one used ends the re-fitting
REFIT_PASSES = 2


def _ready(*keys: str) -> tuple[bool, str]:
    ok, detail, _ = weights.ready("dlib", *keys)
    return ok, detail


def _files(what: str, *keys: str) -> dict:
    ok, detail, files = weights.ready("dlib", *keys)
    if not ok:
        raise VfxSwapError(f"{what} unavailable: {detail}")
    return files


def _box(r) -> np.ndarray:
    return np.array([r.left(), r.top(), r.right() + 1, r.bottom() + 1], np.float32)


class HogDetector:
    """dlib's frontal HOG + linear SVM detector (dlib.get_frontal_face_detector)."""

    name = "dlib"
    min_score = 0.0  # dlib's own HOG threshold: real faces seen here score 0.08 to 3
    native_min_face = 80  # pixels: its window; `upsample` doubles the image per step for smaller faces

    @classmethod
    def available(cls) -> tuple[bool, str]:
        return _ready()

    def __init__(self, device: str = "cpu"):  # device: unused (CPU only), taken like every detector's
        _files("dlib HOG detector")
        import dlib

        self._detector = dlib.get_frontal_face_detector()

    def detect(self, image: np.ndarray, upsample: int = 0) -> list[Face]:
        """(H, W, 3) uint8 RGB -> faces, best first. `upsample` doubles the image per step so
        faces down to ~40 px (1) or ~20 px (2) are found; the native minimum is ~80 px."""
        import cv2

        image = np.ascontiguousarray(image)
        # HOG on luminance: dlib would take the strongest channel's gradient per pixel;
        # luminance finds the same faces here and runs ~17% faster.
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
        rects, scores, _ = self._detector.run(gray, upsample, 0.0)
        faces = [Face(_box(r), float(s)) for r, s in zip(rects, scores)]
        faces.sort(key=lambda f: -f.score)
        return faces


class MmodDetector:
    """dlib's MMOD CNN face detector (mmod_human_face_detector.dat): more poses than HOG, slower
    on a CPU. Its boxes sit higher and left of HOG's: the dlib landmarker re-fits them."""

    name = "dlib-cnn"
    min_score = 0.3  # MMOD confidences
    native_min_face = 80  # measured: finds the astronaut down to a ~60 px face, like HOG

    @classmethod
    def available(cls) -> tuple[bool, str]:
        return _ready("mmod_detector")

    def __init__(self, device: str = "cpu"):  # device: dlib's own CUDA build decides, not this
        files = _files("dlib MMOD detector", "mmod_detector")
        import dlib

        self._detector = dlib.cnn_face_detection_model_v1(str(files["mmod_detector"]))

    def detect(self, image: np.ndarray, upsample: int = 0) -> list[Face]:
        faces = [Face(_box(d.rect), float(d.confidence)) for d in self._detector(np.ascontiguousarray(image), upsample)]
        faces.sort(key=lambda f: -f.score)
        return faces


def hog_box(points: np.ndarray) -> np.ndarray:
    """The box dlib's HOG detector draws around a face with these 68 points (x1, y1 exclusive)."""
    c = points.mean(0)
    radius = float(np.sqrt(((points - c) ** 2).sum(1).mean()))
    half = HOG_BOX_SIDE * radius / 2
    cy = c[1] + HOG_BOX_DY * radius
    return np.array([c[0] - half, cy - half, c[0] + half, cy + half], np.float32)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return float(w * h / union) if union > 0 else 0.0


class ShapePredictor:
    """The iBUG 68-point regression-tree shape predictor (Kazemi & Sullivan), trained on dlib
    HOG boxes: boxes from other detectors are re-fitted to that convention (module docstring)."""

    name = "dlib"
    native_boxes = ("dlib",)  # detectors whose boxes it takes as they are

    @classmethod
    def available(cls) -> tuple[bool, str]:
        return _ready("landmarks68")

    def __init__(self, device: str = "cpu"):
        files = _files("dlib landmarker", "landmarks68")
        import dlib

        self._dlib = dlib
        self._predictor = dlib.shape_predictor(str(files["landmarks68"]))

    def _points(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        x0, y0, x1, y1 = (int(round(float(v))) for v in box[:4])
        shape = self._predictor(image, self._dlib.rectangle(x0, y0, x1 - 1, y1 - 1))
        return np.array([(p.x, p.y) for p in shape.parts()], np.float32)

    def landmarks(self, image: np.ndarray, box: np.ndarray, detector: str | None = None) -> np.ndarray:
        """(68, 2) float32 points (pixel-centre coordinates) for the face in `box`, found by the
        detector named `detector` (None: unknown, so re-fitted like any box not from HOG)."""
        image = np.ascontiguousarray(image)
        box = np.asarray(box, np.float32)
        points = self._points(image, box)
        if detector in self.native_boxes:
            return points
        for _ in range(REFIT_PASSES):
            refit = hog_box(points)
            if _iou(refit, box) >= REFIT_IOU:
                break
            box, points = refit, self._points(image, refit)
        return points
