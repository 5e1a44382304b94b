"""MediaPipe's face networks in torch: BlazeFace detection, Face Mesh (468 points) and Iris; offline.

The weights ship inside vfxswap (`mesh_models/`, Apache-2.0, converted once from the mediapipe
0.10.21 wheel by tools/convert_mediapipe.py) and run through `graphnet` on CPU or CUDA, batched:
no TensorFlow Lite, no download, no numpy or protobuf pins.

- `MeshDetector` ("mesh"): BlazeFace full range (192 px input, 2304 anchors; faces from about a
  tenth of the picture down) on the whole image letterboxed, plus, when `upsample` asks for small
  faces, overlapping tiles of it in the same batch; boxes merged by MediaPipe's weighted NMS.
- `MeshLandmarker` ("mesh"): Face Mesh on a square region of interest rotated upright by the eyes,
  1.5x the face (MediaPipe's convention). Given any detector's box it fits the region to its own
  points and runs again until the region stops moving, so boxes of any convention work. Its 468
  points plus 5 iris points per eye (`Iris`, on 64 px eye crops) are the dense points kept in the
  faceset; the 68 iBUG points every other stage uses come from them through `map68.json`
  (tools/fit_mesh68.py: a blend of nearby mesh vertices per point).
- Tracking: `track(image, dense)` runs Face Mesh on the region its last points give (MediaPipe's
  own tracking: cheaper and steadier than detecting again), with its face-presence score.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from scipy.special import expit

from vfxswap.errors import VfxSwapError
from vfxswap.faces import weights
from vfxswap.faces.backends import Face
from vfxswap.faces.track import box_iou

MODELS = Path(__file__).with_name("mesh_models")

DETECT_SIDE = 192  # BlazeFace full range input
DETECT_MIN_SCORE = 0.5  # MediaPipe uses 0.5 (short range) and 0.6 (full range); kept low, the faces are checked by the mesh
NMS_IOU = 0.3  # MediaPipe's face detection: weighted NMS at IoU 0.3
MESH_SIDE = 192
MESH_SCALE = 1.5  # region of interest = 1.5x the face, square (MediaPipe)
MESH_PRESENT = 0.5  # face-presence probability below which a tracked face counts as lost
IRIS_SIDE = 64
IRIS_SCALE = 2.3  # eye crop = 2.3x the eye-corner distance (MediaPipe)
REFIT_IOU = 0.9
REFIT_DEGREES = 3.0
REFIT_PASSES = 2
EYES = ((33, 133), (362, 263))  # mesh eye corners (outer, inner): the subject's right eye, then left
ROLL_POINTS = (33, 263)  # outer eye corners: the region's rotation (MediaPipe)
N_DENSE = 478  # 468 mesh points + 5 iris points per eye (centre first), as MediaPipe's refined mesh numbers them


def _ready() -> tuple[bool, str]:
    ok, detail, _ = weights.ready("mesh", *weights.MESH_FILES)
    return ok, detail


def _net(name: str, device: str, outputs: list[int] | None = None):
    from vfxswap.faces.graphnet import GraphNet

    return GraphNet.load(MODELS / name, device, outputs)


def _tensor(batch: list[np.ndarray], device, low: float, high: float):
    """uint8 (H, W, 3) crops -> float32 NCHW (channels-last in memory) in [low, high]. Scaled in
    numpy: a torch element-wise op here would spread over every core, and in extraction (beside
    the reader thread) waiting for the busy one cost 10 ms a call (measured)."""
    import torch

    x = np.stack(batch).astype(np.float32) * np.float32((high - low) / 255.0) + np.float32(low)
    return torch.from_numpy(x).permute(0, 3, 1, 2).to(device)


# --- detection ---------------------------------------------------------------------------


def _anchors() -> np.ndarray:
    """(2304, 2) anchor centres of BlazeFace full range (one per cell of its 48x48 grid, size 1)."""
    grid = DETECT_SIDE // 4
    ys, xs = np.mgrid[0:grid, 0:grid]
    return np.stack([(xs.ravel() + 0.5) / grid, (ys.ravel() + 0.5) / grid], 1).astype(np.float32)


def weighted_nms(boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, iou: float = NMS_IOU):
    """MediaPipe's weighted non-maximum suppression: each kept face is the score-weighted mean of
    the boxes and keypoints overlapping the best one (steadier than keeping the best alone)."""
    order = np.argsort(-scores)
    boxes, keypoints, scores = boxes[order], keypoints[order], scores[order]
    left = np.ones(len(scores), bool)
    out = []
    for i in range(len(scores)):
        if not left[i]:
            continue
        near = left & (box_iou(boxes[i][None], boxes)[0] > iou)
        near[i] = True
        wts = scores[near][:, None]
        out.append(((boxes[near] * wts).sum(0) / wts.sum(), (keypoints[near] * wts[:, :, None]).sum(0) / wts.sum(),
                    float(scores[i])))
        left &= ~near
    return out


class MeshDetector:
    """BlazeFace full range (MediaPipe), run in torch; `upsample` adds tiles for small faces."""

    name = "mesh"
    min_score = DETECT_MIN_SCORE
    native_min_face = None  # no fixed size: the whole image is one 192 px input, so the reach scales with it
    native_min_fraction = 1 / 15  # measured: faces from about this share of the longer side (12 px of the 192)

    @classmethod
    def available(cls) -> tuple[bool, str]:
        return _ready()

    def __init__(self, device: str = "cpu"):
        self.device = device
        self.net = _net("blazeface_full", device)
        self.anchors = _anchors()

    def _inputs(self, image: np.ndarray, upsample: int):
        """The whole image as one square (padded below or right), then for each `upsample` level L
        overlapping square tiles of side max(H, W) / 2**L (faces 2**L times smaller come out at
        the size the whole image shows big ones): [(192 px crop, side, x0, y0)], one batch."""
        h, w = image.shape[:2]
        regions = [(0, 0, max(h, w))]
        for level in range(1, upsample + 1):
            side = max(32, round(max(h, w) / 2 ** level))
            step = max(1, round(side * 0.75))
            xs = sorted({*range(0, max(0, w - side) + 1, step), max(0, w - side)})
            ys = sorted({*range(0, max(0, h - side) + 1, step), max(0, h - side)})
            regions += [(x, y, side) for y in ys for x in xs]
        crops = []
        for x0, y0, side in regions:
            patch = image[y0:y0 + side, x0:x0 + side]
            if patch.shape[:2] != (side, side):
                padded = np.zeros((side, side, 3), np.uint8)
                padded[:patch.shape[0], :patch.shape[1]] = patch
                patch = padded
            interp = cv2.INTER_AREA if side > DETECT_SIDE else cv2.INTER_LINEAR
            crops.append((cv2.resize(patch, (DETECT_SIDE, DETECT_SIDE), interpolation=interp), side, x0, y0))
        return crops

    def detect_raw(self, image: np.ndarray, upsample: int = 0):
        """[(box (4,), keypoints (6, 2), score)] in image pixels, best first: the six keypoints are
        the eyes (subject's right, left), nose tip, mouth centre and ear tragions (right, left)."""
        image = np.ascontiguousarray(image[..., :3])
        inputs = self._inputs(image, upsample)
        raw, logits = self.net(_tensor([c for c, *_ in inputs], self.net.device, -1.0, 1.0))
        raw, logits = raw.cpu().numpy(), logits.cpu().numpy()[..., 0]
        scores = expit(logits)
        boxes, points, kept = [], [], []
        for (crop, side, x0, y0), r, s in zip(inputs, raw, scores):
            keep = s >= self.min_score * 0.5  # weighted NMS averages in near misses too
            if not keep.any():
                continue
            r, a = r[keep] / DETECT_SIDE, self.anchors[keep]
            cx, cy = r[:, 0] + a[:, 0], r[:, 1] + a[:, 1]
            bw, bh = r[:, 2], r[:, 3]
            box = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1) * side + [x0, y0, x0, y0]
            kp = (r[:, 4:16].reshape(-1, 6, 2) + a[:, None]) * side + [x0, y0]
            boxes.append(box)
            points.append(kp)
            kept.append(s[keep])
        if not boxes:
            return []
        merged = weighted_nms(np.concatenate(boxes), np.concatenate(points), np.concatenate(kept))
        return [(b.astype(np.float32), k.astype(np.float32), s) for b, k, s in merged if s >= self.min_score]

    def detect(self, image: np.ndarray, upsample: int = 0) -> list[Face]:
        return [Face(box, score) for box, _, score in self.detect_raw(image, upsample)]


