"""Face tracks across a shot: who is who from frame to frame, and landmark smoothing along a track.

- `assign_tracks`: links per-frame detections into tracks (Hungarian matching on box overlap and
  identity embedding), re-identifying a face that comes back after a short occlusion.
- `smooth_track`: zero-phase, motion-adaptive smoothing of one track's (T, 68, 2) landmarks.
  A shot is processed whole, so the filter looks both ways and real motion does not lag.
- `fill_gaps`: a track's landmarks and box interpolated over the few frames it went undetected.
- `jitter`, `lag`, `face_size`: the measures the smoothing is judged by, in face-size units so
  numbers mean the same at 720p and 8K.

Landmarks are the 68 iBUG points (0-based: jaw 0-16, brows 17-26, nose 27-35, eyes 36-47,
mouth 48-67) in plate pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import groupby

import numpy as np
from scipy.ndimage import gaussian_filter1d, maximum_filter1d
from scipy.optimize import linear_sum_assignment
from scipy.signal import savgol_filter

# --- tracking ----------------------------------------------------------------------------

_FORBIDDEN = 1e6  # cost of a pair the rules do not allow (filtered out after matching)
_EMBED_MEMORY = 8  # a track's identity: the mean of its last few embeddings (one blurred frame won't swing it)
_GAP_COST = 0.05  # per extra missing frame: of two equal candidates, the track seen last wins


@dataclass(eq=False)  # arrays inside: compare by identity, never element-wise
class Detection:
    """One face found in one frame, in plate pixels.

    `box` (4,) is (x0, y0, x1, y1); `landmarks` (68, 2) are (x, y); `embedding` (128,) is the
    identity vector (dlib: length about 1.4, same person closer than 0.6) or None when it
    was not computed. `index` is the face's row in that frame's detections.
    """

    frame: int
    box: np.ndarray
    landmarks: np.ndarray
    embedding: np.ndarray | None
    score: float = 1.0
    index: int = 0


@dataclass
class _Track:
    id: int
    last_frame: int
    box: np.ndarray
    embeddings: list[np.ndarray]

    def embedding(self) -> np.ndarray | None:
        return np.mean(self.embeddings, axis=0) if self.embeddings else None


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in `a` (N, 4) with every box in `b` (M, 4) -> (N, M); empty boxes give 0."""
    a = np.asarray(a, np.float64).reshape(-1, 4)[:, None]
    b = np.asarray(b, np.float64).reshape(-1, 4)[None]
    w = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    h = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = w * h
    area = lambda x: np.clip(x[..., 2] - x[..., 0], 0, None) * np.clip(x[..., 3] - x[..., 1], 0, None)  # noqa: E731
    union = area(a) + area(b) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def assign_tracks(detections: list[Detection], *, iou_min: float = 0.3, embed_max: float = 0.6,
                  max_gap: int = 5) -> list[int]:
    """A track id per detection (same order as given); ids start at 0 in order of first appearance.

    Frames are visited in order (numbers need not be contiguous). Each frame's faces are
    matched at once (Hungarian) against the tracks seen within the last `max_gap` frames:
    a track last seen at frame L can continue at frame f only if f - L <= max_gap (a face
    missing for 3 frames comes back with f - L = 4); older tracks are closed for good.
    A pair is allowed when
      - its box overlap IoU with the track's last box is >= `iou_min`, or
      - both have embeddings and their distance (to the mean of the track's recent
        embeddings) is <= `embed_max`: this re-identifies a face after an occlusion, a cut,
        or a jump too fast for the boxes to overlap.
    One exception: the overlap rule does not apply when both embeddings are known and farther
    apart than `embed_max`: someone else in the place (a cut from one actor to another in the
    same framing, or a gap someone else stepped into). Among allowed pairs the cost is (1 - IoU) + distance / embed_max (a missing
    embedding counts as distance = embed_max: no evidence either way) plus a small penalty
    per missing frame, so at a crossing the embeddings decide who is who. Faces left
    unmatched start new tracks; two faces of one frame never share a track.
    """
    order = sorted(range(len(detections)), key=lambda i: (detections[i].frame, detections[i].index, i))
    ids = [-1] * len(detections)
    tracks: list[_Track] = []
    for frame, group in groupby(order, key=lambda i: detections[i].frame):
        group = list(group)
        live = [t for t in tracks if 0 < frame - t.last_frame <= max_gap]
        taken: dict[int, _Track] = {}
        if live:
            boxes = np.stack([np.asarray(detections[i].box, np.float64) for i in group])
            iou = box_iou(np.stack([t.box for t in live]), boxes)
            cost = np.full(iou.shape, _FORBIDDEN)
            for r, track in enumerate(live):
                ref = track.embedding()
                for c, i in enumerate(group):
                    emb = detections[i].embedding
                    dist = None if ref is None or emb is None else float(np.linalg.norm(np.ravel(emb) - ref))
                    same_face = dist is not None and dist <= embed_max
                    # A box in the old place is weak evidence against a known, different face:
                    # that is someone else (or the same face misread: a new track is the cheaper
                    # mistake; a merged track swaps the wrong actor and trains on their face).
                    overlap = iou[r, c] >= iou_min and (dist is None or same_face)
                    if not (overlap or same_face):
                        continue
                    evidence = 1.0 if dist is None else min(dist / embed_max, 2.0)
                    cost[r, c] = (1.0 - iou[r, c]) + evidence + _GAP_COST * (frame - track.last_frame - 1)
            for r, c in zip(*linear_sum_assignment(cost)):
                if cost[r, c] < _FORBIDDEN:
                    taken[group[c]] = live[r]
        for i in group:
            det = detections[i]
            track = taken.get(i)
            if track is None:
                track = _Track(len(tracks), frame, np.zeros(4), [])
                tracks.append(track)
            track.last_frame = frame
            track.box = np.asarray(det.box, np.float64).reshape(4)
            if det.embedding is not None:
                track.embeddings = (track.embeddings + [np.asarray(det.embedding, np.float64).ravel()])[-_EMBED_MEMORY:]
            ids[i] = track.id
    return ids


