"""Engine jobs as the hosts run them: build the command, start it, stream progress, cancel.

Host-agnostic (no Nuke, Resolve or Qt import): the Nuke gizmo, the Resolve script, the panel
and a farm wrapper all go through `RenderJob` and `JobRunner`, so every host runs the same
engine the same way; `EngineJob` is any other engine command run so (the mask editor's masker
training). The engine runs in its own process (never inside the host's Python: GPU
work and crashes stay out of the artist's session) and reports JSON lines on stdout
(`vfxswap render --progress json`); stderr is kept for the error text a host shows.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from vfxswap.errors import VfxSwapError
from vfxswap.jobspec import RenderOptions, flags, normalise


@dataclass
class RenderJob:
    """One shot's render: what a host knows (plates, range, model, output) plus options."""

    model: str
    plates: str
    out: str
    faceset: str | None = None
    frames: str | None = None
    options: dict = field(default_factory=dict)  # any other render option: {"mask": "product", "erode": 2}
    python: str = sys.executable  # the engine's interpreter (a host's own Python may differ)

    def __post_init__(self):
        # checked where the artist set them (one line naming the option), not in the engine later
        self.options = normalise(RenderOptions, self.options)
        for name in ("faceset", "frames"):  # given among the options (a host's free text): the job's own
            value = self.options.pop(name, None)
            if getattr(self, name) is None:
                setattr(self, name, value)
        owned = sorted(set(self.options) & {"model", "plates", "out", "progress"})
        if owned:
            raise VfxSwapError(f"render option(s) {', '.join(owned)}: set by the job itself")

    def command(self) -> list[str]:
        """The engine's command line: every option one word (a range like -3-2 is not an option)."""
        job = {"model": self.model, "plates": self.plates, "out": self.out, "progress": "json",
               "faceset": self.faceset, "frames": self.frames}
        return [self.python, "-m", "vfxswap", "render", *flags(RenderOptions, {**job, **self.options})]

    def outputs(self) -> dict[str, str]:
        """Where the results land, as hosts name them (Nuke `####` patterns), with the digits the
        engine writes: the plates' own, at least four, and `name` when the options set one."""
        from vfxswap.plates.frames import FramePattern
        from vfxswap.render.render import output_pattern

        padding = FramePattern.parse(self.plates).padding
        names = {"layer": output_pattern(self.out, self.options.get("name") or "face", padding).hashes}
        if self.options.get("comp"):
            names["comp"] = output_pattern(self.out, "comp", padding).hashes
        if self.options.get("preview"):
            names["preview"] = str(Path(self.out) / "preview.mp4")
        return names


@dataclass
class EngineJob:
    """Any engine command, `vfxswap <args>`, for `JobRunner`: `args` carry `--progress json`
    where the command takes it (its events are passed on as they come)."""

    args: list[str]
    python: str = sys.executable  # the engine's interpreter (a host's own Python may differ)

    def command(self) -> list[str]:
        return [self.python, "-m", "vfxswap", *map(str, self.args)]


@dataclass
class JobResult:
    returncode: int
    written: list[int]
    failed: dict[int, str]
    cancelled: bool
    error: str  # the engine's own words when it failed (last lines of stderr)
    skipped: list[int] = field(default_factory=list)  # complete already (--skip-existing): done, not rewritten

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.cancelled


class JobRunner:
    """Runs one job in a subprocess; `events()` yields its progress, `cancel()` stops it. The job
    is anything with a `command()` (the argv to run): a `RenderJob`, an `EngineJob`."""

    def __init__(self, job: RenderJob | EngineJob, env: dict | None = None):
        self.job = job
        self._env = dict(os.environ, **(env or {}))
        self._proc: subprocess.Popen | None = None
        self._stderr: deque[str] = deque(maxlen=40)
        self._cancelled = False
        self._lock = threading.Lock()  # cancel() from the host's thread, start() from a worker
        self.written: list[int] = []
        self.skipped: list[int] = []
        self.failed: dict[int, str] = {}

    def start(self) -> "JobRunner":
        with self._lock:
            # errors="replace": one byte that is not UTF-8 (a path, a library's message) must not
            # kill the stderr reader, or the engine blocks on a full pipe and the host waits forever
            self._proc = subprocess.Popen(self.job.command(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          text=True, encoding="utf-8", errors="replace", env=self._env, bufsize=1)
            if self._cancelled:  # cancelled before it started (a worker thread was about to start it)
                self._proc.send_signal(signal.SIGTERM)
        threading.Thread(target=self._drain_stderr, daemon=True).start()
        return self

    def _drain_stderr(self) -> None:
        for line in self._proc.stderr:
            self._stderr.append(line.rstrip())

    def events(self) -> Iterator[dict]:
        """Progress events as the engine sends them; lines that are not JSON come as `log` events."""
        if self._proc is None:
            self.start()
        for line in self._proc.stdout:
            line = line.strip()
            if not line:
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                event = None
            if not isinstance(event, dict):  # not an event: the engine (or a library) printed text
                event = {"event": "log", "text": line}
            if event.get("event") == "frame":
                if event.get("status") in ("written", "no_face"):
                    self.written.append(event["frame"])
                elif event.get("status") == "skipped":
                    self.skipped.append(event["frame"])
                elif event.get("status") == "failed":
                    self.failed[event["frame"]] = event.get("error", "")
            yield event

    def cancel(self) -> None:
        """Stop the engine: SIGTERM lets it remove its temporary file; every frame already on
        disk is whole (writes are atomic), and nothing half-written is left under a final name.
        Before the engine has started, it is stopped as it starts."""
        with self._lock:
            if self._proc is None:
                self._cancelled = True
            elif self._proc.poll() is None:
                self._cancelled = True
                self._proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float | None = None) -> JobResult:
        for _ in self.events():  # consume what is left so the pipe never blocks the engine
            pass
        code = self._proc.wait(timeout=timeout)
        lines = [line for line in self._stderr if line and not line.startswith("vfxswap: info:")]
        errors = [line for line in lines if "error" in line.lower()] or lines
        return JobResult(code, sorted(self.written), dict(self.failed), self._cancelled,
                         "\n".join(errors[-5:]) if code not in (0, 130) or self.failed else "", sorted(self.skipped))

    def run(self, on_event=None) -> JobResult:
        """Start, stream every event to `on_event`, and wait: the one-call form."""
        for event in self.events():
            if on_event:
                on_event(event)
        return self.wait()
