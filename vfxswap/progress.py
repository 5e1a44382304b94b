"""Progress for long work: frames done, frames/s and ETA on a terminal, quiet elsewhere."""

from __future__ import annotations

import sys

from tqdm import tqdm


def progress(iterable=None, *, total: int | None = None, desc: str = "", unit: str = "frame"):
    """A tqdm bar in frames/s; shown only when stderr is a terminal, so logs stay clean."""
    return tqdm(iterable, total=total, desc=desc, unit=unit, dynamic_ncols=True, leave=False,
                disable=not sys.stderr.isatty(), smoothing=0.1)