# --- landmarks ---------------------------------------------------------------------------


@dataclass
class Region:
    """A square region of interest: centre (x, y), side, and rotation (radians, the face's roll)."""

    cx: float
    cy: float
    side: float
    angle: float

    def matrix(self, out: int) -> np.ndarray:
        """(2, 3) image -> crop of `out` pixels, the face upright."""
        c, s = math.cos(self.angle), math.sin(self.angle)
        k = out / self.side
        # rotate by -angle about the centre, scale, and put the centre at the crop centre
        return np.array([[k * c, k * s, out / 2 - k * (c * self.cx + s * self.cy)],
                         [-k * s, k * c, out / 2 - k * (-s * self.cx + c * self.cy)]], np.float64)

    def box(self) -> np.ndarray:
        h = self.side / 2
        return np.array([self.cx - h, self.cy - h, self.cx + h, self.cy + h], np.float32)


def region_from_points(points: np.ndarray, roll_points=ROLL_POINTS, scale: float = MESH_SCALE) -> Region:
    """MediaPipe's region for the next Face Mesh pass: upright by the outer eye corners, the
    points' extent in that frame, scale x its longer side, square."""
    a, b = points[roll_points[0]], points[roll_points[1]]
    angle = math.atan2(b[1] - a[1], b[0] - a[0])
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, s], [-s, c]])
    local = points[:, :2] @ rot.T
    lo, hi = local.min(0), local.max(0)
    centre = ((lo + hi) / 2) @ rot
    return Region(float(centre[0]), float(centre[1]), float((hi - lo).max() * scale), angle)


