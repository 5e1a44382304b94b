"""One farm job, described once: the commands every farm format runs.

A `FarmJob` is what a TD asks for (plates, model, faceset, layers folder, frame range, chunk
size, render options, and optionally a training step). The OpenJD bundle, the OpenCue outline
and the Deadline 10 submission files are all written from it, so the three can never disagree
on what a task runs. Commands are argument lists; each writer quotes them for its own format
and puts in its own frame tokens.
"""

from __future__ import annotations

import re
import shlex
import shutil
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from vfxswap.errors import VfxSwapError
from vfxswap.plates.frames import contiguous_runs, parse_frames


@dataclass
class TrainStep:
    """Training as one task on one node: `vfxswap train --gpus N` runs N local DDP processes
    under torchrun --standalone (NCCL on GPUs, gloo on CPU). Multi-node runs are launched with
    torchrun by hand or by a scheduler that hands out hosts together (see README); a farm task
    lives on one node."""

    src: str  # faceset A (the identity to render)
    release_ref: str  # the performers' release reference, recorded verbatim in the model
    release_ref_dst: str | None = None  # B's, when it differs (release_ref is then A's)
    preset: str = "quick"
    iters: int = 1000
    batch: int | None = None
    gpus: int = 1
    device: str = "auto"


@dataclass
class FarmJob:
    plates: str
    model: str
    faceset: str  # destination faceset; extracted by the job when it does not exist yet
    out: str  # the face layers' folder
    frames: str
    chunk: int = 10
    render_options: dict = field(default_factory=dict)  # extra `vfxswap render` flags: {"mask": "hull"}
    engine: str = "vfxswap"  # the engine command on the farm nodes
    extract: bool | None = None  # None: extract when the faceset does not exist
    train: TrainStep | None = None

    def __post_init__(self):
        parse_frames(self.frames)  # a clear error here rather than on the farm
        if self.chunk < 1:
            raise VfxSwapError(f"--chunk {self.chunk}: must be at least 1")
        if self.extract is None:
            self.extract = not (Path(self.faceset) / "faceset.db").exists()
        if self.train is not None and self.train.gpus < 1:
            raise VfxSwapError(f"--train-gpus {self.train.gpus}: must be at least 1")
        if self.train is not None and self.train.iters < 1:
            raise VfxSwapError(f"--iters {self.train.iters}: must be at least 1 (0 would render an untrained model)")
        for what, device in (("--render-device", self.render_options.get("device")),
                             ("--train-device", self.train.device if self.train else None)):
            if device is not None and not re.fullmatch(r"auto|cpu|cuda(:\d+)?", str(device)):
                raise VfxSwapError(f"{what} {device}: choose auto, cpu, cuda or cuda:N")
        if self.train is not None:
            from vfxswap.models import PRESETS

            if self.train.preset not in PRESETS:
                raise VfxSwapError(f"--preset {self.train.preset}: choose from {', '.join(PRESETS)}")
        try:
            words = shlex.split(self.engine)
        except ValueError as exc:  # what each task's shell would fail on, on every node
            raise VfxSwapError(f"--engine {self.engine!r}: not a shell word list ({exc})") from None
        if not words:
            raise VfxSwapError("--engine is empty: give the engine command on the farm nodes")

    def absolute(self) -> "FarmJob":
        """The same job with absolute paths: farm nodes do not share our working directory."""
        from dataclasses import replace

        def ab(p):
            return str(Path(p).absolute())

        train = replace(self.train, src=ab(self.train.src)) if self.train else None
        model = self.model if self.model == "passthrough" else ab(self.model)  # the pipeline check, not a folder
        return replace(self, plates=ab(self.plates), model=model, faceset=ab(self.faceset), out=ab(self.out),
                       train=train)

    # --- commands (argument lists) ------------------------------------------------------------

    def extract_args(self) -> list[str]:
        return [*shlex.split(self.engine), "extract", self.plates, "--out", self.faceset, f"--frames={self.frames}"]

    def train_args(self) -> list[str]:
        t = self.train
        if t is None:
            raise VfxSwapError("this job has no training step")
        ref_flags = ["--release-ref", t.release_ref] if not t.release_ref_dst else \
            ["--release-ref-src", t.release_ref, "--release-ref-dst", t.release_ref_dst]
        args = ["train", "--src", t.src, "--dst", self.faceset, "--model", self.model, "--preset", t.preset,
                "--iters", str(t.iters), "--device", t.device, "--resume-if-saved", *ref_flags]
        if t.batch:
            args += ["--batch", str(t.batch)]
        if t.gpus != 1:  # `vfxswap train --gpus N` runs itself under torchrun --standalone
            args += ["--gpus", str(t.gpus)]
        return [*shlex.split(self.engine), *args]

    def render_args(self, frames: str) -> list[str]:
        """`vfxswap render` for one chunk; `frames` is a range or the farm's frame token."""
        from vfxswap.cli import to_flags

        return [*shlex.split(self.engine), "render", "--model", self.model, "--plates", self.plates,
                "--faceset", self.faceset, "--out", self.out, f"--frames={frames}", "--skip-existing",
                "--progress", "json", *to_flags(self.render_options)]

    def chunks(self) -> list[tuple[int, int]]:
        """The render tasks, as OpenJD's CHUNK[INT] with the CONTIGUOUS constraint makes them (so
        every export and report agrees with the bundle): each gap-free run of frames is split into
        as few chunks of at most `chunk` frames as it needs, balanced so their sizes differ by at
        most one (a 15-frame run in chunks of 7 gives 5 + 5 + 5, not 7 + 7 + 1)."""
        out: list[tuple[int, int]] = []
        for first, last in contiguous_runs(parse_frames(self.frames)):
            n = last - first + 1
            count = -(-n // max(1, self.chunk))
            size, extra = divmod(n, count)
            sizes = [size] * count
            for i in range(extra):  # the longer chunks spread through the run, as OpenJD spreads them
                sizes[i * count // extra] += 1
            for size in sizes:
                out.append((first, first + size - 1))
                first += size
        return out


def shell_line(args: list[str], keep: Iterable[str] | Mapping[str, str] = ()) -> str:
    """A POSIX shell line. Arguments in `keep` (farm tokens like <STARTFRAME>, or `"$VAR"`) go in
    verbatim, alone or as an option's value (`--frames=<STARTFRAME>`); a mapping puts its value in
    place of the argument instead."""
    subs = keep if isinstance(keep, Mapping) else {k: k for k in keep}

    def word(a: str) -> str:
        if a in subs:
            return subs[a]
        option, eq, value = a.partition("=")
        if eq and option.startswith("--") and value in subs:
            return shlex.quote(option + "=") + subs[value]
        return shlex.quote(a)

    return " ".join(word(a) for a in args)


def find_command(name: str) -> str | None:
    """A console script on PATH, else the one beside this Python (a venv not on PATH)."""
    beside = Path(sys.executable).parent / name
    return shutil.which(name) or (str(beside) if beside.exists() else None)
