"""A training as others see it: what runs now, what ran before, its losses and previews.

The trainer writes two small files into the model folder beside `history.jsonl` (its losses):
`training.json` while it runs (who runs it, where, from which iteration to which, when it last
reported) and one line of `sessions.jsonl` each time a run ends (options, iterations, losses,
duration, how it ended). Anyone who can read the folder (the panel on an artist's machine, a
farm node's shared storage) can then follow the training without talking to its process.

Reading needs no torch, Qt or numpy: the panel calls this on its UI thread.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from vfxswap import atomic

STATUS = "training.json"
SESSIONS = "sessions.jsonl"
HISTORY = "history.jsonl"
STALE_S = 180.0  # a training that has not reported for this long, on another host, is presumed gone


# --- writing (the trainer, rank 0) ------------------------------------------------------------


class RunRecord:
    """The trainer's side: `training.json` while it runs, a `sessions.jsonl` line when it ends."""

    def __init__(self, folder: str | Path, *, iteration: int, iters: int, options: dict):
        self.folder = Path(folder)
        now = time.time()
        self.status = {"state": "running", "host": socket.gethostname(), "pid": os.getpid(), "started": now,
                       "updated": now, "start_iteration": iteration, "iteration": iteration, "iters": iters,
                       "options": options}
        self._write()

    def _write(self) -> None:
        atomic.write_text(self.folder / STATUS, json.dumps(self.status, indent=1))

    def update(self, iteration: int, **figures) -> None:
        """A step logged: where it is, and its latest figures (losses, samples/s)."""
        self.status.update(iteration=iteration, updated=time.time(), **figures)
        self._write()

    def stopping(self, by: str) -> None:
        """A stop was asked (a signal): the run saves at the end of its step, then ends."""
        self.status.update(state="stopping", stop_asked_by=by, updated=time.time())
        self._write()

    def end(self, iteration: int, ended_by: str) -> None:
        """The run is over (finished, stopped by a signal, or failed): one session line, no status.
        A run that found the model already at --iters trained nothing and changed nothing: no line."""
        s = self.status
        now = time.time()
        if iteration == s["start_iteration"] and ended_by == "finished":
            self._remove_status()
            return
        record = {"started": s["started"], "ended": now, "duration_s": round(now - s["started"], 3),
                  "start_iteration": s["start_iteration"], "end_iteration": iteration, "iters": s["iters"],
                  "ended_by": ended_by, "host": s["host"], "options": s["options"],
                  **{k: s[k] for k in ("loss_A", "loss_B", "samples_per_s") if k in s}}
        with open(self.folder / SESSIONS, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        self._remove_status()

    def _remove_status(self) -> None:
        try:
            (self.folder / STATUS).unlink()
        except FileNotFoundError:
            pass


# --- reading (hosts) ----------------------------------------------------------------------------


@dataclass
class Live:
    """A training's `training.json`, judged: running, stopping, or gone without a word."""

    state: str  # running | stopping | gone (killed, or silent past STALE_S on another host)
    iteration: int
    iters: int
    start_iteration: int
    started: float
    updated: float
    host: str
    pid: int
    options: dict = field(default_factory=dict)
    figures: dict = field(default_factory=dict)  # loss_A, loss_B, samples_per_s when reported

    @property
    def active(self) -> bool:
        return self.state in ("running", "stopping")


def live(folder: str | Path, *, now: float | None = None) -> Live | None:
    """The training running in `folder`, or None when none has a status there. A status left by a
    process that is gone (killed -9) reads as `gone`: on this host by its pid, elsewhere by
    silence (STALE_S without an update)."""
    try:
        s = json.loads((Path(folder) / STATUS).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError, OSError):
        return None
    now = time.time() if now is None else now
    state = s.get("state", "running")
    here = s.get("host") == socket.gethostname()
    if (here and not atomic.process_alive(int(s.get("pid", 0)))) or (not here and now - s.get("updated", 0) > STALE_S):
        state = "gone"
    return Live(state, int(s.get("iteration", 0)), int(s.get("iters", 0)), int(s.get("start_iteration", 0)),
                float(s.get("started", 0)), float(s.get("updated", 0)), str(s.get("host", "")),
                int(s.get("pid", 0)), s.get("options") or {},
                {k: s[k] for k in ("loss_A", "loss_B", "samples_per_s") if k in s})


def sessions(folder: str | Path) -> list[dict]:
    """Every ended run of the model, oldest first (lines cut short by a kill are skipped)."""
    return json_lines(Path(folder) / SESSIONS)


def json_lines(path: Path) -> list[dict]:
    """The records of a JSON-lines file (history.jsonl, sessions.jsonl); none when it is missing."""
    try:
        return _records(path.read_bytes())
    except FileNotFoundError:
        return []


def _records(data: bytes) -> list[dict]:
    """The JSON objects of complete lines (a line cut short by a kill, or not JSON, is skipped)."""
    out = []
    for line in data.decode("utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            out.append(record)
    return out


class HistoryReader:
    """history.jsonl read incrementally: each `read()` returns the records added since the last
    (a line still being written waits for its newline). A history rewritten shorter (a resume
    trims it to the saved iteration) is read again from the start: `reset` says so."""

    def __init__(self, folder: str | Path):
        self.path = Path(folder) / HISTORY
        self.records: list[dict] = []
        self._offset = 0
        self._identity = None

    def read(self) -> tuple[list[dict], bool]:
        """(new records, reset): reset when the file was replaced and `records` restarted."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            reset = bool(self.records)
            self.records, self._offset, self._identity = [], 0, None
            return [], reset
        reset = False
        if self._identity not in (None, st.st_ino) or st.st_size < self._offset:
            self.records, self._offset, reset = [], 0, True
        self._identity = st.st_ino
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self._offset += end
        new = _records(data[:end])
        self.records.extend(new)
        return new, reset


def steps(records: list[dict]) -> list[dict]:
    """The step records of a history (losses), without events such as roll-backs."""
    return [r for r in records if "event" not in r and "loss" in r]


def rate_and_eta(records: list[dict], iters: int, window: int = 20) -> tuple[float | None, float | None]:
    """(iterations per second, seconds left to `iters`) from the last `window` step records'
    clock times: what the run does now, not its average since a resume or a pause."""
    timed = [r for r in steps(records) if "time" in r][-window:]
    if len(timed) < 2 or timed[-1]["time"] <= timed[0]["time"]:
        return None, None
    rate = (timed[-1]["iter"] - timed[0]["iter"]) / (timed[-1]["time"] - timed[0]["time"])
    if rate <= 0:
        return None, None
    return rate, max(0.0, (iters - timed[-1]["iter"]) / rate)


def latest_preview(folder: str | Path) -> Path | None:
    """The newest preview grid the trainer wrote (previews/preview_<iteration>.png)."""
    found = sorted((Path(folder) / "previews").glob("preview_*.png"))
    return found[-1] if found else None


def format_duration(seconds: float | None) -> str:
    """12 s, 4 min 05 s, 2 h 13 min: an ETA or a session's length, as a person reads it."""
    if seconds is None:
        return "–"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
