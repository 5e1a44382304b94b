"""face-alignment's networks used one by one: the S3FD face detector and the 2D-FAN-4 68-point
landmark network, each loaded from its own weights file (see `weights`: `$VFXSWAP_MODELS`, then
the torch hub cache), so either composes with dlib's detector or landmarker.

Read from face-alignment (1.4 and 1.5) rather than through its `FaceAlignment` object, which
would load both networks (and find the weights only in the torch hub folder):
- S3FD (`detection.sfd.SFDDetector.detect_from_image`) takes RGB: its `batch_detect` flips
  to BGR itself before the mean subtraction. Boxes come back as (x0, y0, x1, y1, p) with
  continuous edges, taller than wide, from about the hairline to the chin.
- 2D-FAN (`FaceAlignment.get_landmarks_from_image` with `detected_faces`) centres its 256 px
  crop on the box centre moved up by CENTER_Y_OFFSET (0.12) x the box height and sizes it from
  (w + h) / REFERENCE_SCALE (195) x 200 px, then averages the heatmaps of the crop and its
  mirror image. `FanLandmarker.landmarks` does the same for one box (a test checks it against
  `get_landmarks_from_image` with the same network).
FAN and other detectors' boxes: face-alignment 1.0 fed FAN dlib HOG boxes with this same
formula (its `DlibDetector` keeps the reference scale), so HOG and MMOD boxes go in as they
are. The FAN weights are not on this machine, so this could not be measured here.
"""

from __future__ import annotations

import numpy as np

from vfxswap.errors import VfxSwapError
from vfxswap.faces import weights
from vfxswap.faces.backends import Face

S3FD_FLOOR = 0.1  # S3FD's own cut; --min-score (default min_score) is applied by the extractor


def _weights(what: str, key: str):
    ok, detail, files = weights.ready("fan", key)
    if not ok:
        raise VfxSwapError(f"{what} unavailable: {detail}; or use --detector dlib --landmarker dlib")
    return files[key]


def _ready(key: str) -> tuple[bool, str]:
    ok, detail, _ = weights.ready("fan", key)
    return ok, detail


class S3fdDetector:
    """face-alignment's S3FD (single-shot scale-invariant face detector)."""

    name = "s3fd"
    min_score = 0.5  # S3FD probabilities (face-alignment's own default cut)
    native_min_face = None  # its anchors start at 16 px: upsampling does not help it

    @classmethod
    def available(cls) -> tuple[bool, str]:
        return _ready("s3fd")

    def __init__(self, device: str = "cpu"):
        path = _weights("s3fd detector", "s3fd")
        from face_alignment.detection.sfd.sfd_detector import SFDDetector

        self._net = SFDDetector(device, path_to_detector=str(path))
        self._net.filter_threshold = S3FD_FLOOR

    def detect(self, image: np.ndarray, upsample: int = 0) -> list[Face]:
        """(H, W, 3) uint8 RGB -> faces, best first (`upsample` is ignored)."""
        dets = self._net.detect_from_image(np.ascontiguousarray(image[..., :3]))
        faces = [Face(np.asarray(d[:4], np.float32), float(d[4])) for d in dets]
        faces.sort(key=lambda f: -f.score)
        return faces


class FanLandmarker:
    """face-alignment's 2D-FAN-4 heatmap network, with its test-time mirror averaging."""

    name = "fan"
    native_boxes = ("s3fd",)

    @classmethod
    def available(cls) -> tuple[bool, str]:
        return _ready("2dfan4")

    def __init__(self, device: str = "cpu"):
        path = _weights("fan landmarker", "2dfan4")
        import torch
        from face_alignment.models import FAN

        self._torch, self.device = torch, device
        net = FAN(4)
        net.load_state_dict(torch.load(str(path), map_location=device, weights_only=True))
        self.net = net.to(device, dtype=torch.float32).eval()

    def _heatmaps(self, x):
        out = self.net(x)
        return out[-1] if isinstance(out, list) else out

    def landmarks(self, image: np.ndarray, box: np.ndarray, detector: str | None = None) -> np.ndarray:
        """(68, 2) float32 points for the face in `box` (any detector's; see the module docstring)."""
        from face_alignment import utils as fa

        torch = self._torch
        image = np.ascontiguousarray(image[..., :3] if image.ndim == 3 else np.repeat(image[..., None], 3, 2))
        x0, y0, x1, y1 = (float(v) for v in box[:4])
        center = np.array([x1 - (x1 - x0) / 2.0, y1 - (y1 - y0) / 2.0])
        center[1] -= (y1 - y0) * getattr(fa, "CENTER_Y_OFFSET", 0.12)
        scale = (x1 - x0 + y1 - y0) / getattr(fa, "REFERENCE_SCALE", 195.0)
        inp = fa.crop(image, center, scale).transpose((2, 0, 1)).astype(np.float32) / 255.0
        inp = torch.from_numpy(inp[None]).to(self.device, dtype=torch.float32)
        with torch.no_grad():
            heat = self._heatmaps(inp).detach()
            heat += fa.flip(self._heatmaps(fa.flip(inp)).detach(), is_label=True)
        heat = heat.to(device="cpu", dtype=torch.float32).numpy()
        _, points, _ = fa.get_preds_fromhm(heat, center, scale)
        points = np.asarray(points, np.float32).reshape(-1, 2)
        if points.shape != (68, 2) or not np.isfinite(points).all():
            raise VfxSwapError("fan landmarker returned no landmarks for a detected face")
        return points
