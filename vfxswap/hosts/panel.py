"""The Render tab of the artist's window (`hosts.window`): one render job's fields, Run/Cancel,
progress, the last rendered frame, the log.

It builds a `RenderJob` from its fields and runs it as every host does (`hosts.qt_jobs`): the
engine is a subprocess read on a worker thread, which also decodes the last frame's preview;
both reach the UI thread through queued signals, so the UI never waits on the engine.
"""

from __future__ import annotations

import math

import numpy as np

from vfxswap.errors import VfxSwapError
from vfxswap.hosts.jobs import JobResult, RenderJob
from vfxswap.hosts.options_form import path_row
from vfxswap.hosts.qt import QtCore, QtGui, QtWidgets
from vfxswap.hosts.qt_jobs import JobTab
from vfxswap.jobspec import RenderOptions, normalise, spec

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


class SwapPanel(JobTab):
    """Fields for a render job, Run/Cancel, progress and frames/s, the last frame, the log.
    `jobFinished` is for hosts that load the outputs."""

    job_name = "render"

    def __init__(self, parent=None, *, python: str | None = None, env: dict | None = None):
        super().__init__(parent, python=python, env=env)
        self.setWindowTitle("vfxswap render")
        self.last_frame: int | None = None
        self._extra_options: dict = {}  # render options with no widget here (set_options keeps them)
        self._build()
        self._set_running(False)

    # --- layout --------------------------------------------------------------------------------

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
        self.model_edit, row = path_row("model folder, or passthrough", folder=True, parent=self)
        form.addRow("Model", row)
        self.plates_edit, row = path_row("plates pattern, e.g. /shots/sh010/plate.####.exr", folder=False, parent=self)
        form.addRow("Plates", row)
        self.faceset_edit, row = path_row("the plates' faceset folder", folder=True, parent=self)
        form.addRow("Faceset", row)
        self.out_edit, row = path_row("output folder for face.####.exr", folder=True, parent=self)
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

    # --- the job -------------------------------------------------------------------------------

    def set_fields(self, *, model=None, plates=None, faceset=None, out=None, frames=None) -> None:
        for edit, value in ((self.model_edit, model), (self.plates_edit, plates), (self.faceset_edit, faceset),
                            (self.out_edit, out), (self.frames_edit, frames)):
            if value is not None:
                edit.setText(str(value))

    def set_options(self, options: dict) -> None:
        """Set the option widgets from render options as `RenderOptions` names them (field names or
        flags, values native or text, as `jobspec.normalise` takes them): mask, color, erode, blur,
        color_smooth, all_faces, layers, comp, preview; None puts a widget back to the engine's
        default. Any other render option (a Nuke node's face_type, say) is kept and passed on to the
        jobs `build_job` makes (None drops a kept one); the job's own fields (model, plates, out,
        faceset, frames) go to `set_fields`. A key that is no render option, or a bad value, is left
        out and named in the log."""
        widgets = {"mask": self.mask_combo, "color": self.color_combo, "erode": self.erode_spin,
                   "blur": self.blur_spin, "color_smooth": self.color_smooth_spin,
                   "all_faces": self.all_faces_check, "layers": self.layers_check, "comp": self.comp_check,
                   "preview": self.preview_check}
        fields = {}
        for key, raw in options.items():
            try:
                ((name, value),) = normalise(RenderOptions, {key: raw}).items()
            except VfxSwapError as exc:
                self.log(f"option {key!r} left out: {exc}")
                continue
            if name == "progress":  # the job sets it itself
                continue
            if name in ("model", "plates", "out", "faceset", "frames"):
                fields[name] = value
                continue
            widget = widgets.get(name)
            if widget is None:
                if value is None:
                    self._extra_options.pop(name, None)
                else:
                    self._extra_options[name] = value
                continue
            if value is None:
                value = OPTIONS[name].default
            if isinstance(widget, QtWidgets.QComboBox):
                widget.setCurrentText(str(value))
            elif isinstance(widget, QtWidgets.QCheckBox):
                widget.setChecked(bool(value))
            elif isinstance(value, float) and math.isfinite(value):
                if not widget.minimum() <= value <= widget.maximum():
                    self.log(f"option {name} {value:g}: outside {widget.minimum():g}..{widget.maximum():g}, "
                             f"set to {min(max(value, widget.minimum()), widget.maximum()):g}")
                widget.setValue(value)
            else:  # a farm template's variable, NaN: no value this widget can show
                self.log(f"option {name} {value!r} left out: not a finite number")
        self.set_fields(**fields)

    def build_job(self) -> RenderJob:
        """The job the fields describe; ValueError naming the first missing field."""
        model, plates, out = (e.text().strip() for e in (self.model_edit, self.plates_edit, self.out_edit))
        for name, value in (("model", model), ("plates", plates), ("output folder", out)):
            if not value:
                raise ValueError(f"no {name} given")
        options = {**self._extra_options,
                   "mask": self.mask_combo.currentText(), "color": self.color_combo.currentText(),
                   "erode": self.erode_spin.value(), "blur": self.blur_spin.value(),
                   "color_smooth": self.color_smooth_spin.value(), "all_faces": self.all_faces_check.isChecked(),
                   "layers": self.layers_check.isChecked(), "comp": self.comp_check.isChecked(),
                   "preview": self.preview_check.isChecked()}
        return RenderJob(model=model, plates=plates, out=out, faceset=self.faceset_edit.text().strip() or None,
                         frames=self.frames_edit.text().strip() or None, options=options, python=self.python)

    def _started(self, job: RenderJob) -> None:
        self.last_frame = None
        self.progress.setValue(0)
        self.rate_label.setText("– frames/s")

    def _on_worker(self, job: RenderJob):
        return lambda _name, event: self._preview_of(job, event)

    @staticmethod
    def _preview_of(job: RenderJob, event: dict) -> list[dict]:
        """Worker thread: a written frame's display image, as a `preview` event for the UI."""
        if event.get("event") != "frame" or not event.get("path"):
            return []
        from vfxswap.plates.frames import is_movie
        from vfxswap.render.render import decoded_movie_pattern

        plates = decoded_movie_pattern(job.out, job.plates) if is_movie(job.plates) else job.plates
        try:
            image = frame_preview(event["path"], plates, event.get("frame"),
                                  plate_space=job.options.get("plate_space"), ocio=job.options.get("ocio"))
        except Exception as exc:  # a preview problem never stops the job
            return [{"event": "log", "text": f"preview of frame {event.get('frame')}: {exc}"}]
        return [{"event": "preview", "frame": event.get("frame"), "image": image}]

    # --- UI thread -----------------------------------------------------------------------------

    def _on_event(self, _name: str, event: dict) -> None:
        kind = event.get("event")
        if kind == "preview":
            self._on_preview(event["frame"], event["image"])
            return
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

    def _cancelled_text(self, result: JobResult) -> str:
        return f"cancelled after {len(result.written)} frame(s); every frame on disk is complete"