# --- measures ----------------------------------------------------------------------------

def face_size(landmarks: np.ndarray) -> np.ndarray:
    """Face size in pixels (...): sqrt(width * height) of the 68 landmarks' bounding box.

    About the jaw-to-jaw width of a frontal face. Chosen over the inter-ocular distance,
    which collapses towards zero as the head turns to profile (the box keeps its height).
    """
    pts = np.asarray(landmarks, np.float64)
    extent = pts.max(axis=-2) - pts.min(axis=-2)
    return np.sqrt(np.clip(extent[..., 0], 0, None) * np.clip(extent[..., 1], 0, None))


def _lowpass(x: np.ndarray, sigma: float) -> np.ndarray:
    """Zero-phase Gaussian low-pass along axis 0; the ends are extended by odd reflection,
    so a steady drift is kept (no pull towards the end value as with edge padding)."""
    n = x.shape[0]
    if n < 2 or sigma <= 0:
        return x.astype(np.float64, copy=True)
    pad = min(int(np.ceil(4 * sigma)), n - 1)
    padded = np.pad(x.astype(np.float64), [(pad, pad)] + [(0, 0)] * (x.ndim - 1), mode="reflect", reflect_type="odd")
    return gaussian_filter1d(padded, sigma, axis=0, mode="nearest")[pad:pad + n]


JITTER_WINDOW = 15  # frames of the local cubic fit that defines a track's "smooth motion" in `jitter`


def jitter(points: np.ndarray, face_size: np.ndarray) -> float:
    """Frame-to-frame landmark shake left after removing the smooth motion, in face sizes.

    With p (T, 68, 2) on consecutive frames and s (T,) the face size:
        residual = p - S(p), S a zero-phase Savitzky-Golay fit along time: least-squares
                   cubic over a centred 15-frame window (the end windows' own cubic at the
                   ends; the window shrinks to the largest odd length <= T on short tracks),
        jitter   = mean over t = 1..T-1 and k = 0..67 of |residual[t, k] - residual[t-1, k]| / s[t],
    |.| the Euclidean length in pixels. White noise of sigma per axis scores about
    1.77 * sigma / s; a motion smooth over ~half a second (a cubic locally) scores about 0,
    where a plain Gaussian low-pass would let a curving path leak in. 0.0 when T < 5.
    """
    pts = np.asarray(points, np.float64)
    window = min(JITTER_WINDOW, pts.shape[0] - (1 - pts.shape[0] % 2))
    if window < 5:
        return 0.0
    residual = pts - savgol_filter(pts, window, 3, axis=0, mode="interp")
    step = np.linalg.norm(np.diff(residual, axis=0), axis=-1)  # (T-1, 68)
    return float(np.mean(step / np.asarray(face_size, np.float64)[1:, None]))


