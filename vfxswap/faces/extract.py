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
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from vfxswap.color import ENCODING_NAME, ColorPipeline, resolve_config
from vfxswap.errors import VfxSwapError
from vfxswap.faces import align, quality, track
from vfxswap.faces.backends import load_backend
from vfxswap.faceset.store import Faceset, FaceRow
from vfxswap.masks import hull_mask
from vfxswap.plates.convert import FrameSource
from vfxswap.plates.frames import format_frames
from vfxswap.plates.image import Image, read_image, write_image
from vfxswap.progress import progress

log = logging.getLogger("vfxswap")
STILL_EXTENSIONS = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".exr", ".dpx", ".webp", ".bmp"}
HOG_MIN_FACE = 80  # dlib HOG finds faces of about this many pixels at upsample 0
LANDMARK_MARGIN = 0.35  # display crop around a box for landmarks, as a fraction of its size
SMOOTH_EPS = 0.05  # plate pixels: smoothed landmarks that moved less keep their aligned crop


@dataclass
class ExtractOptions:
    frames: str | None = None
    start: int = 1001  # a movie's first frame number
    backend: str = "auto"
    device: str = "cpu"
    face_type: str = "whole_face"
    size: int = 256
    max_faces: int | None = None
    min_size: float | None = None  # smallest face wanted, plate pixels (None: what the working size finds)
    min_score: float | None = None  # detector confidence to keep a face (default: the backend's)
    smooth: float = 1.0
    detect_side: int = 960  # longest side of the detector's working image
    plate_space: str | None = None
    ocio: str | None = None
    debug_dir: str | None = None


