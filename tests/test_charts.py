"""The window's charts, offscreen: their maths (smoothing, ticks, yaw bins, history parsing) on
real values, and what they paint: curves and bars where they belong, a log axis that spaces
decades evenly, events never drawn as losses, empty states."""

from __future__ import annotations

import math
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before any Qt import

import numpy as np
import pytest

import PySide6  # noqa: E402,F401  (a declared dependency: missing, this file errors, it does not skip)
from vfxswap.hosts.charts import (A_COLOUR, B_COLOUR, BAR_COLOUR, CURRENT_COLOUR,  # noqa: E402
                                  EMPTY_COLOUR, ROLLBACK_COLOUR, LossGraph, YawHistogram, ema,
                                  format_iteration, format_loss, history_series, log_ticks,
                                  nice_ticks, yaw_bins)
from vfxswap.hosts.qt import QtWidgets  # noqa: E402

SIZE = (480, 260)


@pytest.fixture(scope="module")
def app():
    return QtWidgets.QApplication.instance() or QtWidgets.QApplication([])


def _pixels(widget) -> np.ndarray:
    """The widget as painted, (H, W, 3) uint8."""
    image = widget.grab().toImage()
    image = image.convertToFormat(image.Format.Format_RGB888)
    h, w = image.height(), image.width()
    data = np.frombuffer(image.constBits(), np.uint8, count=image.bytesPerLine() * h)
    return data.reshape(h, image.bytesPerLine())[:, :3 * w].reshape(h, w, 3).copy()


def _near(pixels: np.ndarray, rgb, tolerance: float = 30.0) -> np.ndarray:
    """Mask of the pixels within `tolerance` of colour `rgb`."""
    return np.linalg.norm(pixels.astype(np.float32) - np.array(rgb, np.float32), axis=-1) < tolerance


def _step(i: int, a: float, b: float) -> dict:
    return {"iter": i, "loss": a + b, "loss_A": a, "loss_B": b, "lr": 5e-5, "samples_per_s": 41.5,
            "time": 1.7e9 + i}


# --- the maths --------------------------------------------------------------------------------

def test_ema_is_debiased_and_zero_means_no_smoothing():
    assert ema([2.0, 4.0, 8.0], 0.5) == pytest.approx([2.0, 10 / 3, 6.0])  # (1, 2.5, 5.25) / (.5, .75, .875)
    assert ema([0.3, 0.3, 0.3], 0.9) == pytest.approx([0.3, 0.3, 0.3])  # no creeping up from zero
    assert ema([0.5, 0.1, 0.7], 0.0) == [0.5, 0.1, 0.7]
    assert ema([], 0.6) == []
    with pytest.raises(ValueError):
        ema([1.0], 1.0)


def test_nice_ticks_step_by_one_two_or_five():
    assert nice_ticks(0, 20000) == [0, 5000, 10000, 15000, 20000]
    assert nice_ticks(137, 4312) == [1000, 2000, 3000, 4000]
    assert nice_ticks(0.1, 0.9, 4) == [0.2, 0.4, 0.6, 0.8]  # 0.6, not 0.6000000000000001
    assert nice_ticks(100, 2300, 10) == [500, 1000, 1500, 2000]  # 220 a step at least: 500
    assert nice_ticks(100, 2300, 11) == [200, 400, 600, 800, 1000, 1200, 1400, 1600, 1800, 2000, 2200]
    assert nice_ticks(5, 5) == [5]


def test_log_ticks_decades_and_their_two_and_five():
    assert log_ticks(0.015, 0.35) == [0.02, 0.05, 0.1, 0.2]
    assert log_ticks(0.008, 1.2) == [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0]
    assert log_ticks(0.008, 1.2, max_count=4) == [0.01, 0.1, 1.0]  # too many: decades only
    assert log_ticks(1e-6, 10, max_count=5) == [1e-6, 1e-4, 1e-2, 1.0]  # every other decade
    assert log_ticks(0.031, 0.069) == [0.04, 0.05, 0.06]  # narrow: 1..9 in the decade
    assert log_ticks(0.0305, 0.0395) == [0.032, 0.034, 0.036, 0.038]  # narrower: linear steps
    assert log_ticks(0.0, 1.0) == [] and log_ticks(0.1, math.inf) == []
    assert [format_loss(t) for t in log_ticks(0.008, 1.2)] == ["0.01", "0.02", "0.05", "0.1", "0.2", "0.5", "1"]
    assert [format_loss(v) for v in (1e-4, 2.5e-5, 20000.0)] == ["1e-4", "2.5e-5", "2e4"]
    assert [format_iteration(v) for v in (0, 500, 1500, 20000, 1_200_000)] == ["0", "500", "1.5k", "20k", "1.2M"]


