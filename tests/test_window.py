"""The artist's window, offscreen, driving real engine jobs: an extraction, a training paused and
resumed (against an uninterrupted CLI run), an attach to a CLI training in progress, a render,
and the training's own records (`train.monitor`) that the Train tab reads."""

from __future__ import annotations

import os

os.environ["QT_QPA_PLATFORM"] = "offscreen"  # before any Qt import

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

import PySide6  # noqa: F401  (a declared dependency: missing, this file errors, it does not skip)
from conftest import make_astronaut_shot, write_faceset
from vfxswap.hosts.qt import QtWidgets
from vfxswap.train import monitor

REFS = ["--release-ref=TEST-RELEASE-1"]
# the quick preset, small and fast: a few iterations of a few faces, logged every step
TRAIN = {"iters": "8", "batch": "2", "workers": "0", "log_every": "1", "preview_every": "4", "save_every": "1000"}


@pytest.fixture(scope="module")
def app():
    return QtWidgets.QApplication.instance() or QtWidgets.QApplication([])


@pytest.fixture(scope="module")
def shot(tmp_path_factory):
    return make_astronaut_shot(tmp_path_factory.mktemp("windowshot"), frames=3)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("pair")
    return write_faceset(root / "A", seed=1), write_faceset(root / "B", seed=2)


def _until(app, done, timeout=120.0, what="the job", log=None):
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.02)
    app.processEvents()
    assert done(), f"{what} did not happen in time" + (f":\n{log()}" if log else "")


def _train_tab(pair, model):
    from vfxswap.hosts.train_tab import TrainTab

    tab = TrainTab()
    tab.set_fields(src=pair[0], dst=pair[1], model=model)
    tab.options.widgets["release_ref"].setText("TEST-RELEASE-1")
    for name, value in TRAIN.items():
        tab.options.widgets[name].setText(value)
    return tab


def _cli_train(pair, model, **extra):
    words = [f"--{k.replace('_', '-')}={v}" for k, v in {**TRAIN, **extra}.items()]
    return [sys.executable, "-m", "vfxswap", "train", f"--src={pair[0]}", f"--dst={pair[1]}", f"--model={model}",
            *REFS, *words]


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


# --- the Extract tab ------------------------------------------------------------------------------


def test_the_extract_tab_runs_a_real_extraction_with_progress_and_the_landmark_overlay(app, shot, tmp_path):
    from vfxswap.faceset import Faceset
    from vfxswap.hosts.extract_tab import ExtractTab

    tab = ExtractTab()
    assert not tab.run() and "no source given" in tab.log_view.toPlainText()
    tab.source_edit.setText(str(shot / "plates" / "plate.####.exr"))
    tab.out_edit.setText(str(tmp_path / "fs"))
    for name, value in (("detector", "dlib"), ("landmarker", "dlib")):
        tab.options.widgets[name].setCurrentText(value)
    tab.options.widgets["size"].setText("96")
    job = tab.build_job()
    assert "--detector=dlib" in job.command() and "--size=96" in job.command()
    assert "--progress=json" in job.command() and f"--debug-dir={tmp_path / 'fs' / 'debug'}" in job.command()
    rates = []
    tab.jobs.event.connect(lambda _n, e: rates.append(e.get("rate")) if e.get("event") == "progress" else None)
    assert tab.run()
    _until(app, lambda: tab.result is not None, what="the extraction", log=tab.log_view.toPlainText)
    assert tab.result.ok, tab.log_view.toPlainText()
    with Faceset(tmp_path / "fs") as fs:
        assert len(fs.faces()) == 3  # one face on each of the 3 plates
    assert any(r for r in rates), "no frames/s reached the tab"
    assert "frames/s" in tab.rate_label.text() and not tab.rate_label.text().startswith("–")
    assert tab.progress.value() == 100
    assert tab.overlay_path is not None and tab.overlay_path.name.endswith(".1003.png")  # the last frame
    assert not tab.image_label.pixmap().isNull()


def test_the_extract_tab_names_a_bad_option_instead_of_running(app, tmp_path):
    from vfxswap.hosts.extract_tab import ExtractTab

    tab = ExtractTab()
    tab.source_edit.setText(str(tmp_path / "plate.####.exr"))
    tab.out_edit.setText(str(tmp_path / "fs"))
    tab.options.widgets["size"].setText("big")
    assert not tab.run()
    assert "--size 'big'" in tab.log_view.toPlainText()


# --- the Train tab --------------------------------------------------------------------------------


