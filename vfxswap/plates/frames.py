"""Frame patterns, frame ranges and image-sequence discovery.

Patterns follow the hosts' conventions: `####` (Nuke, one `#` per digit), `%04d` / `%d`
(printf), `$F4` / `$F` (Houdini) and `@@@@` (one `@` per digit). Ranges are written
`1001-1100`, `1001-1100x2` and `1001,1005,1010-1020`. Frame numbers are the plate's own.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from vfxswap.atomic import is_temp_path
from vfxswap.errors import VfxSwapError

# One token per pattern; the first match in the file name (not the folder) wins.
_TOKEN = re.compile(r"%0?(\d*)d|\$F(\d*)|#+|@+")
_RANGE_ITEM = re.compile(r"^\s*(-?\d+)(?:\s*-\s*(-?\d+)(?:\s*[x:]\s*(\d+))?)?\s*$")


@dataclass(frozen=True)
class FramePattern:
    """A file name with one frame token, e.g. `/shots/sh010/plate.####.exr`.

    `padding` is the minimum digit count (1 means unpadded); frames wider than the padding
    are written in full, as every host does.
    """

    head: str
    padding: int  # 0: a still with no frame number (the whole path is `head`)
    tail: str

    @classmethod
    def still(cls, path: str | os.PathLike) -> "FramePattern":
        return cls(str(path), 0, "")

    @classmethod
    def parse(cls, text: str | os.PathLike) -> "FramePattern":
        text = str(text)
        folder, name = os.path.split(text)
        match = _TOKEN.search(name)
        if match is None:
            raise VfxSwapError(f"{text}: no frame token (####, %04d, $F4 or @@@@) in the file name")
        token = match.group(0)
        if token.startswith("%"):
            padding = int(match.group(1) or 1)
        elif token.startswith("$F"):
            padding = int(match.group(2) or 1)
        else:
            padding = len(token)
        head = os.path.join(folder, name[: match.start()]) if folder else name[: match.start()]
        return cls(head, max(padding, 1), name[match.end():])

    @staticmethod
    def has_token(text: str | os.PathLike) -> bool:
        return _TOKEN.search(os.path.basename(str(text))) is not None

    def path(self, frame: int) -> str:
        if self.padding == 0:
            return self.head
        sign = "-" if frame < 0 else ""
        return f"{self.head}{sign}{abs(frame):0{self.padding}d}{self.tail}"

    @property
    def hashes(self) -> str:
        """Nuke-style form (`plate.####.exr`; `%d` when unpadded, which `#` cannot say)."""
        if self.padding == 0:
            return self.head
        token = "#" * self.padding if self.padding > 1 else "%d"
        return f"{self.head}{token}{self.tail}"

    @property
    def printf(self) -> str:
        if self.padding == 0:
            return self.head
        token = f"%0{self.padding}d" if self.padding > 1 else "%d"
        return f"{self.head}{token}{self.tail}"

    def __str__(self) -> str:
        return self.hashes

    def frame_of(self, name: str) -> int | None:
        """The frame number if `name` (a base name) belongs to this pattern, else None."""
        head = os.path.basename(self.head)
        if not (name.startswith(head) and name.endswith(self.tail)) or len(name) <= len(head) + len(self.tail):
            return None
        digits = name[len(head): len(name) - len(self.tail)]
        if not re.fullmatch(r"-?\d+", digits):
            return None
        bare = digits.lstrip("-")
        # A padded pattern only matches numbers written with exactly that padding rule.
        if len(bare) < self.padding or (len(bare) > self.padding and bare.startswith("0")):
            return None
        return int(digits)

    def existing_frames(self) -> list[int]:
        if self.padding == 0:
            return [STILL_FRAME] if os.path.isfile(self.head) else []
        folder = os.path.dirname(self.head) or "."
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            raise VfxSwapError(f"{self}: folder {folder} does not exist") from None
        frames = set()
        for name in names:
            if name.startswith(".") or is_temp_path(name):
                continue
            frame = self.frame_of(name)
            if frame is not None:
                frames.add(frame)
        return sorted(frames)


MAX_FRAMES = 1_000_000  # more than a feature's worth (3 h at 48 fps is 518,400): a range past it is a typo


def parse_frames(text: str) -> list[int]:
    """`1001-1100`, `1001-1100x2`, `1001,1005,1010-1020` -> sorted unique frame numbers."""
    frames: set[int] = set()
    count = 0
    for item in str(text).split(","):
        if not item.strip():
            continue
        match = _RANGE_ITEM.match(item)
        if match is None:
            raise VfxSwapError(f"frame range {text!r}: cannot read {item.strip()!r} (use 1001-1100, 1001-1100x2 or 1001,1005)")
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) is not None else first
        step = int(match.group(3) or 1)
        if last < first or step < 1:
            raise VfxSwapError(f"frame range {text!r}: {item.strip()!r} runs backwards or has a zero step")
        count += (last - first) // step + 1
        if count > MAX_FRAMES:  # checked before the list is built: 1001-5001000 asked for half a GB
            raise VfxSwapError(f"frame range {text!r} holds over {MAX_FRAMES:,} frames: a typo?")
        frames.update(range(first, last + 1, step))
    if not frames:
        raise VfxSwapError(f"frame range {text!r} is empty")
    return sorted(frames)


def contiguous_runs(frames) -> list[tuple[int, int]]:
    """(first, last) of each gap-free run of a set of frames, in order: 1001-1003,1005 ->
    [(1001, 1003), (1005, 1005)]."""
    frames = sorted(set(frames))
    runs = []
    for frame in frames:
        if runs and frame == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], frame)
        else:
            runs.append((frame, frame))
    return runs


def format_frames(frames) -> str:
    """The shortest `a-b,c` text for a set of frames (the inverse of `parse_frames` for step 1)."""
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in contiguous_runs(frames))


def frame_runs(frames) -> list[tuple[int, int, int]]:
    """(first, last, step) runs covering exactly `frames`: `1001-1100x2` stays one run."""
    frames = sorted(set(frames))
    runs, i = [], 0
    while i < len(frames):
        j, step = i, 1
        if i + 1 < len(frames):
            step, j = frames[i + 1] - frames[i], i + 1
            while j + 1 < len(frames) and frames[j + 1] - frames[j] == step:
                j += 1
            if step != 1 and j == i + 1:  # two far-apart frames: a single, the next starts a run
                j, step = i, 1
        runs.append((frames[i], frames[j], step))
        i = j + 1
    return runs


def run_text(first: int, last: int, step: int = 1, step_mark: str = "x") -> str:
    """`1001`, `1001-1100` or `1001-1099x2`: a form OpenCue, Deadline and vfxswap all read
    (OpenJD's range expressions mark the step with ":" instead: `1001-1099:2`)."""
    if first == last:
        return str(first)
    return f"{first}-{last}" if step == 1 else f"{first}-{last}{step_mark}{step}"


def range_text(frames: str, step_mark: str = "x") -> str:
    """A frame range as exact runs in a farm's syntax (`1001-1100:2` -> `1001-1099x2`)."""
    return ",".join(run_text(*run, step_mark=step_mark) for run in frame_runs(parse_frames(frames)))


# A member file's frame number: the digits right before the extension (`plate.1001.exr`,
# `plate_1001.exr`, `plate1001.exr`); digits elsewhere in the name are part of the name.
_FRAME_NUMBER = re.compile(r"(-?\d+)$")
STILL_FRAME = 1  # the frame number a single image without one is given


@dataclass
class Sequence:
    """An image sequence on disk: a pattern and the frames that exist for it."""

    pattern: FramePattern
    frames: list[int] = field(default_factory=list)

    @property
    def first(self) -> int:
        return self.frames[0]

    @property
    def last(self) -> int:
        return self.frames[-1]

    def missing(self, wanted: list[int] | None = None) -> list[int]:
        """Frames absent from disk: within `wanted`, or the gaps between first and last."""
        have = set(self.frames)
        if wanted is None:
            wanted = range(self.first, self.last + 1) if self.frames else []
        return [f for f in wanted if f not in have]

    def path(self, frame: int) -> str:
        return self.pattern.path(frame)

    def __str__(self) -> str:
        span = f" {format_frames(self.frames)}" if self.frames else " (no frames)"
        return f"{self.pattern}{span}"


def find_sequence(spec: str | os.PathLike) -> Sequence:
    """The sequence a pattern (`plate.####.exr`) or one member file (`plate.1001.exr`) names.

    A member file's frame is the run of digits before its extension; its padding is the digit
    count when it has a leading zero or all its neighbours share that width, else the sequence
    is unpadded. A file with no frame number is a still: a one-frame sequence.
    """
    spec = str(spec)
    if FramePattern.has_token(spec):
        pattern = FramePattern.parse(spec)
        return Sequence(pattern, pattern.existing_frames())
    folder, name = os.path.split(spec)
    stem, dot, ext = name.rpartition(".") if "." in name else (name, "", "")
    match = _FRAME_NUMBER.search(stem)
    if not os.path.isfile(spec):
        raise VfxSwapError(f"{spec}: no such file")
    if match is None:
        return Sequence(FramePattern.still(spec), [STILL_FRAME])
    digits = match.group(1).lstrip("-")
    tail = stem[match.end():] + dot + ext
    head = os.path.join(folder, stem[: match.start()])
    if match.group(1).startswith("-") and not stem[: match.start()].endswith(("_", ".")):
        head += "-"  # a dash before the digits is a separator, not a sign
    padded = FramePattern(head, len(digits), tail)
    frames = padded.existing_frames()
    if not digits.startswith("0") and len(digits) > 1:
        unpadded = FramePattern(head, 1, tail)
        loose = unpadded.existing_frames()
        if len(loose) > len(frames):
            return Sequence(unpadded, loose)
    return Sequence(padded, frames)


def select_frames(spec: str | os.PathLike, frames: str | None = None, *,
                  keep_missing: bool = False) -> tuple[Sequence, list[int]]:
    """Resolve a plates argument to a sequence and the frames asked for (all when None).

    Frames asked for that are not on disk are an error naming them, so a job never runs on
    a silently shorter range. With `keep_missing` they stay in the list instead (and None
    means first to last, gaps included), for a caller that fails them one by one while the
    other frames complete.
    """
    seq = find_sequence(spec)
    if not seq.frames:
        raise VfxSwapError(f"{seq.pattern}: no frames found on disk")
    if frames:
        wanted = parse_frames(frames)
    else:
        wanted = list(range(seq.first, seq.last + 1)) if keep_missing else list(seq.frames)
    missing = seq.missing(wanted)
    if missing and not keep_missing:
        raise VfxSwapError(f"{seq.pattern}: frames missing on disk: {format_frames(missing)}")
    return seq, wanted


def is_movie(path: str | os.PathLike) -> bool:
    return Path(str(path)).suffix.lower() in MOVIE_EXTENSIONS


MOVIE_EXTENSIONS = {".mov", ".mp4", ".mpg", ".mpeg", ".mkv", ".avi", ".mxf", ".m4v", ".webm"}
