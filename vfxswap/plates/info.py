"""`vfxswap plates info`: what a plate sequence or movie holds, checked frame by frame."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from vfxswap.color import count_nonfinite, guess_plate_space, resolve_config
from vfxswap.errors import VfxSwapError
from vfxswap.plates.frames import find_sequence, format_frames, is_movie, parse_frames
from vfxswap.plates.image import read_image, read_info
from vfxswap.progress import progress


@dataclass
class PlateInfo:
    source: str
    frames: list[int]
    missing: list[int]
    width: int = 0
    height: int = 0
    data_window: str = ""
    pixel_aspect: float = 1.0
    channels: tuple[str, ...] = ()
    pixel_type: str = ""
    colorspace: str = ""
    colorspace_from: str = ""
    timecode: str = ""
    fps: float | None = None
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)  # finite min/max per channel
    nonfinite: dict[int, str] = field(default_factory=dict)
    errors: dict[int, str] = field(default_factory=dict)

    def lines(self) -> list[str]:
        out = [f"source      {self.source}",
               f"frames      {format_frames(self.frames) or 'none'} ({len(self.frames)} frames)",
               f"missing     {format_frames(self.missing) or 'none'}",
               f"size        {self.width}x{self.height}, pixel aspect {self.pixel_aspect:g}"
               + (f", data window {self.data_window}" if self.data_window else ""),
               f"channels    {' '.join(self.channels)} ({self.pixel_type})",
               f"colour      {self.colorspace} ({self.colorspace_from})"]
        if self.timecode:
            out.append(f"timecode    {self.timecode}")
        if self.fps:
            out.append(f"fps         {self.fps:g}")
        if self.ranges:
            out.append("range       " + "  ".join(f"{c} {lo:.6g}..{hi:.6g}" for c, (lo, hi) in self.ranges.items()))
        for frame, what in self.nonfinite.items():
            out.append(f"non-finite  frame {frame}: {what}")
        for frame, err in self.errors.items():
            out.append(f"error       frame {frame}: {err}")
        return out


def _timecode(attrs: dict) -> str:
    value = attrs.get("smpte:TimeCode", (None, None))[1]
    return _bcd_timecode(int(value[0])) if value else ""


def _bcd_timecode(word: int) -> str:
    """SMPTE 12M packs hh:mm:ss:ff as binary-coded decimal in the first 32-bit word."""
    def bcd(shift: int, mask: int) -> int:
        v = (word >> shift) & mask
        return (v >> 4) * 10 + (v & 0xF)
    return f"{bcd(24, 0x3F):02d}:{bcd(16, 0x7F):02d}:{bcd(8, 0x7F):02d}:{bcd(0, 0x3F):02d}"


def plate_info(spec: str, frames: str | None = None, *, stats: bool = True, ocio: str | None = None) -> PlateInfo:
    """Header facts of the first frame, then (with `stats`) every frame read for value ranges,
    NaN/Inf counts and read errors, each reported by frame number."""
    if is_movie(spec):
        from vfxswap.plates.video import probe_video

        v = probe_video(spec)
        numbers = list(range(1001, 1001 + (v.frames or 0)))
        return PlateInfo(spec, numbers, [], v.width, v.height, channels=("R", "G", "B"), pixel_type=v.codec,
                         colorspace="sRGB Encoded Rec.709 (sRGB)", colorspace_from="assumed for movies", fps=v.fps)
    seq = find_sequence(spec)
    wanted = parse_frames(frames) if frames else list(seq.frames)
    present = [f for f in wanted if f in set(seq.frames)]
    info = PlateInfo(str(seq.pattern), present, seq.missing(wanted if frames else None))
    if not present:
        return info
    head = read_info(seq.path(present[0]))
    attrs = head.attributes
    info.width, info.height = head.display_window.width, head.display_window.height
    if head.data_window != head.display_window:
        info.data_window = str(head.data_window)
    info.pixel_aspect = float(attrs.get("PixelAspectRatio", (None, 1.0))[1])
    info.channels, info.pixel_type = head.channels, head.format
    choice = resolve_config(ocio)
    try:
        info.colorspace = guess_plate_space(attrs, head.format, choice)
    except VfxSwapError as exc:  # reported, and the exit status says so
        info.colorspace, info.errors[present[0]] = "unknown", str(exc)
    info.colorspace_from = ("header oiio:ColorSpace" if attrs.get("oiio:ColorSpace", (None, None))[1]
                            else "header chromaticities" if "chromaticities" in attrs and head.format in ("half", "float")
                            else "assumed: OCIO scene_linear role")
    info.timecode = _timecode(attrs)
    rate = attrs.get("framesPerSecond", (None, None))[1]
    if rate:
        info.fps = rate[0] / rate[1] if isinstance(rate, (tuple, list)) else float(rate)
    if not stats:
        return info
    lo = hi = None
    for frame in progress(present, desc="scan"):
        try:
            px = read_image(seq.path(frame)).pixels
        except VfxSwapError as exc:
            info.errors[frame] = str(exc)
            continue
        bad = count_nonfinite(px)
        if bad.total:
            info.nonfinite[frame] = str(bad)
        finite = np.where(np.isfinite(px), px, np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN channel has no range
            flo, fhi = np.nanmin(finite, axis=(0, 1)), np.nanmax(finite, axis=(0, 1))
        lo = flo if lo is None else np.fmin(lo, flo)
        hi = fhi if hi is None else np.fmax(hi, fhi)
    if lo is not None:
        info.ranges = {c: (float(a), float(b)) for c, a, b in zip(head.channels, lo, hi)}
    return info
