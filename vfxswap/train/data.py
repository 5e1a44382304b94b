"""Training samples from a faceset: augmentation, uniform-yaw sampling and worker loaders.

One sample is one aligned face, resized to the model resolution R, as a dict of tensors:

    "input"     (3, R, R) float32  the face, randomly warped (DeepFaceLab's strength), then the sample's affine
    "target"    (3, R, R) float32  the face through the same affine only (what the model should give back)
    "mask"      (1, R, R) float32  the chosen mask, same affine, 0..1: a landmark hull, or the
                                   segmentation masker's matte (`seg`, stored beside the face)
    "weights"   (1, R, R) float32  priority map: 1, `eyes_mouth_weight` inside the eyes and mouth
    "landmarks" (68, 2)   float32  aligned landmarks in R-pixel coordinates after the affine

Why the warp goes on the input only: an autoencoder trained on identical input and target
can learn to copy pixels; a smooth random warp of the input makes it rebuild the face from
what it understood of it, which is what a swap needs. Its strength is DeepFaceLab's (a random
3, 5 or 9 node grid whose interior nodes move by a normal offset; see `WARP_SIGMA`): a weaker
warp lets the model get away with copying. Why everything else (affine, flip, colour) goes on both: those are
new views of the same face, and the model must reproduce the view (and the colour) it is given.
Training-time colour transfer (`--ct-mode`: A recoloured like B) needs both identities' faces, so
it is not done here but in the training step, where the two batches meet (`train.ct` says why).

Pixels are float32 throughout, in the model encoding (normalised ACEScct, roughly 0..1 but
highlights above 1 and small negatives are kept): nothing here clips. Images are resized with
INTER_AREA (down) / INTER_CUBIC (up) and transformed with cubic interpolation, which can
over- or undershoot at hard edges a little; masks use area / linear filters, so they stay
inside 0..1. Geometry uses reflected borders (BORDER_REFLECT_101), so a shift or rotation
never pulls black into the crop.

Determinism: every random number of a sample comes from its own generator, seeded from
(dataset seed, loader seed, epoch, draw position, face index); nothing depends on worker
state, so the same seeds give the same batches with 0, 1 or 8 workers. The draw position
is in the key so a face drawn twice in one epoch (uniform-yaw sampling draws with
replacement) gets two different augmentations.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import math
import os
import random
import signal
import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from vfxswap.errors import VfxSwapError
from vfxswap.faces.align import FACE_TYPES, MIRROR_68, transform_points
from vfxswap.faceset.store import Faceset
from vfxswap.plates import read_image

log = logging.getLogger("vfxswap")

MASK_KINDS = ("components", "extended", "seg")  # the hulls in each face's EXR; seg: masks/...seg.exr
EYE_POINTS = (tuple(range(36, 42)), tuple(range(42, 48)))
MOUTH_POINTS = tuple(range(48, 60))  # outer lip contour
PRIORITY_DILATE = 0.10  # hulls grow by this fraction of the inter-ocular distance
WARP_NODES = (3, 5, 9)  # warp grid nodes per side, one drawn per sample; the outer ring stays still
# An interior node's offset per axis: Normal(0, (WARP_SIGMA * cell)^2), cell = R / (nodes - 1).
# DeepFaceLab draws 0.24 and interpolates its grid linearly; our smoother bicubic field moves
# pixels ~1.27x more for the same node offsets, so 0.19 gives DeepFaceLab's mean displacement.
WARP_SIGMA = 0.19
YAW_BIN = 10.0  # degrees per yaw histogram bin for uniform-yaw sampling
_SUPERSAMPLE = 4  # priority map rasterised on a 4x finer grid, then area-averaged (antialiased)
_SHIFT = 4  # sub-pixel bits for cv2 polygon filling
_MASK64 = (1 << 64) - 1


def mask_kind_for(folder: str | Path, asked: str) -> str:
    """The FaceSamples mask kind for train's `--mask`: hull -> the extended hull, seg -> the
    segmentation mattes (every face must have one), auto -> seg when every kept face has one."""
    if asked in ("hull", "seg"):
        return "extended" if asked == "hull" else "seg"
    if asked != "auto":
        raise VfxSwapError(f"--mask {asked!r}: auto, seg or hull")
    with Faceset(folder) as fs:
        rows = [r for r in fs.faces(include_excluded=False) if r.image is not None]
    return "seg" if rows and all(r.seg is not None for r in rows) else "extended"


def _entropy(*values: int) -> list[int]:
    """Integers (any sign) as the non-negative words numpy's SeedSequence wants."""
    return [int(v) & _MASK64 for v in values]


