"""Render: plates + a model -> a floating face layer, one premultiplied RGBA EXR per plate frame.

Per frame, per face of the model's identity B (alignment from the destination faceset):
    plate region -> model encoding -> aligned crop cut as training's were (the stored smoothed
    landmarks, the model's face type; `face_input`) -> predictor (B encoded, decoded as A) ->
    colour match -> mask (learned, hull or both) -> warp back over the face's padded box (cubic
    B-spline at exact positions for colour, bilinear for the mask; see `align.warp_exact`) ->
    erode/blur in plate pixels -> decode to the plate's own space -> premultiply.
The layer's data window is the faces' padded box and its display window the plate's, so it
drops over the untouched plate with a plain `over`. Frames without a face to replace get an
empty layer (a 1x1 zero pixel) so the sequence has no holes, and the log lists them; a frame the faceset never processed, or one
missing from the plates, fails instead, naming it. Every file says in its header that it holds
synthetic imagery, which model made it, and the identities' release references.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from vfxswap import __version__, atomic
from vfxswap.color import ColorPipeline, resolve_config, tag_colour_space
from vfxswap.errors import VfxSwapError
from vfxswap.faces import align
from vfxswap.faceset.store import Faceset, FaceRow
from vfxswap.jobspec import RenderOptions
from vfxswap.masks import MASKERS, NEEDS_SEG, MaskInput
from vfxswap.plates.frames import FramePattern, format_frames, is_movie, select_frames
from vfxswap.plates.image import Box, Image, need_rgb, read_image, read_info, write_image
from vfxswap.progress import progress
from vfxswap.render.color_transfer import color_transfer, masked_samples, pool_samples

log = logging.getLogger("vfxswap")
PAD = 16  # plate pixels around the face's box in the data window


@dataclass
class RenderReport:
    written: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    without_faces: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)


@dataclass
class FaceWork:
    """One face of one frame, up to the colour match: model-encoded (R, R, ...) arrays."""

    track: int | None
    matrix: np.ndarray  # plate -> aligned crop at the model's resolution
    pred: np.ndarray  # the predicted face
    ref: np.ndarray  # the plate's face (input-limited)
    mask: np.ndarray  # the matte in the crop
    samples: tuple[np.ndarray, np.ndarray]  # (prediction, plate) pixels inside the matte


@dataclass
class FrameWork:
    """One frame's faces, with what the layer needs of the plate's header."""

    attributes: dict
    display_window: Box
    shape: tuple[int, int]
    faces: list[FaceWork]


class PassThroughPredictor:
    """Returns its input and a mask of ones: renders the plate's own face, which makes every
    warp, colour or premultiplication mistake visible (the comp must equal the plate)."""

    def __init__(self, resolution: int, face_type: str):
        self.resolution, self.face_type = resolution, face_type
        self.input_size = resolution  # cut straight at the resolution: the check is of the warps
        self.identity_b = None  # no identity: every face is rendered
        self.provenance = {"model_id": "passthrough", "manifest_sha256": "", "identities": {}}

    def __call__(self, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return faces, np.ones(faces.shape[:3], np.float32)


class ModelPredictor:
    """A trained model: encodes destination (B) faces and decodes them as the source (A)."""

    morph = 1.0  # the full swap, unless an amp model is asked for less (__init__)

    def __init__(self, folder: str, device: str = "auto", morph: float = 1.0):
        from vfxswap.models import MORPHING_ARCHITECTURES
        from vfxswap.models.device import pick_device
        from vfxswap.models.store import load_model

        self.device = pick_device(device)
        self.model, manifest = load_model(folder, device=self.device)
        self.model.eval()
        # how far an amp model's swap goes from B's own face (0) to A (1); others have only the full swap
        self.morph = float(morph)
        if self.morph != 1.0 and self.model.config.arch not in MORPHING_ARCHITECTURES:
            raise VfxSwapError(f"--morph {morph}: only an amp model morphs, and {folder} is {self.model.config.arch}; "
                               f"render it with --morph 1")
        self.resolution, self.face_type = self.model.config.resolution, self.model.config.face_type
        identities = manifest.get("identities", {})
        b = identities.get("B", {})
        # Training saw faces cut at the facesets' size, then area-reduced to the resolution: the
        # render cuts the same way (a model saved before the size was recorded: at the resolution).
        self.input_size = int(b.get("faceset_size") or self.resolution)
        # B's mean identity embedding: the faces a render replaces by default
        self.identity_b = np.asarray(b["embedding"], np.float32) if b.get("embedding") else None
        self.identity_b_name = b.get("name", "B")
        digest = hashlib.sha256((Path(folder) / "manifest.json").read_bytes()).hexdigest()
        self.provenance = {"model_id": manifest.get("model_id", ""), "manifest_sha256": digest,
                           "iteration": manifest.get("iteration"), "identities": manifest.get("identities", {}),
                           "encoding": manifest.get("colour", {}).get("encoding")}
        self.threads = cpu_predict_threads() if self.device.type == "cpu" else None

    def __call__(self, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, R, R, 3) model-encoded faces -> ((N, R, R, 3) swapped faces, (N, R, R) learned masks).
        On the CPU with `self.threads` intra-op threads, the process's own count restored after."""
        import torch

        with torch_threads(self.threads), torch.no_grad():
            x = torch.from_numpy(np.ascontiguousarray(faces.transpose(0, 3, 1, 2))).to(self.device)
            rgb, mask = self.model.swap(x, "A", morph=self.morph) if self.morph != 1.0 else self.model.swap(x, "A")
        return rgb.float().cpu().numpy().transpose(0, 2, 3, 1), mask.float().cpu().numpy()[:, 0]