def lag(smoothed: np.ndarray, raw: np.ndarray, face_size: np.ndarray) -> float:
    """Mean landmark distance between two versions of a track, in face sizes:
    mean over t, k of |smoothed[t, k] - raw[t, k]| / face_size[t] (0.02 = 2% of the face)."""
    dist = np.linalg.norm(np.asarray(smoothed, np.float64) - np.asarray(raw, np.float64), axis=-1)
    return float(np.mean(dist / np.asarray(face_size, np.float64)[:, None])) if dist.size else 0.0


# --- smoothing ---------------------------------------------------------------------------
# A forward One Euro filter lags by about its time constant times the speed; the same filter
# run backward leads by as much, so their mean does not lag a steady motion at all. What is
# left is a blur of sudden changes, which the cutoff opening with speed keeps short. Speed is
# itself measured zero-phase (Gaussian-smoothed central differences, widened by a couple of
# frames), so in both passes the cutoff is already open when a head turn begins.
#
# Motion is split first. Per frame a similarity transform (translation, scale, roll), fitted to
# the points expressions barely move, carries the head's rigid motion with far less noise than
# any one point; the shape left in the face's own frame (in face sizes) carries expression,
# yaw/pitch and the per-point jitter. Each part has its own speed: a head sweeping across frame
# leaves its shape noise smoothed, and a mouth opening leaves the rest of the face alone.
# The rigid part is filtered twice (Tukey's "twicing": the residual is smoothed and added
# back), which cancels the blur of a curving path that one zero-phase pass still has.

FC_MIN = 0.03  # cycles/frame at rest, strength 1 (~0.7 Hz at 24 fps)
BETA = 6.0  # cycles/frame added per (face size / frame) of speed, strength 1
SPEED_SIGMA = 1.5  # frames: noise suppression of the speed estimate
SPEED_WIDEN = 2  # frames each side: the cutoff opens this early and closes this late

# Weights of the similarity fit: brows, eyes, nose and the upper jaw near the ears count;
# the mouth and the lower jaw, which move when the face talks, do not.
POSE_WEIGHTS = np.zeros(68)
POSE_WEIGHTS[[0, 1, 2, 3, 13, 14, 15, 16]] = 1.0
POSE_WEIGHTS[17:48] = 1.0


def _alpha(cutoff: np.ndarray) -> np.ndarray:
    """Exponential smoothing factor of a one-pole low-pass at `cutoff` cycles/frame (1 frame step)."""
    return 1.0 / (1.0 + 1.0 / (2.0 * np.pi * cutoff))


def _zero_phase_one_euro(x: np.ndarray, speed: np.ndarray, strength: float) -> np.ndarray:
    """Mean of a forward and a backward One Euro pass. x (T, ...) with T >= 2; speed (T, ...)
    broadcastable to x, in face sizes per frame."""
    alpha = np.broadcast_to(_alpha((FC_MIN + BETA * speed) / strength), x.shape)
    fwd = np.empty_like(x)
    bwd = np.empty_like(x)
    fwd[0], bwd[-1] = x[0], x[-1]
    last = x.shape[0] - 1
    for t in range(1, last + 1):
        fwd[t] = fwd[t - 1] + alpha[t] * (x[t] - fwd[t - 1])
        u = last - t
        bwd[u] = bwd[u + 1] + alpha[u] * (x[u] - bwd[u + 1])
    return 0.5 * (fwd + bwd)


def _speed(x: np.ndarray) -> np.ndarray:
    """|d/dt| of x (T, ..., C) over its last axis, zero-phase and widened in time -> (T, ...)."""
    velocity = np.gradient(_lowpass(x, SPEED_SIGMA), axis=0)
    return _widen(np.linalg.norm(velocity, axis=-1))


def _widen(speed: np.ndarray) -> np.ndarray:
    return maximum_filter1d(speed, 2 * SPEED_WIDEN + 1, axis=0, mode="nearest")


