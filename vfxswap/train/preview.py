"""Training previews: a labelled grid of faces and a loss curve, both 8-bit PNGs.

Why: a training run is judged by eye. The grid shows the same faces through each path (A,
A->A, B, B->B, B->A) through the shot's colour view, so what the artist sees matches the
comp; the curve shows whether the losses still fall. Both are drawn with OpenCV and NumPy
only (matplotlib is not a dependency) and written atomically, so a viewer that polls the
file never reads half a PNG.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from vfxswap import atomic

__all__ = ["HEADER_PX", "SEP_PX", "loss_curve", "loss_keys", "preview_grid", "read_history"]

HEADER_PX = 24  # height of the label strip above the grid
SEP_PX = 2  # gap between tiles
FONT = cv2.FONT_HERSHEY_SIMPLEX

# Colours are BGR (OpenCV's order).
_GRID_BG = (40, 40, 40)
_GRID_SEP = (90, 90, 90)
_GRID_TEXT = (235, 235, 235)
# Line colours for loss keys in drawing order (a common 10-colour qualitative palette).
_PALETTE = [(180, 119, 31), (14, 127, 255), (44, 160, 44), (40, 39, 214), (189, 103, 148),
            (75, 86, 140), (194, 119, 227), (127, 127, 127), (34, 189, 188), (207, 190, 23)]

ToDisplay = Callable[[np.ndarray], np.ndarray]


# --- preview grid -------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _default_pipeline():
    """ColorPipeline("ACEScg"), built once: its display LUT takes about a second to bake."""
    from vfxswap.color import ColorPipeline

    return ColorPipeline("ACEScg")


def _pipeline_view(pipeline) -> ToDisplay:
    """(H, W, 3) model encoding -> (H, W, 3) uint8 RGB through `pipeline` (plate space, then its view)."""
    pipe = pipeline if pipeline is not None else _default_pipeline()

    def view(model_rgb: np.ndarray) -> np.ndarray:
        return pipe.to_display(pipe.from_model(model_rgb, where="preview"), where="preview")

    return view


def _as_numpy(t) -> np.ndarray:
    """A tensor or array (N, C, H, W) or (C, H, W) -> float32 numpy (N, C, H, W), detached, on the CPU."""
    if hasattr(t, "detach"):
        t = t.detach().float().cpu().numpy()
    a = np.asarray(t, dtype=np.float32)
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4 or a.shape[1] not in (1, 3):
        raise ValueError(f"preview columns must be (N, 3, H, W) images or (N, 1, H, W) masks, got {a.shape}")
    return a


def _tile_strip(a: np.ndarray, rows: int, size: tuple[int, int]) -> np.ndarray:
    """The first `rows` samples of (N, C, H, W), resized to `size` (h, w), stacked vertically
    with SEP_PX gaps (filled with 0) -> (rows*h + gaps, w, C) float32."""
    h, w = size
    tiles = []
    for i in range(rows):
        tile = np.ascontiguousarray(a[i].transpose(1, 2, 0))
        if tile.shape[:2] != (h, w):
            down = tile.shape[0] > h
            tile = cv2.resize(tile, (w, h), interpolation=cv2.INTER_AREA if down else cv2.INTER_LINEAR)
            tile = tile.reshape(h, w, -1)
        tiles.append(tile)
        if i < rows - 1:
            tiles.append(np.zeros((SEP_PX, w, tile.shape[2]), np.float32))
    return np.concatenate(tiles, axis=0)


def _to_uint8(img: np.ndarray) -> np.ndarray:
    """A display result as uint8: uint8 passes through, floats are taken as 0..1."""
    if img.dtype == np.uint8:
        return img
    return (np.clip(np.nan_to_num(img.astype(np.float32)), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _fit_label(text: str, max_w: int) -> tuple[str, float]:
    """`text` and a font scale at which it fits `max_w` pixels (shrunk, then cut with '..')."""
    for scale in (0.5, 0.45, 0.4, 0.35):
        if cv2.getTextSize(text, FONT, scale, 1)[0][0] <= max_w:
            return text, scale
    while len(text) > 1 and cv2.getTextSize(text + "..", FONT, 0.35, 1)[0][0] > max_w:
        text = text[:-1]
    return text + "..", 0.35


def preview_grid(columns: Mapping[str, object], path, *, pipeline=None, to_display: ToDisplay | None = None,
                 max_rows: int = 6) -> Path:
    """Write a labelled grid: one column per entry of `columns`, one row per sample -> the PNG path.

    columns: label -> (N, 3, R, R) tensor/array in the model encoding (or (N, 1, R, R) masks,
    shown as grey without colour conversion), e.g. {"A": ..., "A->A": ..., "B": ..., "B->B":
    ..., "B->A": ...}. Rows: the smallest N, at most `max_rows`. Tiles take the first column's
    size (others are resized to it). Colour: `to_display` ((H, W, 3) model encoding -> (H, W, 3)
    uint8 RGB, or float 0..1) if given, else `pipeline` (a ColorPipeline; default
    ColorPipeline("ACEScg")): from_model to its plate space, then its display view.
    Size: HEADER_PX + rows*R + (rows-1)*SEP_PX high, cols*R + (cols-1)*SEP_PX wide.
    """
    if not columns:
        raise ValueError("preview_grid needs at least one column")
    if max_rows < 1:
        raise ValueError(f"max_rows must be >= 1, got {max_rows}")
    arrays = {str(label): _as_numpy(t) for label, t in columns.items()}
    rows = min(min(a.shape[0] for a in arrays.values()), max_rows)
    if rows < 1:
        raise ValueError("preview_grid got a column with no samples")
    h, w = next(iter(arrays.values())).shape[-2:]
    convert = to_display or _pipeline_view(pipeline)

    cols = len(arrays)
    grid_h = rows * h + (rows - 1) * SEP_PX
    canvas = np.empty((HEADER_PX + grid_h, cols * w + (cols - 1) * SEP_PX, 3), np.uint8)
    canvas[:] = _GRID_SEP
    canvas[:HEADER_PX] = _GRID_BG
    for c, (label, a) in enumerate(arrays.items()):
        x0 = c * (w + SEP_PX)
        strip = _tile_strip(a, rows, (h, w))  # one conversion call per column
        if strip.shape[2] == 1:
            rgb = _to_uint8(np.repeat(strip, 3, axis=2))
        else:
            rgb = _to_uint8(np.asarray(convert(np.ascontiguousarray(strip))))
            if rgb.shape != (grid_h, w, 3):
                raise ValueError(f"to_display returned shape {rgb.shape}, expected {(grid_h, w, 3)}")
        bgr = rgb[..., ::-1]
        for r in range(rows):
            y = r * (h + SEP_PX)
            canvas[HEADER_PX + y:HEADER_PX + y + h, x0:x0 + w] = bgr[y:y + h]
        text, scale = _fit_label(label, w - 4)
        (tw, th), _ = cv2.getTextSize(text, FONT, scale, 1)
        org = (x0 + max(2, (w - tw) // 2), (HEADER_PX + th) // 2)
        cv2.putText(canvas, text, org, FONT, scale, _GRID_TEXT, 1, cv2.LINE_AA)
    return _write_png(canvas, path)


def _write_png(bgr: np.ndarray, path) -> Path:
    ok, buf = cv2.imencode(".png", bgr)
    if not ok:
        raise RuntimeError(f"PNG encoding failed for {path}")
    path = Path(path)
    atomic.write_bytes(path, buf.tobytes())
    return path


# --- loss curve ---------------------------------------------------------------------------

def read_history(path) -> list[dict]:
    """The JSON objects of a history JSONL file, in file order. A missing file reads as empty;
    blank or unreadable lines (e.g. a last line cut short by a killed job) are skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                records.append(obj)
    return records


