"""A Qt panel for one render job: fields, Run/Cancel, progress, the last rendered frame, the log.

The same widget runs standalone (`vfxswap panel`, or `python -m vfxswap.hosts.panel`) and
docked in Nuke (`nukescripts.panels.registerWidgetAsPanel("vfxswap.hosts.panel.SwapPanel", ...)`).
It builds a `RenderJob` from its fields and runs it with `JobRunner`, as every host does: the
engine is a subprocess, read on a worker thread; its events and the last frame's preview reach
the UI thread through Qt signals (queued), so the UI never waits on the engine.
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

import numpy as np

from vfxswap.errors import VfxSwapError
from vfxswap.hosts.jobs import JobResult, JobRunner, RenderJob
from vfxswap.hosts.qt import QtCore, QtGui, QtWidgets, Signal, run_window
from vfxswap.jobspec import RenderOptions, spec

PREVIEW_SIDE = 480
OPTIONS = spec(RenderOptions)  # choices, defaults and help of the fields below: the engine's own


def frame_preview(layer_path: str, plates: str | None = None, frame: int | None = None, *,
                  plate_space: str | None = None, ocio: str | None = None,
                  max_side: int = PREVIEW_SIDE) -> np.ndarray:
    """(h, w, 3) uint8 display image of a rendered face layer, over its plate when it can be read.

    The layer is premultiplied RGBA in the plate's scene-linear space, so `over` is done in
    linear light and the result goes through the OCIO view once, as a comp would.
    """
    from vfxswap.color import ColorPipeline
    from vfxswap.plates import find_sequence, read_image

    layer = read_image(layer_path)
    layer = layer.select(["R", "G", "B", "A"]) if "A" in layer.channels else layer.select(["R", "G", "B"])
    face = layer.on_display_window().astype(np.float32)
    if face.shape[2] == 3:
        face = np.concatenate([face, np.ones(face.shape[:2] + (1,), np.float32)], 2)
    rgb = face[..., :3]
    space = plate_space or layer.colorspace
    if plates and frame is not None:
        try:
            plate = read_image(find_sequence(plates).path(frame))
            px = plate.on_display_window().astype(np.float32)[..., :3]
            if px.shape[:2] == face.shape[:2]:
                rgb = face[..., :3] + px * (1.0 - face[..., 3:4])
            space = plate_space or plate.colorspace or space
        except Exception:  # no plate to show under the face: the layer alone still tells the story
            pass
    try:
        pipe = ColorPipeline(space, config=ocio)
    except Exception:
        pipe = ColorPipeline(None, config=ocio)
    return np.ascontiguousarray(pipe.to_display(np.nan_to_num(rgb), max_side=max_side))


def to_pixmap(rgb: np.ndarray) -> "QtGui.QPixmap":
    """uint8 (h, w, 3) -> QPixmap (call on the UI thread)."""
    h, w = rgb.shape[:2]
    data = np.ascontiguousarray(rgb[..., :3], dtype=np.uint8)
    image = QtGui.QImage(data.data, w, h, 3 * w, QtGui.QImage.Format.Format_RGB888)
    return QtGui.QPixmap.fromImage(image.copy())  # copy: the QImage must not outlive `data`


class _Bridge(QtCore.QObject):
    """Lives on the UI thread; the worker thread emits, Qt queues the calls to the UI."""

    event = Signal(object)  # one engine event (dict)
    preview = Signal(object, object)  # frame, uint8 display image
    finished = Signal(object)  # JobResult


class SwapPanel(QtWidgets.QWidget):
    """Fields for a render job, Run/Cancel, progress and frames/s, the last frame, the log."""

    jobFinished = Signal(object)  # JobResult, for hosts that want to load the outputs

    def __init__(self, parent=None, *, python: str | None = None, env: dict | None = None):
        super().__init__(parent)
        self.setWindowTitle("vfxswap render")
        self.python = python or sys.executable  # the engine's interpreter (a host's may differ)
        self.env = env
        self.runner: JobRunner | None = None
        self.result: JobResult | None = None
        self.last_frame: int | None = None
        self._thread: threading.Thread | None = None
        self._job: RenderJob | None = None
        self._bridge = _Bridge(self)
        self._bridge.event.connect(self._on_event)
        self._bridge.preview.connect(self._on_preview)
        self._bridge.finished.connect(self._on_finished)
        self._build()
        self._set_running(False)

    # --- layout --------------------------------------------------------------------------------

    def _path_row(self, placeholder: str, folder: bool) -> tuple[QtWidgets.QLineEdit, QtWidgets.QWidget]:
        edit = QtWidgets.QLineEdit()
        edit.setPlaceholderText(placeholder)
        button = QtWidgets.QToolButton()
        button.setText("…")
        button.clicked.connect(lambda: self._browse(edit, folder))
        row = QtWidgets.QWidget()
        lay = QtWidgets.QHBoxLayout(row)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(edit)
        lay.addWidget(button)
        return edit, row

    @staticmethod
    def _choice(name: str) -> QtWidgets.QComboBox:
        combo = QtWidgets.QComboBox()
        combo.addItems([str(c) for c in OPTIONS[name].choices])
        combo.setCurrentText(str(OPTIONS[name].default))
        combo.setToolTip(OPTIONS[name].help)
        return combo

    @staticmethod
    def _number(name: str) -> QtWidgets.QDoubleSpinBox:
        """A spin box for a float option: its slider range ten times over (a hard limit, unlike a
        slider's), never past 0 where the range starts there."""
        low, high = OPTIONS[name].ui_range
        spin = QtWidgets.QDoubleSpinBox()
        spin.setRange(low * 10.0, high * 10.0)
        spin.setDecimals(1)
        spin.setValue(OPTIONS[name].default)
        spin.setToolTip(OPTIONS[name].help)
        return spin

    @staticmethod
    def _check(name: str, label: str) -> QtWidgets.QCheckBox:
        box = QtWidgets.QCheckBox(label)
        box.setChecked(bool(OPTIONS[name].default))
        box.setToolTip(OPTIONS[name].help)
        return box

    def _build(self) -> None:
        form = QtWidgets.QFormLayout()
        self.model_edit, row = self._path_row("model folder, or passthrough", True)
        form.addRow("Model", row)
        self.plates_edit, row = self._path_row("plates pattern, e.g. /shots/sh010/plate.####.exr", False)
        form.addRow("Plates", row)
        self.faceset_edit, row = self._path_row("the plates' faceset folder", True)
        form.addRow("Faceset", row)
        self.out_edit, row = self._path_row("output folder for face.####.exr", True)
        form.addRow("Output", row)
        self.frames_edit = QtWidgets.QLineEdit()
        self.frames_edit.setPlaceholderText("all, or e.g. 1001-1100, 1001-1100x2")
        form.addRow("Frames", self.frames_edit)

        self.mask_combo = self._choice("mask")
        self.color_combo = self._choice("color")
        self.erode_spin = self._number("erode")
        self.blur_spin = self._number("blur")
        self.color_smooth_spin = self._number("color_smooth")
        mask_row = QtWidgets.QHBoxLayout()
        for label, widget in (("", self.mask_combo), ("erode", self.erode_spin), ("blur", self.blur_spin)):
            if label:
                mask_row.addWidget(QtWidgets.QLabel(label))
            mask_row.addWidget(widget)
        form.addRow("Mask", mask_row)
        color_row = QtWidgets.QHBoxLayout()
        for widget in (self.color_combo, QtWidgets.QLabel("smooth (frames)"), self.color_smooth_spin):
            color_row.addWidget(widget)
        form.addRow("Colour match", color_row)

        self.layers_check = self._check("layers", "layers (raw, matte, stmap)")
        self.comp_check = self._check("comp", "comp.####.exr")
        self.preview_check = self._check("preview", "preview.mp4")
        self.all_faces_check = self._check("all_faces", "every face in the plates (default: only the model's B)")
        form.addRow("Faces", self.all_faces_check)
        checks = QtWidgets.QHBoxLayout()
        for box in (self.layers_check, self.comp_check, self.preview_check):
            checks.addWidget(box)
        checks.addStretch(1)
        form.addRow("Also write", checks)

        self.run_button = QtWidgets.QPushButton("Run")
        self.run_button.clicked.connect(self.run)
        self.cancel_button = QtWidgets.QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        self.progress = QtWidgets.QProgressBar()
        self.progress.setRange(0, 100)
        self.progress.setValue(0)
        self.rate_label = QtWidgets.QLabel("– frames/s")
        buttons = QtWidgets.QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.progress, 1)
        buttons.addWidget(self.rate_label)

        self.image_label = QtWidgets.QLabel("the last rendered frame shows here")
        self.image_label.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
        self.image_label.setMinimumSize(PREVIEW_SIDE, 270)
        self.image_label.setStyleSheet("background: #222; color: #888;")
        self.frame_label = QtWidgets.QLabel("")

        self.log_view = QtWidgets.QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(5000)
        self.log_view.setMinimumHeight(110)

        left = QtWidgets.QVBoxLayout()
        left.addLayout(form)
        left.addLayout(buttons)
        left.addWidget(QtWidgets.QLabel("Log"))
        left.addWidget(self.log_view, 1)
        right = QtWidgets.QVBoxLayout()
        right.addWidget(self.image_label, 1)
        right.addWidget(self.frame_label)
        top = QtWidgets.QHBoxLayout(self)
        top.addLayout(left, 3)
        top.addLayout(right, 2)

    def _browse(self, edit: QtWidgets.QLineEdit, folder: bool) -> None:
        start = edit.text() or str(Path.cwd())
        if folder:
            path = QtWidgets.QFileDialog.getExistingDirectory(self, "Choose a folder", start)
        else:
            path, _ = QtWidgets.QFileDialog.getOpenFileName(self, "Choose a plate frame", start)
            if path:  # one frame's file names the sequence; show it as a pattern
                from vfxswap.plates import find_sequence

                try:
                    path = str(find_sequence(path).pattern.hashes)
                except Exception:
                    pass
        if path:
            edit.setText(path)

    # --- the job -------------------------------------------------------------------------------

    def set_fields(self, *, model=None, plates=None, faceset=None, out=None, frames=None) -> None:
        for edit, value in ((self.model_edit, model), (self.plates_edit, plates), (self.faceset_edit, faceset),
                            (self.out_edit, out), (self.frames_edit, frames)):
            if value is not None:
                edit.setText(str(value))

    def build_job(self) -> RenderJob:
        """The job the fields describe; ValueError naming the first missing field."""
        model, plates, out = (e.text().strip() for e in (self.model_edit, self.plates_edit, self.out_edit))
        for name, value in (("model", model), ("plates", plates), ("output folder", out)):
            if not value:
                raise ValueError(f"no {name} given")
        options = {"mask": self.mask_combo.currentText(), "color": self.color_combo.currentText(),
                   "erode": self.erode_spin.value(), "blur": self.blur_spin.value(),
                   "color_smooth": self.color_smooth_spin.value(), "all_faces": self.all_faces_check.isChecked(),
                   "layers": self.layers_check.isChecked(), "comp": self.comp_check.isChecked(),
                   "preview": self.preview_check.isChecked()}
        return RenderJob(model=model, plates=plates, out=out, faceset=self.faceset_edit.text().strip() or None,
                         frames=self.frames_edit.text().strip() or None, options=options, python=self.python)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def log(self, text: str) -> None:
        self.log_view.appendPlainText(text)

    def run(self) -> bool:
        """Start the job the fields describe; False (and the reason in the log) when it cannot."""
        if self.running:
            return False
        try:
            job = self.build_job()
        except (ValueError, VfxSwapError) as exc:
            self.log(f"error: {exc}")
            return False
        self._job, self.result, self.last_frame = job, None, None
        self.progress.setValue(0)
        self.rate_label.setText("– frames/s")
        self.log("$ " + " ".join(job.command()))
        self.runner = JobRunner(job, env=self.env)
        self._set_running(True)
        self._thread = threading.Thread(target=self._work, args=(self.runner, job), daemon=True,
                                        name="vfxswap-panel-job")
        self._thread.start()
        return True

    def cancel(self) -> None:
        if self.runner is not None and self.running:
            self.log("cancelling…")
            self.runner.cancel()

    def _work(self, runner: JobRunner, job: RenderJob) -> None:
        """Worker thread: read the engine's events, make previews, hand both to the UI."""
        try:
            runner.start()
            for event in runner.events():
                self._bridge.event.emit(event)
                if event.get("event") == "frame" and event.get("path"):
                    try:
                        image = frame_preview(event["path"], job.plates, event.get("frame"),
                                              plate_space=job.options.get("plate_space"),
                                              ocio=job.options.get("ocio"))
                    except Exception as exc:  # a preview problem never stops the job
                        self._bridge.event.emit({"event": "log", "text": f"preview of frame "
                                                 f"{event.get('frame')}: {exc}"})
                    else:
                        self._bridge.preview.emit(event.get("frame"), image)
            result = runner.wait()
        except Exception as exc:  # the engine could not even start (bad interpreter, ...)
            result = JobResult(-1, list(runner.written), dict(runner.failed), False, f"{type(exc).__name__}: {exc}")
        self._bridge.finished.emit(result)

    # --- UI thread -----------------------------------------------------------------------------

    def _set_running(self, running: bool) -> None:
        self.run_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)

    def _on_event(self, event: dict) -> None:
        kind = event.get("event")
        if kind == "start":
            self.log(f"rendering {event.get('frames')} frame(s) {event.get('first')}-{event.get('last')} "
                     f"to {event.get('output')}")
        elif kind == "frame":
            total, done = event.get("total") or 0, event.get("done") or 0
            if total:
                self.progress.setValue(int(round(100 * done / total)))
            if event.get("fps") is not None:
                self.rate_label.setText(f"{float(event['fps']):.2f} frames/s")
            status = event.get("status")
            if status == "failed":
                self.log(f"frame {event.get('frame')}: error: {event.get('error', '')}")
            elif status == "no_face":
                self.log(f"frame {event.get('frame')}: no face (plate only)")
            elif status == "skipped":
                self.log(f"frame {event.get('frame')}: already complete, skipped")
        elif kind == "done":
            self.progress.setValue(100)
            self.log(f"done: wrote {len(event.get('written') or [])} frame(s)"
                     + (f", {len(event['failed'])} failed" if event.get("failed") else ""))
        elif kind == "log":
            self.log(str(event.get("text", "")))

    def _on_preview(self, frame, image: np.ndarray) -> None:
        self.last_frame = frame
        pixmap = to_pixmap(image)
        self.image_label.setPixmap(pixmap)
        self.frame_label.setText(f"frame {frame}")

    def _on_finished(self, result: JobResult) -> None:
        self.result = result
        self._set_running(False)
        if result.cancelled:
            self.log(f"cancelled after {len(result.written)} frame(s); every frame on disk is complete")
        elif result.ok:
            self.log("finished")
        else:
            self.log("error: " + (result.error or f"the engine exited with code {result.returncode}"))
        self.jobFinished.emit(result)

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        self.cancel()
        super().closeEvent(event)


def main(argv=None) -> int:
    """Run the panel standalone; fields can be prefilled from the command line."""
    parser = argparse.ArgumentParser(prog="vfxswap panel", description="render jobs in a small Qt window")
    for name in ("model", "plates", "faceset", "out", "frames"):
        parser.add_argument(f"--{name}")
    args, qt_args = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([sys.argv[0]] + qt_args)
    panel = SwapPanel()
    panel.set_fields(model=args.model, plates=args.plates, faceset=args.faceset, out=args.out, frames=args.frames)
    return run_window(app, panel, (1000, 620))  # closing cancels a running job


if __name__ == "__main__":
    sys.exit(main())