def test_history_series_reads_steps_not_events_and_drops_what_a_rollback_undid():
    records = [_step(100, 0.30, 0.40), _step(200, 0.20, 0.30), _step(300, 0.15, math.nan),
               _step(400, 9.0, 9.0),  # blew up: the roll-back below returns to 300
               {"iter": 300, "event": "rollback", "reason": "loss or gradients not finite", "lr": 2.5e-5},
               {"iter": 350, "event": "eval", "loss_A": 50.0, "loss_B": 50.0},  # an event: never a loss
               _step(400, 0.12, 0.22), _step(500, 0.10, -1.0), _step(500, 0.09, 0.2)]  # 500 again: a resume
    series, rollbacks = history_series(records)
    assert rollbacks == [300.0]
    assert series["loss_A"] == ([100.0, 200.0, 300.0, 400.0, 500.0], [0.30, 0.20, 0.15, 0.12, 0.09])
    assert series["loss_B"] == ([100.0, 200.0, 400.0, 500.0], [0.40, 0.30, 0.22, 0.2])  # NaN left out


def test_yaw_bins_are_ten_degrees_from_minus_90_to_90_and_clamp():
    yaws = [-90, -85, -80, 0, 9.99, 10, 89, 90, 120, -200, None, math.nan]
    bins = yaw_bins(yaws)
    assert len(bins) == 18 and sum(bins) == 10
    assert bins == [3, 1, 0, 0, 0, 0, 0, 0, 0, 2, 1, 0, 0, 0, 0, 0, 0, 3]
    assert yaw_bins(yaws, width=30) == [4, 0, 0, 3, 0, 3]
    assert yaw_bins([]) == [0] * 18
    with pytest.raises(ValueError):
        yaw_bins([0.0], width=0)


# --- the loss graph ---------------------------------------------------------------------------

def _rows_of(pixels, colour, x: float) -> np.ndarray:
    """Rows where `colour` is painted in the 3 columns around x."""
    column = _near(pixels[:, int(round(x)) - 1:int(round(x)) + 2], colour).any(axis=1)
    return np.flatnonzero(column)


def test_the_loss_graph_draws_a_and_b_on_a_log_axis(app):
    """B steps down a decade at a time: its three levels lie equally far apart in pixels."""
    records = []
    for i in range(0, 1201, 25):
        b = 1.0 if i < 400 else 0.1 if i < 800 else 0.01
        records.append(_step(i, 0.3, b))
    graph = LossGraph(smoothing=0.0)
    graph.resize(*SIZE)
    graph.set_history(records)
    pixels = _pixels(graph)
    rect = graph.plot_rect()
    assert rect.left() > 30 and rect.bottom() < SIZE[1] - 25  # room for the labels and axis titles

    levels = []
    for i, loss in ((200, 1.0), (600, 0.1), (1000, 0.01)):
        rows = _rows_of(pixels, B_COLOUR, graph.to_x(i))
        assert len(rows), f"no B curve at iteration {i}"
        levels.append(float(np.median(rows)))
        assert abs(levels[-1] - graph.to_y(loss)) <= 2.0
    first, second = levels[1] - levels[0], levels[2] - levels[1]
    assert first > 40 and abs(first - second) <= 2.0  # a decade is a decade, wherever it is

    a_rows = _rows_of(pixels, A_COLOUR, graph.to_x(600))
    assert len(a_rows) and abs(np.median(a_rows) - graph.to_y(0.3)) <= 2.0
    inside = pixels[int(rect.top()) + 2:int(rect.bottom()) - 2, int(rect.left()) + 2:int(rect.right()) - 2]
    assert not _near(inside, ROLLBACK_COLOUR).any()  # no roll-back, no marker


def test_events_are_not_losses_and_rollbacks_are_marked(app):
    records = [_step(i, 0.05 + 0.2 / (1 + i / 200), 0.06 + 0.25 / (1 + i / 300)) for i in range(0, 2001, 50)]
    records.insert(20, {"iter": 950, "event": "rollback", "reason": "loss or gradients not finite", "lr": 2.5e-5})
    records.insert(30, {"iter": 1400, "event": "eval", "loss_A": 40.0, "loss_B": 40.0})
    graph = LossGraph()
    graph.resize(*SIZE)
    graph.set_history(records)
    assert graph.rollbacks == [950.0]
    assert max(graph.series["loss_B"][1]) < 1.0  # the event's 40 is not in the curve
    rect = graph.plot_rect()
    assert graph.to_y(1.0) < rect.top()  # nor does it stretch the axis: 1 is above the top
    pixels = _pixels(graph)
    marker = _near(pixels[int(rect.top()) + 2:int(rect.bottom()) - 2], ROLLBACK_COLOUR, 60)
    columns = np.flatnonzero(marker.any(axis=0))
    assert len(columns) and abs(np.median(columns) - graph.to_x(950)) <= 1.5
    assert _near(pixels, B_COLOUR).sum() > 200 and _near(pixels, A_COLOUR).sum() > 200


