"""Movies in and out through ffmpeg: probe, decode to float frames, write H.264 previews.

Plates usually arrive as image sequences, but reference clips and dailies come as movies.
Decoding goes through 16-bit RGB (`rgb48le`) so no quantisation is added beyond the source's
own; values stay the movie's display-encoded code values and the colour pipeline converts
them. Previews are written atomically, like every other file vfxswap produces.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterable, Iterator

import ffmpeg
import numpy as np

from vfxswap.atomic import atomic_path
from vfxswap.errors import VfxSwapError

_DURATION = re.compile(r"Duration:\s*(\d+):(\d+):(\d+(?:\.\d+)?)")
_SIZE = re.compile(r"(?:^|[\s,])(\d+)x(\d+)(?=[\s,\]]|$)")
_RATE = re.compile(r"(\d+(?:\.\d+)?)(k?) (fps|tbr)\b")
# swscale's fast default rounding is off by a code value or two; accuracy is cheap at these sizes.
_SWS_FLAGS = "bicubic+accurate_rnd+full_chroma_int"


@functools.lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """The system ffmpeg when installed (site builds may add codecs), else imageio's bundled one."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg
        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        raise VfxSwapError("ffmpeg: not found on PATH and imageio-ffmpeg has no binary (install ffmpeg)") from None


@dataclass
class VideoInfo:
    """What a movie holds: `frames` and `duration` are None when the container does not say."""

    path: str
    width: int
    height: int
    fps: float
    frames: int | None
    duration: float | None
    codec: str


def _snap_rate(fps: float) -> float:
    """ffmpeg prints 23.98 for 24000/1001; return the exact NTSC rate so frame maths stays right."""
    for base in (24, 30, 48, 60, 120):
        if abs(fps - base * 1000 / 1001) < 0.01:
            return base * 1000 / 1001
    return fps


def _count(duration: float | None, fps: float) -> int | None:
    return int(duration * fps + 0.5) if duration and fps else None


def _one_line(text: str) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[-1] if lines else "unknown error"


def _ratio(text) -> float:
    num, _, den = str(text or "0").partition("/")
    try:
        return float(num) / float(den or 1)
    except (ValueError, ZeroDivisionError):
        return 0.0


def _from_ffprobe(path: str, data: dict) -> VideoInfo:
    video = [s for s in data.get("streams", []) if s.get("codec_type") == "video"
             and not s.get("disposition", {}).get("attached_pic")]
    if not video:
        raise VfxSwapError(f"{path}: not a video (no video stream)")
    stream = video[0]
    fps = _ratio(stream.get("avg_frame_rate")) or _ratio(stream.get("r_frame_rate"))
    duration = stream.get("duration") or data.get("format", {}).get("duration")
    duration = float(duration) if duration not in (None, "N/A") else None
    frames = int(stream["nb_frames"]) if str(stream.get("nb_frames", "")).isdigit() else _count(duration, fps)
    return VideoInfo(path, int(stream["width"]), int(stream["height"]), fps, frames, duration,
                     str(stream.get("codec_name", "unknown")))


def _from_ffmpeg_log(path: str, log: str) -> VideoInfo:
    line = next((l for l in log.splitlines() if "Stream #" in l and "Video:" in l and "attached pic" not in l), None)
    if line is None:
        raise VfxSwapError(f"{path}: not a video ({_one_line(log)})")
    details = line.split("Video:", 1)[1]
    size = _SIZE.search(details)
    if size is None:
        raise VfxSwapError(f"{path}: cannot read the frame size from ffmpeg")
    rates = {kind: float(value) * (1000 if k else 1) for value, k, kind in _RATE.findall(details)}
    fps = _snap_rate(rates.get("fps") or rates.get("tbr") or 0.0)
    match = _DURATION.search(log)
    duration = int(match[1]) * 3600 + int(match[2]) * 60 + float(match[3]) if match else None
    return VideoInfo(path, int(size[1]), int(size[2]), fps, _count(duration, fps), duration,
                     details.split()[0].rstrip(","))


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Size, rate and length of a movie, with ffprobe when installed, else from ffmpeg's log."""
    path = str(path)
    if not os.path.isfile(path):
        raise VfxSwapError(f"{path}: no such file")
    if shutil.which("ffprobe"):
        try:
            return _from_ffprobe(path, ffmpeg.probe(path, cmd="ffprobe"))
        except ffmpeg.Error as err:
            raise VfxSwapError(f"{path}: not a video ({_one_line(err.stderr.decode(errors='replace'))})") from None
    result = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", path], capture_output=True)
    return _from_ffmpeg_log(path, result.stderr.decode(errors="replace"))


