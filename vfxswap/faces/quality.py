"""Per-face quality measures for sorting and filtering a face set: sharpness and head pose.

- `blur`: variance of the Laplacian inside the face. Higher is sharper. It depends on the
  pixel scale of the face (the same face downscaled 2x scores far higher), so only compare
  scores taken on aligned crops of one fixed size, never on plates.
- `head_pose`: yaw, pitch and roll in degrees from 68 landmarks, by fitting a small generic
  3D face (`MODEL_POINTS`) with `cv2.solvePnP`. Real faces differ from the model, so expect
  errors of several degrees, pitch most (chin and mouth proportions vary between people):
  enough to bin faces by pose or to flag profiles, not for tracking.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from vfxswap.errors import VfxSwapError

# A generic adult head in millimetres, from average proportions: outer eye corners 90 mm
# apart and inner ones 38 mm; below the eye line, nose tip 40 mm, nose base 51, mouth corners
# 67, chin 121; the nose tip 24 mm in front of the nasion, the outer eye corners 18 mm behind
# it. In-plane positions match the median of human-annotated 300-W faces scaled to that eye
# span, so a face looking into the lens comes out near zero pitch; it is not a scanned head.
# Axes follow the camera when the face looks straight into it: x to the subject's left (image
# right), y down, z away from the camera (into the head). Origin: the nasion (landmark 27).
# Keys are 0-based iBUG indices; the model is left/right symmetric.
MODEL_POINTS: dict[int, tuple[float, float, float]] = {
    27: (0.0, 0.0, 0.0),        # nasion, top of the nose bridge
    30: (0.0, 40.0, -24.0),     # nose tip
    33: (0.0, 51.0, -8.0),      # nose base (subnasale)
    31: (-15.0, 45.0, -2.0),    # right nostril wing
    35: (15.0, 45.0, -2.0),     # left nostril wing
    36: (-45.0, 1.0, 18.0),     # right eye, outer corner
    39: (-19.0, 3.0, 8.0),      # right eye, inner corner
    42: (19.0, 3.0, 8.0),       # left eye, inner corner
    45: (45.0, 1.0, 18.0),      # left eye, outer corner
    48: (-26.0, 67.0, 5.0),     # right mouth corner
    54: (26.0, 67.0, 5.0),      # left mouth corner
    8: (0.0, 121.0, 2.0),       # chin
}
POSE_INDICES = np.array(list(MODEL_POINTS), np.int64)
MODEL = np.array(list(MODEL_POINTS.values()), np.float64)  # (12, 3) in POSE_INDICES order


def _gray(image: np.ndarray) -> np.ndarray:
    """float32 (H, W) luma on a 0-255 scale: uint8 as is, float taken as 0-1 and scaled."""
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[2] in (3, 4):
        img = img[..., :3]
        weights = np.array([0.299, 0.587, 0.114], np.float32)  # Rec.601, what cv2's RGB2GRAY uses
        img = img.astype(np.float32) @ weights
    elif img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    elif img.ndim != 2:
        raise ValueError(f"expected a (H, W) or (H, W, 3) image, got shape {img.shape}")
    gray = img.astype(np.float32)
    if np.issubdtype(np.asarray(image).dtype, np.floating):
        gray = gray * np.float32(255)
    return gray


def blur(image: np.ndarray, landmarks: np.ndarray | None = None) -> float:
    """Sharpness: the variance of the Laplacian, over the face hull when `landmarks` are given.

    `image`: (H, W) or (H, W, 3) RGB, uint8 (0-255) or float (0-1, scaled to 0-255 so both
    give the same score). `landmarks`: (68, 2) in the image's pixel coordinates; without
    them the whole image counts. A blurred or defocused face scores low; the usual "blurry"
    thresholds (around 100) are on this 0-255 scale. The score is resolution dependent:
    compute it on the aligned crop at a fixed size so faces of different sizes compare.
    """
    gray = _gray(image)
    lap = cv2.Laplacian(gray.astype(np.float64), cv2.CV_64F)
    if landmarks is None:
        return float(lap.var())
    from vfxswap.masks.hull import hull_mask

    inside = hull_mask(landmarks, gray.shape, "components") > 0.5
    if inside.sum() < 9:
        raise VfxSwapError(f"blur: the face hull covers {int(inside.sum())} pixels of the "
                           f"{gray.shape[1]}x{gray.shape[0]} image; are the landmarks in its coordinates?")
    return float(lap[inside].var())


def _initial_guess(points: np.ndarray, f: float, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A frontal pose at the depth where the model's outer eye span matches the image's:
    starting solvePnP there keeps it away from the mirror solution behind the camera.
    `points`: the image points in POSE_INDICES order."""
    at = {k: i for i, k in enumerate(POSE_INDICES.tolist())}
    span_model = float(np.linalg.norm(MODEL[at[45], :2] - MODEL[at[36], :2]))
    span_image = max(float(np.linalg.norm(points[at[45]] - points[at[36]])), 1.0)
    depth = f * span_model / span_image
    u, v = points[at[27]]
    tvec = np.array([(u - c[0]) * depth / f, (v - c[1]) * depth / f, depth], np.float64)
    return np.zeros(3, np.float64), tvec


