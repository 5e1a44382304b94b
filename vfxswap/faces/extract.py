"""Extraction: plates or footage -> a faceset (detect, 68 landmarks, track, smooth, align, store).

Two passes over a shot, both resumable frame by frame:
1. detect: per frame, a display-referred copy at a working resolution goes to the detector;
   each face's landmarks are found on a full-resolution display crop around it and mapped to
   plate pixels; a 128-d identity embedding is taken. One transaction per frame.
2. align: the whole shot at once: faces get track ids (box overlap + identity), landmarks are
   smoothed along each track (zero-phase, no lag), then each face is cut from the plate in
   the model encoding (float, never 8-bit) with the stored plate->aligned matrix, with its
   hull masks, blur and pose. Frames whose smoothed landmarks did not change are not redone.
A folder of stills (or one image) is a set of one-frame sources: no smoothing, and track ids
group faces by identity.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from vfxswap.color import ENCODING_NAME, ColorPipeline, kernels, resolve_config
from vfxswap.errors import VfxSwapError
from vfxswap.faces import align, quality, track
from vfxswap.faces.backends import load_detector, load_landmarker
from vfxswap.faceset.store import Faceset, FaceRow
from vfxswap.jobspec import ExtractOptions
from vfxswap.masks.hull import hull_mask
from vfxswap.plates.convert import VIDEO_SPACE, FrameSource, read_ahead
from vfxswap.plates.frames import format_frames
from vfxswap.plates.image import Image, need_rgb, read_image, read_info, write_image
from vfxswap.progress import progress

log = logging.getLogger("vfxswap")
STILL_EXTENSIONS = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".exr", ".dpx", ".webp", ".bmp"}
LANDMARK_MARGIN = 0.35  # display crop around a box for landmarks, as a fraction of its size
LANDMARK_SIDE = 256  # faces wider than this are reduced to it for landmarks and identity
IDENTITY_EVERY = 8  # frames: a continuing face is re-embedded at least this often
ROI_MARGIN = 0.5  # search window around last frame's face, as a fraction of its size
ROI_FACE = 110  # the face is reduced to about this many pixels for the window search
CACHE_MARGIN = 0.12  # plate region kept per face for pass 2, beyond its raw aligned square
CACHE_BYTES = 1_500_000_000  # at most this much plate kept in memory between the passes
SMOOTH_EPS = 0.05  # plate pixels: smoothed landmarks that moved less keep their aligned crop


@dataclass
class ExtractReport:
    frames_detected: int = 0
    frames_skipped: int = 0
    frames_aligned: int = 0
    faces: int = 0
    without_faces: list[str] = field(default_factory=list)  # frame numbers, or file names for stills
    failed: dict[int | str, str] = field(default_factory=dict)  # by frame number, or file name for stills
    timings: dict[str, float] = field(default_factory=dict)


# what a faceset recorded before detectors and landmarkers were separate choices: its "backend"
LEGACY_BACKENDS = {"dlib": ("dlib", "dlib"), "dlib-cnn": ("dlib-cnn", "dlib"), "fan": ("s3fd", "fan")}


def detection_settings(options: ExtractOptions, detector, landmarker) -> dict:
    """The settings that decide which faces a frame gives (recorded per source, so a re-run
    with other ones detects its frames again instead of keeping what the old ones found)."""
    return {"detector": detector.name, "landmarker": landmarker.name, "min_size": options.min_size,
            "detect_side": options.detect_side, "detect_every": options.detect_every, "max_faces": options.max_faces,
            "min_score": detector.min_score if options.min_score is None else options.min_score}


def recorded_settings(had: dict | None) -> dict | None:
    """A source's recorded detection settings in today's terms: an older faceset's
    {"backend": "dlib"} is detector dlib with landmarker dlib ("fan": s3fd with fan)."""
    if not had or "backend" not in had:
        return had
    had = dict(had)
    backend = had.pop("backend")
    had["detector"], had["landmarker"] = LEGACY_BACKENDS.get(backend, (backend, backend))
    return had


def _source_tag(source: str) -> str:
    """A short, file-name-safe tag for a source (its stem plus a hash of its full path)."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(source).stem.replace("#", "").replace("%", ""))[:32].strip("_")
    return f"{stem or 'src'}_{hashlib.sha1(source.encode()).hexdigest()[:8]}"


def _clip_box(box, w: int, h: int, margin: float = 0.0) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = box
    mx, my = (x1 - x0) * margin, (y1 - y0) * margin
    return (max(0, int(np.floor(x0 - mx))), max(0, int(np.floor(y0 - my))),
            min(w, int(np.ceil(x1 + mx))), min(h, int(np.ceil(y1 + my))))