@dataclass
class ExtractReport:
    frames_detected: int = 0
    frames_skipped: int = 0
    frames_aligned: int = 0
    faces: int = 0
    without_faces: list[str] = field(default_factory=list)  # frame numbers, or file names for stills
    failed: dict[int, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


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
        if options.face_type not in align.FACE_TYPES:
            raise VfxSwapError(f"unknown face type {options.face_type!r} (choose from {', '.join(align.FACE_TYPES)})")
        self.backend = load_backend(options.backend, options.device)
        self.choice = resolve_config(options.ocio)
        self._embedder = None
        self._pipes: dict[str, ColorPipeline] = {}
        self._told: set[str] = set()
        self.timings: dict[str, float] = {}

    # --- helpers -------------------------------------------------------------------------

    @property
    def embedder(self):
        if self._embedder is None:
            from vfxswap.faces.identity import FaceEmbedder

            self._embedder = FaceEmbedder()
        return self._embedder

    @contextlib.contextmanager
    def clock(self, key: str):
        """Add the time spent in the block to `timings[key]` (seconds, summed over frames)."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[key] = self.timings.get(key, 0.0) + time.perf_counter() - t0

    def _frames(self, fsrc: FrameSource, desc: str):
        """The source's frames, with the time spent reading them clocked as `decode`."""
        it = iter(progress(fsrc, total=len(fsrc.frames), desc=desc))
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

    def _display(self, pipe: ColorPipeline, pixels: np.ndarray, max_side: int | None, where: str) -> np.ndarray:
        if pixels.dtype == np.uint8:
            return pixels[..., :3]
        return pipe.to_display(pixels, max_side=max_side, where=where)

    # --- pass 1: detection --------------------------------------------------------------

    def detect_frame(self, source: str, frame: int, image: Image) -> list[FaceRow]:
        pipe = self.pipeline(source, image)
        plate = image.on_display_window()
        h, w = plate.shape[:2]
        code_values = pipe.plate_is_display_encoded  # stills, video: detect on them as they are
        if code_values:
            plate8 = (np.clip(plate[..., :3], 0, 1) * 255 + 0.5).astype(np.uint8)
        where = f"{source} frame {frame}"
        with self.clock("colour"):
            view = (cv2.resize(plate8, _size(w, h, self.opt.detect_side), interpolation=cv2.INTER_AREA)
                    if code_values else self._display(pipe, plate, self.opt.detect_side, where))
        scale = view.shape[1] / w
        with self.clock("detect"):
            found = self.backend.detect(view, self._upsample(source, scale))
        rows: list[FaceRow] = []
        min_score = self.backend.min_score if self.opt.min_score is None else self.opt.min_score
        for face in found:
            box = face.box / scale
            if box[2] - box[0] < (self.opt.min_size or 0) or face.score < min_score:
                continue
            x0, y0, x1, y1 = _clip_box(box, w, h, LANDMARK_MARGIN)
            with self.clock("colour"):
                crop = plate8[y0:y1, x0:x1] if code_values else self._display(pipe, plate[y0:y1, x0:x1], None, where)
            with self.clock("landmarks"):
                points = self.backend.landmarks(crop, box - np.array([x0, y0, x0, y0], np.float32))
            with self.clock("identity"):
                embedding = self.embedder.embed(crop, points)
            rows.append(FaceRow(source, frame, len(rows), box.astype(np.float32), points + np.array([x0, y0], np.float32),
                                score=face.score, embedding=embedding))
            if self.opt.max_faces and len(rows) >= self.opt.max_faces:
                break
        return rows

    def _upsample(self, source: str, scale: float) -> int:
        """HOG finds faces of ~80 px and up in the working image, i.e. 80/scale plate pixels.
        Only a smaller --min-size pays for upsampling (each step doubles the image)."""
        if self.backend.name == "fan":
            return 0
        reach = HOG_MIN_FACE / scale
        want = self.opt.min_size or reach
        upsample = 0 if want >= reach else 1 if want * 2 >= reach else 2
        if source not in self._told:
            self._told.add(source)
            log.info("%s: detecting faces of about %.0f plate pixels and up%s", Path(source).name, reach / 2 ** upsample,
                     "" if self.opt.min_size else " (--min-size finds smaller ones, more slowly)")
        return upsample

    # --- pass 2: tracks, smoothing, alignment -------------------------------------------

    def assign_and_smooth(self, source: str, still: bool) -> list[FaceRow]:
        faces = self.fs.faces("source = ?", (source,))
        if not faces:
            return faces
        if still:
            for f in faces:
                f.landmarks = f.landmarks_raw
            return faces
        dets = [track.Detection(f.frame, f.box, f.landmarks_raw, f.embedding, f.score or 1.0, f.face_index) for f in faces]
        ids = track.assign_tracks(dets)
        for f, tid in zip(faces, ids):
            f.track_id = int(tid)
        for tid in sorted(set(ids)):
            members = [f for f in faces if f.track_id == tid]
            frames = np.array([f.frame for f in members])
            raw = np.stack([f.landmarks_raw for f in members])
            smoothed = track.smooth_track(frames, raw, self.opt.smooth)
            for f, pts in zip(members, smoothed):
                f.landmarks = pts.astype(np.float32)
        return faces

    def align_frame(self, source: str, frame: int, faces: list[FaceRow], image: Image) -> None:
        """Cut every face of one frame from the plate in the model encoding and store it."""
        pipe = self.pipeline(source, image)
        plate = image.on_display_window()
        h, w = plate.shape[:2]
        size, ftype = self.opt.size, self.opt.face_type
        tag = _source_tag(source)
        for f in faces:
            with self.clock("align"):
                matrix = align.alignment_matrix(f.landmarks, size, ftype)
                # Encode only the plate region the aligned square covers (plus a filter margin).
                x0, y0, x1, y1 = align.face_box(matrix, size, (h, w))
                x0, y0, x1, y1 = max(0, x0 - 4), max(0, y0 - 4), min(w, x1 + 4), min(h, y1 + 4)
                region = pipe.to_model(plate[y0:y1, x0:x1], where=f"{source} frame {frame}")
                local = matrix.copy()
                local[:, 2] += matrix[:, :2] @ np.array([x0, y0], np.float64)
                aligned = align.warp_to_aligned(region, local, size)
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
        with self.clock("store"):
            self.fs.mark_aligned(source, frame, faces, ALIGNED_COLUMNS)

    # --- orchestration --------------------------------------------------------------------

    def run(self, src: str) -> ExtractReport:
        report = ExtractReport()
        sources = _stills(src)
        still = sources is not None
        if still:
            jobs = [(s, FrameSource.still(s)) for s in sources]
        else:
            fsrc = FrameSource.open(src, self.opt.frames, self.opt.start)
            key = str(fsrc.sequence.pattern) if fsrc.sequence is not None else str(Path(src).resolve())
            jobs = [(key, fsrc)]
        for source, fsrc in jobs:
            done = self.fs.frame_stage(source)
            todo = [f for f in fsrc.frames if f not in done]
            report.frames_skipped += len(fsrc.frames) - len(todo)
            if todo:
                fsrc.frames = todo
                for frame, image in self._frames(fsrc, f"detect {Path(source).name}"):
                    if isinstance(image, VfxSwapError):
                        report.failed[frame] = str(image)
                        log.error("frame %d: %s", frame, image)
                        continue
                    rows = self.detect_frame(source, frame, image)
                    with self.clock("store"):
                        self.fs.record_detections(source, frame, rows)
                    report.frames_detected += 1
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
        self.fs.update_faces(faces, ["track_id", "landmarks"])
        for frame, in self.fs.db.execute("SELECT frame FROM frames WHERE source = ? AND faces = 0 AND stage != 'aligned'",
                                         (source,)).fetchall():
            self.fs.mark_aligned(source, frame, [], ALIGNED_COLUMNS)
        if not redo:
            return 0
        fsrc.frames = sorted(redo) if fsrc.sequence is not None or not still else fsrc.frames
        count = 0
        for frame, image in self._frames(fsrc, f"align {Path(source).name}"):
            if isinstance(image, VfxSwapError):
                log.error("frame %d: %s", frame, image)
                continue
            self.align_frame(source, frame, by_frame.get(frame, []), image)
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


def extract(src: str, faceset_dir: str, options: ExtractOptions | None = None) -> ExtractReport:
    """Extract faces from plates, a movie, or a folder of stills into a faceset (resumable)."""
    options = options or ExtractOptions()
    with Faceset(faceset_dir, create=True) as fs:
        fs.check_settings(face_type=options.face_type, size=options.size, encoding=ENCODING_NAME)
        return Extractor(fs, options).run(src)


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