@contextmanager
def torch_threads(count: int | None):
    """torch's intra-op CPU threads set to `count` for a block (None: left as they are), and
    put back after: the render's own choice, not the process's (see `cpu_predict_threads`)."""
    import torch

    before = torch.get_num_threads()
    if count and count != before:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def cpu_predict_threads() -> int:
    """Intra-op threads for a render's forward pass on the CPU: half the cores this process may
    use (at least 1, at most torch's own count). torch's OpenMP threads meet at a barrier after
    every op, so a core taken by another job stalls them all; a render's forward pass is many
    small ops. Measured on 2 shared cores (bench/render.py, quick preset, one 96 px face): 1
    thread 35-50 ms, 2 threads 70-800 ms. Set per call, not for the process: numba's first
    parallel kernel resets the OpenMP count torch reads (they share the runtime), and a host or
    a test may train in the same process."""
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(torch.get_num_threads(), cores // 2))


LAYER_CHANNELS = ("raw.R", "raw.G", "raw.B", "matte.Y", "stmap.R", "stmap.G")
FLOAT_CHANNELS = {"stmap.R": "float", "stmap.G": "float"}  # coordinates need more than half


def _stmap(matrix: np.ndarray, res: int, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    """(h, w, 2) ST map of a plate box: where each plate pixel sits in the aligned square, as
    Nuke's STMap reads it (s = x / width, t = 1 - y / height, pixel centres at +0.5)."""
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    ax = matrix[0, 0] * xx + matrix[0, 1] * yy + matrix[0, 2]
    ay = matrix[1, 0] * xx + matrix[1, 1] * yy + matrix[1, 2]
    return np.stack([(ax + 0.5) / res, 1.0 - (ay + 0.5) / res], axis=2).astype(np.float32)


def _reach(alpha: np.ndarray) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1): the box of `alpha`'s nonzero pixels; (0, 0, 0, 0) when there are none."""
    rows, cols = np.flatnonzero(alpha.any(axis=1)), np.flatnonzero(alpha.any(axis=0))
    if not rows.size:
        return 0, 0, 0, 0
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _erode_blur(mask: np.ndarray, erode: float, blur: float) -> np.ndarray:
    if erode:
        k = int(round(abs(erode))) * 2 + 1
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
        mask = cv2.erode(mask, kernel) if erode > 0 else cv2.dilate(mask, kernel)
    if blur > 0:
        mask = cv2.GaussianBlur(mask, (0, 0), blur)
    return np.clip(mask, 0.0, 1.0)


class Renderer:
    def __init__(self, options: RenderOptions):
        o = self.opt = options
        o.check()
        self.masker = MASKERS.get(o.mask)
        # Gaps in the plates stay in the range: each fails alone, naming its file.
        plates = self._decoded_movie() if is_movie(o.plates) else o.plates
        self.seq, self.frames = select_frames(plates, o.frames, keep_missing=True)
        self.pattern = output_pattern(o.out, o.name, self.seq.pattern.padding)
        self._refuse_writing_over_plates()
        if o.model == "passthrough" and o.morph != 1:
            raise VfxSwapError(f"--morph {o.morph}: the passthrough check has no identities to morph between; "
                               f"leave --morph at 1")
        self.predict = PassThroughPredictor(o.resolution, o.face_type) if o.model == "passthrough" else \
            ModelPredictor(o.model, o.device, morph=o.morph)
        self.choice = resolve_config(o.ocio)
        # a --plate-space is the whole run's (an unknown one fails here, once, not frame by
        # frame); without it the first plate's header decides (render_frame)
        self.pipe = ColorPipeline(o.plate_space, config=self.choice) if o.plate_space else None
        # The soft matte's reach beyond the face box: dilation, then the blur's kernel (OpenCV
        # cuts a Gaussian at 4 sigma), so the data window never clips it.
        self.margin = PAD + max(0, math.ceil(-o.erode)) + math.ceil(4 * max(0.0, o.blur))
        self.extracted: set[int] = set()  # plate frames through both extraction passes (smoothed)
        self._work: dict[int, FrameWork] = {}  # frames predicted, kept while a neighbour needs them
        self.color_reach = math.ceil(3 * max(0.0, o.color_smooth))  # frames either side the match pools
        self.faces = self._faces()
        self.segmenter = self._segmenter() if o.mask in NEEDS_SEG else None

    def _decoded_movie(self) -> str:
        """A movie plate's frames as a scene-linear EXR sequence beside the layers (OUT/.plates),
        numbered from --start as extraction numbered them, so the layers sit in the space a
        `plates convert` of the movie gives, and every step after reads a sequence -> its pattern."""
        from vfxswap.plates.convert import convert

        o = self.opt
        pattern = decoded_movie_pattern(o.out, o.plates)
        log.info("%s: a movie; decoding its frames to scene-linear %s", o.plates, pattern)
        report = convert(o.plates, pattern, frames=o.frames, start=o.start, to_space="scene_linear", ocio=o.ocio)
        if not report.written:
            raise VfxSwapError(f"{o.plates}: no frame of the movie could be decoded"
                               + (f" in {o.frames}" if o.frames else ""))
        return pattern

    @property
    def _outputs(self) -> list[FramePattern]:
        return [self.pattern] + ([self._comp_pattern] if self.opt.comp else [])

    def _refuse_writing_over_plates(self) -> None:
        """An --out and --name that resolve to the plates' own files would replace the plates
        with layers: refused before anything is written."""
        plates = {os.path.realpath(self.seq.path(f)) for f in self.seq.frames}
        for pattern in self._outputs:
            if any(os.path.realpath(pattern.path(f)) in plates for f in self.frames):
                raise VfxSwapError(f"{pattern} would overwrite the plates {self.seq.pattern}: "
                                   f"choose another --out or --name")

    def _faces(self) -> dict[int, list[FaceRow]]:
        from vfxswap.faces.extract import extract, source_key
        from vfxswap.jobspec import ExtractOptions
        from vfxswap.plates.convert import FrameSource

        if not self.opt.faceset:
            # No destination faceset: detect live, into a hidden faceset beside the layers (so a
            # re-run or another chunk reuses what was found).
            self.opt.faceset = str(Path(self.opt.out) / ".faceset")
            log.info("no --faceset: finding faces in %s into %s", self.seq.pattern, self.opt.faceset)
            found = extract(self.opt.plates, self.opt.faceset,
                            ExtractOptions(frames=self.opt.frames, face_type=self.predict.face_type,
                                           size=min(256, self.predict.resolution), ocio=self.opt.ocio,
                                           plate_space=self.opt.plate_space))
            if found.failed:
                log.warning("face detection failed on frame(s) %s", format_frames(found.failed))

        movie = is_movie(self.opt.plates)  # the faceset knows a movie by its own path, not its decoded frames
        key = source_key(FrameSource(self.opt.plates, self.frames, None if movie else self.seq), self.opt.plates)
        with Faceset(self.opt.faceset) as fs:
            sources = fs.sources()
            if key not in sources:
                key = self._moved_source(fs, sources, key)
            rows = fs.faces("source = ?", (key,), include_excluded=False)
            self.extracted = {f for f, stage in fs.frame_stage(key).items() if stage == "aligned"}
        if not rows:
            held = "no faces were found in them" if key in sources else \
                f"it holds {', '.join(sources[:3]) or 'nothing'}"
            raise VfxSwapError(f"{self.opt.faceset}: no faces of {key} ({held})")
        if self.opt.track is not None and self.opt.track not in {r.track_id for r in rows}:
            have = sorted({r.track_id for r in rows if r.track_id is not None})
            raise VfxSwapError(f"--track {self.opt.track}: no such track in {self.opt.faceset} for these plates "
                               f"(tracks: {', '.join(map(str, have)) or 'none'}; vfxswap faceset info lists them)")
        tracks = self._tracks_to_render(rows)
        by_frame: dict[int, list[FaceRow]] = {}
        for r in rows:
            if r.landmarks is None or (self.opt.track is not None and r.track_id != self.opt.track):
                continue
            if tracks is None or r.track_id in tracks:
                by_frame.setdefault(r.frame, []).append(r)
        return by_frame

    def _segmenter(self):
        """The segmentation masker for --mask seg: --mask-model, else the one `masks apply` last ran
        on the destination faceset (its mattes are what the model may have trained on)."""
        from vfxswap.masks.seg import Segmenter

        folder = self.opt.mask_model
        if not folder:
            with Faceset(self.opt.faceset) as fs:
                folder = (fs.meta("masker") or {}).get("folder")
            if not folder:
                raise VfxSwapError(f"--mask {self.opt.mask}: no --mask-model given and no masker was applied to "
                                   f"{self.opt.faceset} (vfxswap masks train / apply)")
        seg = Segmenter(folder, self.opt.device)
        log.info("--mask %s: segmentation masker %s (%s, %d px)", self.opt.mask, folder, seg.config.id,
                 seg.resolution)
        return seg

    def _seg_mattes(self, plate: Image, faces: list[FaceRow], matrices: list[np.ndarray], where: str) -> list:
        """The segmentation masker's matte of each face, in the model's aligned square: cut at the
        masker's own side and face type (as its faceset faces were), predicted in one batch, warped
        into the square `matrices` (plate -> model crop) define."""
        seg = self.segmenter
        side, ftype = seg.resolution, seg.config.face_type
        disp = plate.display_window
        crops, points, cuts = [], [], []
        for face in faces:
            m = align.alignment_matrix(face.landmarks, side, ftype)
            x0, y0, x1, y1 = align.region_for(m, side, (disp.height, disp.width))
            region = plate.on_window(Box(disp.x + x0, disp.y + y0, x1 - x0, y1 - y0))
            crops.append(align.cut_face(self.pipe.to_model(region, where=where), align.shift(m, x0, y0), side))
            points.append(align.transform_points(face.landmarks, m))
            cuts.append(m)
        mattes = seg.predict(np.stack(crops), np.stack(points))
        res = self.predict.resolution
        return [np.clip(align.warp_exact(matte, align.compose(mr, align.invert(ms)), (res, res), order=1), 0, 1)
                for matte, ms, mr in zip(mattes, cuts, matrices)]

    def _moved_source(self, fs: Faceset, sources: list[str], key: str) -> str:
        """The faceset's source for these plates under another path (a farm's path mapping,
        another mount): the one with the same file name pattern, taken only when its recorded
        path holds no plates any more, or holds these very files. Another shot's plates that
        happen to share the name are refused rather than given the wrong faces."""
        same = [s for s in sources if os.path.basename(s) == os.path.basename(key)]
        if len(same) != 1:
            return key
        recorded = FramePattern.parse(same[0]) if FramePattern.has_token(same[0]) else FramePattern.still(same[0])
        present = [f for f in sorted(fs.frame_stage(same[0])) if os.path.exists(recorded.path(f))]
        if present:
            there, here = recorded.path(present[0]), self.seq.path(present[0])
            if not (os.path.exists(here) and os.path.samefile(there, here)):
                raise VfxSwapError(f"{self.opt.faceset}: its faces are of {same[0]}, which is still on disk, "
                                   f"not of {key} (extract these plates into their own faceset)")
        log.info("%s: faces of %s found as %s (the same sequence under another path)", self.opt.faceset, key, same[0])
        return same[0]

    def _tracks_to_render(self, rows: list[FaceRow]) -> set[int] | None:
        """The tracks whose faces are replaced (None: all). --like: those like its references;
        by default, those of the model's identity B (the performer it learned), so a co-star in
        the shot is left alone; --all-faces, --track, or a model without B's embedding: all."""
        from vfxswap.faces.extract import reference_embeddings

        if self.opt.like:
            refs = reference_embeddings(self.opt.like)
            if not refs:
                raise VfxSwapError(f"--like: no face found in {', '.join(self.opt.like)}")
            keep = _tracks_near(rows, np.mean(np.stack(refs), axis=0))
            if not keep:
                raise VfxSwapError(f"--like: no face in the plates looks like {', '.join(self.opt.like)}")
            return keep
        ref = getattr(self.predict, "identity_b", None)
        if self.opt.all_faces or self.opt.track is not None or ref is None:
            return None
        keep = _tracks_near(rows, ref)
        others = {r.track_id for r in rows} - keep
        who = self.predict.identity_b_name
        if not keep:
            log.warning("no face in these plates is the model's identity B (%s): every layer is empty "
                        "(--all-faces replaces every face, --like chooses by reference images)", who)
        elif others:
            log.info("rendering the faces of %s (track %s); left alone: track %s (--all-faces replaces them too)",
                     who, ", ".join(map(str, sorted(keep))), ", ".join(map(str, sorted(others, key=str))))
        return keep

    # --- one frame ---------------------------------------------------------------------------

    def _cut_region(self, landmarks: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, tuple[int, ...]]:
        """A face's alignment at the input size, and the display-window region (x0, y0, x1, y1)
        its crop reads: all of the plate `face_input` looks at, so all `_predicted` reads."""
        size = self.predict.input_size
        m = align.alignment_matrix(landmarks, size, self.predict.face_type)
        return m, align.region_for(m, size, shape)

    def face_input(self, plate: Image | np.ndarray, landmarks: np.ndarray, where: str) -> np.ndarray:
        """The model's input for one face: (R, R, 3) model-encoded, cut from the plate as training's
        faces were (`align.cut_face` at the facesets' size, then `align.resize_crop` to R), so the
        network meets the same low-passed pixels it learned from (exact positions: see cut_face).
        `plate`: its display window's pixels, or an `Image` holding (at least) the face's rows."""
        if isinstance(plate, np.ndarray):
            plate = Image.from_array(plate)
        disp = plate.display_window
        m, (x0, y0, x1, y1) = self._cut_region(landmarks, (disp.height, disp.width))
        region = plate.on_window(Box(disp.x + x0, disp.y + y0, x1 - x0, y1 - y0))
        crop = align.cut_face(self.pipe.to_model(region, where=where), align.shift(m, x0, y0), self.predict.input_size,
                              exact=True)
        return align.resize_crop(crop, self.predict.resolution)

    def _predicted(self, frame: int) -> FrameWork:
        """One frame's faces up to the colour match (plate read, cut, predict, mask), kept for the
        frames around it: the colour match pools the statistics of a track's neighbours. Only the
        plate rows the faces' crops need are read (the header alone for a frame without one):
        decoding a whole 1080p frame cost more than the rest of the work on its face."""
        if frame in self._work:
            return self._work[frame]
        path = self.seq.path(frame)
        disp = read_info(path).display_window
        here = self.faces.get(frame, [])
        spans = [self._cut_region(f.landmarks, (disp.height, disp.width))[1] for f in here]
        if self.segmenter is not None:  # its crop (another side, maybe another face type) reads its own rows
            side, ftype = self.segmenter.resolution, self.segmenter.config.face_type
            spans += [align.region_for(align.alignment_matrix(f.landmarks, side, ftype), side, (disp.height, disp.width))
                      for f in here]
        rows = (min(b[1] for b in spans), max(b[3] for b in spans)) if spans else (0, 0)
        plate_img = need_rgb(read_image(path, rows=rows))
        if frame not in self.extracted:  # not "no face": the faceset never finished this frame
            raise VfxSwapError(f"{path}: not extracted into {self.opt.faceset} "
                               f"(run vfxswap extract over this frame)")
        if self.pipe is None:
            self.pipe = ColorPipeline.for_image(plate_img, config=self.choice)
        res, ftype = self.predict.resolution, self.predict.face_type
        where = path
        faces = []
        matrices = [align.alignment_matrix(face.landmarks, res, ftype) for face in here]
        segs = self._seg_mattes(plate_img, here, matrices, where) if self.segmenter and here else [None] * len(here)
        for face, matrix, seg in zip(here, matrices, segs):
            aligned = self.face_input(plate_img, face.landmarks, where)
            pred, learned = self.predict(aligned[None])
            points = align.transform_points(face.landmarks, matrix)
            mask = self.masker(MaskInput(aligned, points, learned[0], seg))
            ref = limited(aligned)
            faces.append(FaceWork(face.track_id, matrix, pred[0], ref, mask, masked_samples(pred[0], ref, mask)))
        work = FrameWork(plate_img.attributes, plate_img.display_window, (disp.height, disp.width), faces)
        self._work[frame] = work
        return work

    def _pooled(self, frame: int, face: FaceWork) -> tuple[np.ndarray, np.ndarray]:
        """The colour match's (prediction, plate) pixel samples for `face`: its own, and those of
        the same track in the frames around it, Gaussian-weighted (--color-smooth frames), so the
        match changes smoothly along the shot instead of pumping with every mouth opening. Chunk
        edges read past the chunk, so a farm render matches a whole one. Frames that cannot be
        read or were never extracted are left out."""
        sigma = self.opt.color_smooth
        if sigma <= 0 or face.track is None:
            return face.samples
        weighted = []
        for g in range(frame - self.color_reach, frame + self.color_reach + 1):
            if g not in self.extracted or g not in self.seq.frames:
                continue
            try:
                others = self._predicted(g).faces
            except VfxSwapError:
                continue
            for other in others:
                if other.track == face.track:
                    weighted.append((math.exp(-0.5 * ((g - frame) / sigma) ** 2), other.samples))
        return pool_samples(weighted)

    def render_frame(self, frame: int) -> Image:
        work = self._predicted(frame)
        h, w = work.shape
        res = self.predict.resolution
        where = f"{self.seq.path(frame)}"
        # Each face's padded box on the plate, and the layer's data window around them all: the
        # layer is built at that size, not the frame's (a 4K frame of zeros costs more than a face).
        boxes = [align.region_for(face.matrix, res, (h, w), margin=self.margin) for face in work.faces]
        x0, y0 = min((b[0] for b in boxes), default=0), min((b[1] for b in boxes), default=0)
        x1, y1 = max((b[2] for b in boxes), default=1), max((b[3] for b in boxes), default=1)
        rgb_acc = np.zeros((y1 - y0, x1 - x0, 3), np.float32)
        alpha_acc = np.zeros((y1 - y0, x1 - x0), np.float32)
        extra = np.zeros((y1 - y0, x1 - x0, 6), np.float32) if self.opt.layers else None  # raw RGB, matte, ST
        matrices = []
        for face, (bx0, by0, bx1, by1) in zip(work.faces, boxes):
            matrix, mask = face.matrix, face.mask
            pred = color_transfer(face.pred, face.ref, mask, self.opt.color, samples=self._pooled(frame, face))
            # Back to the plate over the face's padded box only.
            back = align.invert(align.shift(matrix, bx0, by0))  # aligned -> this plate box
            matte = np.clip(align.warp_exact(mask, back, (by1 - by0, bx1 - bx0), order=1), 0.0, 1.0)
            a = _erode_blur(matte, self.opt.erode, self.opt.blur)
            # The colour only where the matte reaches (a third of a whole_face box): under a zero
            # matte it is never seen. --layers keeps the raw colour of the whole box.
            cy0, cy1, cx0, cx1 = (0, by1 - by0, 0, bx1 - bx0) if extra is not None else _reach(a)
            region = (slice(by0 - y0, by1 - y0), slice(bx0 - x0, bx1 - x0))
            if cy1 > cy0:
                rgb = align.warp_exact(pred, align.invert(align.shift(matrix, bx0 + cx0, by0 + cy0)),
                                       (cy1 - cy0, cx1 - cx0))
                rgb = self.pipe.from_model(rgb, where=where)
                if extra is not None:
                    extra[region] = np.concatenate([rgb, matte[..., None], _stmap(matrix, res, bx0, by0, bx1, by1)], 2)
                # Faces composite over each other (premultiplied over) within the layer.
                inner = (slice(by0 - y0 + cy0, by0 - y0 + cy1), slice(bx0 - x0 + cx0, bx0 - x0 + cx1))
                ai = a[cy0:cy1, cx0:cx1, None]
                rgb_acc[inner] = rgb * ai + rgb_acc[inner] * (1.0 - ai)
            alpha_acc[region] = a + alpha_acc[region] * (1.0 - a)
            matrices.append([float(v) for v in matrix.ravel()])
        for g in [g for g in self._work if g < frame - self.color_reach]:  # no longer anyone's neighbour
            del self._work[g]
        return self._layer(work, (x0, y0), rgb_acc, alpha_acc, extra, matrices)

    def _layer(self, work: FrameWork, origin: tuple[int, int], rgb, alpha, extra, matrices) -> Image:
        """The layer image: the faces' box at `origin` (plate pixels) over the plate's display
        window (an empty layer is one zero pixel at its corner)."""
        channels = ("R", "G", "B", "A") + (LAYER_CHANNELS if extra is not None else ())
        pixels = np.concatenate([rgb, alpha[..., None]] + ([extra] if extra is not None else []), axis=2)
        disp = work.display_window
        x0, y0 = origin
        layer = Image.from_array(pixels, channels, origin=(disp.x + x0, disp.y + y0), display_window=disp)
        for name in ("PixelAspectRatio", "smpte:TimeCode", "framesPerSecond", "chromaticities"):
            if name in work.attributes:
                layer.attributes[name] = work.attributes[name]
        # the plate's chromaticities describe the layer only when its header, not --plate-space, named the space
        tag_colour_space(layer, self.pipe.plate_space, self.pipe.choice, trust_chromaticities=not self.opt.plate_space)
        self._provenance(layer, matrices)
        return layer

    def _provenance(self, layer: Image, matrices) -> None:
        """What a compositor, a pipeline and an auditor need to know about this pixel data."""
        p = self.predict.provenance
        refs = {k: v.get("release_ref", "") for k, v in p.get("identities", {}).items()}
        layer.set_attribute("vfxswap:synthetic", "true")
        layer.set_attribute("vfxswap:provenance", "synthetic imagery: a face replaced by vfxswap; not a camera original")
        layer.set_attribute("ImageDescription", "SYNTHETIC IMAGERY (vfxswap face replacement)")  # EXR `comments`
        layer.set_attribute("software", f"vfxswap {__version__}")
        layer.set_attribute("vfxswap:model", p.get("model_id", ""))
        layer.set_attribute("vfxswap:modelManifestSha256", p.get("manifest_sha256", ""))
        # how far the swap went from the performer's own face (0) to the source identity (1; every non-amp model)
        layer.set_attribute("vfxswap:morph", float(self.opt.morph))
        layer.set_attribute("vfxswap:identities", json.dumps(p.get("identities", {}), sort_keys=True))
        layer.set_attribute("vfxswap:releaseRef", "; ".join(f"{k}: {v}" for k, v in sorted(refs.items())))
        layer.set_attribute("vfxswap:ocioConfig", self.pipe.choice.name)
        layer.set_attribute("vfxswap:alignment", json.dumps(matrices))

    # --- the range -----------------------------------------------------------------------------

    def run(self, on_event=None, frames: list[int] | None = None) -> RenderReport:
        """Render the range (or `frames`, a part of it: a farm session's chunk with the model
        already loaded); `on_event(dict)` hears about each frame (for hosts and farm logs)."""
        if frames is None:
            frames = self.frames
        else:
            outside = sorted(set(frames) - set(self.frames))
            if outside:
                raise VfxSwapError(f"frame(s) {format_frames(outside)} are outside the range this renderer "
                                   f"was set up for ({format_frames(self.frames)})")
        report = RenderReport()
        Path(self.opt.out).mkdir(parents=True, exist_ok=True)
        leftovers = atomic.remove_orphan_temps(self.opt.out)  # of a render killed mid-write on this host
        if leftovers:
            log.info("%s: removed %d temporary file(s) left by a killed render", self.opt.out, len(leftovers))
        emit = on_event or (lambda event: None)
        emit({"event": "start", "frames": len(frames), "first": frames[0], "last": frames[-1],
              "output": str(self.pattern), "comp": str(self._comp_pattern) if self.opt.comp else None})
        started = time.time()
        for done, frame in enumerate(progress(frames, desc="render"), 1):
            target = self.pattern.path(frame)
            if self.opt.skip_existing and all(frame_is_complete(p.path(frame)) for p in self._outputs):
                report.skipped.append(frame)
                emit({"event": "frame", "frame": frame, "status": "skipped", "done": done, "total": len(frames)})
                continue
            try:
                layer = self.render_frame(frame)
                write_image(target, layer, compression=self.opt.compression,
                            channel_dtypes=FLOAT_CHANNELS if self.opt.layers else None)
                if self.opt.comp:
                    write_image(self._comp_pattern.path(frame), self._comp(frame, layer),
                                compression=self.opt.compression)
            except VfxSwapError as exc:
                report.failed[frame] = str(exc)
                log.error("frame %d: %s", frame, exc)
                emit({"event": "frame", "frame": frame, "status": "failed", "error": str(exc), "done": done,
                      "total": len(frames)})
                continue
            report.written.append(frame)
            if frame not in self.faces:
                report.without_faces.append(frame)
            rate = len(report.written) / max(1e-9, time.time() - started)
            emit({"event": "frame", "frame": frame, "status": "written" if frame in self.faces else "no_face",
                  "path": target, "done": done, "total": len(frames), "fps": round(rate, 3)})
        if report.without_faces:
            log.info("no face to replace in frame(s) %s: their layers are empty", format_frames(report.without_faces))
        if self.opt.preview:
            self._preview(report, frames)
        self._manifest(report, frames)
        emit({"event": "done", "written": report.written, "skipped": report.skipped,
              "without_faces": report.without_faces, "failed": report.failed})
        return report

    @property
    def _comp_pattern(self) -> FramePattern:
        return output_pattern(self.opt.out, "comp", self.seq.pattern.padding)

    def _comp(self, frame: int, layer: Image) -> Image:
        """The face layer over its plate (premultiplied over) on the plate's data window
        (overscan kept), with the plate's header and the layer's provenance: a comp is
        synthetic imagery too."""
        plate = read_image(self.seq.path(frame))
        px = plate.pixels.astype(np.float32)
        face = layer.on_window(plate.data_window)
        px[..., :3] = face[..., :3] + px[..., :3] * (1.0 - face[..., 3:4])
        out = Image(px, plate.channels, plate.data_window, plate.display_window, dict(plate.attributes))
        out.attributes.update({k: v for k, v in layer.attributes.items() if k.startswith("vfxswap:")})
        out.attributes["ImageDescription"] = layer.attributes["ImageDescription"]
        return out

    def _preview(self, report: RenderReport, frames: list[int]) -> None:
        """comp -> the OCIO view -> preview.mp4 (every frame of the range that has a layer)."""
        from vfxswap.plates.video import write_preview

        done = [f for f in frames if frame_is_complete(self.pattern.path(f))]

        def display_frames():
            for frame in done:
                layer = read_image(self.pattern.path(frame))
                comp = self._comp(frame, layer)
                pipe = self.pipe or ColorPipeline.for_image(comp, config=self.choice)
                yield pipe.to_display(comp.on_display_window(), where=f"preview frame {frame}")

        if done:
            rate = read_image(self.seq.path(done[0])).attribute("framesPerSecond")
            fps = rate[0] / rate[1] if isinstance(rate, (tuple, list)) else 24.0
            write_preview(Path(self.opt.out) / "preview.mp4", display_frames(), fps=fps)

    def _manifest(self, report: RenderReport, frames: list[int]) -> None:
        record = {"vfxswap": __version__, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "plates": str(self.seq.pattern),
                  "output": str(self.pattern), "frames": format_frames(frames),
                  "written": format_frames(report.written), "skipped": format_frames(report.skipped),
                  "without_faces": format_frames(report.without_faces), "failed": report.failed,
                  "model": self.predict.provenance, "options": {k: v for k, v in vars(self.opt).items()},
                  "device": str(getattr(self.predict, "device", "cpu")),
                  "colour": self.pipe.describe() if self.pipe else None}
        name = f"render_{frames[0]}-{frames[-1]}_{time.strftime('%Y%m%dT%H%M%S')}_{uuid.uuid4().hex[:8]}.json"
        atomic.write_text(Path(self.opt.out) / "manifests" / name, json.dumps(record, indent=2, default=str))


def _tracks_near(rows: list[FaceRow], centre: np.ndarray) -> set[int]:
    """Track ids whose mean identity embedding is within dlib's same-person distance of `centre`."""
    from vfxswap.faces.identity import SAME_PERSON, distance

    keep = set()
    for tid in {r.track_id for r in rows}:
        embs = [r.embedding for r in rows if r.track_id == tid and r.embedding is not None]
        if embs and distance(np.mean(np.stack(embs), axis=0), centre) <= SAME_PERSON:
            keep.add(tid)
    return keep


def limited(faces: np.ndarray) -> np.ndarray:
    """Model-encoded pixels through the network's input limit (`models.nets.soft_limit`): what the
    colour match measures the plate's face on, so one out-of-gamut pixel cannot drag its mean.
    On one thread: a few element-wise ops on one face, which 2 threads on 2 shared cores took
    30-70 times longer over (measured: 13-29 ms against 0.4; they wait for each other at every op)."""
    import torch

    from vfxswap.models.nets import soft_limit

    with torch_threads(1):
        return soft_limit(torch.from_numpy(np.ascontiguousarray(faces, np.float32))).numpy()


def output_pattern(out: str | os.PathLike, name: str, plate_padding: int) -> FramePattern:
    """Where a render writes its `name` frames for plates of this padding: OUT/name.####.exr,
    the plate's digits kept, at least four (the farm's status reads the same names)."""
    return FramePattern(str(Path(out) / f"{name}."), max(plate_padding, 4), ".exr")


def decoded_movie_pattern(out: str | os.PathLike, movie: str | os.PathLike) -> str:
    """Where a render decodes a movie plate's frames: OUT/.plates/<movie name>.####.exr (hosts
    show the layer over these)."""
    return str(Path(out) / ".plates" / f"{Path(movie).stem}.####.exr")


def frame_is_complete(path: str) -> bool:
    """A frame on disk counts as done only if its header reads (a file cut short by a crash
    that skipped fsync would not)."""
    if not os.path.isfile(path):
        return False
    try:
        read_info(path)
        read_image(path)
        return True
    except VfxSwapError:
        return False


def render(options: RenderOptions, on_event=None) -> RenderReport:
    return Renderer(options).run(on_event)