class Extractor:
    """Runs extraction of one or more sources into one faceset."""

    def __init__(self, faceset: Faceset, options: ExtractOptions):
        self.fs = faceset
        self.opt = options
        options.check()
        self.detector = load_detector(options.detector, options.device)
        self.landmarker = load_landmarker(options.landmarker, options.device)
        self.choice = resolve_config(options.ocio)
        self._embedder = None
        self._pipes: dict[str, ColorPipeline] = {}
        self._plates: dict[str, list[int]] = {}  # display window recorded per source (`record_plate`)
        self._told: set[str] = set()
        self._previous: dict[str, dict[int, FaceRow]] = {}
        self._since_full: dict[str, int] = {}  # frames since the last full detection, per source
        self._newcomers: dict[str, list[tuple[int, np.ndarray, int]]] = {}
        self._regions: dict[tuple, tuple] = {}
        self._cached_bytes = 0
        self.timings: dict[str, float] = {}
        self._clock_lock = threading.Lock()

    # --- helpers -------------------------------------------------------------------------

    @property
    def embedder(self):
        if self._embedder is None:
            from vfxswap.faces.identity import FaceEmbedder

            self._embedder = FaceEmbedder()
        return self._embedder

    @contextlib.contextmanager
    def clock(self, key: str):
        """Add the time spent in the block to `timings[key]` (seconds, summed over frames; the
        read-ahead thread's `colour` runs beside the main thread's work, so stages can sum to
        more than the wall time)."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            with self._clock_lock:
                self.timings[key] = self.timings.get(key, 0.0) + time.perf_counter() - t0

    def _frames(self, fsrc: FrameSource, desc: str, prepare=None):
        """The source's frames, read ahead on another thread (which also runs `prepare` on each,
        if given); `decode` clocks only the time spent waiting for them."""
        items = fsrc if prepare is None else (prepare(frame, image) for frame, image in fsrc)
        it = iter(progress(read_ahead(items), total=len(fsrc.frames), desc=desc))
        while True:
            with self.clock("decode"):
                item = next(it, None)
            if item is None:
                return
            yield item

    def pipeline(self, source: str, image: Image) -> ColorPipeline:
        if source not in self._pipes:
            pipe = ColorPipeline.for_image(image, plate_space=self.opt.plate_space, config=self.choice)
            self._pipes[source] = pipe
            self.fs.set_meta(f"source:{source}", pipe.describe())
            self.fs.db.commit()
        return self._pipes[source]

    def record_plate(self, source: str, image: Image) -> None:
        """The source's display window in meta `plate:<source>` ([x, y, width, height]): the frame
        the stored matrices' plate pixels are counted in, which a matte exported from the faceset
        must lie over (`masks.plate`). From a decoded frame, since a movie's header does not say."""
        box = image.display_window
        value = [box.x, box.y, box.width, box.height]
        if self._plates.get(source) != value:
            self._plates[source] = value
            self.fs.set_meta(f"plate:{source}", value)
            self.fs.db.commit()

    # --- pass 1: detection --------------------------------------------------------------

    def source_pipeline(self, source: str, fsrc: FrameSource) -> ColorPipeline:
        """The source's pipeline from a frame header (so the read-ahead thread can use it)."""
        if fsrc.sequence is None:
            header = Image.from_array(np.zeros((1, 1, 3), np.float32))
            header.set_attribute("oiio:ColorSpace", VIDEO_SPACE)
            return self.pipeline(source, header)
        error = None
        for frame in fsrc.frames[:8]:
            try:
                return self.pipeline(source, read_info(fsrc.sequence.path(frame)))
            except VfxSwapError as exc:
                error = exc  # a corrupt frame: its own error is reported when it is read
        if len(fsrc.frames) == 1:
            raise error
        raise VfxSwapError(f"{source}: none of the first frames can be read ({error})")

    def prepare(self, source: str, frame: int, image: Image):
        """Work done on the read-ahead thread: the plate on its display window, 8-bit when it
        is display-encoded (detectors then take its code values as they are)."""
        if isinstance(image, VfxSwapError):
            return frame, image, None
        try:
            need_rgb(image)
        except VfxSwapError as exc:  # a failed frame like an unreadable one, not a traceback
            return frame, exc, None
        plate = image.on_display_window()
        if self._pipes[source].plate_is_display_encoded:
            plate = (np.clip(plate[..., :3], 0, 1) * 255 + 0.5).astype(np.uint8)
        return frame, image, plate

    def detect_frame(self, source: str, frame: int, image: Image, plate=None) -> list[FaceRow]:
        pipe = self.pipeline(source, need_rgb(image))
        self.record_plate(source, image)
        if plate is None:
            _, _, plate = self.prepare(source, frame, image)
        min_score = self.detector.min_score if self.opt.min_score is None else self.opt.min_score
        previous = self._previous.get(source, {})
        rows = self._follow(source, frame, pipe, image, plate, previous)
        full = False
        if rows is None:
            found, full = self._find(source, pipe, plate, previous, min_score, f"{source} frame {frame}")
            rows = []
            for face in found:
                box = face.box
                if box[2] - box[0] < (self.opt.min_size or 0) or face.score < min_score:
                    continue
                row = self._measure(pipe, image, plate, FaceRow(source, frame, len(rows), box.astype(np.float32),
                                                                np.zeros((68, 2), np.float32), score=face.score),
                                    previous)
                if row is not None:
                    rows.append(row)
                if self.opt.max_faces and len(rows) >= self.opt.max_faces:
                    break
        self._previous[source] = {r.face_index: r for r in rows}
        since = self._since_full.get(source, 0)
        if full and since > 0:
            # Faces that a full detection finds with no face there the frame before may have
            # been in the frames searched by region only: `look_back` searches those for them.
            for r in rows:
                if not any(track.box_iou(r.box[None], p.box[None])[0, 0] > 0.1 for p in previous.values()):
                    self._newcomers.setdefault(source, []).append((frame, r.box.copy(), since))
        self._since_full[source] = 0 if full else self._since_full.get(source, 0) + 1
        return rows

    def _follow(self, source: str, frame: int, pipe: ColorPipeline, image: Image, plate: np.ndarray,
                previous: dict) -> list[FaceRow] | None:
        """Last frame's faces followed by the landmarker's own tracking (Face Mesh on the region
        its last points give: cheaper and steadier than detecting again), between full
        detections; None when it cannot (no such landmarker, no dense points, time for a full
        detection) or when one face is lost, and the caller detects instead."""
        since = self._since_full.get(source)
        if (not previous or since is None or since + 1 >= self.opt.detect_every
                or not hasattr(self.landmarker, "track") or any(p.dense is None for p in previous.values())):
            return None
        rows = []
        for p in sorted(previous.values(), key=lambda r: r.face_index):
            row = FaceRow(source, frame, len(rows), p.box.copy(), np.zeros((68, 2), np.float32), score=p.score)
            row = self._measure(pipe, image, plate, row, previous, follow=p)
            if row is None:
                return None
            rows.append(row)
        return rows

    def _measure(self, pipe: ColorPipeline, image: Image, plate: np.ndarray, row: FaceRow, previous: dict,
                 follow: FaceRow | None = None) -> FaceRow | None:
        """Landmarks (on a display crop around the face, reduced to LANDMARK_SIDE when larger),
        identity, and the plate region pass 2 needs, for one detected face; or for a face
        followed from last frame's `follow` (its box then moves with the points). None: the
        landmarker says there is no face there (a false detection, or a followed face lost)."""
        h, w = plate.shape[:2]
        box = row.box
        x0, y0, x1, y1 = _clip_box(box, w, h, LANDMARK_MARGIN)
        r = min(1.0, LANDMARK_SIDE / max(1.0, float(box[2] - box[0])))
        with self.clock("colour"):
            size = (max(1, round((x1 - x0) * r)), max(1, round((y1 - y0) * r)))
            crop = self._view(pipe, plate[y0:y1, x0:x1], size, f"{row.source} frame {row.frame}")
        r = np.array([crop.shape[1] / (x1 - x0), crop.shape[0] / (y1 - y0)], np.float32)
        origin = np.array([x0, y0], np.float32)
        local_box = (box - np.tile(origin, 2)) * np.tile(r, 2)  # box edges scale as they are
        dense, present = None, True
        with self.clock("landmarks"):
            if follow is not None:
                local, dense, presence = self.landmarker.track(crop, [(follow.dense - origin + 0.5) * r - 0.5])[0]
                present = presence >= self.landmarker.min_presence
            elif hasattr(self.landmarker, "measure"):
                local, dense, presence = self.landmarker.measure(crop, [local_box])[0]
                present = presence >= self.landmarker.min_presence
            else:
                local = self.landmarker.landmarks(crop, local_box, detector=self.detector.name)
        if not present:
            return None
        # points are pixel centres: a resized crop's pixel i sits at (i + 0.5) / r - 0.5 in the plate
        row.landmarks_raw = ((local + 0.5) / r - 0.5 + origin).astype(np.float32)
        if dense is not None:
            row.dense = ((dense + 0.5) / r - 0.5 + origin).astype(np.float32)
        if follow is not None:  # the box moves and scales with the face
            before, after = follow.landmarks_raw, row.landmarks_raw
            k = float(track.face_size(after[None])[0] / max(1e-6, track.face_size(before[None])[0]))
            c0 = np.tile((follow.box[:2] + follow.box[2:]) / 2, 2)
            row.box = ((follow.box - c0) * k + c0 + np.tile(after.mean(0) - before.mean(0), 2)).astype(np.float32)
        with self.clock("identity"):
            self._identify(row, crop, local, previous)
        self._cache_region(row, image)
        return row

    def look_back(self, source: str, fsrc: FrameSource) -> int:
        """Search the frames before each newcomer (found by a full detection after frames searched
        by region only) for that face, walking back while it is found. Returns faces added."""
        added = 0
        order = list(fsrc.frames)
        for frame, box, since in self._newcomers.pop(source, []):
            at = order.index(frame) if frame in order else 0
            for g in reversed(order[max(0, at - since):at]):
                _, image = next(iter(FrameSource(fsrc.spec, [g], fsrc.sequence, fsrc.start, fsrc.fps)))
                if isinstance(image, VfxSwapError):
                    break
                _, image, plate = self.prepare(source, g, image)
                min_score = self.detector.min_score if self.opt.min_score is None else self.opt.min_score
                hit = self._search_near(self._pipes[source], plate, box, min_score, f"{source} frame {g}")
                if hit is None:
                    break
                box = hit.box
                existing = self.fs.faces("source = ? AND frame = ?", (source, g))
                if any(track.box_iou(box[None], e.box[None])[0, 0] > 0.3 for e in existing):
                    break  # already there
                row = FaceRow(source, g, len(existing), box.astype(np.float32), np.zeros((68, 2), np.float32),
                              score=hit.score)
                if self._measure(self._pipes[source], image, plate, row, {}) is None:
                    break
                self.fs.record_detections(source, g, existing + [row])
                added += 1
        return added

    def _find(self, source: str, pipe: ColorPipeline, plate: np.ndarray, previous: dict, min_score: float,
              where: str):
        """Faces (boxes in plate pixels): near last frame's faces when they are all found again
        there (a small, fast search), else a full detection on the working view, which also runs
        every `detect_every` frames to catch faces that enter. Returns (faces, full)."""
        since = self._since_full.get(source)
        if previous and since is not None and since + 1 < self.opt.detect_every:
            found = []
            for p in previous.values():
                hit = self._search_near(pipe, plate, p.box, min_score, where)
                if hit is None:
                    break
                found.append(hit)
            else:
                return found, False
        h, w = plate.shape[:2]
        with self.clock("colour"):
            view = self._view(pipe, plate, _size(w, h, self.opt.detect_side), where)
        scale = view.shape[1] / w
        with self.clock("detect"):
            faces = self.detector.detect(view, self._upsample(source, scale, max(view.shape[:2])))
        for f in faces:
            f.box = f.box / scale
        return faces, True

    def _search_near(self, pipe: ColorPipeline, plate: np.ndarray, box: np.ndarray, min_score: float, where: str):
        """The best face in a window around `box` (plate pixels), shown to the detector with the
        face at about ROI_FACE pixels (HOG's comfortable size): a few ms, not a full pass."""
        h, w = plate.shape[:2]
        x0, y0, x1, y1 = _clip_box(box, w, h, ROI_MARGIN)
        if x1 - x0 < 8 or y1 - y0 < 8:
            return None
        r = ROI_FACE / max(1.0, float(box[2] - box[0]))
        with self.clock("colour"):
            roi = self._view(pipe, plate[y0:y1, x0:x1], (max(8, round((x1 - x0) * r)), max(8, round((y1 - y0) * r))),
                             where)
        with self.clock("detect"):
            hits = [f for f in self.detector.detect(roi, 0) if f.score >= min_score]
        if not hits:
            return None
        best = max(hits, key=lambda f: f.score)
        best.box = best.box * ((x1 - x0) / roi.shape[1]) + np.array([x0, y0, x0, y0], np.float32)
        return best

    def _view(self, pipe: ColorPipeline, pixels: np.ndarray, size: tuple[int, int], where: str) -> np.ndarray:
        """An 8-bit display image of `pixels` at `size`: code values are only resized."""
        if pixels.dtype != np.uint8:
            if size[0] <= pixels.shape[1]:
                return pipe.to_display(pixels, max_side=max(size), where=where)
            pixels = pipe.to_display(pixels, where=where)  # enlarge after the view, not before
        if (pixels.shape[1], pixels.shape[0]) == size:
            return pixels
        grow = size[0] > pixels.shape[1]
        return cv2.resize(pixels, size, interpolation=cv2.INTER_LINEAR if grow else cv2.INTER_AREA)

    def _identify(self, row: FaceRow, crop: np.ndarray, local: np.ndarray, previous: dict) -> None:
        """Embed the face unless it clearly continues a face embedded within IDENTITY_EVERY frames.

        dlib's recognition network is the slowest step (~90 ms a face here); identity does not
        change frame to frame, so continuing faces reuse it and pass 2 fills them from their track.
        """
        match = [p for p in previous.values() if track.box_iou(row.box[None], p.box[None])[0, 0] >= 0.5]
        if len(match) == 1 and row.frame - match[0].extra.get("embedded_at", -10**9) < IDENTITY_EVERY:
            row.embedding, row.embedded = None, 0
            row.extra["embedded_at"] = match[0].extra["embedded_at"]
            return
        row.embedding, row.embedded = self.embedder.embed(crop, local), 1
        row.extra["embedded_at"] = row.frame

    def _cache_region(self, row: FaceRow, image: Image) -> None:
        """Keep the plate region pass 2 will cut the face from, so it need not read the frame again.

        The region is the aligned square of the raw landmarks plus CACHE_MARGIN; smoothing moves
        landmarks far less than that. Bounded by CACHE_BYTES; beyond it pass 2 reads the plate.
        """
        plate = image.on_display_window()
        h, w = plate.shape[:2]
        matrix = align.alignment_matrix(row.landmarks_raw, self.opt.size, self.opt.face_type)
        x0, y0, x1, y1 = align.face_box(matrix, self.opt.size, (h, w))
        mx, my = int((x1 - x0) * CACHE_MARGIN) + 4, int((y1 - y0) * CACHE_MARGIN) + 4
        x0, y0, x1, y1 = max(0, x0 - mx), max(0, y0 - my), min(w, x1 + mx), min(h, y1 + my)
        region = np.array(plate[y0:y1, x0:x1, :3], np.float32)
        if self._cached_bytes + region.nbytes > CACHE_BYTES:
            return
        self._cached_bytes += region.nbytes
        self._regions[(row.source, row.frame, row.face_index)] = ((x0, y0, x1, y1), (h, w), region)

    def _upsample(self, source: str, scale: float, side: int) -> int:
        """A detector with a native minimum (HOG: ~80 px; BlazeFace: 1/15 of the working image's
        longer `side`) finds faces of that size and up in the working image, i.e. that over `scale`
        in plate pixels. Only a smaller --min-size pays for upsampling (each step doubles the
        image, or halves BlazeFace's tiles); detectors without one are not upsampled."""
        native = self.detector.native_min_face or side * getattr(self.detector, "native_min_fraction", 0)
        if not native:
            return 0
        reach = native / scale
        want = self.opt.min_size or reach
        upsample = 0 if want >= reach else 1 if want * 2 >= reach else 2
        if not self._told:  # once a run: the reach is the same for every source of one size
            self._told.add(source)
            log.info("%s: detecting faces of about %.0f plate pixels and up%s", Path(source).name, reach / 2 ** upsample,
                     "" if self.opt.min_size else " (--min-size finds smaller ones, more slowly)")
        return upsample

    # --- pass 2: tracks, smoothing, alignment -------------------------------------------

    def assign_and_smooth(self, source: str, still: bool) -> list[FaceRow]:
        """Track ids, smoothed landmarks, and faces filled in over short gaps of each track."""
        if not still:
            self.fs.drop_filled(source)  # derived from the tracks: made again from them below
        faces = self.fs.faces("source = ?", (source,))
        if not faces:
            return faces
        if still:
            for f in faces:
                f.landmarks = f.landmarks_raw
            return faces
        dets = [track.Detection(f.frame, f.box, f.landmarks_raw, f.embedding, f.score or 1.0, f.face_index) for f in faces]
        ids = track.assign_tracks(dets)
        looked = set(self.fs.frame_stage(source))  # every frame looked at, faces or not
        step = track.sampling_step(looked)
        gaps = {}
        for f, tid in zip(faces, ids):
            f.track_id = int(tid)
        for tid in sorted(set(ids)):
            members = [f for f in faces if f.track_id == tid]
            measured = [f.embedding for f in members if f.embedded]
            for f in members:  # faces that reused an identity take their track's mean one
                if not f.embedded and measured:
                    f.embedding = np.mean(measured, axis=0).astype(np.float32)
            frames = np.array([f.frame for f in members])
            raw = np.stack([f.landmarks_raw for f in members])
            smoothed = track.smooth_track(frames, raw, self.opt.smooth, step)
            for f, pts in zip(members, smoothed):
                f.landmarks = pts.astype(np.float32)
            gaps[tid] = (track.fill_gaps(frames, smoothed, np.stack([f.box for f in members]),
                                         max_gap=track.FILL_MAX_GAP, step=step, available=looked),
                         next((f.embedding for f in members if f.embedding is not None), None))
        return faces + self._fill_gaps(source, faces, gaps)

    def _fill_gaps(self, source: str, faces: list[FaceRow], gaps: dict) -> list[FaceRow]:
        """Faces for the few frames inside a track where neither detection nor tracking found
        it (a blur, a hand passing, a moment at the frame edge): the smoothed landmarks and box
        interpolated across the gap (`gaps`: track id -> (track.fill_gaps of it, its embedding)),
        stored with `filled` = 1 and said in the log, so the layer is not empty there and the
        plate's face does not pop back. Longer gaps split the track."""
        taken: dict[int, int] = {}
        for f in faces:
            taken[f.frame] = max(taken.get(f.frame, -1), f.face_index)
        added, tracks = [], set()
        for tid, (filled, embedding) in sorted(gaps.items(), key=lambda item: item[0]):
            for frame, points, box in filled:
                taken[frame] = taken.get(frame, -1) + 1
                added.append(FaceRow(source, frame, taken[frame], box.astype(np.float32), points.astype(np.float32),
                                     track_id=tid, landmarks=points.astype(np.float32), embedding=embedding,
                                     embedded=0, filled=1))
                tracks.add(tid)
        if added:
            self.fs.add_filled(source, added)
            log.info("%s: %d face(s) filled in over short gaps of %d track(s) (frames %s)", Path(source).name, len(added),
                     len(tracks), format_frames(sorted({f.frame for f in added})))
        return added

    def align_frame(self, source: str, frame: int, faces: list[FaceRow], image: Image | None) -> bool:
        """Cut every face of one frame from the plate in the model encoding and write its EXR
        (thread-safe: no database work here; `store_aligned` records the frame afterwards).

        Without `image`, the plate regions kept from pass 1 are used; returns False (writing
        nothing) when one is missing or too small, so the caller reads the frame instead.
        """
        kernels.use_threads(1)  # one frame per worker thread already fills the cores
        size, ftype = self.opt.size, self.opt.face_type
        tag = _source_tag(source)
        cuts = []
        for f in faces:
            matrix = align.alignment_matrix(f.landmarks, size, ftype)
            if image is not None:
                plate = image.on_display_window()
                (h, w), origin, region = plate.shape[:2], (0, 0), plate
            elif (source, frame, f.face_index) in self._regions:
                (rx0, ry0, rx1, ry1), (h, w), region = self._regions[(source, frame, f.face_index)]
                origin = (rx0, ry0)
            else:
                return False
            # Encode only the plate region the aligned square covers (plus a filter margin).
            x0, y0, x1, y1 = align.region_for(matrix, size, (h, w))
            ox, oy = origin
            if x0 < ox or y0 < oy or x1 > ox + region.shape[1] or y1 > oy + region.shape[0]:
                return False  # smoothing moved the face beyond the kept region
            cuts.append((f, matrix, region[y0 - oy:y1 - oy, x0 - ox:x1 - ox], (x0, y0), (w, h)))
        pipe = self._pipes.get(source) if image is None else self.pipeline(source, image)
        for f, matrix, region, (x0, y0), (w, h) in cuts:
            with self.clock("align"):
                region = pipe.to_model(region, where=f"{source} frame {frame}")
                aligned = align.cut_face(region, align.shift(matrix, x0, y0), size)
                points = align.transform_points(f.landmarks, matrix).astype(np.float32)
                masks = [hull_mask(points, (size, size), kind) for kind in ("components", "extended")]
                f.blur = quality.blur(aligned.mean(axis=2), points)
                f.yaw, f.pitch, f.roll = (float(v) for v in quality.head_pose(f.landmarks, (w, h)))
                f.face_size = float(track.face_size(f.landmarks))
            pixels = np.concatenate([aligned, masks[0][..., None], masks[1][..., None]], axis=2)
            out = Image.from_array(pixels.astype(np.float32), ("R", "G", "B", "components.Y", "extended.Y"))
            out.set_attribute("vfxswap:source", source)
            out.set_attribute("vfxswap:frame", int(frame))
            out.set_attribute("vfxswap:faceType", ftype)
            out.set_attribute("vfxswap:encoding", ENCODING_NAME)
            out.set_attribute("vfxswap:ocioConfig", pipe.choice.name)
            out.set_attribute("vfxswap:matrix", tuple(float(v) for v in matrix.ravel()), "float[6]")
            rel = f"faces/{tag}_{frame:06d}_{f.face_index}.exr"
            with self.clock("write"):
                write_image(self.fs.folder / rel, out)
            f.matrix, f.aligned_landmarks, f.face_type, f.size, f.image = matrix, points, ftype, size, rel
        return True

    def store_aligned(self, source: str, frame: int, faces: list[FaceRow]) -> None:
        with self.clock("store"):
            self.fs.mark_aligned(source, frame, faces, ALIGNED_COLUMNS)
        for f in faces:
            self._regions.pop((source, frame, f.face_index), None)

    # --- orchestration --------------------------------------------------------------------

    def run(self, src: str | tuple[list[tuple[str, FrameSource]], bool]) -> ExtractReport:
        """Extract `src` (a path, or what `open_source` made of one)."""
        jobs, still = open_source(src, self.opt) if isinstance(src, (str, os.PathLike)) else src
        threads = kernels.use_threads(1)  # the extractor runs its own threads: reader, cutters
        try:
            return self._run(jobs, still)
        finally:
            kernels.use_threads(threads)

    def _run(self, jobs: list[tuple[str, FrameSource]], still: bool) -> ExtractReport:
        report = ExtractReport()
        if still:
            self._rekey_stills(jobs)
        self._detect_again(jobs)

        def fail(key: int | str, exc: VfxSwapError) -> None:
            """A frame that cannot be read fails alone (stills, which share one frame number, by
            their file name; their error names the file)."""
            report.failed[key] = str(exc)
            log.error("%s", exc if still else f"frame {key}: {exc}")

        for source, fsrc in jobs:
            done = self.fs.frame_stage(source)
            todo = [f for f in fsrc.frames if f not in done]
            report.frames_skipped += len(fsrc.frames) - len(todo)
            if not todo:
                continue
            fsrc.frames = todo
            try:
                self.source_pipeline(source, fsrc)
            except VfxSwapError as exc:
                if not still:
                    raise  # none of a sequence's first frames can be read
                fail(Path(source).name, exc)
                continue
            prepare = lambda frame, image, source=source: self.prepare(source, frame, image)
            for frame, image, plate in self._frames(fsrc, f"detect {Path(source).name}", prepare):
                if isinstance(image, VfxSwapError):
                    fail(Path(source).name if still else frame, image)
                    continue
                rows = self.detect_frame(source, frame, image, plate)
                with self.clock("store"):
                    self.fs.record_detections(source, frame, rows)
                report.frames_detected += 1
            self.look_back(source, fsrc)
        if still:
            self._group_stills([s for s, _ in jobs])
        for source, fsrc in jobs:
            report.frames_aligned += self._align_source(source, fsrc, still)
        counts = self.fs.counts()
        report.faces = counts["faces"]
        for source, fsrc in jobs:
            empty = [r[0] for r in self.fs.db.execute("SELECT frame FROM frames WHERE source = ? AND faces = 0", (source,))]
            if empty:
                report.without_faces.append(Path(source).name if still else format_frames(empty))
        report.timings = dict(self.timings)
        return report

    def _rekey_stills(self, jobs: list[tuple[str, FrameSource]]) -> None:
        """Stills used to be keyed by their path as typed: a faceset made then takes the new keys
        on its next run (when typed the same way), instead of extracting every face twice."""
        known = set(self.fs.sources())
        for source, fsrc in jobs:
            if fsrc.spec != source and fsrc.spec in known and source not in known:
                self.fs.rename_source(fsrc.spec, source)

    def _detect_again(self, jobs: list[tuple[str, FrameSource]]) -> None:
        """Record the detection settings of each source. One detected before with other ones
        starts again from nothing, all its frames (a frame that found no face is as much their
        result as one that did): a re-run with corrected settings is not answered "already
        done", and a source never mixes the two. Said in one line. Sources of an older faceset,
        detected before these were recorded, keep what they have."""
        want = detection_settings(self.opt, self.detector, self.landmarker)
        changed, frames, sources, curated = {}, 0, 0, 0
        for source, fsrc in jobs:
            had, done = recorded_settings(self.fs.meta(f"detect:{source}")), self.fs.frame_stage(source)
            if had == want or (done and had is None):
                continue
            if done:
                changed.update({k: (had.get(k), v) for k, v in want.items() if had.get(k) != v})
                fsrc.frames = sorted(set(fsrc.frames) | set(done))
                frames, sources = frames + len(done), sources + 1
                curated += len(self.fs.faces("source = ? AND excluded = 1", (source,)))
                self.fs.forget(source)
            self.fs.set_meta(f"detect:{source}", want)
            self.fs.db.commit()
        if changed:
            what = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changed.items())
            log.warning("detection settings changed (%s): detecting %d frame(s) of %d source(s) again%s",
                        what, frames, sources, f"; the {curated} face(s) excluded there are new faces now: "
                        f"review and exclude again" if curated else "")

    def _align_source(self, source: str, fsrc: FrameSource, still: bool) -> int:
        with self.clock("track+smooth"):
            faces = self.assign_and_smooth(source, still)
        stages = self.fs.frame_stage(source)
        stored = {f.id: f for f in self.fs.faces("source = ?", (source,))}
        by_frame: dict[int, list[FaceRow]] = {}
        for f in faces:
            by_frame.setdefault(f.frame, []).append(f)
        redo = []
        for frame, members in by_frame.items():
            old = [stored[f.id] for f in members]
            moved = any(o.landmarks is None or np.abs(o.landmarks - f.landmarks).max() > SMOOTH_EPS
                        or o.track_id != f.track_id for o, f in zip(old, members))
            if stages.get(frame) != "aligned" or moved or any(o.image is None for o in old):
                redo.append(frame)
        # Tracks and smoothed landmarks of frames that keep their crops still get saved.
        self.fs.update_faces(faces, ["track_id", "landmarks", "embedding"])
        for frame, in self.fs.db.execute("SELECT frame FROM frames WHERE source = ? AND faces = 0 AND stage != 'aligned'",
                                         (source,)).fetchall():
            self.fs.mark_aligned(source, frame, [], ALIGNED_COLUMNS)
        if not redo:
            return 0
        # Frames whose plate regions were kept from pass 1 need no second read: cut them on all
        # cores (OpenCV, numba and OpenImageIO release the GIL), record them here in order.
        unread, count = (sorted(redo), 0) if self.opt.debug_dir else ([], 0)
        if not self.opt.debug_dir:
            with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
                cuts = [(f, pool.submit(self.align_frame, source, f, by_frame[f], None)) for f in sorted(redo)]
                for frame, done in cuts:
                    if done.result():
                        self.store_aligned(source, frame, by_frame[frame])
                        count += 1
                    else:
                        unread.append(frame)
        if unread:
            fsrc.frames = unread
            for frame, image in self._frames(fsrc, f"align {Path(source).name}"):
                if isinstance(image, VfxSwapError):
                    log.error("frame %d: %s", frame, image)
                    continue
                self.align_frame(source, frame, by_frame.get(frame, []), image)
                self.store_aligned(source, frame, by_frame.get(frame, []))
                if self.opt.debug_dir:
                    with self.clock("debug"):
                        self._debug(source, frame, image, by_frame.get(frame, []))
                count += 1
        return count

    def _group_stills(self, sources: list[str]) -> None:
        """Stills have no time: group their faces into identities (greedy on embedding distance)."""
        from vfxswap.faces.identity import SAME_PERSON, distance

        centres: list[np.ndarray] = []
        rows = [f for s in sources for f in self.fs.faces("source = ?", (s,))]
        for f in rows:
            dists = [distance(f.embedding, c) for c in centres] if f.embedding is not None else []
            best = int(np.argmin(dists)) if dists else -1
            if best >= 0 and dists[best] < SAME_PERSON:
                f.track_id = best
            else:
                f.track_id = len(centres)
                centres.append(f.embedding if f.embedding is not None else np.zeros(128, np.float32))
        self.fs.update_faces(rows, ["track_id"])

    def _debug(self, source: str, frame: int, image: Image, faces: list[FaceRow]) -> None:
        """A display image with boxes, raw (red) and smoothed (green) landmarks and track ids."""
        pipe = self.pipeline(source, image)
        plate = image.on_display_window()
        view = (np.clip(plate[..., :3], 0, 1) * 255 + 0.5).astype(np.uint8) if pipe.plate_is_display_encoded else \
            pipe.to_display(plate, max_side=None)
        canvas = np.ascontiguousarray(view[..., ::-1])
        for f in faces:
            x0, y0, x1, y1 = (int(v) for v in f.box)
            cv2.rectangle(canvas, (x0, y0), (x1, y1), (255, 160, 0), 2)
            for (x, y) in f.landmarks_raw:
                cv2.circle(canvas, (int(round(x)), int(round(y))), 2, (0, 0, 255), -1)
            for (x, y) in f.landmarks:
                cv2.circle(canvas, (int(round(x)), int(round(y))), 1, (0, 255, 0), -1)
            cv2.putText(canvas, f"track {f.track_id}", (x0, max(12, y0 - 6)), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                        (255, 255, 255), 1, cv2.LINE_AA)
        folder = Path(self.opt.debug_dir)
        folder.mkdir(parents=True, exist_ok=True)
        from vfxswap import atomic

        ok, data = cv2.imencode(".png", canvas)
        atomic.write_bytes(folder / f"{_source_tag(source)}.{frame:04d}.png", data.tobytes())