def read_video(path: str | os.PathLike, first_frame: int = 1001,
               frames: list[int] | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (frame number, float32 RGB (H, W, 3) in 0-1), the first frame numbered `first_frame`.

    With `frames`, only those are yielded, in movie order. The file is probed now, so a
    missing or broken movie fails at the call, not at the first frame. Frames come as stored
    (no auto-rotation), so every frame has the probed size.
    """
    path = str(path)
    info = probe_video(path)
    wanted = sorted(set(frames)) if frames is not None else None
    if wanted and wanted[0] < first_frame:
        raise VfxSwapError(f"{path}: frame {wanted[0]} is before the movie's first frame {first_frame}")
    return _decode(info, first_frame, wanted)


def _decode(info: VideoInfo, first_frame: int, wanted: list[int] | None) -> Iterator[tuple[int, np.ndarray]]:
    if wanted == []:
        return
    args = (ffmpeg.input(info.path, noautorotate=None)
            .output("pipe:", format="rawvideo", pix_fmt="rgb48le", sws_flags=_SWS_FLAGS)
            .global_args("-hide_banner", "-nostdin", "-loglevel", "error")
            .compile(cmd=ffmpeg_exe()))
    size = info.width * info.height * 6
    keep = set(wanted) if wanted is not None else None
    with tempfile.TemporaryFile() as log:  # a file, not a pipe: a chatty ffmpeg cannot stall
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log)
        try:
            number = first_frame
            while wanted is None or number <= wanted[-1]:
                data = proc.stdout.read(size)
                if len(data) < size:
                    break
                if keep is None or number in keep:
                    pixels = np.frombuffer(data, "<u2").reshape(info.height, info.width, 3)
                    yield number, pixels.astype(np.float32) / np.float32(65535.0)
                number += 1
            else:
                return
            if proc.wait() != 0 and number == first_frame:
                log.seek(0)
                raise VfxSwapError(f"{info.path}: cannot decode: {_one_line(log.read().decode(errors='replace'))}")
            if wanted is not None:
                raise VfxSwapError(f"{info.path}: frame {wanted[-1]} is past the end (last frame is {number - 1})")
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.stdout.close()
            proc.wait()


def write_preview(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float = 24.0, crf: int = 18) -> int:
    """Encode uint8 RGB display frames to an H.264 mp4 tagged BT.709; returns the frame count.

    Odd sizes are padded to even (yuv420p needs it). The movie appears under its final name
    only once ffmpeg has finished, so a failed or killed encode leaves nothing behind.
    """
    path = str(path)
    frames = iter(frames)
    first = next(frames, None)
    if first is None:
        raise VfxSwapError(f"{path}: no frames to write")
    shape = first.shape
    if first.dtype != np.uint8 or first.ndim != 3 or shape[2] != 3:
        raise VfxSwapError(f"{path}: preview frames must be uint8 (H, W, 3) RGB, got {first.dtype} {shape}")
    count = 0
    with atomic_path(path) as tmp, tempfile.TemporaryFile() as log:
        args = (ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{shape[1]}x{shape[0]}",
                             framerate=str(Fraction(_snap_rate(fps)).limit_denominator(1001)))
                .filter("pad", "ceil(iw/2)*2", "ceil(ih/2)*2")
                .filter("scale", out_color_matrix="bt709", out_range="tv", flags=_SWS_FLAGS)
                .filter("setparams", color_primaries="bt709", color_trc="bt709", colorspace="bt709")
                .output(str(tmp), vcodec="libx264", pix_fmt="yuv420p", crf=crf, movflags="+faststart",
                        color_primaries="bt709", color_trc="bt709", colorspace="bt709")
                .global_args("-hide_banner", "-loglevel", "error")
                .overwrite_output()
                .compile(cmd=ffmpeg_exe()))
        proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log)
        try:
            frame = first
            while frame is not None:
                if frame.shape != shape or frame.dtype != np.uint8:
                    raise VfxSwapError(f"{path}: frame {count} is {frame.dtype} {frame.shape}, "
                                       f"expected uint8 {shape} like the first")
                try:
                    proc.stdin.write(np.ascontiguousarray(frame).tobytes())
                except BrokenPipeError:
                    break  # ffmpeg died; its log says why
                count += 1
                frame = next(frames, None)
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.close()
            if proc.wait() != 0:
                log.seek(0)
                raise VfxSwapError(f"{path}: ffmpeg failed: {_one_line(log.read().decode(errors='replace'))}")
        finally:
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(OSError):
                proc.stdin.close()
            proc.wait()
    return count