def test_pause_and_resume_in_the_train_tab_end_as_an_uninterrupted_cli_run(app, pair, tmp_path):
    from safetensors.numpy import load_file

    straight = tmp_path / "straight"
    done = subprocess.run(_cli_train(pair, straight), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]

    model = tmp_path / "paused"
    tab = _train_tab(pair, model)
    assert tab.start()
    assert tab.state == "running"
    _until(app, lambda: (monitor.live(model) or monitor.Live("", 0, 0, 0, 0, 0, "", 0)).iteration >= 3,
           what="iteration 3", log=tab.log_view.toPlainText)
    assert tab.pause() and tab.state == "stopping"
    assert "pause pending" in tab.status_label.text() and not tab.pause_button.isEnabled()
    _until(app, lambda: tab.state == "paused", what="the pause", log=tab.log_view.toPlainText)
    paused_at = tab._saved_iteration()
    assert 3 <= paused_at < 8
    assert monitor.live(model) is None  # the run said it ended
    assert tab.resume_button.isEnabled() and not tab.pause_button.isEnabled()
    assert f"paused at iteration {paused_at}" in tab.status_label.text()
    assert tab.resume() and tab.state == "running"
    _until(app, lambda: tab.state == "idle", what="the resumed run's end", log=tab.log_view.toPlainText)
    assert tab.result.ok, tab.log_view.toPlainText()

    # the same iteration, the same files, and (resume is exact) the same weights and losses
    manifests = [json.loads((m / "manifest.json").read_text()) for m in (straight, model)]
    assert manifests[0]["iteration"] == manifests[1]["iteration"] == 8
    top = [{p.name for p in m.iterdir() if p.is_file()} for m in (straight, model)]
    assert top[0] == top[1] == {"weights.safetensors", "optimizer.safetensors", "rng.safetensors", "manifest.json",
                                "history.jsonl", "sessions.jsonl"}
    # what the pause adds is what any save adds: the preview at its iteration, and, once the end
    # is saved over it, the pause's save kept as a backup
    assert _files(straight) <= _files(model)
    pause_preview = {f"previews/preview_{paused_at:08d}.png"} - _files(straight)  # unless one was due there
    assert _files(model) - _files(straight) == pause_preview | {
        f"backups/{paused_at:08d}/{name}" for name in ("weights.safetensors", "optimizer.safetensors",
                                                        "rng.safetensors", "manifest.json")}
    losses = [[(r["iter"], r["loss"]) for r in monitor.steps(monitor.json_lines(m / monitor.HISTORY))]
              for m in (straight, model)]
    assert losses[0] == losses[1] and [i for i, _ in losses[0]] == list(range(1, 9))
    a, b = load_file(straight / "weights.safetensors"), load_file(model / "weights.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    # two sessions: to the pause (stopped by SIGTERM), then to the end
    sessions = monitor.sessions(model)
    assert [(s["start_iteration"], s["end_iteration"], s["ended_by"]) for s in sessions] == [
        (0, paused_at, "stopped by SIGTERM"), (paused_at, 8, "finished")]
    assert tab.sessions_table.rowCount() == 2
    assert tab.graph.empty is False
    assert tab.preview_path is not None and tab.preview_path.name == "preview_00000008.png"
    assert "iteration 8 / 8" in tab.figures_label.text()
    assert tab.status_label.text() == "no training running; the model is saved at iteration 8"


def test_a_session_s_options_load_into_the_form(app, pair, tmp_path):
    model = tmp_path / "m"
    done = subprocess.run(_cli_train(pair, model, iters=2, lr=0.0003), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    from vfxswap.hosts.train_tab import TrainTab

    tab = TrainTab()
    tab.set_fields(model=model)
    assert tab.sessions_table.rowCount() == 1
    assert tab.load_session(0)
    assert tab.src_edit.text() == str(pair[0]) and tab.dst_edit.text() == str(pair[1])
    values = tab.options.values()
    assert values["lr"] == pytest.approx(3e-4) and values["iters"] == 2 and values["batch"] == 2
    assert "release_ref" not in values  # consent paperwork is the manifest's, not a session option


def test_the_train_tab_attaches_read_only_to_a_cli_training_in_progress(app, pair, tmp_path):
    model = tmp_path / "m"
    proc = subprocess.Popen(_cli_train(pair, model, iters=400), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    try:
        from vfxswap.hosts.train_tab import TrainTab

        tab = TrainTab()
        tab.set_fields(model=model)
        _until(app, lambda: tab.state == "attached" and tab.graph.empty is False, timeout=180,
               what="the attach", log=lambda: proc.stderr.read() if proc.poll() is not None else "")
        assert not (tab.start_button.isEnabled() or tab.pause_button.isEnabled() or tab.stop_button.isEnabled()
                    or tab.resume_button.isEnabled())
        assert not tab.options.widgets["iters"].isEnabled()
        assert f"pid {proc.pid}" in tab.status_label.text() and "read-only" in tab.status_label.text()
        assert "/ 400" in tab.figures_label.text() and "ETA" in tab.figures_label.text()
        proc.terminate()  # the CLI's own stop: it saves and ends
        proc.wait(timeout=120)
        _until(app, lambda: tab.state == "idle", what="the detach")
        assert monitor.sessions(model)[-1]["ended_by"] == "stopped by SIGTERM"
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_killed_training_is_told_apart_from_a_running_one(app, tmp_path):
    from vfxswap.hosts.train_tab import TrainTab

    record = monitor.RunRecord(tmp_path, iteration=0, iters=10, options={"iters": 10})
    record.update(4, loss_A=0.5, loss_B=0.25, samples_per_s=3.0)
    assert monitor.live(tmp_path).state == "running"
    status = json.loads((tmp_path / monitor.STATUS).read_text())
    status["pid"] = 2 ** 22 + 12345  # no such process on this host: killed -9
    (tmp_path / monitor.STATUS).write_text(json.dumps(status))
    assert monitor.live(tmp_path).state == "gone"
    tab = TrainTab()
    tab.set_fields(model=tmp_path)
    assert tab.state == "idle" and "ended without saying so" in tab.status_label.text()
    assert tab.sessions_table.rowCount() == 1
    assert tab.sessions_table.item(0, 1).text() == "0 → 4 of 10"
    assert tab.sessions_table.item(0, 6).text().startswith("killed?")
    status.update(host="another-host", updated=time.time() - monitor.STALE_S - 5)
    (tmp_path / monitor.STATUS).write_text(json.dumps(status))
    assert monitor.live(tmp_path).state == "gone"  # silent too long on a host we cannot ask
    status["updated"] = time.time()
    (tmp_path / monitor.STATUS).write_text(json.dumps(status))
    assert monitor.live(tmp_path).active
    record.end(0, "finished")  # nothing trained: no session line, no status
    assert monitor.live(tmp_path) is None and monitor.sessions(tmp_path) == []


def test_the_history_reader_reads_only_new_lines_and_restarts_on_a_rewrite(tmp_path):
    path = tmp_path / monitor.HISTORY
    path.write_text('{"iter": 1, "loss": 1.0, "loss_A": 1, "loss_B": 1, "time": 10}\n{"iter": 2, "lo')
    reader = monitor.HistoryReader(tmp_path)
    assert [r["iter"] for r in reader.read()[0]] == [1]  # the line being written waits
    with open(path, "a") as f:
        f.write('ss": 0.5, "loss_A": 0.5, "loss_B": 0.5, "time": 12}\n{"iter": 2, "event": "rollback"}\n')
    new, reset = reader.read()
    assert [r["iter"] for r in new] == [2, 2] and not reset
    assert [r["iter"] for r in monitor.steps(reader.records)] == [1, 2]
    assert monitor.rate_and_eta(reader.records, 10) == (0.5, 16.0)
    path.write_text('{"iter": 1, "loss": 1.0, "loss_A": 1, "loss_B": 1}\n')  # a resume trimmed it
    new, reset = reader.read()
    assert reset and [r["iter"] for r in reader.records] == [1]


# --- the window -----------------------------------------------------------------------------------


def test_the_window_has_a_tab_per_stage_and_renders_from_the_render_tab(app, shot, tmp_path):
    from vfxswap.hosts.window import TABS, VfxSwapWindow

    window = VfxSwapWindow()
    assert [window.tabs.tabText(i) for i in range(window.tabs.count())] == ["Extract", "Faceset", "Train", "Render"]
    assert [window.tabs.widget(i) for i in range(4)] == [getattr(window, name) for name in TABS]
    panel = window.open_render_job(model="passthrough", plates=shot / "plates" / "plate.####.exr",
                                   faceset=shot / "faceset", out=tmp_path / "out")
    assert window.tabs.currentWidget() is panel
    assert panel.run()
    _until(app, lambda: panel.result is not None, what="the render", log=panel.log_view.toPlainText)
    assert panel.result.ok and panel.result.written == [1001, 1002, 1003]
    window.close()


def test_the_window_never_imports_torch_in_the_ui(tmp_path):
    code = ("import os, sys; os.environ['QT_QPA_PLATFORM'] = 'offscreen'\n"
            "from vfxswap.hosts.qt import QtWidgets\n"
            "app = QtWidgets.QApplication([])\n"
            "from vfxswap.hosts.window import VfxSwapWindow\n"
            "w = VfxSwapWindow(); w.show(); app.processEvents()\n"
            f"w.train.set_fields(model={str(tmp_path)!r}); w.train.refresh()\n"
            "print('torch' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "False"


def test_progress_json_reports_each_stage_throttled_and_always_its_end():
    import io

    from vfxswap import progress as progress_module

    stream = io.StringIO()
    bar = progress_module.JsonProgress(range(5), desc="detect plate", unit="frame", stream=stream)
    assert list(bar) == [0, 1, 2, 3, 4]
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert events[0]["done"] == 1 and events[-1]["done"] == 5  # the first at once, the last always
    assert len(events) < 5 + 1  # throttled: not one per step (five steps in well under EVERY_S)
    assert all(e["event"] == "progress" and e["stage"] == "detect plate" and e["total"] == 5 for e in events)
    assert events[-1]["rate"] > 0
    bar = progress_module.JsonProgress(total=10, desc="train", unit="it", stream=stream)
    bar.set_postfix(loss="0.1234")
    bar.update(3)
    assert json.loads(stream.getvalue().splitlines()[-1]) | {"rate": 0} == {
        "event": "progress", "stage": "train", "done": 3, "total": 10, "unit": "it", "loss": "0.1234", "rate": 0}
