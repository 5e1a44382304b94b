"""Small charts for the artist's window, painted with QPainter (no plotting library to ship).

`LossGraph` is the Train tab's live loss curve, read from a model's history.jsonl; `YawHistogram`
is the Faceset tab's yaw coverage, where the gaps are the point. The tick and smoothing maths
are plain functions (`ema`, `log_ticks`, `nice_ticks`, `yaw_bins`, `history_series`) so they
can be checked without a screen. Margins come from the font's metrics, so labels fit at any
font size a host (Nuke, a high-DPI screen) gives the widget. Nothing here imports torch.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

from vfxswap.hosts.qt import QtCore, QtGui, QtWidgets

Qt = QtCore.Qt

A_COLOUR = (240, 150, 50)  # A (source): orange
B_COLOUR = (70, 160, 245)  # B (destination): blue
ROLLBACK_COLOUR = (225, 75, 75)
BAR_COLOUR = (110, 165, 215)
CURRENT_COLOUR = (250, 200, 60)  # the current face's yaw bin
EMPTY_COLOUR = (225, 75, 75)  # a yaw bin with no face: coverage missing
BACKGROUND = (40, 40, 40)
PLOT_BACKGROUND = (28, 28, 28)
GRID = (58, 58, 58)
GRID_MAJOR = (78, 78, 78)
AXIS = (130, 130, 130)
TEXT = (210, 210, 210)
RAW_ALPHA = 80  # the raw losses, under the smoothed curve
CURVES = (("loss_A", "A (source)", A_COLOUR), ("loss_B", "B (destination)", B_COLOUR))
YAW_LIMIT = 90.0
YAW_TICKS = (-90, -45, 0, 45, 90)


# --- pure functions ---------------------------------------------------------------------------

def ema(values: Iterable[float], factor: float) -> list[float]:
    """Exponential moving average, `factor` the weight of the past (0: no smoothing), debiased as
    Adam debiases its moments: the average starts at the first value instead of creeping up
    from zero, so a young training's curve is not drawn too low."""
    if not 0.0 <= factor < 1.0:
        raise ValueError(f"smoothing factor must be in [0, 1), got {factor}")
    out, acc, weight = [], 0.0, 0.0
    for v in values:
        acc = factor * acc + (1.0 - factor) * float(v)
        weight = factor * weight + (1.0 - factor)
        out.append(acc / weight)
    return out


def _clean(v: float) -> float:
    """`v` without float noise (0.6000000000000001 -> 0.6), for labels and equality."""
    return float(f"{v:.10g}")


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round values (steps of 1, 2 or 5 times a power of ten) in [lo, hi], about `count` steps
    apart at most."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi < lo:
        lo, hi = hi, lo
    if hi == lo:
        return [_clean(lo)]
    raw = (hi - lo) / max(int(count), 1)
    magnitude = 10.0 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw * (1 - 1e-9))
    first, last = math.ceil(lo / step - 1e-9), math.floor(hi / step + 1e-9)
    return [_clean(k * step) for k in range(first, last + 1)]


