"""Compositor mattes in and out of a faceset: plate-space sequences <-> per-face aligned mattes.

In (`import_mattes`): a roto or key rendered from Nuke over the plates (any format vfxswap
reads, data windows honoured, one channel picked) is cut into each face's aligned square with
the face's stored matrix, exactly as the face itself was cut (`align.cut_face`, low-pass
included), and becomes that face's label matte (`masks/...label.exr`). Polygons an artist drew
over an earlier import stay: the new matte goes under them.

Out (`export_mattes`): each face's matte (the masker's `seg`, the `label`, or the landmark
`hull`) goes back over its plate box, one EXR per frame of the source: display window the
plate's, data window the faces' boxes, the matte in `A`, so a Read node gives it as alpha.
Frames without a face get an empty layer (one zero pixel), so the sequence has no holes.

Plate pixels here are those of the plate's display window, top-left (0, 0), as extraction
counted them for the matrices; a matte is placed by its own display window, so its data window
may be smaller than, or offset in, the frame.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from vfxswap import __version__, atomic
from vfxswap.errors import VfxSwapError
from vfxswap.faces import align
from vfxswap.faceset.store import Faceset, FaceRow
from vfxswap.masks.hull import hull_mask
from vfxswap.masks.labels import label_matte, read_matte, write_matte
from vfxswap.plates.frames import FramePattern, Sequence, find_sequence, format_frames, is_movie, parse_frames
from vfxswap.plates.image import COMPRESSIONS, Box, Image, list_parts, read_image, read_info, write_image

log = logging.getLogger("vfxswap")

KINDS = ("seg", "label", "hull")
MARGIN = 2  # plate pixels around a face's box in an exported data window: the matte's soft edge


@dataclass
class ImportReport:
    source: str
    imported: list[int] = field(default_factory=list)  # frames whose faces took the matte
    faces: int = 0  # faces given a label matte
    kept_polygons: int = 0  # of those, faces whose earlier polygons stay over the new matte
    without_matte: list[int] = field(default_factory=list)  # frames with faces but no matte file: skipped
    failed: dict[int, str] = field(default_factory=dict)  # frame -> one line naming the file


@dataclass
class ExportReport:
    source: str
    output: str  # the pattern written (Nuke form)
    written: list[int] = field(default_factory=list)  # every frame written, empty layers included
    empty: list[int] = field(default_factory=list)  # of those, frames with no face matte (one zero pixel)
    without_matte: list[tuple[int, int]] = field(default_factory=list)  # (frame, face index) with no such matte
    failed: dict[int, str] = field(default_factory=dict)  # frame -> one line naming the file


# --- which source ---------------------------------------------------------------------------

def pick_source(fs: Faceset, source: str | None) -> str:
    """The faceset's key for `source`: as stored, or typed as extraction would key it (a pattern
    in any token form, a relative path), or a unique file name; None: the only one it holds."""
    sources = fs.sources()
    if source is None:
        if len(sources) == 1:
            return sources[0]
        if not sources:
            raise VfxSwapError(f"{fs.folder}: holds no frames yet")
        raise VfxSwapError(f"{fs.folder}: holds {len(sources)} sources, choose one with --source: {', '.join(sources)}")
    if source in sources:
        return source
    typed = str(FramePattern.parse(source)) if FramePattern.has_token(source) else source
    forms = {os.path.join(os.path.abspath(os.path.dirname(typed) or "."), os.path.basename(typed)),
             str(Path(typed).resolve())}
    hits = [s for s in sources if s in forms] or [s for s in sources if os.path.basename(s) == os.path.basename(typed)]
    if len(hits) == 1:
        return hits[0]
    raise VfxSwapError(f"--source {source}: not a source of {fs.folder} (it holds {', '.join(sources) or 'none'})")


def _wanted(frames: str | None) -> set[int] | None:
    return set(parse_frames(frames)) if frames else None


# --- in ---------------------------------------------------------------------------------------

def import_mattes(faceset_dir: str | os.PathLike, pattern: str | os.PathLike, *, channel: str = "A",
                  source: str | None = None, frames: str | None = None) -> ImportReport:
    """Cut a plate-space matte sequence (`pattern`: `MATTES.####.exr`, `%04d`, `@@@@`, or one
    member file) into the label matte of every face of `source` in its frames (`frames`: a range,
    all when None). Each frame is recorded in one transaction after its files are written (each
    atomically), so a frame that fails (a damaged file, named in `failed`) leaves its faces as
    they were; frames with faces but no matte file are skipped and listed."""
    with Faceset(faceset_dir) as fs:
        source = pick_source(fs, source)
        seq = find_sequence(pattern)
        if not seq.frames:
            raise VfxSwapError(f"{seq.pattern}: no matte files found")
        wanted = _wanted(frames)
        by_frame: dict[int, list[FaceRow]] = {}
        for face in fs.faces("source = ?", (source,)):
            if face.matrix is not None and face.size and (wanted is None or face.frame in wanted):
                by_frame.setdefault(face.frame, []).append(face)
        report = ImportReport(source)
        have = set(seq.frames)
        todo = [f for f in sorted(by_frame) if f in have]
        report.without_matte = [f for f in sorted(by_frame) if f not in have]
        if not todo:
            raise VfxSwapError(f"{seq.pattern}: no matte file for a frame with faces of {source} "
                               f"(mattes: {format_frames(seq.frames)}; faces: {format_frames(by_frame) or 'none'})")
        _check_channel(seq.path(todo[0]), channel)  # a wrong --channel fails once, not on every frame
        plate = fs.meta(f"plate:{source}")
        atomic.remove_orphan_temps(fs.folder / "masks")
        labels = fs.labels()
        for frame in todo:
            path = seq.path(frame)
            try:
                new = _import_frame(fs, path, channel, by_frame[frame], labels, plate)
            except VfxSwapError as exc:
                report.failed[frame] = str(exc)
                log.error("frame %d: %s", frame, exc)
                continue
            fs.set_labels(new)
            labels.update(new)
            report.imported.append(frame)
            report.faces += len(new)
            report.kept_polygons += sum(1 for label in new.values() if label["polygons"])
        if report.without_matte:
            log.info("no matte file for frame(s) %s of %s: skipped", format_frames(report.without_matte), source)
        return report


def _part_with(path: str, channel: str) -> int:
    """The part of `path` holding `channel`, or one line naming the file and what it has."""
    parts = list_parts(path)
    for info in parts:
        if channel in info.channels:
            return info.part
    has = ", ".join(c for info in parts for c in info.channels)
    raise VfxSwapError(f"{path}: no channel {channel} (it has {has}): choose one with --channel")


def _check_channel(path: str, channel: str) -> None:
    try:
        list_parts(path)
    except VfxSwapError:
        return  # unreadable: its frame fails alone, naming it
    _part_with(path, channel)


def _import_frame(fs: Faceset, path: str, channel: str, faces: list[FaceRow], labels: dict,
                  plate: list[int] | None) -> dict[int, dict]:
    """Write the label matte of each of one frame's faces from matte file `path`; their labels."""
    part = _part_with(path, channel)
    disp = read_info(path, part).display_window
    if plate is not None and (disp.width, disp.height) != (plate[2], plate[3]):
        raise VfxSwapError(f"{path}: a {disp.width}x{disp.height} frame, the plates are {plate[2]}x{plate[3]}: "
                           f"render the matte at the plate's format")
    shape = (disp.height, disp.width)
    boxes = [align.region_for(f.matrix, f.size, shape) for f in faces]
    rows = (min(b[1] for b in boxes), max(b[3] for b in boxes))  # decode only the faces' rows
    matte = read_image(path, part=part, channels=[channel], rows=rows)
    new = {}
    for face, (x0, y0, x1, y1) in zip(faces, boxes):
        region = matte.on_window(Box(disp.x + x0, disp.y + y0, x1 - x0, y1 - y0))[..., 0]
        crop = plate_to_aligned(region, align.shift(face.matrix, x0, y0), face.size)
        rel = fs.matte_path(face, "label")
        write_matte(fs.folder / rel, crop, source=face.source, frame=int(face.frame), importedFrom=str(path),
                    channel=channel)
        polygons = labels.get(face.id, {}).get("polygons") or []
        new[face.id] = {"polygons": polygons, "matte": rel, "origin": "import"}
    return new