def _similarity_fit(z: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per frame a (T,) complex scale-rotation and b (T,) translation with z ~ a * ref + b,
    weighted least squares with POSE_WEIGHTS; z (T, 68) and ref (68,) complex points."""
    w = POSE_WEIGHTS / POSE_WEIGHTS.sum()
    zc = (z * w).sum(axis=1)
    rc = (ref * w).sum()
    a = (w * (z - zc[:, None]) * np.conj(ref - rc)).sum(axis=1) / np.sum(w * np.abs(ref - rc) ** 2)
    return a, zc - a * rc


def _unit_size(ref: np.ndarray) -> np.ndarray | None:
    """`ref` (68,) complex rescaled to face size 1, or None when the points have collapsed."""
    size = face_size(np.stack([ref.real, ref.imag], -1))
    return ref / size if np.isfinite(size) and size > 1e-9 else None


def _smooth_segment(pts: np.ndarray, strength: float) -> np.ndarray:
    """Smooth one run of consecutive frames, pts (T, 68, 2) float64 with T >= 2."""
    z = pts[..., 0] + 1j * pts[..., 1]
    # Reference shape: the segment's mean shape in its own frame (two Procrustes rounds from the
    # middle frame), at face size 1 so that |a| is the face size in pixels and the shape
    # residual is in face sizes.
    ref = z[len(z) // 2]
    for round_ in range(3):
        # Centred on the fit's own centroid, so b is where the face is and not a point that
        # swings around it as the head rolls or zooms.
        ref = _unit_size(ref - (ref * POSE_WEIGHTS).sum() / POSE_WEIGHTS.sum())
        if ref is None:
            return pts.copy()
        a, b = _similarity_fit(z, ref)
        if np.any(np.abs(a) < 1e-9):
            return pts.copy()
        if round_ < 2:
            ref = ((z - b[:, None]) / a[:, None]).mean(axis=0)
    shape = (z - b[:, None]) / a[:, None] - ref  # (T, 68) complex, in face sizes

    # Rigid part: translation in pixels, log scale and roll; one speed for the head: that of
    # its outline (radius ~0.5 face size) in face sizes per frame.
    scale = np.abs(a)
    trans = np.stack([b.real, b.imag], -1)
    log_a = np.stack([np.log(scale), np.unwrap(np.angle(a))], -1)
    head = (np.linalg.norm(np.gradient(_lowpass(trans, SPEED_SIGMA), axis=0), axis=-1) / scale
            + 0.5 * np.linalg.norm(np.gradient(_lowpass(log_a, SPEED_SIGMA), axis=0), axis=-1))
    head = _widen(head)[:, None]
    rigid = np.concatenate([trans, log_a], -1)
    smooth = _zero_phase_one_euro(rigid, head, strength)
    rigid = smooth + _zero_phase_one_euro(rigid - smooth, head, strength)  # twicing

    # Non-rigid part: each landmark with its own speed, in the face's frame.
    xy = np.stack([shape.real, shape.imag], -1)  # (T, 68, 2)
    xy = _zero_phase_one_euro(xy, _speed(xy)[..., None], strength)

    a = np.exp(rigid[:, 2] + 1j * rigid[:, 3])
    b = rigid[:, 0] + 1j * rigid[:, 1]
    out = a[:, None] * (ref + xy[..., 0] + 1j * xy[..., 1]) + b[:, None]
    return np.stack([out.real, out.imag], -1)


def smooth_track(frames: np.ndarray, points: np.ndarray, strength: float = 1.0, step: int = 1) -> np.ndarray:
    """Smoothed landmarks (T, 68, 2) for one track: `frames` (T,) its frame numbers, `points`
    (T, 68, 2) its landmarks in plate pixels.

    `strength` 0 (or less) returns the input unchanged, 1 is the default, 2 halves the cutoffs (more
    smoothing, longer blur of sudden moves). Frames need not be sorted. `step` is the plate's
    sampling step (2 for a plate extracted every other frame: the cutoffs then double in
    samples, the same in time; `sampling_step` finds it); any other difference in the frame
    numbers splits the track into segments smoothed on their own (nothing is interpolated
    across an occlusion). Segments of one frame are returned as they are. Zero-phase and
    normalised by face size (see the notes above `FC_MIN`), so a steady move never lags and
    the same settings suit any resolution. Output dtype follows a floating input.
    """
    pts = np.asarray(points)
    frames = np.asarray(frames).reshape(-1)
    if pts.ndim != 3 or pts.shape[1:] != (68, 2) or len(frames) != len(pts):
        raise ValueError(f"smooth_track wants frames (T,) and points (T, 68, 2), got {frames.shape} and {pts.shape}")
    dtype = pts.dtype if np.issubdtype(pts.dtype, np.floating) else np.float64
    if strength <= 0 or len(pts) < 2:
        return pts.astype(dtype, copy=True)
    if not np.all(np.isfinite(pts)):
        raise ValueError("smooth_track: landmarks contain NaN or Inf")
    order = np.argsort(frames, kind="stable")
    sorted_frames = frames[order]
    if np.any(np.diff(sorted_frames) == 0):
        raise ValueError("smooth_track: a frame appears twice in one track")
    work = pts[order].astype(np.float64)
    out = work.copy()
    breaks = np.flatnonzero(np.diff(sorted_frames) != step) + 1
    for start, stop in zip(np.r_[0, breaks], np.r_[breaks, len(work)]):
        if stop - start >= 2:
            out[start:stop] = _smooth_segment(work[start:stop], strength / step)
    result = np.empty_like(out)
    result[order] = out
    return result.astype(dtype, copy=False)


def sampling_step(frames) -> int:
    """The step of the frames a plate was sampled at: 1, or 2 when every other frame was
    extracted (without it each frame of such a track was a segment of its own, unsmoothed)."""
    frames = np.unique(np.asarray(list(frames)))
    return int(np.diff(frames).min()) if len(frames) > 1 else 1


def smooth_detections(detections: list[Detection], track_ids: list[int], strength: float = 1.0) -> list[np.ndarray]:
    """Smoothed (68, 2) landmarks for every detection (same order), each track on its own."""
    out: list[np.ndarray] = [np.asarray(d.landmarks) for d in detections]
    step = sampling_step(d.frame for d in detections)
    by_track: dict[int, list[int]] = {}
    for i, track in enumerate(track_ids):
        by_track.setdefault(track, []).append(i)
    for members in by_track.values():
        frames = np.array([detections[i].frame for i in members])
        points = np.stack([np.asarray(detections[i].landmarks, np.float64) for i in members])
        for i, smoothed in zip(members, smooth_track(frames, points, strength, step)):
            out[i] = smoothed
    return out


# --- gap filling -------------------------------------------------------------------------

# Longest run of missing frames `fill_gaps` fills: assign_tracks (max_gap=5) keeps a track
# through up to 4 missing frames, and those are the gaps to fill; longer ones split the track.
FILL_MAX_GAP = 4


def fill_gaps(frames: np.ndarray, points: np.ndarray, boxes: np.ndarray, *, max_gap: int, step: int = 1,
              available: set[int] | None = None) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(frame, points, box) for each frame one track misses inside a short gap, in frame order.

    Why: a frame where the detector lost the face for a moment (blur, a hand passing) has no
    face row, so the rendered layer is empty there and the plate's own face pops back for a
    frame or two. `frames` (T,) are the track's frame numbers, `points` (T, 68, 2) its smoothed
    landmarks, `boxes` (T, 4) its boxes. A run of at most `max_gap` missing sampled frames
    (every `step`-th frame) between two detections is filled, points and box linear between
    the two; longer gaps are left alone (the tracker splits the track there anyway), and so
    is any frame not in `available` (the frames the source has; None: all).
    """
    frames = np.asarray(frames).reshape(-1)
    if not len(frames) == len(points) == len(boxes):
        raise ValueError(f"fill_gaps: {len(frames)} frames, {len(points)} landmark sets, {len(boxes)} boxes")
    order = np.argsort(frames, kind="stable")
    frames, points, boxes = frames[order], np.asarray(points)[order], np.asarray(boxes)[order]
    filled = []
    for i in range(len(frames) - 1):
        f0, f1 = int(frames[i]), int(frames[i + 1])
        missing = range(f0 + step, f1, step)
        if len(missing) > max_gap:
            continue
        for frame in missing:
            if available is None or frame in available:
                t = (frame - f0) / (f1 - f0)
                filled.append((frame, (1 - t) * points[i] + t * points[i + 1], (1 - t) * boxes[i] + t * boxes[i + 1]))
    return filled
