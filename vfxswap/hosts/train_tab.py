"""The Train tab: set up a training, start, pause, resume and stop it, and watch it learn.

Everything it shows it reads from the model folder (`train.monitor`): the losses of
history.jsonl, the preview grids, `training.json` while a training runs and `sessions.jsonl` for
the runs before. So it watches a training it started exactly as one started elsewhere (a
terminal, a farm node writing to shared storage), which it shows read-only ("attached").

Pause is the engine's clean stop: SIGTERM, the step ends, the model is saved; Resume runs the
same training again with --resume, which continues it exactly. Stop is the same clean save,
and ends the session. Start runs with --resume-if-saved: a new model, or the saved one continued.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from vfxswap.errors import VfxSwapError
from vfxswap.hosts.charts import LossGraph
from vfxswap.hosts.jobs import EngineJob, JobResult
from vfxswap.hosts.options_form import OptionsForm, path_row, scrolled
from vfxswap.hosts.qt import QtCore, QtGui, QtWidgets, Signal
from vfxswap.hosts.qt_jobs import QtJobs
from vfxswap.jobspec import TrainOptions, flags
from vfxswap.train import monitor

GROUPS = [("identities", ["release_ref", "release_ref_src", "release_ref_dst", "name_src", "name_dst"]),
          ("model", ["preset", "arch", "resolution", "ae_dims", "e_dims", "d_dims", "d_mask_dims", "max_dims",
                     "variants", "face_type"]),
          ("training", ["iters", "batch", "lr", "warmup", "mask", "sharpen", "warp", "ct_mode", "flip_src",
                        "flip_dst", "uniform_yaw", "eyes_mouth_weight", "gan_power", "lr_dropout", "weight_decay",
                        "clip"]),
          ("device", ["device", "gpus", "bf16", "compile", "workers"]),
          ("saving and previews", ["save_every", "save_minutes", "keep_backups", "preview_every", "log_every",
                                   "snapshot_every", "tensorboard"]),
          ("start from", ["init_from", "init_parts", "freeze", "seed"])]
PATHS = ("src", "dst", "model_dir")  # the tab's own fields, above the options
SKIP = (*PATHS, "resume", "resume_if_saved", "progress", "quiet")
POLL_MS = 1000
SESSION_COLUMNS = ("started", "iterations", "duration", "loss A", "loss B", "samples/s", "ended")


class TrainTab(QtWidgets.QWidget):
    """A training's options, its controls, its loss graph, latest preview, figures and sessions.

    `state`: idle | running | stopping (a pause or stop was asked; the step ends and the model
    saves) | paused | attached (a training this tab did not start, shown read-only)."""

    stateChanged = Signal(str)

    def __init__(self, parent=None, *, python: str | None = None, env: dict | None = None):
        super().__init__(parent)
        self.python = python or sys.executable
        self.jobs = QtJobs(self, env=env)
        self.jobs.event.connect(self._on_event)
        self.jobs.finished.connect(self._on_finished)
        self.state = "idle"
        self.result: JobResult | None = None
        self.history: monitor.HistoryReader | None = None
        self.live: monitor.Live | None = None
        self.preview_path: Path | None = None
        self._stop_kind = ""  # "pause" or "stop": what the pending stop was asked as
        self._sessions_seen = None
        self._build()
        self._timer = QtCore.QTimer(self)
        self._timer.timeout.connect(self.refresh)
        self._timer.start(POLL_MS)
        self.model_edit.editingFinished.connect(self.refresh)
        self._show_state()

    # --- layout --------------------------------------------------------------------------------

    def _build(self) -> None:
        paths = QtWidgets.QFormLayout()
        self.src_edit, row = path_row("faceset of identity A, the face to render", folder=True, parent=self)
        paths.addRow("A (source)", row)
        self.dst_edit, row = path_row("faceset of identity B, the performer in the plates", folder=True, parent=self)
        paths.addRow("B (destination)", row)
        self.model_edit, row = path_row("model folder (new, or one to continue or watch)", folder=True, parent=self)
        paths.addRow("Model", row)
        self.options = OptionsForm(TrainOptions, GROUPS, skip=SKIP)

        self.start_button = QtWidgets.QPushButton("Start")
        self.start_button.setToolTip("train to --iters: a new model, or the saved one continued (--resume-if-saved)")
        self.pause_button = QtWidgets.QPushButton("Pause")
        self.pause_button.setToolTip("finish this step, save, and wait: Resume continues exactly from here")
        self.resume_button = QtWidgets.QPushButton("Resume")
        self.resume_button.setToolTip("continue the saved model (--resume) with the options shown")
        self.stop_button = QtWidgets.QPushButton("Stop")
        self.stop_button.setToolTip("finish this step, save, and end this session (Start continues it later)")
        for button, slot in ((self.start_button, self.start), (self.pause_button, self.pause),
                             (self.resume_button, self.resume), (self.stop_button, self.stop)):
            button.clicked.connect(slot)
        buttons = QtWidgets.QHBoxLayout()
        for b in (self.start_button, self.pause_button, self.resume_button, self.stop_button):
            buttons.addWidget(b)

        self.progress = QtWidgets.QProgressBar()
        self.progress.setFormat("iteration %v / %m")
        self.status_label = QtWidgets.QLabel("no training")
        self.status_label.setWordWrap(True)
        self.figures_label = QtWidgets.QLabel("")

        self.graph = LossGraph()
        self.smooth_slider = QtWidgets.QSlider(QtCore.Qt.Orientation.Horizontal)
        self.smooth_slider.setRange(0, 95)
        self.smooth_slider.setValue(60)
        self.smooth_slider.setToolTip("smoothing of the bold curves (exponential moving average)")
        self.smooth_slider.valueChanged.connect(lambda v: self.graph.set_smoothing(v / 100.0))
        self.graph.set_smoothing(0.6)
        smooth_row = QtWidgets.QHBoxLayout()
        smooth_row.addWidget(QtWidgets.QLabel("smoothing"))
        smooth_row.addWidget(self.smooth_slider, 1)

        self.preview_label = QtWidgets.QLabel("the latest preview grid shows here")
        self.preview_label.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
        self.preview_label.setMinimumSize(360, 220)
        self.preview_label.setStyleSheet("background: #222; color: #888;")
        self.preview_caption = QtWidgets.QLabel("")

        self.sessions_table = QtWidgets.QTableWidget(0, len(SESSION_COLUMNS))
        self.sessions_table.setHorizontalHeaderLabels(list(SESSION_COLUMNS))
        self.sessions_table.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectionBehavior.SelectRows)
        self.sessions_table.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        self.sessions_table.verticalHeader().setVisible(False)
        self.sessions_table.horizontalHeader().setStretchLastSection(True)
        self.sessions_table.setToolTip("this model's training sessions; double-click one to load its options, "
                                       "then Resume")
        self.sessions_table.itemDoubleClicked.connect(lambda item: self.load_session(item.row()))
        self.load_button = QtWidgets.QPushButton("Load this session's options")
        self.load_button.clicked.connect(lambda: self.load_session(self.sessions_table.currentRow()))

        self.log_view = QtWidgets.QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(3000)

        left = QtWidgets.QVBoxLayout()
        left.addLayout(paths)
        left.addWidget(scrolled(self.options), 1)
        left.addLayout(buttons)
        center = QtWidgets.QVBoxLayout()
        center.addWidget(self.status_label)
        center.addWidget(self.progress)
        center.addWidget(self.figures_label)
        center.addWidget(self.graph, 3)
        center.addLayout(smooth_row)
        center.addWidget(self.preview_label, 3)
        center.addWidget(self.preview_caption)
        lower = QtWidgets.QTabWidget()
        sessions = QtWidgets.QWidget()
        lay = QtWidgets.QVBoxLayout(sessions)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.sessions_table)
        lay.addWidget(self.load_button)
        lower.addTab(sessions, "Sessions")
        lower.addTab(self.log_view, "Log")
        center.addWidget(lower, 2)
        layout = QtWidgets.QHBoxLayout(self)
        layout.addLayout(left, 2)
        layout.addLayout(center, 3)

    # --- the job -------------------------------------------------------------------------------

    @property
    def folder(self) -> Path | None:
        text = self.model_edit.text().strip()
        return Path(text) if text else None

    def build_job(self, *, resume: bool = False) -> EngineJob:
        """The training the fields describe: --resume to continue, else --resume-if-saved."""
        src, dst, model = (e.text().strip() for e in (self.src_edit, self.dst_edit, self.model_edit))
        for what, value in (("A faceset", src), ("B faceset", dst), ("model folder", model)):
            if not value:
                raise ValueError(f"no {what} given")
        options = {"src": src, "dst": dst, "model_dir": model, **self.options.values(), "progress": "json",
                   "resume" if resume else "resume_if_saved": True}
        return EngineJob(["train", *flags(TrainOptions, options)], python=self.python)

    def log(self, text: str) -> None:
        self.log_view.appendPlainText(text)

    def _launch(self, resume: bool) -> bool:
        if self.jobs.running or self.state == "attached":
            return False
        try:
            job = self.build_job(resume=resume)
        except (ValueError, VfxSwapError) as exc:
            self.log(f"error: {exc}")
            self.status_label.setText(f"error: {exc}")
            return False
        self.result, self._stop_kind = None, ""
        self.log("$ " + " ".join(job.command()))
        self.jobs.start([("train", job)])
        self._set_state("running")
        self.refresh()
        return True

    def start(self) -> bool:
        """Train to --iters: a new model, or the saved one continued."""
        return self._launch(resume=False)

    def resume(self) -> bool:
        """Continue the saved model exactly (--resume) with the options shown."""
        return self._launch(resume=True)

    def _ask_stop(self, kind: str) -> bool:
        if self.state != "running" or not self.jobs.cancel():
            return False
        self._stop_kind = kind
        self._set_state("stopping")
        self.log(f"{kind}: the engine finishes its step and saves…")
        self.status_label.setText(f"{kind} pending: the engine finishes its step and saves")
        return True

    def pause(self) -> bool:
        """A clean save at a step boundary (the engine's SIGTERM path); Resume continues from it."""
        return self._ask_stop("pause")

    def stop(self) -> bool:
        """The same clean save, and the session ends (Start continues the model later); a paused
        training, saved already, just ends its session."""
        if self.state == "paused":
            self._set_state("idle")
            self.log("stopped (it was paused, and saved)")
            self.refresh()
            return True
        return self._ask_stop("stop")

    def _on_event(self, _name: str, event: dict) -> None:
        if event.get("event") == "log":
            self.log(str(event.get("text", "")))

    def _on_finished(self, _name: str, result: JobResult) -> None:
        self.result = result
        if result.cancelled:
            saved = self._saved_iteration()
            paused = self._stop_kind == "pause" and saved is not None
            self._set_state("paused" if paused else "idle")
            self.log(f"{'paused' if paused else 'stopped'} at iteration {saved}: saved" if saved is not None
                     else "stopped before the model's first save: Start begins it again")
        elif result.ok:
            self._set_state("idle")
            self.log(f"finished at iteration {self._saved_iteration()}")
        else:
            self._set_state("idle")
            self.log("error: " + (result.error or f"the engine exited with code {result.returncode}"))
            self.status_label.setText("error: " + (result.error or f"exit code {result.returncode}").splitlines()[-1])
        self.refresh()

    def _saved_iteration(self) -> int | None:
        import json

        try:
            return int(json.loads((self.folder / "manifest.json").read_text(encoding="utf-8"))["iteration"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    # --- what the model folder says ------------------------------------------------------------

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self.stateChanged.emit(state)
        self._show_state()

    def _show_state(self) -> None:
        ours = self.state in ("running", "stopping")
        self.start_button.setEnabled(self.state in ("idle", "paused"))
        self.resume_button.setEnabled(self.state in ("idle", "paused") and self._saved_iteration() is not None)
        self.pause_button.setEnabled(self.state == "running")
        self.stop_button.setEnabled(self.state in ("running", "paused"))
        editable = not ours and self.state != "attached"
        self.options.set_enabled(editable)
        for edit in (self.src_edit, self.dst_edit):
            edit.setReadOnly(not editable)
        self.model_edit.setReadOnly(ours)

    def refresh(self) -> None:
        """Read the model folder: losses, the latest preview, the running training, the sessions."""
        folder = self.folder
        if folder is None:
            return
        if self.history is None or self.history.path.parent != folder:
            self.history, self.preview_path, self._sessions_seen = monitor.HistoryReader(folder), None, None
            self.graph.set_history([])
        new, reset = self.history.read()
        if new or reset:
            self.graph.set_history(self.history.records)
        self.live = monitor.live(folder)
        if self.state == "idle" and self.live is not None and self.live.active and not self.jobs.running:
            self._set_state("attached")
            self.log(f"attached to a training started elsewhere ({self.live.host}, pid {self.live.pid}): read-only")
        elif self.state == "attached" and (self.live is None or not self.live.active):
            self._set_state("idle")
            self.log("the training this tab was watching has ended")
        if self.state == "stopping" and self.live is not None and self.live.state == "stopping":
            self.status_label.setText(f"{self._stop_kind or 'stop'} pending: the engine finishes its step and "
                                      f"saves (last report: iteration {self.live.iteration})")
        self._show_figures()
        self._show_preview(folder)
        self._show_sessions(folder)

    def _show_figures(self) -> None:
        records = self.history.records if self.history else []
        steps = monitor.steps(records)
        live = self.live if self.live is not None and self.live.active else None
        iters = live.iters if live else self._form_iters()
        last = steps[-1] if steps else None
        iteration = live.iteration if live else (last["iter"] if last else self._saved_iteration() or 0)
        self.progress.setRange(0, max(1, iters))
        self.progress.setValue(min(iteration, max(1, iters)))
        rate, eta = monitor.rate_and_eta(records, iters) if live else (None, None)
        sps = (live.figures.get("samples_per_s") if live else None) or (last or {}).get("samples_per_s")
        parts = [f"iteration {iteration} / {iters}"]
        if sps is not None:
            parts.append(f"{float(sps):.1f} samples/s")
        if rate is not None:
            parts.append(f"{rate:.2f} it/s")
        if live:
            parts.append(f"ETA {monitor.format_duration(eta)}")
        if last:
            parts.append(f"loss A {last['loss_A']:.4f}  B {last['loss_B']:.4f}")
        self.figures_label.setText("   ·   ".join(parts))
        if self.state == "stopping":
            return  # the pending stop's message stays until the engine has saved
        if live and self.state == "attached":
            self.status_label.setText(f"attached, read-only: a training on {live.host} (pid {live.pid}), "
                                      f"{live.state}, last report {time.time() - live.updated:.0f} s ago")
        elif live:
            self.status_label.setText(f"training ({live.state}) on {live.host}, pid {live.pid}")
        elif self.live is not None and self.live.state == "gone":
            self.status_label.setText(f"the last training here ended without saying so (killed?) at iteration "
                                      f"{self.live.iteration}; Resume continues from the last save")
        elif self.state == "paused":
            self.status_label.setText(f"paused at iteration {self._saved_iteration()}: Resume continues exactly")
        elif self.state == "idle" and (self.result is None or self.result.ok or self.result.cancelled):
            saved = self._saved_iteration()  # (a failed run's error stays shown until the next start)
            self.status_label.setText("no training running" + (f"; the model is saved at iteration {saved}"
                                                               if saved is not None else ""))

    def _form_iters(self) -> int:
        try:
            return int(self.options.values().get("iters", TrainOptions.iters))
        except (VfxSwapError, ValueError):
            return TrainOptions.iters

    def _show_preview(self, folder: Path) -> None:
        path = monitor.latest_preview(folder)
        if path is None or path == self.preview_path:
            return
        pixmap = QtGui.QPixmap(str(path))
        if pixmap.isNull():
            return
        self.preview_path = path
        self.preview_label.setPixmap(pixmap.scaled(self.preview_label.size(),
                                                   QtCore.Qt.AspectRatioMode.KeepAspectRatio,
                                                   QtCore.Qt.TransformationMode.SmoothTransformation))
        self.preview_caption.setText(f"{path.name}: columns A, A->A, B, B->B, B->A")

    def _show_sessions(self, folder: Path) -> None:
        path = folder / monitor.SESSIONS
        try:
            seen = path.stat().st_mtime_ns, path.stat().st_size
        except FileNotFoundError:
            seen = None
        gone = self.live if self.live is not None and self.live.state == "gone" else None
        seen = (seen, gone.updated if gone else None)
        if seen == self._sessions_seen:
            return
        self._sessions_seen = seen
        self.sessions = monitor.sessions(folder)
        if gone:  # a run killed without a word wrote no line: show what its last report said
            self.sessions.append({"started": gone.started, "start_iteration": gone.start_iteration,
                                  "end_iteration": gone.iteration, "iters": gone.iters,
                                  "duration_s": gone.updated - gone.started, "options": gone.options,
                                  "ended_by": "killed? (no end recorded; last report shown)", **gone.figures})
        self.sessions_table.setRowCount(len(self.sessions))
        for row, s in enumerate(self.sessions):
            cells = (time.strftime("%Y-%m-%d %H:%M", time.localtime(s.get("started", 0))),
                     f"{s.get('start_iteration')} → {s.get('end_iteration')} of {s.get('iters')}",
                     monitor.format_duration(s.get("duration_s")),
                     _number(s.get("loss_A")), _number(s.get("loss_B")), _number(s.get("samples_per_s"), 1),
                     str(s.get("ended_by", "")))
            for col, text in enumerate(cells):
                self.sessions_table.setItem(row, col, QtWidgets.QTableWidgetItem(text))
        self.sessions_table.resizeColumnsToContents()

    def load_session(self, row: int) -> bool:
        """Show a session's options (facesets, model options, iterations) to resume with."""
        sessions = getattr(self, "sessions", [])
        if not 0 <= row < len(sessions) or self.state in ("running", "stopping", "attached"):
            return False
        options = dict(sessions[row].get("options") or {})
        for edit, name in ((self.src_edit, "src"), (self.dst_edit, "dst")):
            if options.get(name):
                edit.setText(str(options[name]))
        try:
            self.options.set_values({k: v for k, v in options.items() if k not in PATHS})
        except VfxSwapError as exc:  # a session of an older vfxswap with an option this one lacks
            self.log(f"session options: {exc}")
            return False
        self.log(f"loaded the options of session {row + 1} (iterations {sessions[row].get('start_iteration')}"
                 f"-{sessions[row].get('end_iteration')}); Resume continues the model with them")
        return True

    def set_fields(self, *, src=None, dst=None, model=None) -> None:
        for edit, value in ((self.src_edit, src), (self.dst_edit, dst), (self.model_edit, model)):
            if value is not None:
                edit.setText(str(value))
        self.refresh()

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        if self.state == "running":
            self.stop()  # the training saves at the end of its step
        super().closeEvent(event)


def _number(value, digits: int = 4) -> str:
    return "" if value is None else f"{float(value):.{digits}f}"