def _number(v) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def loss_keys(records: list[dict]) -> list[str]:
    """Keys starting with "loss" that hold numbers: loss_A, loss_B, loss first, then the rest sorted."""
    found = {k for r in records for k, v in r.items() if k.startswith("loss") and _number(v) is not None}
    first = [k for k in ("loss_A", "loss_B", "loss") if k in found]
    return first + sorted(found - set(first))


def _series(records: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(iterations, values) of `key`, sorted by iteration, positive values only (log axis).
    A repeated iteration (training resumed from an earlier save) keeps the value written last."""
    by_iter: dict[float, float] = {}
    for i, r in enumerate(records):
        v = _number(r.get(key))
        if v is None or v <= 0:
            continue
        it = _number(r.get("iter"))
        by_iter[float(i) if it is None else it] = v
    its = np.array(sorted(by_iter), np.float64)
    return its, np.array([by_iter[i] for i in its], np.float64)


def _ema(values: np.ndarray, span: int) -> np.ndarray:
    """Exponential moving average with smoothing 2 / (span + 1), started at the first value."""
    if span <= 1 or len(values) < 2:
        return values.copy()
    alpha = 2.0 / (span + 1.0)
    out = np.empty_like(values)
    acc = values[0]
    for i, v in enumerate(values):
        acc += alpha * (v - acc)
        out[i] = acc
    return out


def _nice_ticks(lo: float, hi: float, target: int = 6, min_step: float = 0.0) -> list[float]:
    """Round-numbered ticks (1, 2, 2.5, 5 x 10^k steps) inside [lo, hi]."""
    span = hi - lo
    if span <= 0:
        return [lo]
    raw = max(span / target, min_step)
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw * (1 - 1e-9))
    start = math.ceil(lo / step - 1e-9) * step
    count = int(math.floor((hi - start) / step + 1e-9)) + 1
    return [start + i * step for i in range(max(count, 0))]


def _log_ticks(l0: float, l1: float) -> list[float]:
    """Tick values for a log10 axis spanning [l0, l1]: decades, else 1-2-5, else 1..9 per
    decade, else round linear steps for a range narrower than that."""
    for mults in ((1,), (1, 2, 5), tuple(range(1, 10))):
        ticks = [m * 10.0 ** e for e in range(math.floor(l0) - 1, math.ceil(l1) + 1) for m in mults
                 if l0 - 1e-9 <= math.log10(m) + e <= l1 + 1e-9]
        if len(ticks) >= 3:
            return ticks[:: math.ceil(len(ticks) / 8)]
    return [t for t in _nice_ticks(10.0 ** l0, 10.0 ** l1, 5) if t > 0]


def _fmt_value(v: float) -> str:
    return f"{v:.3g}"


def _fmt_iter(v: float) -> str:
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:g}M"
    if a >= 1e4:
        return f"{v / 1e3:g}k"
    return f"{v:g}"


def _decimate(px: np.ndarray, py: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Points for a polyline over `width` pixel columns: unchanged when few, else each column's
    min and max (an envelope that keeps spikes) in x order."""
    if len(px) <= 2 * width:
        return px, py
    col = np.floor(px).astype(np.int64)
    starts = np.flatnonzero(np.r_[True, col[1:] != col[:-1]])
    lo, hi = np.minimum.reduceat(py, starts), np.maximum.reduceat(py, starts)
    xs = np.repeat(px[starts], 2)
    ys = np.empty(2 * len(starts))
    ys[0::2], ys[1::2] = lo, hi
    return xs, ys


def _polyline(img, xs, ys, colour, thickness: int) -> None:
    shift = 4  # sub-pixel precision: coordinates in 1/16 px
    pts = np.round(np.stack([xs, ys], axis=1) * (1 << shift)).astype(np.int32).reshape(-1, 1, 2)
    cv2.polylines(img, [pts], False, colour, thickness, cv2.LINE_AA, shift)


def _faint(colour) -> tuple[int, int, int]:
    return tuple(int(round(0.3 * c + 0.7 * 255)) for c in colour)


def loss_curve(history_path, png_path, *, width: int = 800, height: int = 400,
               keys: list[str] | None = None) -> Path:
    """Draw the losses of a history JSONL file ({"iter": ..., "loss_A": ..., ...} per line) -> the PNG path.

    Every key starting with "loss" (or `keys`) gets a colour: the raw values as a faint line
    and an exponential moving average over them (in log space) as a solid one, on a log10 y
    axis over iterations, with a legend giving each key's last smoothed value. Values <= 0 or
    non-finite cannot sit on a log axis and are left out. With fewer than two points the
    chart still gets drawn: axes, any single point as a dot, and a note saying so.
    """
    if width < 240 or height < 160:
        raise ValueError(f"loss_curve needs at least 240x160 pixels, got {width}x{height}")
    records = read_history(history_path)
    names = keys if keys is not None else loss_keys(records)
    series = {k: _series(records, k) for k in names}
    drawn = {k: s for k, s in series.items() if len(s[0])}
    n_max = max((len(s[0]) for s in drawn.values()), default=0)

    left, right, top, bottom = 64, 16, 30, 44
    pw, ph = width - left - right, height - top - bottom
    img = np.full((height, width, 3), 255, np.uint8)

    # Ranges.
    if drawn:
        all_x = np.concatenate([s[0] for s in drawn.values()])
        all_l = np.log10(np.concatenate([s[1] for s in drawn.values()]))
        x0, x1 = float(all_x.min()), float(all_x.max())
        last_iter = x1
        l0, l1 = float(all_l.min()), float(all_l.max())
    else:
        x0, x1, l0, l1 = 0.0, 1.0, -2.0, 0.0
    if x1 <= x0:
        x0, x1 = max(0.0, x0 - 1.0), x0 + 1.0
    pad = max(0.05 * (l1 - l0), 0.02)
    l0, l1 = l0 - pad, l1 + pad

    def to_px(x):
        return left + (np.asarray(x, np.float64) - x0) / (x1 - x0) * pw

    def to_py(v):
        return top + (1.0 - (np.log10(np.asarray(v, np.float64)) - l0) / (l1 - l0)) * ph

    # Grid, ticks and labels.
    grid, axis, label = (232, 232, 232), (60, 60, 60), (50, 50, 50)
    for v in _log_ticks(l0, l1):
        y = int(round(float(to_py(v))))
        cv2.line(img, (left, y), (left + pw, y), grid, 1)
        cv2.line(img, (left - 4, y), (left, y), axis, 1)
        text = _fmt_value(v)
        (tw, th), _ = cv2.getTextSize(text, FONT, 0.4, 1)
        cv2.putText(img, text, (left - 7 - tw, y + th // 2), FONT, 0.4, label, 1, cv2.LINE_AA)
    for v in _nice_ticks(x0, x1, 6, min_step=1.0):
        x = int(round(float(to_px(v))))
        cv2.line(img, (x, top), (x, top + ph), grid, 1)
        cv2.line(img, (x, top + ph), (x, top + ph + 4), axis, 1)
        text = _fmt_iter(v)
        (tw, th), _ = cv2.getTextSize(text, FONT, 0.4, 1)
        cv2.putText(img, text, (x - tw // 2, top + ph + 8 + th), FONT, 0.4, label, 1, cv2.LINE_AA)
    cv2.rectangle(img, (left, top), (left + pw, top + ph), axis, 1)
    cv2.putText(img, "loss (log scale)", (8, 20), FONT, 0.45, label, 1, cv2.LINE_AA)
    (tw, _), _ = cv2.getTextSize("iteration", FONT, 0.45, 1)
    cv2.putText(img, "iteration", (left + (pw - tw) // 2, height - 8), FONT, 0.45, label, 1, cv2.LINE_AA)
    if drawn:
        last = f"iter {int(round(last_iter)):,}"
        (tw, _), _ = cv2.getTextSize(last, FONT, 0.45, 1)
        cv2.putText(img, last, (width - right - tw, 20), FONT, 0.45, label, 1, cv2.LINE_AA)

    # Lines (clipped to the plot area by drawing on a sub-view): every raw line first, then the
    # smoothed ones, so one key's faint band never hides another key's curve.
    plot = img[top:top + ph + 1, left:left + pw + 1]
    span = max(1, min(50, n_max // 100))  # light: a long span lags a falling curve visibly
    legend, solid = [], []
    for idx, k in enumerate(names):
        colour = _PALETTE[idx % len(_PALETTE)]
        if k not in drawn:
            legend.append((k, colour, "no positive values"))
            continue
        its, vals = drawn[k]
        px, py = to_px(its) - left, to_py(vals) - top
        smooth = 10.0 ** _ema(np.log10(vals), span)
        if len(its) >= 2:
            _polyline(plot, *_decimate(px, py, pw), _faint(colour), 1)
        solid.append((px, py, to_py(smooth) - top, colour))
        legend.append((k, colour, _fmt_value(float(smooth[-1]))))
    for px, py, sy, colour in solid:
        if len(px) >= 2:
            _polyline(plot, *_decimate(px, sy, pw), colour, 2)
        if len(px) <= 3:
            for x, y in zip(px, py):
                cv2.circle(plot, (int(round(x)), int(round(y))), 3, colour, -1, cv2.LINE_AA)

    if n_max < 2:
        note = "no loss values yet" if n_max == 0 else "1 point so far: the curve starts at the next log"
        (tw, th), _ = cv2.getTextSize(note, FONT, 0.45, 1)
        cv2.putText(img, note, (left + (pw - tw) // 2, top + ph // 2 + th // 2), FONT, 0.45, (120, 120, 120), 1,
                    cv2.LINE_AA)

    # Legend, top right inside the plot.
    if legend:
        rows = [f"{k}  {v}" for k, _, v in legend]
        tw = max(cv2.getTextSize(r, FONT, 0.4, 1)[0][0] for r in rows)
        bw, bh = tw + 36, 18 * len(rows) + 8
        bx, by = left + pw - bw - 6, top + 6
        cv2.rectangle(img, (bx, by), (bx + bw, by + bh), (255, 255, 255), -1)
        cv2.rectangle(img, (bx, by), (bx + bw, by + bh), (200, 200, 200), 1)
        for i, ((_, colour, _), text) in enumerate(zip(legend, rows)):
            y = by + 16 + 18 * i
            cv2.line(img, (bx + 6, y - 4), (bx + 24, y - 4), colour, 2, cv2.LINE_AA)
            cv2.putText(img, text, (bx + 30, y), FONT, 0.4, label, 1, cv2.LINE_AA)
    return _write_png(img, png_path)