def plate_to_aligned(region: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """A plate-space matte (h, w) -> (size, size) float32 0..1 through `matrix` (plate region ->
    aligned), cut as the face was (`align.cut_face`). NaN is 0 and values leave 0..1 before the
    warp, so one bad pixel cannot spread through the filter; the filter's ringing is clipped after."""
    if not region.size:
        return np.zeros((size, size), np.float32)
    px = np.clip(np.nan_to_num(np.asarray(region, np.float32), nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)
    return np.clip(align.cut_face(px, matrix, size), 0.0, 1.0)


# --- out --------------------------------------------------------------------------------------

def export_mattes(faceset_dir: str | os.PathLike, out_pattern: str | os.PathLike, *, kind: str = "seg",
                  source: str | None = None, frames: str | None = None, plates: str | os.PathLike | None = None,
                  compression: str = "zip") -> ExportReport:
    """Write the faces' `kind` mattes over the plate, one EXR per frame of `source` (`frames`:
    a range of its frames, all when None): `seg` the masker's matte, `label` the labelled one,
    `hull` the landmarks' extended hull. The plate's display window is the one extraction
    recorded; a faceset made before that was recorded needs `plates` (read for its header).

    Faces that overlap combine by max, not `over`: each matte says how much of the frame is that
    face, so where two meet the frame is as much face as the larger says. `over` would thicken
    the soft edges where faces touch (two halves make three quarters) and give back no face's
    matte as it was. Excluded faces are left out, as the render leaves them."""
    if kind not in KINDS:
        raise VfxSwapError(f"matte kind {kind!r}: choose from {', '.join(KINDS)}")
    if Path(str(out_pattern)).suffix.lower() != ".exr":
        raise VfxSwapError(f"{out_pattern}: mattes are written as EXR (data window and float alpha kept): "
                           f"name it .exr")
    if compression.partition(":")[0] not in COMPRESSIONS[".exr"]:  # once, not on every frame
        raise VfxSwapError(f"EXR compression {compression!r}: choose from {', '.join(sorted(COMPRESSIONS['.exr']))}")
    with Faceset(faceset_dir) as fs:
        source = pick_source(fs, source)
        stages = fs.frame_stage(source)
        todo = sorted(stages)
        wanted = _wanted(frames)
        if wanted is not None:
            outside = sorted(wanted - set(stages))
            if outside:
                raise VfxSwapError(f"frame(s) {format_frames(outside)}: not in {fs.folder} for {source} "
                                   f"(it has {format_frames(todo)})")
            todo = sorted(wanted)
        out = FramePattern.parse(out_pattern) if FramePattern.has_token(out_pattern) or len(todo) != 1 else \
            FramePattern.still(out_pattern)
        _refuse_overwriting(out, [source] + ([str(plates)] if plates else []), todo)
        disp = _plate_window(fs, source, plates)
        by_frame: dict[int, list[FaceRow]] = {}
        for face in fs.faces("source = ?", (source,), include_excluded=False):
            by_frame.setdefault(face.frame, []).append(face)
        labels = fs.labels() if kind == "label" else {}
        report = ExportReport(source, str(out))
        Path(out.path(todo[0])).parent.mkdir(parents=True, exist_ok=True)
        atomic.remove_orphan_temps(Path(out.path(todo[0])).parent)
        for frame in todo:
            try:
                mattes = []
                for face in by_frame.get(frame, []):
                    matte = face_matte(fs, face, kind, labels) if face.matrix is not None else None
                    if matte is None:
                        report.without_matte.append((frame, face.face_index))
                    else:
                        mattes.append((face.matrix, matte))
                layer = _layer(mattes, disp)
                layer.set_attribute("software", f"vfxswap {__version__}")
                layer.set_attribute("vfxswap:faceset", str(fs.folder.resolve()))
                layer.set_attribute("vfxswap:matteKind", kind)
                layer.set_attribute("vfxswap:source", source)
                layer.set_attribute("vfxswap:frame", int(frame))
                layer.set_attribute("vfxswap:faces", len(mattes))
                # An empty layer's one pixel is written as float: half goes through plates.image's
                # fast cast, which takes a lone 1x1 plane for a scalar and fails (writing, and reading back).
                write_image(out.path(frame), layer, compression=compression, dtype="half" if mattes else "float")
            except VfxSwapError as exc:
                report.failed[frame] = str(exc)
                log.error("frame %d: %s", frame, exc)
                continue
            report.written.append(frame)
            if not mattes:
                report.empty.append(frame)
        if report.without_matte:
            log.info("%d face(s) without a %s matte left out (frames %s)", len(report.without_matte), kind,
                     format_frames({f for f, _ in report.without_matte}))
        if report.empty:
            log.info("no face matte in frame(s) %s: their layers are empty", format_frames(report.empty))
        return report


def face_matte(fs: Faceset, face: FaceRow, kind: str, labels: dict[int, dict]) -> np.ndarray | None:
    """One face's `kind` matte in its aligned square (size, size), or None when it has none."""
    size = face.size
    if kind == "seg":
        return read_matte(fs.folder / face.seg, size) if face.seg else None
    hull = None if face.aligned_landmarks is None else hull_mask(face.aligned_landmarks, (size, size), "extended")
    if kind == "hull":
        return hull
    label = labels.get(face.id)
    return None if label is None else label_matte(label, size, folder=fs.folder, hull=hull)


def aligned_to_plate(matte: np.ndarray, matrix: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """An aligned matte (S, S) -> the plate region `shape` (h, w) that `matrix` (region ->
    aligned) maps onto it: float32 0..1, zero outside the square (its edge antialiased, not
    smeared outward). Bilinear at exact positions (`align.warp_exact`) like the render's mask;
    a square with more pixels than the plate there is area-averaged to the plate's scale first,
    so a small face's matte does not alias."""
    m = np.array(matrix, np.float64, copy=True)
    scale = align.scale_of(m)
    matte = np.asarray(matte, np.float32)
    if scale > 1.0:
        n = max(1, round(matte.shape[0] / scale))
        r = n / matte.shape[0]
        matte = cv2.resize(matte, (n, n), interpolation=cv2.INTER_AREA)
        m *= r
        m[:, 2] += 0.5 * r - 0.5  # pixel centres: (a + 0.5) * r - 0.5
    m[:, 2] += 1.0  # one zero pixel around the square
    back = align.invert(m)
    return np.clip(align.warp_exact(np.pad(matte, 1), back, shape, order=1), 0.0, 1.0)


def _layer(mattes: list[tuple[np.ndarray, np.ndarray]], disp: Box) -> Image:
    """One frame's mattes over the plate: data window the union of their boxes (one zero pixel
    at the frame's corner when there are none), display window the plate's."""
    shape = (disp.height, disp.width)
    boxes = [align.region_for(m, matte.shape[0], shape, margin=MARGIN) for m, matte in mattes]
    boxes = [b for b in boxes if b[2] > b[0] and b[3] > b[1]]
    x0, y0 = min((b[0] for b in boxes), default=0), min((b[1] for b in boxes), default=0)
    x1, y1 = max((b[2] for b in boxes), default=1), max((b[3] for b in boxes), default=1)
    acc = np.zeros((y1 - y0, x1 - x0), np.float32)
    for (m, matte), (bx0, by0, bx1, by1) in zip(mattes, boxes):
        a = aligned_to_plate(matte, align.shift(m, bx0, by0), (by1 - by0, bx1 - bx0))
        region = (slice(by0 - y0, by1 - y0), slice(bx0 - x0, bx1 - x0))
        acc[region] = np.maximum(acc[region], a)
    return Image.from_array(acc[..., None], ("A",), origin=(disp.x + x0, disp.y + y0), display_window=disp)


def _plate_window(fs: Faceset, source: str, plates) -> Box:
    """The source's display window: as extraction recorded it, or read from `plates`' header."""
    recorded = fs.meta(f"plate:{source}")
    given = _window_of(str(plates)) if plates else None
    if recorded is None:
        if given is None:
            raise VfxSwapError(f"{fs.folder}: no plate size recorded for {source} (extracted before vfxswap "
                               f"recorded it): pass the plates with --plates")
        return given
    box = Box(*(int(v) for v in recorded))
    if given is not None and given != box:
        raise VfxSwapError(f"{plates}: display window {given}, but the faces of {source} were found on {box}")
    return box


def _window_of(plates: str) -> Box:
    if is_movie(plates):
        from vfxswap.plates.video import probe_video

        info = probe_video(plates)
        return Box(0, 0, info.width, info.height)
    seq: Sequence = find_sequence(plates)
    if not seq.frames:
        raise VfxSwapError(f"{seq.pattern}: no frames found on disk")
    return read_info(seq.path(seq.frames[0])).display_window


def _refuse_overwriting(out: FramePattern, inputs: list[str], frames: list[int]) -> None:
    """An output that resolves to the plates' (or the source's) own files is refused before
    anything is written."""
    for spec in inputs:
        pattern = FramePattern.parse(spec) if FramePattern.has_token(spec) else FramePattern.still(spec)
        taken = {os.path.realpath(pattern.path(f)) for f in frames}
        if any(os.path.realpath(out.path(f)) in taken for f in frames):
            raise VfxSwapError(f"{out} would overwrite {pattern}: choose another output")