def region_from_box(box: np.ndarray, angle: float = 0.0) -> Region:
    x0, y0, x1, y1 = (float(v) for v in box[:4])
    return Region((x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0) * MESH_SCALE, angle)


def _cut(image: np.ndarray, matrix: np.ndarray, out: int) -> np.ndarray:
    """The crop `matrix` maps to, low-passed when it shrinks the image (no aliasing)."""
    k = math.hypot(matrix[0, 0], matrix[0, 1])
    if k < 0.5:  # shrink most of the way by area, then warp
        f = 1.0 / k / 1.5
        small = cv2.resize(image, (max(1, round(image.shape[1] / f)), max(1, round(image.shape[0] / f))),
                           interpolation=cv2.INTER_AREA)
        sx, sy = small.shape[1] / image.shape[1], small.shape[0] / image.shape[0]
        matrix = matrix @ np.array([[1 / sx, 0, 0.5 / sx - 0.5], [0, 1 / sy, 0.5 / sy - 0.5], [0, 0, 1]])
        image = small
    return cv2.warpAffine(image, matrix, (out, out), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def _back(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Crop pixels -> image pixels (the inverse of `matrix`)."""
    inv = cv2.invertAffineTransform(matrix)
    return points[:, :2] @ inv[:, :2].T + inv[:, 2]


class Map68:
    """The 68 iBUG points as blends of mesh vertices (`map68.json`, fitted by tools/fit_mesh68.py)."""

    def __init__(self, path: Path = MODELS / "map68.json"):
        spec = json.loads(path.read_text())
        self.vertices = np.array([p["vertices"] for p in spec["points"]], np.int64)  # (68, K)
        self.weights = np.array([p["weights"] for p in spec["points"]], np.float32)  # (68, K), rows sum to 1

    def __call__(self, dense: np.ndarray) -> np.ndarray:
        return (dense[self.vertices, :2] * self.weights[..., None]).sum(1).astype(np.float32)


class MeshLandmarker:
    """Face Mesh + Iris (MediaPipe) in torch: 478 dense points, and 68 iBUG points from them."""

    name = "mesh"
    native_boxes = ()  # every box is re-fitted to the mesh's own region (module docstring)
    min_presence = MESH_PRESENT  # `measure` and `track` say how sure they are a face is there

    @classmethod
    def available(cls) -> tuple[bool, str]:
        return _ready()

    def __init__(self, device: str = "cpu"):
        self.device = device
        self.mesh = _net("face_mesh", device)
        self.iris = _net("iris", device, outputs=[1])  # the 5 iris points only, not its 71-point eye contours
        self.map68 = Map68() if (MODELS / "map68.json").is_file() else None

    # the networks, batched over faces
    def _mesh(self, image: np.ndarray, regions: list[Region]) -> tuple[list[np.ndarray], np.ndarray]:
        """Face Mesh on each region -> ((468, 3) points in image pixels (z in crop pixels), presence)."""
        mats = [r.matrix(MESH_SIDE) for r in regions]
        crops = [_cut(image, m, MESH_SIDE) for m in mats]
        coords, flag = self.mesh(_tensor(crops, self.mesh.device, 0.0, 1.0))  # [0, 1]: measured better than [-1, 1]
        coords = coords.reshape(len(regions), 468, 3).cpu().numpy()
        presence = expit(flag.reshape(-1).cpu().numpy())
        out = []
        for m, c in zip(mats, coords):
            k = math.hypot(m[0, 0], m[0, 1])
            out.append(np.concatenate([_back(c, m), c[:, 2:] / k], 1).astype(np.float32))
        return out, presence

    def _iris(self, image: np.ndarray, meshes: list[np.ndarray]) -> list[np.ndarray]:
        """(10, 2) iris points per face (5 per eye, centre first; subject's right eye first)."""
        crops, mats = [], []
        for pts in meshes:
            for outer, inner in EYES:
                # Both eyes upright and unmirrored: MediaPipe mirrors one, but on the FaceSynthetics
                # pupils the iris centre came out closer unmirrored, for both eyes (measured on the
                # dev renders: about 0.3-2% of the eye distance unmirrored, 0.7-7% mirrored)
                a, b = pts[outer, :2], pts[inner, :2]
                left, right = (a, b) if a[0] <= b[0] else (b, a)
                angle = math.atan2(right[1] - left[1], right[0] - left[0])
                centre = (a + b) / 2
                region = Region(float(centre[0]), float(centre[1]), float(np.linalg.norm(b - a) * IRIS_SCALE), angle)
                m = region.matrix(IRIS_SIDE)
                crops.append(_cut(image, m, IRIS_SIDE))
                mats.append(m)
        (iris,) = self.iris(_tensor(crops, self.iris.device, 0.0, 1.0))
        iris = iris.reshape(len(crops), 5, 3).cpu().numpy()
        pts = [_back(p, m) for p, m in zip(iris, mats)]
        return [np.concatenate(pts[2 * i:2 * i + 2]).astype(np.float32) for i in range(len(meshes))]

    def dense_many(self, image: np.ndarray, regions: list[Region], refit: bool = True):
        """[(478, 2) dense points, presence, region used] for each region; with `refit` a region is
        fitted to the mesh's points and run again until it stops moving (at most REFIT_PASSES)."""
        image = np.ascontiguousarray(image[..., :3])
        meshes, presence = self._mesh(image, regions)
        regions = list(regions)
        for _ in range(REFIT_PASSES if refit else 0):
            again = []
            for i, (pts, r) in enumerate(zip(meshes, regions)):
                new = region_from_points(pts)
                moved = abs(math.remainder(new.angle - r.angle, 2 * math.pi)) > math.radians(REFIT_DEGREES)
                if moved or box_iou(r.box()[None], new.box()[None])[0, 0] < REFIT_IOU:
                    again.append((i, new))
            if not again:
                break
            redo, p = self._mesh(image, [r for _, r in again])
            for (i, r), pts, pr in zip(again, redo, p):
                meshes[i], presence[i], regions[i] = pts, pr, r
        iris = self._iris(image, meshes)
        return [(np.concatenate([m[:, :2], e]), float(p), r) for m, e, p, r in zip(meshes, iris, presence, regions)]

    def to68(self, dense: np.ndarray) -> np.ndarray:
        if self.map68 is None:
            raise VfxSwapError(f"mesh landmarker: {MODELS / 'map68.json'} is missing")
        return self.map68(dense)

    def landmarks(self, image: np.ndarray, box: np.ndarray, detector: str | None = None) -> np.ndarray:
        """(68, 2) float32 points for the face in `box` (any detector's; re-fitted)."""
        dense, _, _ = self.dense_many(image, [region_from_box(np.asarray(box, np.float32))])[0]
        return self.to68(dense)

    def measure(self, image: np.ndarray, boxes: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray, float]]:
        """[(68 points, 478 dense points, presence)] for faces in `boxes`, batched."""
        found = self.dense_many(image, [region_from_box(np.asarray(b, np.float32)) for b in boxes])
        return [(self.to68(d), d, p) for d, p, _ in found]

    def track(self, image: np.ndarray, dense: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray, float]]:
        """Follow faces from their last dense points: one Face Mesh pass on the region those give
        (MediaPipe's tracking), [(68 points, dense points, presence)]; presence < MESH_PRESENT: lost."""
        found = self.dense_many(image, [region_from_points(d[:468]) for d in dense], refit=False)
        return [(self.to68(d), d, p) for d, p, _ in found]
