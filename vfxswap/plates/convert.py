"""Plate conversion and inspection: what `vfxswap plates convert` and `plates info` run.

Kept in the library (not the CLI) so hosts and farm jobs call the same code. Each frame is
its own unit of work: a bad frame is reported by number and the rest of the range goes on;
every file is written atomically, so what is on disk is always whole.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from vfxswap.color import (ColorPipeline, NonFinite, apply_threaded, count_nonfinite, guess_plate_space,
                           resolve_config, tag_colour_space)
from vfxswap.errors import VfxSwapError
from vfxswap.plates.frames import (STILL_FRAME, FramePattern, Sequence, find_sequence, format_frames, is_movie,
                                   parse_frames, select_frames)
from vfxswap.plates.image import DTYPES, Image, read_image, read_info, write_image
from vfxswap.progress import progress

log = logging.getLogger("vfxswap")
VIDEO_SPACE = "sRGB Encoded Rec.709 (sRGB)"  # what a movie's code values are taken to be


@dataclass
class FrameSource:
    """Frames from an image sequence or a movie, numbered with the plate's own frame numbers."""

    spec: str
    frames: list[int]
    sequence: Sequence | None = None  # None for a movie
    start: int = 1001
    fps: float | None = None

    @classmethod
    def open(cls, spec: str, frames: str | None = None, start: int = 1001) -> "FrameSource":
        if is_movie(spec):
            from vfxswap.plates.video import probe_video

            info = probe_video(spec)
            total = info.frames or 0
            wanted = parse_frames(frames) if frames else list(range(start, start + total))
            beyond = [f for f in wanted if f < start or (total and f >= start + total)]
            if beyond:
                raise VfxSwapError(f"{spec}: frames {format_frames(beyond)} are outside the movie "
                                   f"({start}-{start + total - 1} with --start {start})")
            return cls(spec, wanted, None, start, info.fps)
        seq, wanted = select_frames(spec, frames)
        return cls(spec, wanted, seq, start)

    @classmethod
    def still(cls, path: str) -> "FrameSource":
        """One image as a one-frame source, even if its name ends in digits (a folder of stills)."""
        return cls(path, [STILL_FRAME], Sequence(FramePattern.still(path), [STILL_FRAME]))

    def __iter__(self) -> Iterator[tuple[int, Image | VfxSwapError]]:
        """(frame, Image) pairs, or (frame, error) for a frame that cannot be read."""
        if self.sequence is None:
            from vfxswap.plates.video import read_video

            rate = Fraction(self.fps or 24.0).limit_denominator(1001)
            for frame, pixels in read_video(self.spec, first_frame=self.start, frames=self.frames):
                image = Image.from_array(pixels, ("R", "G", "B"))
                image.set_attribute("framesPerSecond", (rate.numerator, rate.denominator), "rational")
                image.set_attribute("oiio:ColorSpace", VIDEO_SPACE)  # code values, not scene light
                yield frame, image
            return
        for frame in self.frames:
            try:
                yield frame, read_image(self.sequence.path(frame))
            except VfxSwapError as exc:
                yield frame, exc


def read_ahead(items: Iterable, depth: int = 2) -> Iterator:
    """Yield `items` as a background thread produces them, up to `depth` ahead.

    Reading the next frame (OpenImageIO and ffmpeg release the GIL) then overlaps the work on
    this one: on a 2-core machine that hides most of the decode. Errors re-raise here; closing
    the generator stops the reader.
    """
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            put((end, exc))
            return
        put((end, None))

    worker = threading.Thread(target=produce, name="vfxswap-read-ahead", daemon=True)
    worker.start()
    try:
        while True:
            item = buffer.get()
            if isinstance(item, tuple) and len(item) == 2 and item[0] is end:
                if item[1] is not None:
                    raise item[1]
                return
            yield item
    finally:
        stop.set()
        worker.join(timeout=5)


@dataclass
class ConvertReport:
    written: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    nonfinite: dict[int, NonFinite] = field(default_factory=dict)


