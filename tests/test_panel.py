"""The Render tab (`SwapPanel`), offscreen: fields -> RenderJob, a real passthrough render, a failing job, a screenshot."""

from __future__ import annotations

import os

os.environ["QT_QPA_PLATFORM"] = "offscreen"  # before any Qt import

import time

import pytest

import PySide6  # noqa: E402,F401  (a declared dependency: missing, this file errors, it does not skip)
from vfxswap.hosts.panel import SwapPanel  # noqa: E402
from vfxswap.hosts.qt import BINDING, QtWidgets  # noqa: E402
from conftest import make_astronaut_shot



@pytest.fixture(scope="module")
def app():
    return QtWidgets.QApplication.instance() or QtWidgets.QApplication([])


@pytest.fixture(scope="module")
def shot(tmp_path_factory):
    return make_astronaut_shot(tmp_path_factory.mktemp("panelshot"), frames=3)


def _wait(app, panel, timeout=45.0):
    deadline = time.monotonic() + timeout
    while panel.result is None and time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.01)
    app.processEvents()
    assert panel.result is not None, "the job did not finish in time:\n" + panel.log_view.toPlainText()
    return panel.result


def _fill(panel, shot, out, model="passthrough"):
    panel.set_fields(model=model, plates=shot / "plates" / "plate.####.exr", faceset=shot / "faceset", out=out)


def test_the_qt_shim_prefers_pyside6():
    assert BINDING == "PySide6"


def test_build_job_reads_every_field(app, tmp_path):
    panel = SwapPanel()
    with pytest.raises(ValueError, match="model"):
        panel.build_job()
    panel.set_fields(model="/models/m1", plates="/shots/plate.####.exr", faceset="/fs", out=str(tmp_path),
                     frames="1001-1010")
    panel.mask_combo.setCurrentText("hull")
    panel.color_combo.setCurrentText("mkl")
    panel.erode_spin.setValue(3.0)
    panel.blur_spin.setValue(1.5)
    panel.color_smooth_spin.setValue(4.0)
    panel.all_faces_check.setChecked(True)
    panel.comp_check.setChecked(True)
    panel.layers_check.setChecked(True)
    job = panel.build_job()
    assert (job.model, job.plates, job.faceset, job.out, job.frames) == (
        "/models/m1", "/shots/plate.####.exr", "/fs", str(tmp_path), "1001-1010")
    assert job.options == {"mask": "hull", "color": "mkl", "erode": 3.0, "blur": 1.5, "color_smooth": 4.0,
                           "all_faces": True, "layers": True, "comp": True, "preview": False}
    cmd = job.command()
    for flag, value in (("--mask", "hull"), ("--color", "mkl"), ("--erode", "3.0"), ("--blur", "1.5"),
                        ("--faceset", "/fs")):
        assert f"{flag}={value}" in cmd
    assert "--frames=1001-1010" in cmd  # one word: a pre-roll range such as -3-2 is not an option
    assert "--color-smooth=4.0" in cmd and "--all-faces" in cmd
    assert "--comp" in cmd and "--layers" in cmd and "--preview" not in cmd
    assert job.outputs()["comp"].endswith("comp.####.exr")


def test_a_real_render_runs_without_freezing_and_shows_the_last_frame(app, shot, tmp_path):
    panel = SwapPanel()
    panel.resize(1000, 620)
    panel.show()
    _fill(panel, shot, tmp_path / "out")
    panel.color_combo.setCurrentText("none")
    panel.comp_check.setChecked(True)
    assert panel.run()
    assert not panel.run_button.isEnabled() and panel.cancel_button.isEnabled()
    result = _wait(app, panel)
    log = panel.log_view.toPlainText()
    assert result.ok and result.written == [1001, 1002, 1003], log
    assert panel.progress.value() == 100
    assert "frames/s" in panel.rate_label.text() and not panel.rate_label.text().startswith("–")
    pixmap = panel.image_label.pixmap()
    assert pixmap is not None and not pixmap.isNull() and max(pixmap.width(), pixmap.height()) == 480
    assert panel.last_frame == 1003 and panel.frame_label.text() == "frame 1003"
    assert "error" not in log.lower(), log
    assert panel.run_button.isEnabled() and not panel.cancel_button.isEnabled()
    for f in (1001, 1002, 1003):
        assert (tmp_path / "out" / f"face.{f}.exr").is_file() and (tmp_path / "out" / f"comp.{f}.exr").is_file()

    shot_png = tmp_path / "panel.png"
    assert panel.grab().save(str(shot_png))
    assert shot_png.stat().st_size > 10_000
    panel.close()


def test_a_failing_job_shows_the_engine_error_in_the_log(app, shot, tmp_path):
    panel = SwapPanel()
    _fill(panel, shot, tmp_path / "out", model=str(tmp_path / "no-such-model"))
    assert panel.run()
    result = _wait(app, panel)
    log = panel.log_view.toPlainText()
    assert not result.ok and result.returncode == 1
    assert "no-such-model" in result.error
    assert "error: " + result.error in log
    assert "Traceback" not in log
    assert panel.image_label.pixmap() is None or panel.image_label.pixmap().isNull()


def test_missing_fields_are_reported_not_raised(app):
    panel = SwapPanel()
    assert not panel.run()
    assert "error: no model given" in panel.log_view.toPlainText()


def test_the_panel_command_takes_its_options_and_stops_on_sigterm(tmp_path):
    """`vfxswap panel --help` and `--model m` were refused (argparse's REMAINDER dropped leading
    options), and a SIGTERM left the window running until kill -9."""
    import signal
    import subprocess
    import sys
    import time

    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    helped = subprocess.run([sys.executable, "-m", "vfxswap", "panel", "--help"], capture_output=True, text=True,
                            env=env, timeout=60)
    assert helped.returncode == 0 and "--model" in helped.stdout
    proc = subprocess.Popen([sys.executable, "-m", "vfxswap", "panel", "--model", str(tmp_path / "m")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(4)  # up and in Qt's loop
    assert proc.poll() is None, proc.communicate()[1][-1000:]
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail("SIGTERM did not stop the panel")
