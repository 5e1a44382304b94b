"""Progress for long work: frames done, frames/s and ETA on a terminal, quiet elsewhere, or JSON
events on stdout for a host (`--progress json`: the panel's Extract and Train tabs read them).

One home for both, so every stage that shows a bar also reports to a host without code of its own.
"""

from __future__ import annotations

import json
import sys
import time

from tqdm import tqdm

_json_stream = None  # set by `report_json`: progress() then writes events there instead of a bar
EVERY_S = 0.5  # at most one event per stage this often (and always the last)


def report_json(stream=None) -> None:
    """From now on, `progress()` reports JSON lines (`{"event": "progress", ...}`) to `stream`
    (default stdout) instead of drawing a bar. The CLI calls it for `--progress json`."""
    global _json_stream
    _json_stream = stream or sys.stdout


def progress(iterable=None, *, total: int | None = None, desc: str = "", unit: str = "frame"):
    """A tqdm bar in frames/s; shown only when stderr is a terminal, so logs stay clean."""
    if _json_stream is not None:
        return JsonProgress(iterable, total=total, desc=desc, unit=unit, stream=_json_stream)
    return tqdm(iterable, total=total, desc=desc, unit=unit, dynamic_ncols=True, leave=False,
                disable=not sys.stderr.isatty(), smoothing=0.1)


class JsonProgress:
    """What of tqdm's interface vfxswap uses, as events: `{"event": "progress", "stage": desc,
    "done": n, "total": N, "unit": unit, "rate": per second since the stage's first step}`, plus
    whatever `set_postfix` was given (a training's loss). Throttled to one per EVERY_S."""

    def __init__(self, iterable=None, *, total=None, desc="", unit="frame", stream=None):
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.stream = stream or sys.stdout
        self.n = 0
        self.postfix: dict = {}
        self._first: tuple[float, int] | None = None  # (time, n) at the first step: startup is not rate
        self._sent = 0.0
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            self.total = len(iterable)

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def update(self, n: int = 1) -> None:
        if self._first is None:
            self._first = (time.monotonic(), self.n)
        self.n += n
        self._emit()

    def reset(self, total=None) -> None:
        self.n, self._first, self.total = 0, None, total

    def set_postfix(self, **values) -> None:
        self.postfix = values

    def set_postfix_str(self, text: str) -> None:
        self.postfix = {"status": text} if text else {}

    def refresh(self) -> None:
        self._emit()

    def close(self) -> None:
        self._emit(force=True)

    def _emit(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._sent < EVERY_S and self.n != self.total:
            return
        self._sent = now
        event = {"event": "progress", "stage": self.desc, "done": self.n, "total": self.total, "unit": self.unit}
        if self._first is not None and now > self._first[0] and self.n > self._first[1]:
            event["rate"] = round((self.n - self._first[1]) / (now - self._first[0]), 3)
        event.update(self.postfix)
        try:
            self.stream.write(json.dumps(event, default=str) + "\n")
            self.stream.flush()
        except (BrokenPipeError, ValueError):  # the host went away: the work itself goes on
            pass
