"""The colour pipeline: plate space <-> model encoding, and plate space -> detector display image.

One object per shot, built from the OCIO config in force:
- `to_model` / `from_model`: the invertible encoding the network sees (normalised ACEScct,
  see `kernels`), exact to float precision, highlights kept (never tone-mapped).
- `to_display`: the config's view transform to an 8-bit image for face detectors, baked to a
  3D LUT on the model encoding and applied to a reduced copy; `exact=True` runs OCIO itself.
- `convert`: any colour space to any other through OCIO (threaded row bands, as OCIO's apply
  releases the GIL but does not split one call itself).
- `to_model_torch` / `from_model_torch`: the same encoding on GPU tensors, analytic when the
  plate space is linear, else through LUTs baked from OCIO.
Non-finite plate values (NaN/Inf) are counted, reported once per call site, and replaced.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np
import PyOpenColorIO as OCIO

from vfxswap.color import constants, kernels
from vfxswap.color.config import ConfigChoice, resolve_config
from vfxswap.errors import VfxSwapError

log = logging.getLogger("vfxswap")

ENCODING_SPACE = "ACEScct"  # the log space the model encoding is built on
ENCODING_LINEAR = "ACEScg"  # its linear base (same AP1 primaries)
ENCODING_NAME = "acescct-norm"  # recorded in model manifests and headers
DISPLAY_LUT_SIZE = 65
LOSSLESS = OCIO.OptimizationFlags.OPTIMIZATION_LOSSLESS

_pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="vfxswap-ocio")

# Known primaries (xy of R, G, B, white) -> colour interop ID of the linear space using them.
_PRIMARIES = {
    "lin_rec709_scene": (0.64, 0.33, 0.30, 0.60, 0.15, 0.06, 0.3127, 0.3290),
    "lin_ap1_scene": (0.713, 0.293, 0.165, 0.830, 0.128, 0.044, 0.32168, 0.33767),
    "lin_ap0_scene": (0.7347, 0.2653, 0.0, 1.0, 0.0001, -0.077, 0.32168, 0.33767),
    "lin_p3d65_scene": (0.680, 0.320, 0.265, 0.690, 0.150, 0.060, 0.3127, 0.3290),
    "lin_rec2020_scene": (0.708, 0.292, 0.170, 0.797, 0.131, 0.046, 0.3127, 0.3290),
}


@dataclass
class NonFinite:
    """Counts of values replaced by the sanitising rule (NaN -> 0, -Inf -> 0, +Inf -> 65504)."""

    nan: int = 0
    posinf: int = 0
    neginf: int = 0

    @property
    def total(self) -> int:
        return self.nan + self.posinf + self.neginf

    def __str__(self) -> str:
        return f"{self.nan} NaN, {self.posinf} +Inf, {self.neginf} -Inf"


def count_nonfinite(pixels: np.ndarray) -> NonFinite:
    bad = ~np.isfinite(pixels)
    if not bad.any():
        return NonFinite()
    vals = pixels[bad]
    return NonFinite(int(np.isnan(vals).sum()), int(np.isposinf(vals).sum()), int(np.isneginf(vals).sum()))


def sanitize(pixels: np.ndarray, where: str = "") -> NonFinite:
    """Replace NaN/Inf in place (float arrays) and report how many, naming `where`."""
    found = count_nonfinite(pixels)
    if found.total:
        np.nan_to_num(pixels, copy=False, nan=0.0, posinf=constants.HALF_MAX, neginf=0.0)
        log.warning("%s: replaced non-finite values (%s)", where or "image", found)
    return found


def _report(counts: np.ndarray, where: str) -> NonFinite:
    found = NonFinite(int(counts[0]), int(counts[1]), int(counts[2]))
    if found.total:
        log.warning("%s: replaced non-finite values (%s)", where or "image", found)
    return found


def apply_threaded(cpu: OCIO.CPUProcessor, pixels: np.ndarray) -> np.ndarray:
    """Apply an OCIO CPU processor in place over row bands on all cores; returns `pixels`."""
    if pixels.dtype != np.float32 or not pixels.flags.c_contiguous or pixels.shape[-1] not in (3, 4):
        raise ValueError("OCIO needs C-contiguous float32 RGB or RGBA pixels")
    apply = cpu.applyRGBA if pixels.shape[-1] == 4 else cpu.applyRGB
    rows = pixels.shape[0]
    bands = max(1, min(rows, (os.cpu_count() or 2) * 2))
    edges = np.linspace(0, rows, bands + 1).astype(int)
    list(_pool.map(lambda i: apply(pixels[edges[i]:edges[i + 1]]), range(bands)))
    return pixels


def working_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """The (w, h) a detector copy is made at: the longest side capped at `max_side`."""
    if not max_side or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


class ColorPipeline:
    """Colour conversions for one plate space under one OCIO config (see module docstring)."""

    def __init__(self, plate_space: str | None = None, *, config: ConfigChoice | str | None = None,
                 display: str | None = None, view: str | None = None):
        self.choice = config if isinstance(config, ConfigChoice) else resolve_config(config)
        cfg = self.choice.config
        self.plate_space = self.space_name(plate_space or OCIO.ROLE_SCENE_LINEAR)
        self.encoding_space = self.space_name(ENCODING_SPACE)
        self.encoding_linear = self.space_name(ENCODING_LINEAR)
        self.display = display or cfg.getDefaultDisplay()
        if self.display not in list(cfg.getDisplays()):
            raise VfxSwapError(f"unknown display {self.display!r} in OCIO config {self.choice.name} "
                               f"(displays: {', '.join(cfg.getDisplays())})")
        self.view = view or cfg.getDefaultView(self.display)
        if self.view not in list(cfg.getViews(self.display)):
            raise VfxSwapError(f"unknown view {self.view!r} for display {self.display!r} "
                               f"(views: {', '.join(cfg.getViews(self.display))})")
        self._cpu: dict[tuple, OCIO.CPUProcessor] = {}
        # plate -> ACEScg as a 3x3 matrix when the plate space is linear; None means use OCIO.
        self.matrix = self._linear_matrix(self.plate_space, self.encoding_linear)
        self.matrix_inv = None if self.matrix is None else np.linalg.inv(self.matrix.astype(np.float64)).astype(np.float32)
        self._display_lut: np.ndarray | None = None
        self._torch_luts: dict[str, tuple[np.ndarray, float, float]] = {}

    @property
    def plate_is_display_encoded(self) -> bool:
        """True when plate values are display code values (e.g. sRGB-encoded stills, video):
        detectors can then take them as they are, with no view transform."""
        cs = self.choice.config.getColorSpace(self.plate_space)
        return cs.getEncoding() in ("sdr-video", "hdr-video") or \
            cs.getReferenceSpaceType() == OCIO.REFERENCE_SPACE_DISPLAY

    # --- names and provenance -----------------------------------------------------------

    def space_name(self, name: str) -> str:
        """The config's canonical name for a colour space, role or alias; a clear error if unknown."""
        cs = self.choice.config.getColorSpace(name)
        if cs is None:
            some = ", ".join(list(self.choice.config.getColorSpaceNames())[:12])
            raise VfxSwapError(f"unknown colour space {name!r} in OCIO config {self.choice.name or self.choice.uri} "
                               f"(e.g. {some})")
        return cs.getName()

    def describe(self) -> dict[str, str]:
        """What to record in headers and manifests so another machine can reproduce this."""
        return {"ocio_config": self.choice.name, "ocio_config_uri": self.choice.uri,
                "plate_space": self.plate_space, "model_encoding": ENCODING_NAME,
                "display": self.display, "view": self.view}

    @classmethod
    def for_image(cls, image, *, plate_space: str | None = None, config: ConfigChoice | str | None = None,
                  **kwargs) -> "ColorPipeline":
        """A pipeline for a plate (`Image` or `ImageInfo`): `plate_space` if given, else what its
        header says, else the config's scene_linear role."""
        choice = config if isinstance(config, ConfigChoice) else resolve_config(config)
        space = plate_space or guess_plate_space(image.attributes, getattr(image, "source_format", None)
                                                 or getattr(image, "format", ""), choice, getattr(image, "path", ""))
        return cls(space, config=choice, **kwargs)

    # --- OCIO plumbing ------------------------------------------------------------------

    def processor(self, src: str, dst: str) -> OCIO.CPUProcessor:
        key = ("cs", src, dst)
        if key not in self._cpu:
            proc = self.choice.config.getProcessor(self.space_name(src), self.space_name(dst))
            self._cpu[key] = proc.getOptimizedCPUProcessor(LOSSLESS)
        return self._cpu[key]

    def view_processor(self, src: str) -> OCIO.CPUProcessor:
        key = ("view", src, self.display, self.view)
        if key not in self._cpu:
            proc = self.choice.config.getProcessor(self.space_name(src), self.display, self.view,
                                                   OCIO.TRANSFORM_DIR_FORWARD)
            self._cpu[key] = proc.getOptimizedCPUProcessor(LOSSLESS)
        return self._cpu[key]

    def _linear_matrix(self, src: str, dst: str) -> np.ndarray | None:
        """The 3x3 matrix src -> dst if OCIO's transform between them is linear, else None."""
        cpu = self.processor(src, dst)
        basis = np.ascontiguousarray(np.eye(3, dtype=np.float32))
        cpu.applyRGB(basis)
        matrix = basis.T.copy()  # column j = image of unit vector j
        rng = np.random.default_rng(0)
        probe = (rng.uniform(-1, 1, (64, 3)) * 2.0 ** rng.uniform(-12, 12, (64, 1))).astype(np.float32)
        expect = probe @ matrix.T
        got = np.ascontiguousarray(probe.copy())
        cpu.applyRGB(got)
        scale = np.abs(expect).max(axis=1, keepdims=True) + 1e-30
        return matrix if (np.abs(got - expect) / scale).max() < 1e-5 else None

    def convert(self, pixels: np.ndarray, src: str, dst: str) -> np.ndarray:
        """Any colour space to any other (RGB or RGBA, alpha untouched); returns a new array."""
        out = np.ascontiguousarray(pixels, dtype=np.float32).copy()
        if out.shape[-1] > 4:
            rgb = np.ascontiguousarray(out[..., :3])
            out[..., :3] = apply_threaded(self.processor(src, dst), rgb)
            return out
        return apply_threaded(self.processor(src, dst), out)

    # --- the model encoding -------------------------------------------------------------

    def to_model(self, plate_rgb: np.ndarray, where: str = "", out: np.ndarray | None = None) -> np.ndarray:
        """(H, W, >=3) plate pixels -> (H, W, 3) float32 model encoding; extra channels ignored.

        `out`: a float32 (H, W, 3) buffer (or view) to fill instead of allocating one.
        """
        if self.matrix is not None:
            out, counts = kernels.encode(plate_rgb, self.matrix, out)
            _report(counts, where)
            return out
        rgb = np.ascontiguousarray(plate_rgb[..., :3], dtype=np.float32).copy()
        sanitize(rgb, where)
        apply_threaded(self.processor(self.plate_space, self.encoding_space), rgb)
        rgb -= constants.CCT_LIN_OFFSET
        rgb *= constants.NORM_SCALE
        if out is not None:
            out[...] = rgb
            return out
        return rgb

    def from_model(self, model_rgb: np.ndarray, where: str = "", out: np.ndarray | None = None) -> np.ndarray:
        """(H, W, 3) model encoding -> (H, W, 3) float32 plate pixels: the exact inverse.

        `out` may be the RGB view of the plate's own RGBA buffer, so alpha stays where it is.
        """
        if self.matrix_inv is not None:
            out, counts = kernels.decode(model_rgb, self.matrix_inv, out)
            _report(counts, where)
            return out
        rgb = np.ascontiguousarray(model_rgb[..., :3], dtype=np.float32).copy()
        sanitize(rgb, where)
        rgb /= constants.NORM_SCALE
        rgb += constants.CCT_LIN_OFFSET
        apply_threaded(self.processor(self.encoding_space, self.plate_space), rgb)
        if out is not None:
            out[...] = rgb
            return out
        return rgb

    # --- display images -----------------------------------------------------------------

    def display_lut(self) -> np.ndarray:
        """The view transform baked on the model encoding: (S, S, S, 3) over [0, 1], indexed [r, g, b]."""
        if self._display_lut is None:
            n = DISPLAY_LUT_SIZE
            axis = np.linspace(0.0, 1.0, n, dtype=np.float32) / constants.NORM_SCALE + constants.CCT_LIN_OFFSET
            r, g, b = np.meshgrid(axis, axis, axis, indexing="ij")
            grid = np.ascontiguousarray(np.stack([r, g, b], -1).reshape(-1, 3), dtype=np.float32)
            apply_threaded(self.view_processor(self.encoding_space), grid)
            self._display_lut = grid.reshape(n, n, n, 3)
        return self._display_lut

    def to_display(self, plate_rgb: np.ndarray, max_side: int | None = None, *, exact: bool = False,
                   where: str = "") -> np.ndarray:
        """(H, W, >=3) plate pixels -> (h, w, 3) uint8 display image (sRGB-like) for detectors.

        `max_side` reduces the copy first (area filter, in linear light) so detection runs at
        a working resolution; map coordinates back with the ratio of widths.
        """
        h, w = plate_rgb.shape[:2]
        size = working_size(w, h, max_side)
        rgb = plate_rgb[..., :3]
        if size != (w, h):
            # Reduce first (area filter in linear light; cv2 takes up to 4 channels as they are),
            # then sanitise the small copy: a NaN smears over one reduced pixel, never further.
            src = plate_rgb if plate_rgb.shape[2] <= 4 else np.ascontiguousarray(rgb)
            rgb = cv2.resize(np.asarray(src, np.float32), size, interpolation=cv2.INTER_AREA)[..., :3]
        if exact:
            out = np.ascontiguousarray(rgb, dtype=np.float32).copy()
            sanitize(out, where)
            apply_threaded(self.view_processor(self.plate_space), out)
            return (np.clip(out, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        if self.matrix is None:
            lin = np.ascontiguousarray(rgb, dtype=np.float32).copy()
            sanitize(lin, where)
            rgb, matrix = apply_threaded(self.processor(self.plate_space, self.encoding_linear), lin), np.eye(3)
        else:
            matrix = self.matrix
        out, counts = kernels.display(rgb, matrix, self.display_lut())
        _report(counts, where)
        return out

    # --- torch ---------------------------------------------------------------------------

    def to_model_torch(self, t):
        """(..., 3, H, W) plate tensor (any device) -> model encoding tensor."""
        if self.matrix is not None:
            return kernels.encode_torch(t, self.matrix)
        return kernels.apply_lut_torch(t, *self._torch_lut("to_model"))

    def from_model_torch(self, t):
        """(..., 3, H, W) model encoding tensor -> plate tensor: the inverse of `to_model_torch`."""
        if self.matrix_inv is not None:
            return kernels.decode_torch(t, self.matrix_inv)
        return kernels.apply_lut_torch(t, *self._torch_lut("from_model"))

    def _torch_lut(self, which: str, size: int = 97) -> tuple[np.ndarray, float, float]:
        """For non-linear plate spaces: the encoding baked from OCIO as a 3D LUT, with its domain.

        The domain runs from black to the brightest half value as the source side encodes
        them (at least 0-1, at most 0-2 for plate spaces whose code values climb far above 1,
        e.g. sRGB-encoded ones, where values beyond clamp).
        """
        if which not in self._torch_luts:
            ends = np.array([[[0.0, 0.0, 0.0], [constants.HALF_MAX] * 3]], np.float32)
            if which == "to_model":
                plate_ends = self.convert(ends, self.encoding_linear, self.plate_space)[0, :, 0]
                lo, hi = min(0.0, float(plate_ends[0])), min(max(1.0, float(plate_ends[1])), 2.0)
            else:
                lo, hi = 0.0, float(kernels.cct_encode_np(constants.HALF_MAX))
            axis = np.linspace(lo, hi, size, dtype=np.float32)
            r, g, b = np.meshgrid(axis, axis, axis, indexing="ij")
            grid = np.ascontiguousarray(np.stack([r, g, b], -1).reshape(1, -1, 3))
            grid = self.to_model(grid)[0] if which == "to_model" else self.from_model(grid)[0]
            self._torch_luts[which] = (grid.reshape(size, size, size, 3), lo, hi)
        return self._torch_luts[which]


def chromaticities_of(space: str, choice: ConfigChoice) -> tuple[float, ...] | None:
    """EXR `chromaticities` (xy of R, G, B, white) for a linear colour space we know the
    primaries of, so a file's header says what its numbers mean without OCIO."""
    cs = choice.config.getColorSpace(space)
    if cs is None:
        return None
    names = {cs.getName(), *cs.getAliases()}
    if hasattr(cs, "getInteropID"):
        names.add(cs.getInteropID())
    for interop, xy in _PRIMARIES.items():
        if interop in names:
            return xy
    return None


def tag_colour_space(image, space: str, choice: ConfigChoice, *, trust_chromaticities: bool = False) -> None:
    """Say in `image`'s header which space its numbers are in: `oiio:ColorSpace`, with the EXR
    `chromaticities` of that space where its primaries are known; an interop ID or chromaticities
    carried over from another space go, so no attribute contradicts the pixels. With
    `trust_chromaticities`, chromaticities already there stay when the space's are not known (a
    render's layer keeps those of the plate whose space it is in)."""
    image.set_attribute("oiio:ColorSpace", space)
    image.attributes.pop("colorInteropID", None)  # the writer derives it from the name
    xy = chromaticities_of(space, choice)
    if xy is not None:
        image.set_attribute("chromaticities", tuple(float(v) for v in xy), "float[8]")
    elif not trust_chromaticities:
        image.attributes.pop("chromaticities", None)


def guess_plate_space(attributes: dict, pixel_format: str, choice: ConfigChoice, where: str = "") -> str:
    """The colour space a header names (`oiio:ColorSpace`, else EXR `chromaticities` for float
    files); with neither, the config's scene_linear role. A name the config does not know is an
    error (`where` names the file): taking, say, LogC code values for ACEScg would be wrong in
    every pixel, silently."""
    cfg = choice.config
    named = attributes.get("oiio:ColorSpace", (None, None))[1]
    if named:
        if cfg.getColorSpace(named) is None:
            raise VfxSwapError(f"{where + ': ' if where else ''}the header names colour space {named!r}, which the "
                               f"OCIO config {choice.name} does not know: give the plate's space with --plate-space "
                               f"(--from-space for plates convert)")
        return cfg.getColorSpace(named).getName()
    chroma = attributes.get("chromaticities", (None, None))[1]
    if chroma is not None and pixel_format in ("half", "float"):
        for interop, xy in _PRIMARIES.items():
            if np.allclose(chroma, xy, atol=2e-3) and cfg.getColorSpace(interop) is not None:
                return cfg.getColorSpace(interop).getName()
    return cfg.getColorSpace(OCIO.ROLE_SCENE_LINEAR).getName()
