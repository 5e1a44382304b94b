"""Single images in and out through OpenImageIO, with windows and header attributes kept.

An `Image` is the data window's pixels (H, W, C) plus what a compositor needs to put them
back: channel names (`R`, `face.R`, ...), the data and display windows, and every header
attribute with its type (pixel aspect, timecode, `oiio:ColorSpace`, `chromaticities`, ...).
Reading never alters values (NaN/Inf included); sanitising is the colour pipeline's job.
Writing is atomic: a temporary file in the same folder, renamed when complete.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import OpenImageIO as oiio

from vfxswap.atomic import atomic_path
from vfxswap.errors import VfxSwapError

# dtype name -> (OIIO base type, bits per sample or None)
DTYPES = {
    "half": ("half", None),
    "float": ("float", None),
    "uint8": ("uint8", None),
    "uint16": ("uint16", None),
    "uint10": ("uint16", 10),
    "uint12": ("uint16", 12),
}
DEFAULT_DTYPE = {".exr": "half", ".dpx": "uint10", ".tif": "uint16", ".tiff": "uint16",
                 ".png": "uint8", ".jpg": "uint8", ".jpeg": "uint8"}
COMPRESSIONS = {
    ".exr": {"none", "rle", "zips", "zip", "piz", "pxr24", "b44", "b44a", "dwaa", "dwab"},
    ".tif": {"none", "lzw", "zip", "packbits"},
    ".tiff": {"none", "lzw", "zip", "packbits"},
}
DEFAULT_COMPRESSION = {".exr": "zip", ".tif": "zip", ".tiff": "zip"}
_NUMPY_OF = {"half": np.float16, "float": np.float32, "uint8": np.uint8, "uint16": np.uint16}
# Attributes that describe one file's encoding, not the picture: never carried to a new file.
_FORMAT_PREFIXES = {"openexr", "tiff", "dpx", "png", "jpeg", "oiio"}
_KEEP = {"oiio:ColorSpace"}
# OIIO's EXR writer keeps `oiio:ColorSpace` only as a colour interop ID, and only for names it
# knows; the OCIO name itself goes here too so a studio space ("ARRI LogC4") survives.
COLORSPACE_ATTR = "vfxswap:colorSpace"
_DROP = {"compression", "name"}


@dataclass(frozen=True)
class Box:
    """A pixel rectangle in display coordinates: origin (x, y) top-left, y down."""

    x: int
    y: int
    width: int
    height: int

    @classmethod
    def from_roi(cls, roi: oiio.ROI) -> "Box":
        return cls(roi.xbegin, roi.ybegin, roi.xend - roi.xbegin, roi.yend - roi.ybegin)

    @property
    def x1(self) -> int:
        return self.x + self.width

    @property
    def y1(self) -> int:
        return self.y + self.height

    def intersect(self, other: "Box") -> "Box":
        x0, y0 = max(self.x, other.x), max(self.y, other.y)
        x1, y1 = min(self.x1, other.x1), min(self.y1, other.y1)
        return Box(x0, y0, max(0, x1 - x0), max(0, y1 - y0))

    def __str__(self) -> str:
        return f"{self.width}x{self.height}+{self.x}+{self.y}"


@dataclass
class Image:
    """Pixels of the data window plus the header facts needed to write them back faithfully."""

    pixels: np.ndarray
    channels: tuple[str, ...]
    data_window: Box
    display_window: Box
    attributes: dict[str, tuple[str, Any]] = field(default_factory=dict)  # name -> (type, value)
    source_format: str = "float"
    path: str = ""

    @classmethod
    def from_array(cls, pixels: np.ndarray, channels=None, *, origin=(0, 0), display_window: Box | None = None,
                   attributes: dict | None = None) -> "Image":
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        h, w, c = pixels.shape
        if channels is None:
            channels = ("R", "G", "B", "A")[:c] if c <= 4 else tuple(f"channel{i}" for i in range(c))
        if len(channels) != c:
            raise ValueError(f"{c} channels of pixels but {len(channels)} names")
        data = Box(origin[0], origin[1], w, h)
        return cls(pixels, tuple(channels), data, display_window or data, dict(attributes or {}))

    def attribute(self, name: str, default=None):
        return self.attributes.get(name, (None, default))[1]

    def set_attribute(self, name: str, value, type_name: str | None = None) -> None:
        """Set a header attribute; the type is inferred for str/int/float when not given."""
        if type_name is None:
            type_name = "string" if isinstance(value, str) else "int" if isinstance(value, (bool, int)) else "float"
        self.attributes[name] = (type_name, value)

    @property
    def pixel_aspect(self) -> float:
        return float(self.attribute("PixelAspectRatio", 1.0))

    @property
    def colorspace(self) -> str | None:
        return self.attribute("oiio:ColorSpace")

    def layers(self) -> list[str]:
        """Layer names in channel order; '' is the main (unprefixed) layer."""
        seen: list[str] = []
        for name in self.channels:
            layer = name.rpartition(".")[0]
            if layer not in seen:
                seen.append(layer)
        return seen

    def select(self, channels=None, layer: str | None = None) -> "Image":
        """A copy holding only `channels` (names) or one `layer` (`face` -> face.R, face.G...)."""
        if layer is not None:
            channels = [c for c in self.channels if c.rpartition(".")[0] == layer]
            if not channels:
                raise VfxSwapError(f"{self.path or 'image'}: no layer {layer!r} (layers: {', '.join(l or '<main>' for l in self.layers())})")
        missing = [c for c in channels if c not in self.channels]
        if missing:
            raise VfxSwapError(f"{self.path or 'image'}: no channel(s) {', '.join(missing)} (has {', '.join(self.channels)})")
        idx = [self.channels.index(c) for c in channels]
        return replace(self, pixels=np.ascontiguousarray(self.pixels[:, :, idx]), channels=tuple(channels))

    def on_display_window(self, fill: float = 0.0) -> np.ndarray:
        """The pixels placed on a canvas the size of the display window (outside filled)."""
        return self.on_window(self.display_window, fill)

    def on_window(self, box: Box, fill: float = 0.0) -> np.ndarray:
        """The pixels placed on a canvas covering `box` (outside the data window filled)."""
        data = self.data_window
        if box == data:
            return self.pixels
        canvas = np.full((box.height, box.width, self.pixels.shape[2]), fill, self.pixels.dtype)
        inter = data.intersect(box)
        if inter.width and inter.height:
            canvas[inter.y - box.y: inter.y1 - box.y, inter.x - box.x: inter.x1 - box.x] = \
                self.pixels[inter.y - data.y: inter.y1 - data.y, inter.x - data.x: inter.x1 - data.x]
        return canvas


@dataclass
class ImageInfo:
    """A header without pixels: enough for `plates info` and planning."""

    path: str
    channels: tuple[str, ...]
    data_window: Box
    display_window: Box
    format: str
    attributes: dict[str, tuple[str, Any]]
    part: int = 0
    part_name: str = ""


def _check_file(path: str) -> None:
    if not os.path.exists(path):
        raise VfxSwapError(f"{path}: no such file")


def _open(path: str) -> oiio.ImageInput:
    _check_file(path)
    inp = oiio.ImageInput.open(path)
    if inp is None:
        raise VfxSwapError(_unreadable(path, oiio.geterror()))  # geterror() also clears it: no exit noise
    return inp


def _one_line(text: str) -> str:
    return " ".join(str(text).split()) or "unknown error"


def _unreadable(path: str, message: str, part: int | None = None) -> str:
    """The one-line error for a file (or one part of it) OpenImageIO will not open.

    A luminance/chroma EXR (channels Y, RY, BY, the chroma stored at half resolution: what
    OpenEXR's RgbaOutputFile writes in its YC modes) is refused, naming what it is: OpenImageIO
    reads no subsampled channel at all (it fails in open or in seek_subimage, before any
    pixel), so there is nothing to convert to RGB through it. Rebuilding RGB ourselves would
    mean re-implementing OpenEXR's chroma reconstruction filter, which its Python module does
    not expose; such files are rare on a plate pipeline, and are saved as RGB first.
    """
    where = f"{path}: part {part}" if part else path
    if "subsampl" in str(message).lower():
        found = _subsampled_channels(path, part or 0)
        if found:
            kind = "a luminance/chroma EXR" if " RY" in found or " BY" in found else "an EXR with subsampled channels"
            return (f"{where}: cannot read as an image: {kind} ({found}); OpenImageIO reads no "
                    "subsampled channels: save it as RGB first")
    return f"{where}: cannot read as an image: {_one_line(message)}"


def _subsampled_channels(path: str, part: int) -> str | None:
    """`channels Y, RY, BY; RY, BY sampled 2x2` for an EXR part with subsampled channels, else None."""
    try:
        import OpenEXR

        channels = OpenEXR.File(path, header_only=True).parts[part].header["channels"]
        names = [c.name for c in channels]
        sub = [c for c in channels if (c.xSampling, c.ySampling) != (1, 1)]
    except Exception:  # noqa: BLE001 - only a nicer message is lost; the caller has OIIO's own
        return None
    if not sub:
        return None
    order = {n: i for i, n in enumerate(("Y", "RY", "BY", "A"))}
    names.sort(key=lambda n: (order.get(n, len(order)), n))
    rates = sorted({(c.xSampling, c.ySampling) for c in sub})
    subsampled = ", ".join(n for n in names if n in {c.name for c in sub})
    return f"channels {', '.join(names)}; {subsampled} sampled " + ", ".join(f"{x}x{y}" for x, y in rates)


def _attributes(spec: oiio.ImageSpec) -> dict[str, tuple[str, Any]]:
    attrs = {a.name: (str(a.type), a.value) for a in spec.extra_attribs}
    if COLORSPACE_ATTR in attrs:
        attrs["oiio:ColorSpace"] = attrs[COLORSPACE_ATTR]
    return attrs


def _info(path: str, spec: oiio.ImageSpec, part: int) -> ImageInfo:
    attrs = _attributes(spec)
    return ImageInfo(path, tuple(spec.channelnames), Box.from_roi(spec.roi), Box.from_roi(spec.roi_full),
                     str(spec.format), attrs, part, str(attrs.get("name", ("", ""))[1] or ""))


def list_parts(path: str | os.PathLike) -> list[ImageInfo]:
    """Every part (EXR 2 multi-part) or subimage of a file, in order."""
    path = str(path)
    inp = _open(path)
    try:
        return _parts(inp, path)
    finally:
        inp.close()


def _parts(inp: oiio.ImageInput, path: str) -> list[ImageInfo]:
    declared = inp.spec().get_int_attribute("oiio:subimages", 0)  # EXR says how many parts it has
    parts, index = [], 0
    while inp.seek_subimage(index, 0):
        parts.append(_info(path, inp.spec(), index))
        index += 1
    # The seek past the last part fails too (TIFF with an error, EXR without): the error is
    # always retrieved, and a part the file declares but OIIO cannot read (a subsampled one)
    # is named, not silently dropped: the picture may be that part.
    message = inp.geterror() if inp.has_error else ""
    if index < declared or "subsampl" in message.lower():
        raise VfxSwapError(_unreadable(path, message, index))
    return parts


def has_rgb(channels) -> bool:
    """R, G and B among `channels` (`R`, or a layer's `beauty.R`): a colour picture."""
    return {"R", "G", "B"} <= {c.rpartition(".")[2] for c in channels}


def need_rgb(image: Image) -> Image:
    """`image`, or a one-line error naming its file when it holds no colour to work on (a
    luminance-only scan, a lone depth pass): the engine takes its first three channels as RGB."""
    if image.pixels.shape[2] < 3:
        raise VfxSwapError(f"{image.path or 'image'}: no R, G, B channels to work on (it has {', '.join(image.channels)})")
    return image


def read_info(path: str | os.PathLike, part: int | str | None = None) -> ImageInfo:
    """One part's header; `part` None: the picture part, as `read_image` picks it."""
    parts = list_parts(path)
    return parts[_part_index(str(path), parts, part)]


def _part_index(path: str, parts: list[ImageInfo], part: int | str | None) -> int:
    if part is None:  # the picture: the first part with R, G, B (a depth pass may come first)
        return next((p.part for p in parts if has_rgb(p.channels)), 0)
    if isinstance(part, str):
        for info in parts:
            if info.part_name == part:
                return info.part
        raise VfxSwapError(f"{path}: no part named {part!r} (parts: {', '.join(p.part_name or str(p.part) for p in parts)})")
    if not 0 <= part < len(parts):
        raise VfxSwapError(f"{path}: no part {part} (it has {len(parts)})")
    return part


def read_image(path: str | os.PathLike, *, part: int | str | None = None, channels=None, layer: str | None = None,
               dtype: str = "float32", rows: tuple[int, int] | None = None) -> Image:
    """Read one part of an image file.

    part: an index or a part name; None: the picture, part 0 unless it has no R, G, B and a
    later part has them (a multi-part EXR with its depth part first; part 0 when `channels` or
    `layer` are named).
    dtype: `float32` (engine work; integer formats become 0-1), or `native` (the file's own
    pixel type, for bit-exact copies: half stays half, NaN payloads included).
    rows: (y0, y1), end-exclusive, counted from the display window's top row (row 0), as
    `on_display_window()` lays the picture out and as the engine's plate coordinates (landmarks,
    face boxes) run; overscan rows are negative or past the display's height. Only those rows of
    the data window are decoded, so a render that needs a face's rows does not pay for the
    frame's (EXR: only the chunks holding them; tiled files: their rows of tiles); a file that
    cannot read a range is read whole and cut. The Image's data window is those rows (clipped
    to the data window: its `on_window` places them right); an empty range reads the header
    alone (no pixel is decoded; pixels of 0 rows).
    """
    path = str(path)
    if part is None and (channels is not None or layer is not None):
        part = 0  # named channels: part 0, as asked
    inp = _open(path)
    try:
        index = 0
        if part != 0 and not (part is None and has_rgb(inp.spec().channelnames)):
            index = _part_index(path, _parts(inp, path), part)
            inp.seek_subimage(index, 0)
        spec = inp.spec()
        names = tuple(spec.channelnames)
        if layer is not None:
            channels = [c for c in names if c.rpartition(".")[0] == layer] or [f"{layer}.?"]
        wanted = list(channels) if channels is not None else list(names)
        missing = [c for c in wanted if c not in names]
        if missing:
            raise VfxSwapError(f"{path}: no channel(s) {', '.join(missing)} (has {', '.join(names)})")
        idx = [names.index(c) for c in wanted]
        contiguous = idx == list(range(idx[0], idx[0] + len(idx)))
        chbegin, chend = (idx[0], idx[-1] + 1) if contiguous else (0, len(names))
        fmt = "float"
        if dtype == "native":
            fmt = str(spec.format) if not spec.channelformats else "float"
        elif dtype != "float32":
            raise ValueError(f"dtype must be 'float32' or 'native', not {dtype!r}")
        elif str(spec.format) == "half" and not spec.channelformats:
            fmt = "half"  # widened below (`_cast`): OIIO's own widening costs more than the decode
        data = Box.from_roi(spec.roi)
        if rows is None:
            pixels = inp.read_image(index, 0, chbegin, chend, fmt)
        else:
            top = max(data.y, spec.full_y + int(rows[0]))
            data = Box(data.x, top, data.width, max(0, min(data.y1, spec.full_y + int(rows[1])) - top))
            pixels = _read_rows(inp, index, spec, data, chbegin, chend, fmt)
        if pixels is None:
            raise VfxSwapError(f"{path}: corrupt or truncated image: {_one_line(inp.geterror())}")
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        if not contiguous:
            pixels = np.ascontiguousarray(pixels[:, :, idx])
        if dtype == "float32" and pixels.dtype == np.float16:
            pixels = _cast(pixels, np.float32)
        return Image(pixels, tuple(wanted), data, Box.from_roi(spec.roi_full), _attributes(spec), str(spec.format),
                     path)
    finally:
        inp.close()


def _cast(pixels: np.ndarray, dtype) -> np.ndarray:
    """`pixels` as float32 or float16 (half <-> float32), bit for bit what numpy's or OIIO's
    conversion gives (narrowing rounds to nearest even), many times faster (measured on a 1080p
    RGBA frame: widening 2-3 ms against 18 for numpy and ~35 for OIIO; narrowing a quarter of a
    layer's write): OpenCV's conversion (the CPU's own instruction), whose one difference, a
    NaN's payload made quiet, is redone by numpy where a NaN went in."""
    dtype = np.dtype(dtype)
    if not pixels.size:
        return pixels.astype(dtype)
    depth = cv2.CV_32F if dtype == np.float32 else cv2.CV_16F
    out = cv2.multiply(pixels.reshape(pixels.shape[0], -1), 1.0, dtype=depth).reshape(pixels.shape)
    nan = np.isnan(pixels)
    if nan.any():
        out[nan] = pixels[nan].astype(dtype)
    return out


def _read_rows(inp: oiio.ImageInput, index: int, spec: oiio.ImageSpec, box: Box, chbegin: int, chend: int,
               fmt: str) -> np.ndarray | None:
    """The data window's rows box.y..box.y1 (file coordinates, inside the data window), all its
    columns: only those scanlines, or the rows of tiles holding them; a format that cannot read
    a range (its reader says so) is read whole and cut. None when the file cannot be read."""
    if not box.height:
        return np.zeros((0, spec.width, chend - chbegin), _NUMPY_OF.get(fmt, np.float32))
    y0, y1 = box.y, box.y1
    if spec.tile_width:  # tile rows are counted from the data window's top
        t = spec.tile_height
        first = spec.y + (y0 - spec.y) // t * t
        last = min(spec.y + spec.height, spec.y + -(-(y1 - spec.y) // t) * t)
        pixels = inp.read_tiles(index, 0, spec.x, spec.x + spec.width, first, last, spec.z,
                                spec.z + max(1, spec.depth), chbegin, chend, fmt)
    else:
        first = y0
        pixels = inp.read_scanlines(index, 0, y0, y1, spec.z, chbegin, chend, fmt)
    if pixels is None:
        inp.geterror()  # clears it: the whole read below reports its own
        first = spec.y
        pixels = inp.read_image(index, 0, chbegin, chend, fmt)
    return None if pixels is None else pixels[y0 - first: y1 - first]


def _carried(attributes: dict[str, tuple[str, Any]]) -> dict[str, tuple[str, Any]]:
    return {k: v for k, v in attributes.items()
            if k in _KEEP or (k not in _DROP and k.partition(":")[0] not in _FORMAT_PREFIXES)}


def write_image(path: str | os.PathLike, image: Image, *, dtype: str | None = None,
                compression: str | None = None, durable: bool = False,
                channel_dtypes: dict[str, str] | None = None) -> None:
    """Write `image` atomically; the format follows the extension.

    EXR keeps the data window (it may be smaller than the display window), channel names and
    every carried header attribute. Formats without windows get the data placed on the
    display window. `compression`: EXR `zip` (default), `piz`, `dwaa[:level]`, ...
    `durable` fsyncs before the rename (see `vfxswap.atomic`). `channel_dtypes` gives some
    channels another pixel type (EXR: e.g. an ST map's `stmap.R` as float in a half file).
    """
    path = str(path)
    ext = Path(path).suffix.lower()
    dtype = dtype or DEFAULT_DTYPE.get(ext, "float")
    if dtype not in DTYPES:
        raise VfxSwapError(f"{path}: unknown pixel type {dtype!r} (choose from {', '.join(DTYPES)})")
    base, bits = DTYPES[dtype]
    out = oiio.ImageOutput.create(path)
    if out is None:
        raise VfxSwapError(f"{path}: no writer for {ext or 'this file'}: {_one_line(oiio.geterror())}")
    pixels, data, disp = image.pixels, image.data_window, image.display_window
    if data != disp and not out.supports("displaywindow"):
        pixels, data = image.on_display_window(), disp
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    h, w, c = pixels.shape
    if (w, h) != (data.width, data.height) or c != len(image.channels):
        raise ValueError(f"{path}: pixels {pixels.shape} do not match window {data} / channels {image.channels}")
    spec = oiio.ImageSpec(w, h, c, base)
    spec.x, spec.y = data.x, data.y
    spec.full_x, spec.full_y, spec.full_width, spec.full_height = disp.x, disp.y, disp.width, disp.height
    spec.channelnames = tuple(image.channels)
    if channel_dtypes:
        spec.channelformats = tuple(oiio.TypeDesc(DTYPES[channel_dtypes.get(n, dtype)][0]) for n in image.channels)
    alpha = [i for i, n in enumerate(image.channels) if n in ("A", "alpha")]
    spec.alpha_channel = alpha[0] if alpha else -1
    for name, (type_name, value) in _carried(image.attributes).items():
        try:
            spec.attribute(name, oiio.TypeDesc(type_name), value)
        except (TypeError, ValueError, RuntimeError):
            continue  # an attribute this writer cannot express; the pixels matter more
    if image.colorspace:
        spec.attribute(COLORSPACE_ATTR, str(image.colorspace))
    if "DateTime" not in image.attributes:
        # OIIO would stamp the current time, so the same frame rendered twice (a retried farm
        # task) would differ in bytes; an empty value writes no date at all.
        spec.attribute("DateTime", "")
    if bits:
        spec.attribute("oiio:BitsPerSample", bits)
    _set_compression(spec, path, ext, compression)
    if pixels.dtype.kind == "f" and dtype.startswith("uint"):
        pixels = np.clip(pixels, 0.0, 1.0)  # integer formats store 0-1; OIIO would wrap NaN
    if base == "half" and not channel_dtypes and pixels.dtype == np.float32:
        pixels = _cast(pixels, np.float16)  # OIIO's own narrowing costs a quarter of a layer's write
    with atomic_path(path, durable=durable) as tmp:
        if not out.open(str(tmp), spec):
            raise VfxSwapError(f"{path}: cannot open for writing: {_one_line(out.geterror())}")
        ok = out.write_image(np.ascontiguousarray(pixels))
        ok = out.close() and ok
        if not ok:
            raise VfxSwapError(f"{path}: write failed: {_one_line(out.geterror())}")


def _set_compression(spec: oiio.ImageSpec, path: str, ext: str, compression: str | None) -> None:
    allowed = COMPRESSIONS.get(ext)
    if compression is None:
        compression = DEFAULT_COMPRESSION.get(ext)
        if compression is None:
            return
    if allowed is None:
        raise VfxSwapError(f"{path}: {ext} files take no compression choice (got {compression!r})")
    name, _, level = compression.partition(":")
    if name not in allowed or (level and not (name.startswith("dwa") and level.isdigit())):
        raise VfxSwapError(f"{path}: unknown {ext} compression {compression!r} (choose from {', '.join(sorted(allowed))})")
    spec.attribute("compression", compression)