def rotation_to_angles(rotation: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees from a model-to-camera rotation matrix (3, 3).

    Convention: R = Rz(roll) @ Ry(-yaw) @ Rx(-pitch) in camera axes (x right, y down, z
    forward), so that yaw > 0 is the face turned to its own left (nose towards image right),
    pitch > 0 is looking up, and roll > 0 is the head tilted clockwise as seen in the image.
    Roll is outermost: turning the whole image about its centre changes roll alone.
    """
    r = np.asarray(rotation, np.float64)
    theta = math.atan2(-r[2, 0], math.hypot(r[0, 0], r[1, 0]))  # about y
    phi = math.atan2(r[2, 1], r[2, 2])                           # about x
    psi = math.atan2(r[1, 0], r[0, 0])                           # about z
    return -math.degrees(theta), -math.degrees(phi), math.degrees(psi)


def head_pose(landmarks: np.ndarray, image_size: tuple[int, int]) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees of a face from its 68 landmarks; see `rotation_to_angles`.

    `landmarks`: (68, 2) pixel coordinates in an image of `image_size` = (w, h). The camera is
    a pinhole with focal length = the image width (a normal lens, ~53 degrees across) and the
    principal point at the image centre ((w - 1) / 2, (h - 1) / 2, pixel centres at integers).
    Lens choice matters little for faces that are small in frame; on crops it biases pitch a bit.
    """
    pts = np.asarray(landmarks, np.float64)
    if pts.shape != (68, 2) or not np.isfinite(pts).all():
        raise ValueError(f"landmarks must be finite (68, 2), got shape {pts.shape}")
    w, h = float(image_size[0]), float(image_size[1])
    f = max(w, 1.0)
    c = np.array([(w - 1) / 2, (h - 1) / 2])
    camera = np.array([[f, 0, c[0]], [0, f, c[1]], [0, 0, 1]], np.float64)
    image_pts = np.ascontiguousarray(pts[POSE_INDICES])
    rvec, tvec = _initial_guess(image_pts, f, c)
    ok, rvec, tvec = cv2.solvePnP(MODEL, image_pts, camera, None, rvec.reshape(3, 1), tvec.reshape(3, 1),
                                  useExtrinsicGuess=True, flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok or tvec[2, 0] <= 0:  # diverged or behind the camera: solve from scratch
        ok, rvec, tvec = cv2.solvePnP(MODEL, image_pts, camera, None, flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok:
        raise VfxSwapError("head_pose: solvePnP found no pose for these landmarks")
    rotation, _ = cv2.Rodrigues(rvec)
    return rotation_to_angles(rotation)