ALIGNED_COLUMNS = ["matrix", "aligned_landmarks", "face_type", "size", "image", "blur", "yaw", "pitch", "roll",
                   "face_size", "track_id", "landmarks"]


def source_key(fsrc: FrameSource, src: str) -> str:
    """How a source is named in a faceset: its absolute pattern (or movie path), so a render can
    find the faces of the same plates however the path is typed."""
    if fsrc.sequence is None:
        return str(Path(src).resolve())
    pattern = str(fsrc.sequence.pattern)
    return os.path.join(os.path.abspath(os.path.dirname(pattern) or "."), os.path.basename(pattern))


def _size(w: int, h: int, max_side: int) -> tuple[int, int]:
    from vfxswap.color import working_size

    return working_size(w, h, max_side)


def _stills(src: str) -> list[str] | None:
    """The image files a folder holds (sorted), or [src] for one image without a frame number."""
    if os.path.isdir(src):
        files = sorted(str(p) for p in Path(src).iterdir()
                       if p.suffix.lower() in STILL_EXTENSIONS and not p.name.startswith("."))
        if not files:
            raise VfxSwapError(f"{src}: no images in this folder")
        return files
    return None


def open_source(src: str, options: ExtractOptions) -> tuple[list[tuple[str, FrameSource]], bool]:
    """(faceset key, frames) of each source `src` holds, and whether they are stills. Stills are
    keyed like plates (`source_key`), so a folder typed another way is the same sources."""
    stills = _stills(str(src))
    if stills is not None:
        return [(source_key(fsrc, s), fsrc) for s in stills for fsrc in [FrameSource.still(s)]], True
    fsrc = FrameSource.open(str(src), options.frames, options.start)
    return [(source_key(fsrc, str(src)), fsrc)], False


