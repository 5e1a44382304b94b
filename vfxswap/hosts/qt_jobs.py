"""Engine jobs run from a Qt window: a worker thread runs them (`hosts.jobs.JobRunner`), Qt's
queued signals carry their events and their end to the UI thread, so a window never waits on
the engine, whatever the engine does.
"""

from __future__ import annotations

import sys
import threading

from vfxswap.errors import VfxSwapError
from vfxswap.hosts.jobs import JobResult, JobRunner
from vfxswap.hosts.qt import QtCore, QtWidgets, Signal


class QtJobs(QtCore.QObject):
    """Runs a list of named jobs one after the other (stopping at the first that fails) on a
    worker thread. Signals, delivered on the thread this object lives on (the UI's):
    `step(name)` as a job starts, `event(name, dict)` for each engine event, `finished(name,
    JobResult)` once, with the last job's result. `on_worker(name, event)`, when given, runs on
    the worker thread first (a preview decoded there) and may return extra events to send."""

    step = Signal(str)
    event = Signal(str, object)
    finished = Signal(str, object)

    def __init__(self, parent=None, *, env: dict | None = None):
        super().__init__(parent)
        self.env = env
        self.runner: JobRunner | None = None
        self.result: JobResult | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._cancel_asked = False

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, jobs: list[tuple[str, object]], on_worker=None) -> bool:
        """Start `jobs` ([(name, job with command())]); False when jobs are running already."""
        if self.running:
            return False
        self.result, self._cancel_asked = None, False
        self._thread = threading.Thread(target=self._work, args=(list(jobs), on_worker), daemon=True,
                                        name="vfxswap-qt-jobs")
        self._thread.start()
        return True

    def cancel(self) -> bool:
        """Stop the running job (SIGTERM: the engine ends cleanly, a training saves first) and
        the ones after it. True when there was something to stop."""
        with self._lock:
            self._cancel_asked = True
            runner = self.runner
        if runner is not None and self.running:
            runner.cancel()
            return True
        return False

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the jobs end (tests, a closing window); True when they have."""
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.running

    def _work(self, jobs, on_worker) -> None:
        name, result = "", JobResult(0, [], {}, False, "")
        for name, job in jobs:
            with self._lock:
                if self._cancel_asked:
                    result = JobResult(-1, [], {}, True, "")
                    break
                runner = self.runner = JobRunner(job, env=self.env)
            self.step.emit(name)
            try:
                for event in runner.events():
                    self.event.emit(name, event)
                    for extra in (on_worker(name, event) or ()) if on_worker else ():
                        self.event.emit(name, extra)
                result = runner.wait()
            except Exception as exc:  # the engine could not even start (bad interpreter, ...)
                result = JobResult(-1, list(runner.written), dict(runner.failed), False, f"{type(exc).__name__}: {exc}")
            if not result.ok:
                break
        with self._lock:
            self.runner = None
        self.result = result
        self.finished.emit(name, result)


class JobTab(QtWidgets.QWidget):
    """A tab that runs one engine job at a time from its fields: `build_job()` (ValueError or
    VfxSwapError naming what is wrong), Run (`run_button`) and Cancel (`cancel_button`), the
    engine's words in `log_view`. Subclasses build the layout and the job, and may hook in:
    `_started(job)`, `_on_worker(job)` (a callable for `QtJobs.start`), `_on_event(name, event)`,
    `_ended(result)`."""

    jobFinished = Signal(object)  # JobResult, for the window or a host that loads the outputs
    job_name = "job"

    def __init__(self, parent=None, *, python: str | None = None, env: dict | None = None):
        super().__init__(parent)
        self.python = python or sys.executable  # the engine's interpreter (a host's own may differ)
        self.result: JobResult | None = None
        self.jobs = QtJobs(self, env=env)
        self.jobs.event.connect(self._on_event)
        self.jobs.finished.connect(self._finished)

    @property
    def running(self) -> bool:
        return self.jobs.running

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
        self.result = None
        self.log("$ " + " ".join(job.command()))
        self._started(job)
        self._set_running(True)
        self.jobs.start([(self.job_name, job)], on_worker=self._on_worker(job))
        return True

    def cancel(self) -> None:
        if self.jobs.cancel():
            self.log("cancelling…")

    def _set_running(self, running: bool) -> None:
        self.run_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)

    def _finished(self, _name: str, result: JobResult) -> None:
        self.result = result
        self._set_running(False)
        if result.cancelled:
            self.log(self._cancelled_text(result))
        elif result.ok:
            self.log("finished")
        else:
            self.log("error: " + (result.error or f"the engine exited with code {result.returncode}"))
        self._ended(result)
        self.jobFinished.emit(result)

    # hooks
    def build_job(self):
        raise NotImplementedError

    def _started(self, job) -> None:
        pass

    def _on_worker(self, job):
        return None

    def _on_event(self, name: str, event: dict) -> None:
        pass

    def _ended(self, result: JobResult) -> None:
        pass

    def _cancelled_text(self, result: JobResult) -> str:
        return "cancelled"

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        self.cancel()
        super().closeEvent(event)