@dataclass
class Augmentation:
    """The random choices of one sample (all drawn, whatever is switched off, so toggling one
    option does not change the others).

    matrix: (2, 3) float64, R pixels -> R pixels (cv2.warpAffine convention), flip included.
    flip: whether the face was mirrored (landmarks are then re-indexed with MIRROR_68).
    displacement: (R, R, 2) float32 input-only warp offsets in R pixels, or None (no warp).
    offset: (3,) float32 per-channel colour offset; contrast: scale about the target's mean
    (input and target both become (x - mean) * contrast + mean + offset, mean from the target).
    """

    matrix: np.ndarray
    flip: bool
    displacement: np.ndarray | None
    offset: np.ndarray
    contrast: float


class FaceSamples(Dataset):
    """The kept (not excluded), aligned faces of one faceset as training samples.

    Indexing: `ds[i]` gives face i with the dataset's current `epoch` (see `set_epoch`);
    loaders index with keys `(loader_seed, epoch, draw, i)` so the augmentation depends only on
    those numbers. Each face EXR is read once per item (they are small); decoded faces, already
    resized to R, are kept in memory up to `cache_mb` megabytes *per process*: every DataLoader
    worker holds its own cache, so the total is about workers x cache_mb. 0 disables caching.
    The faceset's database is read once here and closed: nothing open is carried into workers.

    face_type: when given, must match the faceset's (VfxSwapError otherwise).
    augment: False switches off the random affine, flip and colour jitter (not the warp).
    warp: smooth random warp of the input, DeepFaceLab's (`WARP_NODES`, `WARP_SIGMA`); False (a
    final sharpening phase) gives the target itself as the input.
    rotation (degrees), scale (fraction), shift (fraction of the size): ranges of the affine.
    color_jitter: colour jitter in the model encoding, 0 disables. The contrast changes by up to
    +-color_jitter about the face's mean; each channel is offset by up to +-color_jitter (half a
    shared brightness shift, half a per-channel tint). The default 0.05 is under a stop.
    """

    def __init__(self, faceset_dir: str | Path, resolution: int, *, face_type: str | None = None,
                 augment: bool = True, warp: bool = True, flip: bool = True, color_jitter: float = 0.05,
                 rotation: float = 10, scale: float = 0.05, shift: float = 0.05, mask_kind: str = "extended",
                 seed: int = 0, eyes_mouth_weight: float = 3.0, cache_mb: float = 256):
        self.folder = Path(faceset_dir)
        self.resolution = int(resolution)
        if self.resolution < 8 or self.resolution != resolution:
            raise VfxSwapError(f"resolution must be an integer of at least 8, got {resolution!r}")
        if mask_kind not in MASK_KINDS:
            raise VfxSwapError(f"mask_kind {mask_kind!r} unknown (choose from {', '.join(MASK_KINDS)})")
        if face_type is not None and face_type not in FACE_TYPES:
            raise VfxSwapError(f"unknown face type {face_type!r} (choose from {', '.join(FACE_TYPES)})")
        for name, value in (("color_jitter", color_jitter), ("rotation", rotation), ("scale", scale),
                            ("shift", shift), ("cache_mb", cache_mb)):
            if not value >= 0:
                raise VfxSwapError(f"{name} must be >= 0, got {value!r}")
        if not eyes_mouth_weight > 0:
            raise VfxSwapError(f"eyes_mouth_weight must be > 0, got {eyes_mouth_weight!r}")
        if not self.folder.is_dir():
            raise VfxSwapError(f"{self.folder}: faceset folder not found")
        with Faceset(self.folder) as fs:
            meta_type = fs.meta("face_type")
            rows = [r for r in fs.faces(include_excluded=False)
                    if r.image is not None and r.aligned_landmarks is not None and r.size]
            paths = [str(fs.image_path(r)) for r in rows]
            if mask_kind == "seg":
                bare = sum(r.seg is None for r in rows)
                if bare:
                    raise VfxSwapError(f"{self.folder}: {bare} of {len(rows)} face(s) have no segmentation matte "
                                       f"(run vfxswap masks apply --faceset {self.folder}, or train with --mask hull)")
                segs = {p: str(fs.folder / r.seg) for p, r in zip(paths, rows)}
        # Faces deleted from faces/ by hand (a common way to prune bad ones) are left out, with a
        # warning, rather than failing a loader worker mid-run.
        present = [os.path.isfile(p) for p in paths]
        if not all(present):
            gone = [p for p, ok in zip(paths, present) if not ok]
            log.warning("%s: %d face file(s) listed in the faceset are gone (e.g. %s); training without them",
                        self.folder, len(gone), gone[0])
            rows = [r for r, ok in zip(rows, present) if ok]
            paths = [p for p, ok in zip(paths, present) if ok]
        if not rows:
            raise VfxSwapError(f"{self.folder}: no aligned faces to train on (extract into it first, "
                               f"or un-exclude faces)")
        types = {r.face_type for r in rows if r.face_type} | ({meta_type} if meta_type else set())
        if len(types) > 1:
            raise VfxSwapError(f"{self.folder}: faceset mixes face types {', '.join(sorted(types))}")
        have = types.pop() if types else None
        if face_type is not None and have is not None and have != face_type:
            raise VfxSwapError(f"{self.folder}: faceset face type is {have!r}, the model wants {face_type!r}")
        self.face_type = have or face_type
        self.paths = paths
        self.seg_paths = [segs[p] for p in paths] if mask_kind == "seg" else None
        self.sizes = np.array([int(r.size) for r in rows], np.int64)
        self.landmarks = np.stack([r.aligned_landmarks for r in rows]).astype(np.float32)  # (n, 68, 2) crop px
        self.yaws = np.array([np.nan if r.yaw is None else float(r.yaw) for r in rows], np.float64)
        self.augment, self.warp, self.flip = bool(augment), bool(warp), bool(flip)
        self.color_jitter, self.rotation, self.scale, self.shift = (float(color_jitter), float(rotation),
                                                                    float(scale), float(shift))
        self.mask_kind = mask_kind
        self.seed = int(seed)
        self.eyes_mouth_weight = float(eyes_mouth_weight)
        self.cache_bytes = int(cache_mb * 2**20)
        self.epoch = 0
        self._cache: dict[int, np.ndarray] = {}
        self._cached = 0

    def __len__(self) -> int:
        return len(self.paths)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()  # workers start with an empty cache, not a pickled copy of ours
        state["_cache"], state["_cached"] = {}, 0
        return state

    def set_epoch(self, epoch: int) -> None:
        """The epoch used by plain integer indexing (`ds[i]`)."""
        self.epoch = int(epoch)

    # --- pieces --------------------------------------------------------------------------

    def face(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Face `index` resized to R: RGB (R, R, 3) in the model encoding and the chosen mask (R, R),
        both float32 and contiguous (cv2 copies strided views on every call)."""
        cached = self._cache.get(index)
        if cached is not None:
            return cached
        path, size, r = self.paths[index], int(self.sizes[index]), self.resolution
        image = read_image(path)
        seg = self.mask_kind == "seg"
        names = ("R", "G", "B") + (() if seg else (f"{self.mask_kind}.Y",))
        missing = [n for n in names if n not in image.channels]
        if missing:
            raise VfxSwapError(f"{path}: not a faceset face (no channel {', '.join(missing)})")
        px = np.asarray(image.pixels, np.float32)
        if px.shape[:2] != (size, size):
            raise VfxSwapError(f"{path}: {px.shape[1]}x{px.shape[0]} pixels, the faceset index says {size}")
        rgb = np.ascontiguousarray(px[:, :, [image.channels.index(n) for n in names[:3]]])
        if seg:
            from vfxswap.masks.labels import read_matte

            mask = read_matte(self.seg_paths[index], size)
        else:
            mask = np.ascontiguousarray(px[:, :, image.channels.index(names[3])])
        if size != r:
            down = r < size
            rgb = cv2.resize(rgb, (r, r), interpolation=cv2.INTER_AREA if down else cv2.INTER_CUBIC)
            mask = cv2.resize(mask, (r, r), interpolation=cv2.INTER_AREA if down else cv2.INTER_LINEAR)
        out = rgb, mask
        if self._cached + rgb.nbytes + mask.nbytes <= self.cache_bytes:
            self._cache[index] = out
            self._cached += rgb.nbytes + mask.nbytes
        return out

    def face_landmarks(self, index: int) -> np.ndarray:
        """Face `index`'s aligned landmarks in R pixels (before augmentation): (68, 2) float64."""
        k = self.resolution / float(self.sizes[index])
        return (self.landmarks[index].astype(np.float64) + 0.5) * k - 0.5  # pixel centres at integers

    def augmentation(self, key) -> Augmentation:
        """The random choices for `key` (an index, or (loader_seed, epoch, draw, index))."""
        salt, epoch, draw, index = self._key(key)
        rng = np.random.default_rng(_entropy(self.seed, salt, epoch, draw, index))
        r = self.resolution
        flip = bool(rng.random() < 0.5)
        angle = math.radians(rng.uniform(-1.0, 1.0) * self.rotation)
        zoom = 1.0 + rng.uniform(-1.0, 1.0) * self.scale
        move = rng.uniform(-1.0, 1.0, 2) * self.shift * r
        nodes = WARP_NODES[rng.integers(len(WARP_NODES))]
        moves = rng.standard_normal((max(WARP_NODES) - 2,) * 2 + (2,))  # the largest grid's, whatever `nodes` is
        # half the offset range shared by the channels (brightness), half per channel (tint)
        offset = (rng.uniform(-1.0, 1.0) + rng.uniform(-1.0, 1.0, 3)) * (0.5 * self.color_jitter)
        contrast = 1.0 + rng.uniform(-1.0, 1.0) * self.color_jitter

        matrix = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
        if self.augment:
            c = (r - 1) / 2.0  # crop centre in pixel-centre coordinates
            lin = zoom * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
            matrix = np.concatenate([lin, (np.array([c, c]) + move - lin @ [c, c])[:, None]], axis=1)
            if self.flip and flip:
                matrix[0] = -matrix[0]
                matrix[0, 2] += r - 1
        flipped = self.augment and self.flip and flip
        displacement = None
        if self.warp:
            grid = np.zeros((nodes, nodes, 2), np.float32)  # the outer ring stays 0: the crop's frame stays put
            grid[1:-1, 1:-1] = moves[:nodes - 2, :nodes - 2] * (WARP_SIGMA * r / (nodes - 1))
            weights = _grid_weights(r, nodes)  # bicubic, separable: rows then columns
            displacement = np.einsum("yj,jkc,xk->yxc", weights, grid, weights, optimize=True)
        if not (self.augment and self.color_jitter > 0):
            offset, contrast = np.zeros(3), 1.0
        return Augmentation(matrix, flipped, displacement, offset.astype(np.float32), float(contrast))

    def priority(self, landmarks: np.ndarray) -> np.ndarray:
        """Eye/mouth priority map for landmarks in R pixels: (R, R) float32, 1 outside, up to
        `eyes_mouth_weight` inside the (dilated) eye and outer-mouth hulls, antialiased edges."""
        pts = np.asarray(landmarks, np.float64)
        r, ss = self.resolution, _SUPERSAMPLE
        eyes = [pts[list(e)].mean(0) for e in EYE_POINTS]
        radius = PRIORITY_DILATE * float(np.hypot(*(eyes[0] - eyes[1])))
        ring = radius * np.stack([np.cos(np.linspace(0, 2 * np.pi, 16, endpoint=False)),
                                  np.sin(np.linspace(0, 2 * np.pi, 16, endpoint=False))], 1)
        hulls = []
        for part in (*EYE_POINTS, MOUTH_POINTS):
            p = pts[list(part)]
            grown = (p[:, None, :] + ring[None]).reshape(-1, 2)  # Minkowski sum with a disc (16-gon)
            hulls.append(cv2.convexHull(((grown + 0.5) * ss - 0.5).astype(np.float32))[:, 0])
        # Rasterise only the box around the hulls, on whole output pixels (multiples of ss fine
        # pixels): the area filter then sees the same ss x ss blocks as over the whole crop.
        lo = np.floor(np.min([h.min(0) for h in hulls], 0) / ss).astype(int).clip(0, r)
        hi = (np.ceil(np.max([h.max(0) for h in hulls], 0) / ss).astype(int) + 1).clip(0, r)
        cover = np.zeros((r, r), np.float32)
        if (hi > lo).all():
            fine = np.zeros(((hi[1] - lo[1]) * ss, (hi[0] - lo[0]) * ss), np.uint8)
            for hull in hulls:
                cv2.fillConvexPoly(fine, np.round((hull - lo * ss) * (1 << _SHIFT)).astype(np.int32), 255,
                                   lineType=cv2.LINE_8, shift=_SHIFT)
            box = cv2.resize(fine, (hi[0] - lo[0], hi[1] - lo[1]), interpolation=cv2.INTER_AREA)
            cover[lo[1]:hi[1], lo[0]:hi[0]] = box.astype(np.float32) / np.float32(255)
        return np.float32(1.0) + np.float32(self.eyes_mouth_weight - 1.0) * cover

    # --- one sample ----------------------------------------------------------------------

    def _key(self, key) -> tuple[int, int, int, int]:
        if isinstance(key, (tuple, list)):
            salt, epoch, draw, index = (int(v) for v in key)
        else:
            index = int(key)
            salt, epoch, draw = 0, self.epoch, index
        if not 0 <= index < len(self.paths):
            raise IndexError(f"face index {index} out of range (0..{len(self.paths) - 1})")
        return salt, epoch, draw, index

    def __getitem__(self, key) -> dict[str, torch.Tensor]:
        index = self._key(key)[3]
        aug = self.augmentation(key)
        r = self.resolution
        face = self.face(index)
        rgb, mask = face
        border = cv2.BORDER_REFLECT_101
        if self.augment:
            target = cv2.warpAffine(rgb, aug.matrix, (r, r), flags=cv2.INTER_CUBIC, borderMode=border)
            mask = cv2.warpAffine(mask, aug.matrix, (r, r), flags=cv2.INTER_LINEAR, borderMode=border)
        else:
            target = rgb.copy()
            mask = mask.copy()
        if aug.displacement is not None:
            # One resampling for the input: output pixel p reads the face at A^-1 (p + d(p)).
            where = cv2.transform(_pixel_grid(r) + aug.displacement, _invert(aug.matrix))
            inp = cv2.remap(rgb, where, None, interpolation=cv2.INTER_CUBIC, borderMode=border)
        else:
            inp = target.copy()
        if aug.contrast != 1.0 or aug.offset.any():
            mean = np.array(cv2.mean(target)[:3])  # the clean face's mean, used for both
            jitter = np.concatenate([np.eye(3) * aug.contrast, (mean * (1 - aug.contrast) + aug.offset)[:, None]], 1)
            target, inp = cv2.transform(target, jitter), cv2.transform(inp, jitter)
        points = transform_points(self.face_landmarks(index), aug.matrix)
        if aug.flip:
            points = points[MIRROR_68]  # the point called "left eye corner" is on the left again
        weights = self.priority(points)
        return {
            "input": _chw(inp),
            "target": _chw(target),
            "mask": torch.from_numpy(np.ascontiguousarray(mask, np.float32)[None]),
            "weights": torch.from_numpy(weights[None]),
            "landmarks": torch.from_numpy(points.astype(np.float32)),
        }

    # --- sampling ------------------------------------------------------------------------

    def yaw_weights(self) -> np.ndarray:
        """Per-face sampling weights (n,) float64 summing to 1 that make yaw uniform.

        Faces fall in 10-degree yaw bins; every non-empty bin gets the same total weight,
        shared equally by its faces, so profiles are drawn as often as frontal faces. Faces
        with no measured yaw form one bin of their own.
        """
        bins = np.where(np.isfinite(self.yaws), np.floor(np.nan_to_num(self.yaws) / YAW_BIN), np.inf)
        _, inverse, counts = np.unique(bins, return_inverse=True, return_counts=True)
        w = 1.0 / counts[inverse.ravel()]
        return w / w.sum()


@functools.lru_cache(maxsize=16)
def _grid_weights(r: int, nodes: int) -> np.ndarray:
    """(R, nodes) float32: bicubic weights (a = -0.75, as OpenCV's) of a warp grid's nodes for
    each of R pixels, the outer nodes on the edge pixels, so a zero outer ring keeps the crop's
    border exactly still (cv2.resize puts the nodes at cell centres, inside the crop, and the
    border would move). Taps past the grid repeat its edge node."""
    pos = np.linspace(0.0, nodes - 1.0, r)
    base = np.floor(pos).astype(int)
    weights = np.zeros((r, nodes))
    for tap in range(-1, 3):
        d = np.abs(pos - (base + tap))
        w = np.where(d <= 1, (1.25 * d - 2.25) * d * d + 1, np.where(d < 2, ((-0.75 * d + 3.75) * d - 6) * d + 3, 0))
        np.add.at(weights, (np.arange(r), np.clip(base + tap, 0, nodes - 1)), w)
    return weights.astype(np.float32)


@functools.lru_cache(maxsize=4)
def _pixel_grid(r: int) -> np.ndarray:
    """(R, R, 2) float32 (x, y) of every pixel centre: the identity map for cv2.remap."""
    xs = np.arange(r, dtype=np.float32)
    grid = np.stack(np.meshgrid(xs, xs), axis=2)
    grid.flags.writeable = False
    return grid


def _invert(m: np.ndarray) -> np.ndarray:
    a = np.linalg.inv(m[:, :2])
    return np.concatenate([a, (-a @ m[:, 2])[:, None]], axis=1)


def _chw(hwc: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(hwc.transpose(2, 0, 1), np.float32))


# --- loaders ------------------------------------------------------------------------------


class EpochBatchSampler:
    """Batches of sample keys, forever: epoch after epoch, each epoch a fresh order.

    Epoch e's order is drawn from (seed, e) alone: a permutation of all faces (repeated when
    there are fewer faces than `batch * world`), or with `weights` n draws with replacement.
    With `world` > 1 the order is cut to a multiple of `world` and rank k takes positions
    k, k + world, ...: disjoint shards that together cover the epoch. Every rank then cuts
    its share into whole batches (the incomplete tail is dropped). Keys are
    (seed, epoch, position in the epoch's order, face index). The stream starts at `start`
    = (epoch, batch within that epoch), so a resumed run continues it where it stopped. Each
    yielded batch's (epoch, batch within the epoch, indices) is also appended to `issued`, in
    order, for the consumer to match.
    """

    def __init__(self, n: int, batch: int, *, seed: int = 0, weights: np.ndarray | None = None,
                 rank: int = 0, world: int = 1, start: tuple[int, int] = (0, 0)):
        self.n, self.batch, self.seed = int(n), int(batch), int(seed)
        self.weights = None if weights is None else np.asarray(weights, np.float64)
        self.rank, self.world = int(rank), int(world)
        self.start = (int(start[0]), int(start[1]))
        self.issued: deque = deque()

    def order(self, epoch: int) -> np.ndarray:
        """Epoch `epoch`'s global order of face indices (all ranks): (L,) int64."""
        rng = np.random.default_rng(_entropy(self.seed, epoch))
        length = max(self.n, self.batch * self.world)
        if self.weights is not None:
            order = rng.choice(self.n, size=length, p=self.weights / self.weights.sum())
        else:
            order = np.concatenate([rng.permutation(self.n) for _ in range(-(-length // self.n))])[:length]
        return order[: len(order) - len(order) % self.world].astype(np.int64)

    def epoch_batches(self, epoch: int) -> list[list[tuple[int, int, int, int]]]:
        order = self.order(epoch)
        positions = np.arange(self.rank, len(order), self.world)
        keys = [(self.seed, epoch, int(p), int(order[p])) for p in positions]
        return [keys[i:i + self.batch] for i in range(0, len(keys) - self.batch + 1, self.batch)]

    def __iter__(self):
        epoch, skip = self.start
        while True:
            batches = self.epoch_batches(epoch)
            for k in range(skip, len(batches)):
                self.issued.append((epoch, k, np.array([key[3] for key in batches[k]], np.int64)))
                yield batches[k]
            epoch, skip = epoch + 1, 0


def _worker_init(worker_id: int) -> None:
    """Workers run one sample at a time: single-threaded kernels, no oversubscription.
    They ignore Ctrl-C, which a terminal sends to every process of the job: the trainer
    finishes its step, saves and then stops them (a worker that quit at once would fail the
    batch the step still needs). The global RNGs are seeded for tidiness only; augmentation
    never uses them."""
    atexit.register(_leave_without_native_teardown)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    seed = torch.initial_seed() & 0xFFFFFFFF
    np.random.seed(seed)
    random.seed(seed)


def _leave_without_native_teardown() -> None:
    """A worker's last act, once Python has finished its own exit work: end the process here.
    Left to run, C++ libraries' static destructors can abort a spawned worker at exit
    ("terminate called without an active exception", a joinable thread in a pool), which torch
    then reports as a failed worker in the middle of a normal close."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(0)


HALF_KEYS = ("input", "target", "mask", "weights")


def collate_half(samples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack samples into a batch with the images (HALF_KEYS) as float16, the landmarks float32.

    Why half: a batch crosses shared memory, the pinning thread and PCIe, and at R = 256 that
    hand-over costs a loader worker about as much as augmenting (bench/loader.py); half the bytes
    is ~10% more samples per worker here. The faces are half EXRs to begin with, and rounding the
    augmented pixels (< 2^-11 relative) is far below what bf16 training resolves; the trainer
    widens them to float32 on its device. In a worker the batch is built in shared memory."""
    in_worker = torch.utils.data.get_worker_info() is not None
    out = {}
    for key, first in samples[0].items():
        batch = torch.empty((len(samples), *first.shape), dtype=torch.float16 if key in HALF_KEYS else first.dtype)
        if in_worker:
            batch.share_memory_()
        for i, sample in enumerate(samples):
            batch[i].copy_(sample[key])
        out[key] = batch
    return out


class Batches:
    """An endless iterator of batches: dict of "input" (N, 3, R, R), "target" (N, 3, R, R),
    "mask" (N, 1, R, R), "weights" (N, 1, R, R) float16 and "landmarks" (N, 68, 2) float32
    tensors (see `collate_half`).

    `epoch` and `indices` describe the batch last returned; `position` is (epoch, batch within
    the epoch) of the next one, what a resumed run passes back as `start`. `close()` (or `with`)
    stops the worker processes (the iterator is finished after it); they also stop when the
    iterator is garbage-collected.
    """

    def __init__(self, dataset: FaceSamples, batch: int, *, workers: int = 2, uniform_yaw: bool = False,
                 seed: int = 0, pin_memory: bool = False, distributed: tuple[int, int] | None = None,
                 start: tuple[int, int] = (0, 0)):
        if batch < 1:
            raise VfxSwapError(f"batch size must be at least 1, got {batch}")
        if workers < 0:
            raise VfxSwapError(f"workers must be >= 0, got {workers}")
        rank, world = distributed if distributed is not None else (0, 1)
        if world < 1 or not 0 <= rank < world:
            raise VfxSwapError(f"distributed=(rank, world) needs 0 <= rank < world, got {distributed!r}")
        self.dataset = dataset
        self.sampler = EpochBatchSampler(len(dataset), batch, seed=seed, rank=rank, world=world,
                                         weights=dataset.yaw_weights() if uniform_yaw else None, start=start)
        self.batches_per_epoch = len(self.sampler.epoch_batches(0))
        extra = {}
        if workers > 0:
            # spawn, not fork: the parent may hold numba/OpenMP/OIIO threads, which fork breaks
            extra = dict(multiprocessing_context="spawn", persistent_workers=True, prefetch_factor=2,
                         worker_init_fn=_worker_init)
        # its own generator for the workers' base seed: the global torch RNG (lr dropout's, saved
        # for a resume) is then not drawn from when the stream starts, which a resume does later
        generator = torch.Generator().manual_seed(int(seed) & _MASK64)
        self.loader = DataLoader(dataset, batch_sampler=self.sampler, num_workers=workers, generator=generator,
                                 pin_memory=pin_memory, collate_fn=collate_half, **extra)
        self._it = None
        self._closed = False
        self.epoch: int | None = None
        self.indices: np.ndarray | None = None
        self.position = self.sampler.start

    def __iter__(self) -> "Batches":
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        if self._it is None:
            if self._closed:
                raise StopIteration
            self._it = iter(self.loader)
        batch = next(self._it)
        self.epoch, k, self.indices = self.sampler.issued.popleft()
        self.position = (self.epoch, k + 1) if k + 1 < self.batches_per_epoch else (self.epoch + 1, 0)
        return batch

    def close(self) -> None:
        it, self._it, self._closed = self._it, None, True
        self.sampler.issued.clear()
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()

    def __enter__(self) -> "Batches":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def default_workers(processes_on_node: int = 1) -> int:
    """Loader processes per identity when --workers is not given: the cores this process may use,
    shared among the training processes on the node, less one for each trainer, split between the two
    identities' loaders (at most 8 each, at least 1). A worker delivers ~150 samples/s at R = 256
    (bench/loader.py: ~4 ms of augmentation on one core, the rest batching and hand-over), so 16
    cores (7 workers per identity) give ~2,000 samples/s."""
    return max(1, min(8, (usable_cores() // max(1, processes_on_node) - 1) // 2))


def usable_cores(cpu_max: str = "/sys/fs/cgroup/cpu.max") -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup v2 CPU quota (a container
    or farm slot limited to "400000 100000" has 4 cores' worth of time whatever the machine has;
    more workers than that only thrash)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path(cpu_max).read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cores


def make_loader(dataset: FaceSamples, batch: int, *, workers: int = 2, uniform_yaw: bool = False, seed: int = 0,
                pin_memory: bool = False, distributed: tuple[int, int] | None = None,
                start: tuple[int, int] = (0, 0)) -> Batches:
    """An endless iterator of batches of `batch` samples (per rank) from `dataset`.

    One DataLoader is iterated forever over an endless batch sampler whose epoch counter
    goes into every sample's seed, so there is no pause between epochs, and a resumed run
    given the saved `position` as `start` continues the very same stream (each rank its own
    shard: the ranks move in step, so one position serves them all). workers > 0: spawned
    worker processes (persistent, prefetch 2 batches each). uniform_yaw: faces drawn with
    `yaw_weights`.
    distributed=(rank, world): this rank's disjoint shard of every epoch (same seed on all
    ranks; with uniform_yaw the shards are disjoint draws, which may pick the same face). The
    same seeds give the same batches whatever `workers` is.
    """
    return Batches(dataset, batch, workers=workers, uniform_yaw=uniform_yaw, seed=seed, pin_memory=pin_memory,
                   distributed=distributed, start=start)