def extract(src: str, faceset_dir: str, options: ExtractOptions | None = None) -> ExtractReport:
    """Extract faces from plates, a movie, or a folder of stills into a faceset (resumable).

    The options and the source are checked, and the detector and landmarker loaded, before the faceset records
    its settings: a failed start (a typo, --size 0) must not lock a new faceset to them."""
    options = options or ExtractOptions()
    options.check()
    source = open_source(src, options)
    new = not Path(faceset_dir).exists()
    try:
        with Faceset(faceset_dir, create=True) as fs:
            extractor = Extractor(fs, options)  # loads the detector, landmarker and OCIO config: may fail
            fs.check_settings(face_type=options.face_type, size=options.size, encoding=ENCODING_NAME)
            new = False  # started: from here the faceset holds work worth keeping
            return extractor.run(source)
    finally:
        if new:  # a start that failed: an empty faceset would read as extracted (a farm job skips Extract)
            shutil.rmtree(faceset_dir, ignore_errors=True)


def reference_embeddings(paths: list[str], options: ExtractOptions | None = None) -> list[np.ndarray]:
    """The identity embedding of the largest face in each reference image (or folder of them)."""
    options = options or ExtractOptions()
    files = []
    for p in paths:
        files += _stills(p) if os.path.isdir(p) else [p]
    import tempfile

    out = []
    with tempfile.TemporaryDirectory() as tmp, Faceset(tmp, create=True) as scratch:
        ex = Extractor(scratch, options)
        for path in files:
            rows = ex.detect_frame(path, 1, read_image(path))
            if not rows:
                log.warning("%s: no face found in this reference image", path)
                continue
            out.append(max(rows, key=lambda r: (r.box[2] - r.box[0]) * (r.box[3] - r.box[1])).embedding)
    return out
