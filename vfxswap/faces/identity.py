"""Identity embeddings: dlib's 128-d face recognition network on our own 68 landmarks.

Used to keep track ids on the right person through cuts and occlusions, and to pick the
wanted actor out of a crowd by reference photos. The network aligns the face itself from the
landmarks we pass (so any backend's landmarks work, not only dlib's); faces of one person lie
closer than `SAME_PERSON` (Euclidean), dlib's published operating point (99.38% on LFW).

Models come from the `face-recognition-models` package (see `weights`), loaded on first use
and shared by every `FaceEmbedder` in the process.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vfxswap.errors import VfxSwapError
from vfxswap.faces.weights import DLIB_FILES, dlib_models_dir

SAME_PERSON = 0.6  # dlib's threshold: embeddings closer than this are the same person
EMBEDDING_SIZE = 128

_lock = threading.Lock()
_loaded: dict[tuple[str, Path], object] = {}  # (what, file) -> dlib model, once per process


def _dlib():
    try:
        import dlib
    except ImportError:
        raise VfxSwapError("dlib is not installed (pip install dlib-bin); identity embeddings need it") from None
    return dlib


def _model_file(key: str, folder: Path | None) -> Path:
    folder = folder if folder is not None else dlib_models_dir()
    if folder is None:
        raise VfxSwapError(f"dlib model files not found: the face-recognition-models package is not installed "
                           f"(pip install face-recognition-models); it provides {DLIB_FILES[key]}")
    path = Path(folder) / DLIB_FILES[key]
    if not path.is_file():
        raise VfxSwapError(f"dlib model file missing: {path} (reinstall face-recognition-models)")
    return path


def _load(key: str, folder: Path | None):
    path = _model_file(key, folder)
    with _lock:
        if (key, path) not in _loaded:
            dlib = _dlib()
            factory = dlib.face_recognition_model_v1 if key == "recognition" else dlib.shape_predictor
            try:
                _loaded[(key, path)] = factory(str(path))
            except RuntimeError as exc:
                raise VfxSwapError(f"cannot load dlib model {path}: {exc}") from None
        return _loaded[(key, path)]


def _check_image(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 (H, W, 3) image, got {img.dtype} {img.shape}")
    return np.ascontiguousarray(img)


def _shape(dlib, landmarks: np.ndarray):
    """A dlib.full_object_detection from (68, 2) float points: their bounding box and the
    points rounded to whole pixels (dlib's points are integers)."""
    pts = np.asarray(landmarks, np.float64)
    if pts.shape != (68, 2) or not np.isfinite(pts).all():
        raise ValueError(f"landmarks must be finite (68, 2), got shape {pts.shape}")
    x0, y0 = np.floor(pts.min(0)).astype(int)
    x1, y1 = np.ceil(pts.max(0)).astype(int)
    rect = dlib.rectangle(int(x0), int(y0), int(x1), int(y1))
    parts = dlib.points([dlib.point(int(x), int(y)) for x, y in np.rint(pts).astype(int)])
    return dlib.full_object_detection(rect, parts)


class FaceEmbedder:
    """128-d identity vectors from an RGB image and a face's 68 landmarks.

    `folder`: where the dlib model files are (default: the face-recognition-models package).
    Construction only checks that dlib and the files are there; models load on first use, once
    per process. Embeddings are not unit length (dlib's are ~1.4 long); compare with `distance`.
    """

    def __init__(self, folder: Path | str | None = None):
        self.folder = Path(folder) if folder is not None else None
        _model_file("recognition", self.folder)  # fail now, with a clear message, not mid-shot
        _dlib()

    @property
    def model(self):
        return _load("recognition", self.folder)

    def embed(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """(128,) float32 for the face at `landmarks` ((68, 2), pixels) in `image` (RGB uint8
        (H, W, 3), display-referred: the network was trained on sRGB photos)."""
        dlib = _dlib()
        img = _check_image(image)
        vec = self.model.compute_face_descriptor(img, _shape(dlib, landmarks), num_jitters=0)
        return np.asarray(vec, np.float32).reshape(EMBEDDING_SIZE)

    def embed_many(self, images: Sequence[np.ndarray], landmarks: Sequence[np.ndarray]) -> np.ndarray:
        """(N, 128) float32 for N (image, landmarks) pairs in one batched call; an image may
        repeat (several faces in one frame)."""
        if len(images) != len(landmarks):
            raise ValueError(f"embed_many: {len(images)} images but {len(landmarks)} landmark sets")
        if not len(images):
            return np.zeros((0, EMBEDDING_SIZE), np.float32)
        dlib = _dlib()
        imgs = [_check_image(im) for im in images]
        faces = []
        for pts in landmarks:
            one = dlib.full_object_detections()
            one.append(_shape(dlib, pts))
            faces.append(one)
        out = self.model.compute_face_descriptor(imgs, faces, num_jitters=0)
        return np.array([list(per_image[0]) for per_image in out], np.float32).reshape(-1, EMBEDDING_SIZE)

    def landmarks(self, image: np.ndarray, box: Sequence[float]) -> np.ndarray:
        """dlib's 68 landmarks, (68, 2) float32, for the face in `box` = (x0, y0, x1, y1): for
        callers that have a box but no landmarks (a reference photo, a test)."""
        dlib = _dlib()
        img = _check_image(image)
        x0, y0, x1, y1 = (int(round(float(v))) for v in box)
        shape = _load("landmarks68", self.folder)(img, dlib.rectangle(x0, y0, x1, y1))
        return np.array([(p.x, p.y) for p in shape.parts()], np.float32)


def distance(a: np.ndarray, b: np.ndarray) -> float | np.ndarray:
    """Euclidean distance between embeddings (..., 128); a float for two single vectors.
    Below `SAME_PERSON` means the same person."""
    d = np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64), axis=-1)
    return float(d) if np.ndim(d) == 0 else d


def mean_embedding(embeddings: Sequence[np.ndarray]) -> np.ndarray:
    """(128,) float32: the mean of several embeddings of one person (a track, reference photos),
    a steadier reference than any one frame. Not renormalised: dlib's threshold is on raw vectors."""
    if not len(embeddings):
        raise ValueError("mean_embedding needs at least one embedding")
    stack = np.stack([np.asarray(e, np.float32).reshape(EMBEDDING_SIZE) for e in embeddings])
    return stack.mean(0).astype(np.float32)