def _unpremultiplied(image: Image, transform: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """`transform` (float32 RGB, contiguous, -> RGB) applied to the image's colour; with alpha,
    to the unpremultiplied colour, premultiplied again after, so a non-linear space or view
    sees the colour and not the colour times coverage. Other channels are kept."""
    px = image.pixels.astype(np.float32, copy=True)
    alpha = image.channels.index("A") if "A" in image.channels else None
    rgb = np.ascontiguousarray(px[..., :3])
    if alpha is None:
        px[..., :3] = transform(rgb)
        return px
    a = px[..., alpha:alpha + 1]
    rgb = transform(np.ascontiguousarray(np.where(a > 0, rgb / np.where(a > 0, a, 1.0), rgb)))
    px[..., :3] = np.where(a > 0, rgb * a, rgb)
    return px


def convert(src: str, dst: str, *, frames: str | None = None, start: int = 1001, from_space: str | None = None,
            to_space: str | None = None, display: str | None = None, view: str | None = None,
            dtype: str | None = None, compression: str | None = None, fps: float | None = None,
            exact: bool = False, ocio: str | None = None,
            on_frame: Callable[[int, str | None], None] | None = None) -> ConvertReport:
    """Convert a sequence, a movie or one image to a sequence, one image, or a preview movie.

    What `dst` is, by its name:
    - a movie (`.mp4`, `.mov`): through the OCIO display/view transform (8-bit preview);
    - a pattern with a frame token (`out.####.exr`): one file per frame;
    - any other file name (`out.exr`, `still.png`, `.tif`, `.jpg`, `.dpx`): one image.
    To images, colour is converted `from_space` -> `to_space` when either is given (the other
    defaults to the plate's own space), or through the view when `view` is given; otherwise
    pixels are copied untouched (float -> float stays bit-exact). Header attributes, windows
    and channel names are kept as the format allows; `dtype` and `compression` as for a
    sequence. A movie source's code values are taken as `sRGB Encoded Rec.709 (sRGB)` unless
    `from_space` says otherwise, and land in the config's scene_linear space by default.

    One image in or out:
    - one file -> one file: that file alone, even when its name ends in a frame number
      (`plate.1001.exr -> out.exr`). With `frames`, a numbered file names its sequence and
      the range must pick exactly one of its frames (`plate.1001.exr --frames 1005 -> out.exr`).
    - a pattern or a movie -> one file: the range must hold exactly one frame (`--frames 1001`,
      or a source of one frame); several frames into one file are refused in one line naming
      both, before any frame is read.
    - one file -> a pattern: a file whose name ends in a frame number names its sequence (all
      its frames on disk, or `frames`), written under the same numbers; a file without one is a
      single image and is written as frame `start` (1001 by default, as a movie's first frame),
      so `ref.exr -> ref.####.exr` gives `ref.1001.exr`; `frames`, if given, must be `start`.
    - one image out: a frame that cannot be read or written raises VfxSwapError (one line
      naming the file) instead of being reported as a failed frame of a range.
    Every file is written atomically (temporary file, then rename), and an output that would
    replace a source file (`a.exr -> a.exr`, `p.####.exr -> p.####.exr`) is refused before
    anything is written.
    """
    src, dst = str(src), str(dst)
    single = not is_movie(dst) and not FramePattern.has_token(dst)
    source = _open_source(src, frames, start, single)
    if single and len(source.frames) != 1:
        what = f"{len(source.frames)} frames ({format_frames(source.frames)})" if source.frames else "no frames"
        raise VfxSwapError(f"{src}: {what} cannot go into the single file {dst}: pick one with --frames, "
                           f"or give a sequence pattern (a frame token: ####)")
    choice = resolve_config(ocio)
    # values for the whole run are checked once, here: not one error line per frame
    names = ColorPipeline(config=choice, display=display, view=view)  # an unknown display or view fails here
    for space in (from_space, to_space):
        if space:
            names.space_name(space)
    if dtype is not None and dtype not in DTYPES:
        raise VfxSwapError(f"unknown pixel type {dtype!r} (choose from {', '.join(DTYPES)})")
    if is_movie(dst):
        _refuse_overwrite(source, [(f, dst) for f in source.frames[:1]])
        return _to_movie(source, dst, choice, from_space, display, view, fps, exact, on_frame)
    out_path = (lambda frame: dst) if single else FramePattern.parse(dst).path
    _refuse_overwrite(source, [(f, out_path(f)) for f in source.frames])
    if source.sequence is None:
        from_space = from_space or VIDEO_SPACE
        to_space = to_space or "scene_linear"
    pipe: ColorPipeline | None = None
    report = ConvertReport()

    def one_frame(frame: int, image: Image | VfxSwapError, path: str) -> None:
        nonlocal pipe
        if isinstance(image, VfxSwapError):
            raise image
        if pipe is None:
            plate = from_space or guess_plate_space(image.attributes, image.source_format, choice, image.path or src)
            pipe = ColorPipeline(plate, config=choice, display=display, view=view)
        if from_space or to_space or view:
            found = count_nonfinite(image.pixels)
            if found.total:
                report.nonfinite[frame] = found
                log.warning("frame %d (%s): replaced non-finite values (%s)", frame, image.path or src, found)
                np.nan_to_num(image.pixels, copy=False, nan=0.0, posinf=65504.0, neginf=0.0)
        if view and not to_space:
            view_proc = pipe.view_processor(pipe.plate_space)
            image.pixels = _unpremultiplied(image, lambda rgb: apply_threaded(view_proc, rgb))
            tag_colour_space(image, _display_space(choice, pipe.display, pipe.view), choice)
        elif from_space or to_space:
            target = pipe.space_name(to_space or pipe.plate_space)
            image.pixels = _unpremultiplied(image, lambda rgb: pipe.convert(rgb, pipe.plate_space, target))
            tag_colour_space(image, target, choice)
        image.set_attribute("vfxswap:ocioConfig", pipe.choice.uri)
        # a float EXR plate stays float (EXR's default for plates is half): a plain copy is bit-exact
        keep = "float" if image.source_format == "float" and path.lower().endswith(".exr") else None
        write_image(path, image, dtype=dtype or keep, compression=compression)

    for frame, image in progress(source, total=len(source.frames), desc=f"convert {Path(src).name}"):
        try:
            one_frame(frame, image, out_path(frame))
        except VfxSwapError as exc:
            if single:
                raise  # nothing else to go on with: one line naming the file
            report.failed[frame] = str(exc)
            log.error("frame %d: %s", frame, exc)
            if on_frame:
                on_frame(frame, str(exc))
            continue
        report.written.append(frame)
        if on_frame:
            on_frame(frame, None)
    return report


def _open_source(src: str, frames: str | None, start: int, single: bool) -> FrameSource:
    """The frames `src` names (see `convert`): a movie or a pattern as always; a numbered file
    alone when one image is written and no range is given; a file without a frame number as
    one image, numbered `start`."""
    if is_movie(src) or FramePattern.has_token(src):
        return FrameSource.open(src, frames, start)
    seq = find_sequence(src)  # "no such file" for a missing one
    if seq.pattern.padding == 0:  # a single image with no frame number of its own
        if frames and parse_frames(frames) != [start]:
            raise VfxSwapError(f"{src}: one image without a frame number, taken as frame {start} (--start): "
                               f"--frames {frames} asks for other frames")
        return FrameSource(src, [start], Sequence(FramePattern.still(src), [start]), start)
    if single and not frames:
        own = seq.pattern.frame_of(os.path.basename(src))
        frame = own if own is not None else start
        return FrameSource(src, [frame], Sequence(FramePattern.still(src), [frame]), start)
    return FrameSource.open(src, frames, start)


def _same_file(a: str, b: str) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)  # a hard link, or another spelling on a case-blind disk
    except OSError:
        return False  # one of them does not exist (yet): not the same file