def test_smoothing_follows_the_factor(app):
    noisy = [_step(i, 0.1 * (2.0 if i % 2 else 0.5), 0.1) for i in range(40)]
    graph = LossGraph(smoothing=0.0)
    graph.set_history(noisy)
    assert graph.smoothed["loss_A"] == pytest.approx(graph.series["loss_A"][1])
    graph.set_smoothing(0.9)
    tail = np.log10(graph.smoothed["loss_A"][20:])
    assert np.ptp(tail) < 0.25 * np.ptp(np.log10(graph.series["loss_A"][1]))
    assert abs(np.mean(tail) - np.log10(0.1)) < 0.1  # a geometric mean on a log axis
    with pytest.raises(ValueError):
        graph.set_smoothing(1.0)


def test_empty_and_one_point_histories_paint(app):
    graph = LossGraph()
    graph.resize(*SIZE)
    for records in ([], [{"iter": 10, "event": "rollback", "lr": 1e-5}], [{"iter": 5, "loss_A": None}]):
        graph.set_history(records)
        assert graph.empty
        pixels = _pixels(graph)
        assert not _near(pixels, A_COLOUR).any() and not _near(pixels, B_COLOUR).any()
        assert (pixels.max(axis=2) > 150).any()  # the "no losses yet" note
    graph.set_history([_step(100, 0.2, 0.3)])
    assert not graph.empty
    pixels = _pixels(graph)
    rect = graph.plot_rect()
    inside = pixels[int(rect.top()):int(rect.bottom()), int(rect.left()):int(rect.right()) + 4]
    assert _near(inside, B_COLOUR).any()  # a single point is a dot
    graph.resize(360, 200)  # its minimum size still paints
    assert _near(_pixels(graph), A_COLOUR).any()


# --- the yaw histogram ------------------------------------------------------------------------

def test_the_yaw_histogram_shows_counts_gaps_and_the_current_bin(app):
    yaws = [-42.0, -3.0, -1.0, 2.0, 4.0, 5.0, 6.0, 8.0, 12.0, 15.0, 33.0, None]  # the synthetic faceset's
    chart = YawHistogram()
    chart.resize(*SIZE)
    chart.set_yaws(yaws, current=12.0)
    assert chart.counts == yaw_bins(yaws) and chart.total == 11 and chart.without_yaw == 1
    assert chart.current_bin == 10  # 10 .. 20 degrees
    pixels = _pixels(chart)

    def column(index):
        r = chart.bin_rect(index)
        return pixels[int(r.top()) + 1:int(r.bottom()) - 4, int(r.left()) + 3:int(r.right()) - 2]

    full, empty, current = 9, 0, 10  # 0 .. 10 holds 5 faces; -90 .. -80 none
    assert chart.counts[full] == 5 and chart.counts[empty] == 0
    assert _near(column(full), BAR_COLOUR, 12).sum() > 100
    assert not _near(column(empty), BAR_COLOUR, 40).any() and not _near(column(empty), CURRENT_COLOUR, 40).any()
    r = chart.bin_rect(empty)
    assert _near(pixels[int(r.bottom()) - 2, int(r.left()) + 3:int(r.right()) - 2], EMPTY_COLOUR, 12).all()
    assert _near(column(current), CURRENT_COLOUR, 12).sum() > 50
    assert not _near(column(current), BAR_COLOUR, 12).any()
    heights = {i: chart.bar_rect(i).height() for i in (full, current)}
    assert heights[full] == pytest.approx(2.5 * heights[current])  # 5 faces to 2

    chart.set_yaws([], current=None)  # nothing to show: no bars, no crash
    pixels = _pixels(chart)
    assert chart.total == 0 and not _near(pixels, BAR_COLOUR, 12).any()
    chart.set_yaws([3.0], current=-60.0)  # the current face filtered out: its bin is empty
    assert chart.current_bin == 3 and chart.counts[3] == 0
    _pixels(chart)
