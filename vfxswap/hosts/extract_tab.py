"""The Extract tab: plates, a movie or stills in, a faceset out, with progress, frames/s and the
landmarks of the last frame drawn over it (the engine's `--debug-dir` frames), cancel.
"""

from __future__ import annotations

from pathlib import Path

from vfxswap.hosts.jobs import EngineJob, JobResult
from vfxswap.hosts.options_form import OptionsForm, path_row, scrolled
from vfxswap.hosts.qt import QtCore, QtGui, QtWidgets
from vfxswap.hosts.qt_jobs import JobTab
from vfxswap.jobspec import ExtractOptions, flags

GROUPS = [("faces", ["detector", "landmarker", "face_type", "size", "max_faces", "min_size", "min_score"]),
          ("frames and tracking", ["frames", "start", "detect_every", "detect_side", "smooth"]),
          ("colour and device", ["plate_space", "ocio", "device"])]
OVERLAY = "debug"  # the landmark overlays go to <faceset>/debug (the faceset is where faces are reviewed)
STAGES = {"detect": "detecting", "align": "aligning"}


class ExtractTab(JobTab):
    """Fields and options of an extraction, Run/Cancel, progress per pass, the overlay, the log.
    `jobFinished` tells the window, which opens the faceset in the Faceset tab."""

    job_name = "extract"

    def __init__(self, parent=None, *, python: str | None = None, env: dict | None = None):
        super().__init__(parent, python=python, env=env)
        self.overlay_path: Path | None = None
        self._build()
        self._poll = QtCore.QTimer(self)
        self._poll.timeout.connect(self.show_latest_overlay)
        self._set_running(False)

    def _build(self) -> None:
        top = QtWidgets.QFormLayout()
        self.source_edit, row = path_row("plates (plate.####.exr), a movie, or a folder of stills", folder=False,
                                         parent=self)
        top.addRow("Source", row)
        self.out_edit, row = path_row("faceset folder (created; an existing one is resumed)", folder=True, parent=self)
        top.addRow("Faceset", row)
        self.overlay_check = QtWidgets.QCheckBox("draw the landmarks of each frame (into <faceset>/debug)")
        self.overlay_check.setChecked(True)
        self.overlay_check.setToolTip("the engine's --debug-dir: boxes, raw (red) and smoothed (green) landmarks "
                                      "and track ids over each frame; costs a second read of the frames")
        top.addRow("Overlay", self.overlay_check)
        self.options = OptionsForm(ExtractOptions, GROUPS, skip=("debug_dir", "progress"))

        self.run_button = QtWidgets.QPushButton("Extract")
        self.run_button.clicked.connect(self.run)
        self.cancel_button = QtWidgets.QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        self.progress = QtWidgets.QProgressBar()
        self.progress.setFormat("%p%")
        self.rate_label = QtWidgets.QLabel("– frames/s")
        buttons = QtWidgets.QHBoxLayout()
        for w in (self.run_button, self.cancel_button):
            buttons.addWidget(w)
        buttons.addWidget(self.progress, 1)
        buttons.addWidget(self.rate_label)

        self.log_view = QtWidgets.QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(5000)
        self.image_label = QtWidgets.QLabel("the last frame's landmarks show here")
        self.image_label.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
        self.image_label.setMinimumSize(420, 260)
        self.image_label.setStyleSheet("background: #222; color: #888;")
        self.image_caption = QtWidgets.QLabel("")

        left = QtWidgets.QVBoxLayout()
        left.addLayout(top)
        left.addWidget(scrolled(self.options), 1)
        left.addLayout(buttons)
        right = QtWidgets.QVBoxLayout()
        right.addWidget(self.image_label, 3)
        right.addWidget(self.image_caption)
        right.addWidget(QtWidgets.QLabel("Log"))
        right.addWidget(self.log_view, 2)
        layout = QtWidgets.QHBoxLayout(self)
        layout.addLayout(left, 1)
        layout.addLayout(right, 1)

    # --- the job -------------------------------------------------------------------------------

    def build_job(self) -> EngineJob:
        """The extraction the fields describe; ValueError / VfxSwapError naming what is wrong."""
        source, out = self.source_edit.text().strip(), self.out_edit.text().strip()
        if not source:
            raise ValueError("no source given")
        if not out:
            raise ValueError("no faceset folder given")
        options = {**self.options.values(), "progress": "json"}
        if self.overlay_check.isChecked():
            options["debug_dir"] = str(Path(out) / OVERLAY)
        return EngineJob(["extract", source, f"--out={out}", *flags(ExtractOptions, options)], python=self.python)

    def _started(self, job) -> None:
        self.overlay_path = None
        self.progress.setValue(0)
        self.rate_label.setText("– frames/s")
        self._poll.start(1000)

    def _cancelled_text(self, result: JobResult) -> str:
        return "cancelled (frames done stay in the faceset; extracting again resumes)"

    def _on_event(self, _name: str, event: dict) -> None:
        kind = event.get("event")
        if kind == "progress":
            done, total = event.get("done") or 0, event.get("total") or 0
            stage = str(event.get("stage", ""))
            if total:
                self.progress.setValue(int(round(100 * done / total)))
            words = stage.split(" ", 1)
            self.progress.setFormat(f"{STAGES.get(words[0], words[0])} {done}/{total}" if total else stage)
            if event.get("rate") is not None:
                self.rate_label.setText(f"{float(event['rate']):.2f} frames/s")
        elif kind == "log":
            self.log(str(event.get("text", "")))

    def show_latest_overlay(self) -> None:
        """Show the newest overlay frame the engine wrote (polled: the engine writes, we look)."""
        out = self.out_edit.text().strip()
        if not out:
            return
        try:  # the engine's temporary files (hidden) come and go: only finished frames count
            found = sorted((p for p in (Path(out) / OVERLAY).glob("*.png") if not p.name.startswith(".")),
                           key=lambda p: p.stat().st_mtime_ns)
        except OSError:
            return
        if not found or found[-1] == self.overlay_path:
            return
        pixmap = QtGui.QPixmap(str(found[-1]))
        if pixmap.isNull():  # being renamed into place: the next poll shows it
            return
        self.overlay_path = found[-1]
        self.image_label.setPixmap(pixmap.scaled(self.image_label.size(), QtCore.Qt.AspectRatioMode.KeepAspectRatio,
                                                 QtCore.Qt.TransformationMode.SmoothTransformation))
        self.image_caption.setText(found[-1].name)

    def _ended(self, result: JobResult) -> None:
        self._poll.stop()
        self.show_latest_overlay()
        if result.ok:
            self.progress.setValue(100)