def _refuse_overwrite(source: FrameSource, targets: list[tuple[int, str]]) -> None:
    """A conversion never writes over its own source (it would be read and replaced at once)."""
    for frame, out in targets:
        inp = source.spec if source.sequence is None else source.sequence.path(frame)
        if _same_file(inp, out):
            which = "" if source.sequence is None or source.sequence.pattern.padding == 0 else f" (frame {frame})"
            raise VfxSwapError(f"{out}: would overwrite the source{which}: write the conversion to another file")


def _display_space(choice, display: str, view: str) -> str:
    """The colour space a display/view's output is in, as the config names it (OCIO answers
    `<USE_DISPLAY_NAME>` where the display's own name is that space); `display / view` when the
    config has no such space."""
    name = choice.config.getDisplayViewColorSpaceName(display, view)
    name = display if name == "<USE_DISPLAY_NAME>" else name
    return name if name and choice.config.getColorSpace(name) is not None else f"{display} / {view}"


def _to_movie(source: FrameSource, dst: str, choice, from_space, display, view, fps, exact, on_frame) -> ConvertReport:
    from vfxswap.plates.video import write_preview

    # The plate space and frame rate must be known before ffmpeg starts: take them from the
    # first frame's header (movies: their own rate; code values taken as sRGB-encoded).
    if source.sequence is None:
        plate, rate = from_space or VIDEO_SPACE, fps or source.fps
    else:
        head = read_info(source.sequence.path(source.frames[0]))
        plate = from_space or guess_plate_space(head.attributes, head.format, choice, head.path)
        rate = fps or _fps_of(head)
    pipe = ColorPipeline(plate, config=choice, display=display, view=view)
    report = ConvertReport()

    def frames_out():
        for frame, image in progress(source, total=len(source.frames), desc=f"preview {Path(dst).name}"):
            if isinstance(image, VfxSwapError):
                raise VfxSwapError(f"frame {frame}: {image}")  # a movie cannot have a hole
            yield pipe.to_display(image.on_display_window(), exact=exact, where=f"frame {frame}")
            report.written.append(frame)
            if on_frame:
                on_frame(frame, None)

    write_preview(dst, frames_out(), fps=rate or 24.0)
    return report


def _fps_of(image) -> float | None:
    value = image.attributes.get("framesPerSecond", (None, None))[1]
    if value is None:
        return None
    try:
        num, den = value if isinstance(value, (tuple, list)) else (value, 1)
        return float(num) / float(den)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