def log_ticks(lo: float, hi: float, max_count: int = 12) -> list[float]:
    """Tick values for a log axis over [lo, hi] (> 0): each decade and its 2 and 5; decades only
    (every n-th, when even those are too many) for a span that would need more than `max_count`;
    1..9 per decade, then round linear steps, for a span too narrow for two of those."""
    if not (lo > 0 and hi > 0 and math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi < lo:
        lo, hi = hi, lo
    max_count = max(int(max_count), 2)
    a, b = math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1

    def within(mantissas) -> list[float]:
        return [_clean(m * 10.0 ** e) for e in range(a, b + 1) for m in mantissas
                if lo * (1 - 1e-9) <= m * 10.0 ** e <= hi * (1 + 1e-9)]

    ticks = within((1, 2, 5))
    if len(ticks) > max_count:
        decades = within((1,))
        every = math.ceil(len(decades) / max_count)  # on exponents that are multiples: stable as data grows
        return [t for t in decades if round(math.log10(t)) % every == 0] if every > 1 else decades
    if len(ticks) < 2:
        ticks = within(range(1, 10))
        if len(ticks) > max_count:
            ticks = ticks[:: math.ceil(len(ticks) / max_count)]
        if len(ticks) < 2:
            ticks = [t for t in nice_ticks(lo, hi, min(6, max_count)) if t > 0]
    return ticks


def format_loss(v: float) -> str:
    """A compact tick label: 0.02, 0.5, 1, 20; 1e-4, 2.5e4 outside 0.001 .. 9999."""
    if v == 0 or 1e-3 <= abs(v) < 1e4:
        return f"{v:.3g}"
    mantissa, exponent = f"{v:.1e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def format_iteration(v: float) -> str:
    """An iteration as a tick label: 500, 1.5k, 20k, 1.2M."""
    if abs(v) >= 1e6:
        return f"{v / 1e6:g}M"
    if abs(v) >= 1e3:
        return f"{v / 1e3:g}k"
    return f"{v:g}"


def _positive(v) -> float | None:
    """A loss that can sit on a log axis, else None (missing, not a number, <= 0, NaN, inf)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        return None
    return float(v)


def history_series(records: Sequence[dict]) -> tuple[dict[str, tuple[list[float], list[float]]], list[float]]:
    """({"loss_A": (iterations, losses), "loss_B": ...}, roll-back iterations) from history.jsonl
    records, in file order. Lines with an "event" are not losses. A roll-back returns training to
    an earlier iteration, so the steps logged past it before it are dropped (the curve goes on
    from where training did); a repeated iteration (a resume) keeps the line written last."""
    steps: dict[float, dict] = {}
    rollbacks: list[float] = []
    for record in records:
        if not isinstance(record, dict):
            continue
        it = record.get("iter")
        if isinstance(it, bool) or not isinstance(it, (int, float)) or not math.isfinite(it):
            continue
        it = float(it)
        if "event" in record:
            if record["event"] == "rollback":
                rollbacks.append(it)
                steps = {i: r for i, r in steps.items() if i <= it}
            continue
        steps[it] = record
    series = {}
    for key, _name, _colour in CURVES:
        points = [(i, v) for i, r in sorted(steps.items()) if (v := _positive(r.get(key))) is not None]
        series[key] = ([p[0] for p in points], [p[1] for p in points])
    return series, rollbacks


def yaw_bins(yaws: Iterable[float | None], width: float = 10) -> list[int]:
    """Face counts per `width`-degree yaw bin from -90 to 90; values past either end count in the
    end bins, None and NaN are left out."""
    if width <= 0:
        raise ValueError(f"yaw bin width must be positive, got {width}")
    count = math.ceil(2 * YAW_LIMIT / width - 1e-9)
    bins = [0] * count
    for yaw in yaws:
        if yaw is None or not math.isfinite(yaw):
            continue
        bins[min(max(int(math.floor((float(yaw) + YAW_LIMIT) / width)), 0), count - 1)] += 1
    return bins


# --- painting helpers -------------------------------------------------------------------------

def _colour(rgb, alpha: int = 255) -> QtGui.QColor:
    return QtGui.QColor(rgb[0], rgb[1], rgb[2], alpha)


def _text_width(metrics: QtGui.QFontMetrics, text: str) -> int:
    return metrics.horizontalAdvance(text) if hasattr(metrics, "horizontalAdvance") else metrics.width(text)


def _draw_y_title(painter: QtGui.QPainter, text: str, x: float, rect: QtCore.QRectF) -> None:
    """`text` turned a quarter left, its top at `x`, centred on `rect`'s height."""
    metrics = painter.fontMetrics()
    painter.save()
    painter.translate(x + metrics.ascent(), rect.center().y() + _text_width(metrics, text) / 2)
    painter.rotate(-90)
    painter.drawText(QtCore.QPointF(0, 0), text)
    painter.restore()


def _draw_x_labels(painter: QtGui.QPainter, labels: list[tuple[float, str]], rect: QtCore.QRectF) -> None:
    """Tick marks under `rect` and their labels centred under them (kept inside the widget)."""
    metrics = painter.fontMetrics()
    for x, text in labels:
        painter.setPen(_colour(AXIS))
        painter.drawLine(QtCore.QPointF(x, rect.bottom()), QtCore.QPointF(x, rect.bottom() + 4))
        width = _text_width(metrics, text)
        left = min(max(x - width / 2, 1.0), painter.device().width() - width - 1.0)
        painter.setPen(_colour(TEXT))
        painter.drawText(QtCore.QPointF(left, rect.bottom() + 6 + metrics.ascent()), text)


class _Chart(QtWidgets.QWidget):
    """What both charts share: the dark look, a centred note for having nothing to show."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent, True)
        self.setSizePolicy(QtWidgets.QSizePolicy.Policy.Expanding, QtWidgets.QSizePolicy.Policy.Expanding)

    def sizeHint(self) -> QtCore.QSize:  # noqa: N802 - Qt's name
        return QtCore.QSize(480, 260)

    def _begin(self) -> QtGui.QPainter:
        painter = QtGui.QPainter(self)
        painter.fillRect(self.rect(), _colour(BACKGROUND))
        painter.setRenderHint(QtGui.QPainter.RenderHint.Antialiasing, True)
        painter.setRenderHint(QtGui.QPainter.RenderHint.TextAntialiasing, True)
        return painter

    def _note(self, painter: QtGui.QPainter, rect, text: str) -> None:
        painter.setPen(_colour(TEXT, 170))
        painter.drawText(rect, Qt.AlignmentFlag.AlignCenter, text)


# --- the loss graph ---------------------------------------------------------------------------

class LossGraph(_Chart):
    """A training's losses over iterations on a log axis: A and B, each raw (faint) and
    smoothed (bold); roll-backs as thin vertical lines. `set_history` takes history.jsonl's
    records, all of them each time (the widget keeps no state between calls but the smoothing)."""

    def __init__(self, parent=None, smoothing: float = 0.6):
        super().__init__(parent)
        self.setMinimumSize(360, 200)
        self.series: dict[str, tuple[list[float], list[float]]] = {key: ([], []) for key, _n, _c in CURVES}
        self.smoothed: dict[str, list[float]] = {key: [] for key, _n, _c in CURVES}
        self.rollbacks: list[float] = []
        self.set_smoothing(smoothing)

    def set_history(self, records: Sequence[dict]) -> None:
        self.series, self.rollbacks = history_series(records)
        self._smooth()

    def set_smoothing(self, factor: float) -> None:
        """The EMA's weight of the past, 0 <= factor < 1; taken on log losses, as the axis shows
        them, so one spike cannot lift the smoothed curve a decade."""
        if not 0.0 <= factor < 1.0:
            raise ValueError(f"smoothing factor must be in [0, 1), got {factor}")
        self.smoothing = float(factor)
        self._smooth()

    def _smooth(self) -> None:
        self.smoothed = {key: [10.0 ** v for v in ema(np.log10(values), self.smoothing)] if values else []
                         for key, (_iters, values) in self.series.items()}
        self.update()

    @property
    def empty(self) -> bool:
        return not any(values for _iters, values in self.series.values())

    # --- geometry (also for tests: where a value lands) --------------------------------------

    def _ranges(self) -> tuple[float, float, float, float]:
        """(first, last iteration, log10 low, log10 high) the axes span."""
        iters = [i for its, _v in self.series.values() for i in its] + list(self.rollbacks)
        x0, x1 = (min(iters), max(iters)) if iters else (0.0, 1.0)
        if x1 <= x0:
            x0, x1 = min(x0, 0.0), max(x1, x0 + 1.0)
        values = [v for _i, vs in self.series.values() for v in vs]
        l0, l1 = (math.log10(min(values)), math.log10(max(values))) if values else (-2.0, 0.0)
        pad = max(0.04 * (l1 - l0), 0.05)
        return x0, x1, l0 - pad, l1 + pad

    def _layout(self) -> dict:
        """Plot rectangle and ticks for the widget's size and font."""
        metrics = QtGui.QFontMetrics(self.font())
        line = metrics.height()
        x0, x1, l0, l1 = self._ranges()
        top, bottom = line + 12, 2 * line + 14  # legend above; tick labels and the axis title below
        plot_h = max(self.height() - top - bottom, 10)
        y_ticks = log_ticks(10.0 ** l0, 10.0 ** l1, max_count=max(2, int(plot_h / (1.6 * line))))
        y_labels = [format_loss(t) for t in y_ticks]
        left = 6 + line + 6 + max((_text_width(metrics, t) for t in y_labels), default=0) + 8
        widest = max(_text_width(metrics, format_iteration(v)) for v in (x0, x1, (x0 + x1) / 2))
        right = max(12, widest // 2 + 6)
        plot_w = max(self.width() - left - right, 10)
        x_ticks = [t for t in nice_ticks(x0, x1, max(2, int(plot_w / (widest + 28)))) if t == int(t)]
        rect = QtCore.QRectF(left, top, plot_w, plot_h)
        return {"rect": rect, "x": (x0, x1), "log": (l0, l1), "y_ticks": list(zip(y_ticks, y_labels)),
                "x_ticks": [(t, format_iteration(t)) for t in x_ticks], "metrics": metrics}

    def plot_rect(self) -> QtCore.QRectF:
        """Where the curves are drawn, in widget pixels."""
        return self._layout()["rect"]

    def to_x(self, iteration: float, layout: dict | None = None) -> float:
        layout = layout or self._layout()
        (x0, x1), rect = layout["x"], layout["rect"]
        return rect.left() + (iteration - x0) / (x1 - x0) * rect.width()

    def to_y(self, loss: float, layout: dict | None = None) -> float:
        layout = layout or self._layout()
        (l0, l1), rect = layout["log"], layout["rect"]
        return rect.bottom() - (math.log10(loss) - l0) / (l1 - l0) * rect.height()

    # --- painting ------------------------------------------------------------------------------

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt's name
        painter = self._begin()
        if self.empty:
            self._note(painter, QtCore.QRectF(self.rect()), "no losses yet")
            painter.end()
            return
        layout = self._layout()
        rect, metrics = layout["rect"], layout["metrics"]
        painter.fillRect(rect, _colour(PLOT_BACKGROUND))

        for value, text in layout["y_ticks"]:
            y = self.to_y(value, layout)
            decade = abs(math.log10(value) - round(math.log10(value))) < 1e-9
            painter.setPen(QtGui.QPen(_colour(GRID_MAJOR if decade else GRID), 1))
            painter.drawLine(QtCore.QPointF(rect.left(), y), QtCore.QPointF(rect.right(), y))
            painter.setPen(_colour(AXIS))
            painter.drawLine(QtCore.QPointF(rect.left() - 4, y), QtCore.QPointF(rect.left(), y))
            painter.setPen(_colour(TEXT))
            painter.drawText(QtCore.QPointF(rect.left() - 7 - _text_width(metrics, text),
                                            y + (metrics.ascent() - metrics.descent()) / 2), text)
        x_labels = []
        for value, text in layout["x_ticks"]:
            x = self.to_x(value, layout)
            painter.setPen(QtGui.QPen(_colour(GRID), 1))
            painter.drawLine(QtCore.QPointF(x, rect.top()), QtCore.QPointF(x, rect.bottom()))
            x_labels.append((x, text))
        _draw_x_labels(painter, x_labels, rect)

        painter.save()
        painter.setClipRect(rect.adjusted(-3, -3, 3, 3))
        rollback_pen = QtGui.QPen(_colour(ROLLBACK_COLOUR, 200), 1, Qt.PenStyle.DashLine)
        for it in self.rollbacks:
            x = self.to_x(it, layout)
            painter.setPen(rollback_pen)
            painter.drawLine(QtCore.QPointF(x, rect.top()), QtCore.QPointF(x, rect.bottom()))
        for key, _name, rgb in CURVES:
            iters, values = self.series[key]
            raw = [QtCore.QPointF(self.to_x(i, layout), self.to_y(v, layout)) for i, v in zip(iters, values)]
            smooth = [QtCore.QPointF(self.to_x(i, layout), self.to_y(v, layout))
                      for i, v in zip(iters, self.smoothed[key])]
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.setPen(QtGui.QPen(_colour(rgb, RAW_ALPHA), 1))
            painter.drawPolyline(QtGui.QPolygonF(raw))
            painter.setPen(QtGui.QPen(_colour(rgb), 2.2, Qt.PenStyle.SolidLine, Qt.PenCapStyle.RoundCap,
                                      Qt.PenJoinStyle.RoundJoin))
            painter.drawPolyline(QtGui.QPolygonF(smooth))
            if smooth:  # where the training is now (and the only mark a single point gets)
                painter.setBrush(_colour(rgb))
                painter.drawEllipse(smooth[-1], 3.0, 3.0)
        painter.restore()

        painter.setPen(_colour(AXIS))
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawRect(rect)
        painter.setPen(_colour(TEXT))
        _draw_y_title(painter, "loss (log scale)", 6, rect)
        title = "iteration"
        painter.drawText(QtCore.QPointF(rect.center().x() - _text_width(metrics, title) / 2,
                                        self.height() - 6 - metrics.descent()), title)
        self._legend(painter, rect, metrics)
        painter.end()

    def _legend(self, painter: QtGui.QPainter, rect: QtCore.QRectF, metrics: QtGui.QFontMetrics) -> None:
        """A and B with their colours (and their last smoothed loss when it fits), then roll-backs
        when there were any, on one line above the plot."""
        swatch, gap = 18, 14

        def entries(style: str) -> list[tuple[str, tuple, bool]]:
            out = []
            for key, name, rgb in CURVES:
                last = self.smoothed[key][-1] if self.smoothed[key] else None
                if style == "short":
                    name = name.split()[0]
                out.append((f"{name} {format_loss(last)}" if style == "values" and last is not None else name,
                            rgb, False))
            if self.rollbacks:
                out.append(("roll-back" if len(self.rollbacks) == 1 or style == "short"
                            else f"{len(self.rollbacks)} roll-backs", ROLLBACK_COLOUR, True))
            return out

        def width(items) -> int:
            return sum(swatch + 5 + _text_width(metrics, text) + gap for text, _rgb, _dash in items) - gap

        items = next((e for e in map(entries, ("values", "names")) if width(e) <= self.width() - 12),
                     entries("short"))
        x = rect.left() if width(items) <= self.width() - rect.left() - 6 else 6  # over the axis title when need be
        y = rect.top() - 7 - metrics.descent()
        for text, rgb, dashed in items:
            mid = y - (metrics.ascent() - metrics.descent()) / 2
            painter.setPen(QtGui.QPen(_colour(rgb), 1 if dashed else 2.5, Qt.PenStyle.DashLine if dashed
                                      else Qt.PenStyle.SolidLine))
            painter.drawLine(QtCore.QPointF(x, mid), QtCore.QPointF(x + swatch, mid))
            painter.setPen(_colour(TEXT))
            painter.drawText(QtCore.QPointF(x + swatch + 5, y), text)
            x += swatch + 5 + _text_width(metrics, text) + gap


# --- the yaw histogram --------------------------------------------------------------------------

class YawHistogram(_Chart):
    """How many faces look each way: 10-degree yaw bins from -90 to 90, the current face's bin in
    the highlight colour, an empty bin marked red on the axis (a pose the faceset lacks)."""

    def __init__(self, parent=None, width: float = 10):
        super().__init__(parent)
        self.setMinimumSize(260, 140)
        self.bin_width = float(width)
        self.counts: list[int] = yaw_bins([], width)
        self.current_bin: int | None = None
        self.without_yaw = 0

    def set_yaws(self, yaws_degrees: Sequence[float | None], current: float | None = None) -> None:
        yaws = list(yaws_degrees)
        self.counts = yaw_bins(yaws, self.bin_width)
        self.without_yaw = sum(1 for y in yaws if y is None or not math.isfinite(y))
        self.current_bin = None if current is None or not math.isfinite(current) else \
            yaw_bins([current], self.bin_width).index(1)
        self.update()

    @property
    def total(self) -> int:
        return sum(self.counts)

    # --- geometry ------------------------------------------------------------------------------

    def _layout(self) -> dict:
        metrics = QtGui.QFontMetrics(self.font())
        line = metrics.height()
        top, bottom = line + 10, 2 * line + 14
        plot_h = max(self.height() - top - bottom, 10)
        peak = max(self.counts, default=0)
        y_ticks = [int(t) for t in nice_ticks(0, max(peak, 1), max(1, int(plot_h / (1.8 * line)))) if t == int(t)]
        left = 6 + line + 6 + max(_text_width(metrics, str(t)) for t in y_ticks) + 8
        right = _text_width(metrics, "90") // 2 + 8
        rect = QtCore.QRectF(left, top, max(self.width() - left - right, 10), plot_h)
        head = line + 2  # room above the tallest bar for its count
        top_value = max(peak, y_ticks[-1], 1)
        return {"rect": rect, "y_ticks": y_ticks, "metrics": metrics,
                "scale": (rect.height() - head) / top_value}

    def to_x(self, yaw: float, layout: dict | None = None) -> float:
        rect = (layout or self._layout())["rect"]
        return rect.left() + (yaw + YAW_LIMIT) / (2 * YAW_LIMIT) * rect.width()

    def bin_rect(self, index: int, layout: dict | None = None) -> QtCore.QRectF:
        """The column bin `index` owns in the plot (its bar rises from the bottom of it)."""
        layout = layout or self._layout()
        rect = layout["rect"]
        x0 = self.to_x(-YAW_LIMIT + index * self.bin_width, layout)
        x1 = self.to_x(min(-YAW_LIMIT + (index + 1) * self.bin_width, YAW_LIMIT), layout)
        return QtCore.QRectF(x0, rect.top(), x1 - x0, rect.height())

    def bar_rect(self, index: int, layout: dict | None = None) -> QtCore.QRectF:
        layout = layout or self._layout()
        column = self.bin_rect(index, layout)
        height = self.counts[index] * layout["scale"]
        inset = min(1.5, column.width() / 6)
        return QtCore.QRectF(column.left() + inset, column.bottom() - height, column.width() - 2 * inset, height)

    # --- painting ------------------------------------------------------------------------------

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt's name
        painter = self._begin()
        layout = self._layout()
        rect, metrics = layout["rect"], layout["metrics"]
        painter.fillRect(rect, _colour(PLOT_BACKGROUND))
        for value in layout["y_ticks"]:
            y = rect.bottom() - value * layout["scale"]
            painter.setPen(QtGui.QPen(_colour(GRID), 1))
            painter.drawLine(QtCore.QPointF(rect.left(), y), QtCore.QPointF(rect.right(), y))
            painter.setPen(_colour(TEXT))
            text = str(value)
            painter.drawText(QtCore.QPointF(rect.left() - 7 - _text_width(metrics, text),
                                            y + (metrics.ascent() - metrics.descent()) / 2), text)
        small = QtGui.QFont(self.font())
        small.setPointSizeF(max(self.font().pointSizeF() * 0.85, 6.0))
        small_metrics = QtGui.QFontMetrics(small)
        for i, n in enumerate(self.counts):
            column = self.bin_rect(i, layout)
            if n == 0:
                if self.total:  # the gap is the news: tint its column, mark it on the axis
                    painter.fillRect(column, _colour(EMPTY_COLOUR, 26))
                    painter.fillRect(QtCore.QRectF(column.left() + 1, rect.bottom() - 3, column.width() - 2, 3),
                                     _colour(EMPTY_COLOUR))
                continue
            bar = self.bar_rect(i, layout)
            painter.fillRect(bar, _colour(CURRENT_COLOUR if i == self.current_bin else BAR_COLOUR))
            text = str(n)
            if _text_width(small_metrics, text) <= column.width() + 2:
                painter.setFont(small)
                painter.setPen(_colour(TEXT))
                painter.drawText(QtCore.QRectF(column.left() - 4, bar.top() - small_metrics.height() - 1,
                                               column.width() + 8, small_metrics.height()),
                                 Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignBottom, text)
                painter.setFont(self.font())
        if self.current_bin is not None and self.counts[self.current_bin] == 0:
            column = self.bin_rect(self.current_bin, layout)  # the current face filtered out: still say where
            painter.setPen(QtGui.QPen(_colour(CURRENT_COLOUR), 1.5, Qt.PenStyle.DashLine))
            painter.drawRect(column.adjusted(1, 1, -1, -1))
        if not self.total:
            self._note(painter, rect, "no face with a yaw")

        painter.setPen(_colour(AXIS))
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawRect(rect)
        _draw_x_labels(painter, [(self.to_x(t, layout), str(t)) for t in YAW_TICKS], rect)
        painter.setPen(_colour(TEXT))
        _draw_y_title(painter, "faces", 6, rect)
        title = "yaw (degrees)"
        painter.drawText(QtCore.QPointF(rect.center().x() - _text_width(metrics, title) / 2,
                                        self.height() - 6 - metrics.descent()), title)
        self._caption(painter, rect, metrics)
        painter.end()

    def _caption(self, painter: QtGui.QPainter, rect: QtCore.QRectF, metrics: QtGui.QFontMetrics) -> None:
        """Above the plot: how many faces, how many bins empty; the highlight colour's meaning."""
        empty = sum(1 for n in self.counts if n == 0)
        missing = f" · {self.without_yaw} without yaw" if self.without_yaw else ""
        texts = [f"{self.total} faces · {empty} of {len(self.counts)} bins empty{missing}",
                 f"{self.total} faces · {empty} empty bins{missing}", f"{self.total} faces · {empty} empty bins"]
        y = rect.top() - 6 - metrics.descent()
        key = "current face"
        key_w = 12 + 5 + _text_width(metrics, key) if self.current_bin is not None else 0
        room = int(self.width() - rect.left() - key_w - 16)
        text = next((t for t in texts if _text_width(metrics, t) <= room), texts[-1])
        painter.setPen(_colour(TEXT))
        painter.drawText(QtCore.QPointF(rect.left(), y), metrics.elidedText(text, Qt.TextElideMode.ElideRight, room))
        if self.current_bin is not None:
            x = rect.right() - key_w
            painter.fillRect(QtCore.QRectF(x, y - metrics.ascent() + 2, 12, metrics.ascent() - 2),
                             _colour(CURRENT_COLOUR))
            painter.drawText(QtCore.QPointF(x + 17, y), key)
