"""One farm job, described once: the commands every farm format runs.

A `FarmJob` is what a TD asks for (plates, model, faceset, layers folder, frame range, chunk
size, any `vfxswap render` option, and optionally a training step with any `vfxswap train`
option; the options and their checks are `vfxswap.jobspec`'s). The OpenJD bundle, the OpenCue outline
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
from dataclasses import dataclass, field, replace
from pathlib import Path

from vfxswap.errors import VfxSwapError
from vfxswap.jobspec import RenderOptions, TrainOptions, flags, normalise, to_argv
from vfxswap.plates.frames import contiguous_runs, parse_frames


# render options a farm job sets itself (the paths, the chunk's frames, retry safety, the log format)
JOB_RENDER_FIELDS = ("model", "plates", "out", "faceset", "frames", "skip_existing", "progress")


@dataclass
class FarmJob:
    """A shot's farm job. The training step is `vfxswap train` with `train`'s options (one task on
    one node: `--gpus N` runs N local DDP processes under torchrun --standalone, NCCL on GPUs, gloo
    on CPU; multi-node runs are launched with torchrun by hand, see README); its B faceset and
    model folder are the job's own."""

    plates: str
    model: str
    faceset: str  # destination faceset; extracted by the job when it does not exist yet
    out: str  # the face layers' folder
    frames: str
    chunk: int = 10
    render_options: dict = field(default_factory=dict)  # other `vfxswap render` options: {"mask": "hull"}
    engine: str = "vfxswap"  # the engine command on the farm nodes
    extract: bool | None = None  # None: extract when the faceset does not exist
    train: TrainOptions | None = None
    # production tags: OpenCue files a job under them (the show must exist on the cuebot); others ignore them
    show: str = "testing"
    shot: str | None = None  # default: the layers folder's name
    user: str | None = None  # default: whoever writes the job (cuebot refuses root)

    def __post_init__(self):
        parse_frames(self.frames)  # a clear error here rather than on the farm
        if self.chunk < 1:
            raise VfxSwapError(f"--chunk {self.chunk}: must be at least 1")
        if self.extract is None:
            self.extract = not (Path(self.faceset) / "faceset.db").exists()
        # every render option is checked here: a bad one would fail only on the farm, in every chunk
        self.render_options = normalise(RenderOptions, self.render_options)
        owned = sorted(set(self.render_options) & set(JOB_RENDER_FIELDS))
        if owned:
            raise VfxSwapError(f"render option(s) {', '.join(owned)}: set by the farm job itself")
        replace(RenderOptions(model=self.model, plates=self.plates, out=self.out), **self.render_options).check()
        if self.train is not None:
            self.train = replace(self.train, dst=self.train.dst or self.faceset, model_dir=self.train.model_dir or self.model)
            if (self.train.dst, self.train.model_dir) != (self.faceset, self.model):
                raise VfxSwapError("the training step trains the job's own faceset and model (--faceset, --model)")
            if not all(self.train.release_refs().values()):
                raise VfxSwapError("--train-src needs --release-ref (the performers' release reference)")
            if self.train.iters < 1:
                raise VfxSwapError(f"--iters {self.train.iters}: must be at least 1 (0 would render an untrained model)")
            if self.train.gpus < 1:
                raise VfxSwapError(f"--train-gpus {self.train.gpus}: must be at least 1")
            self.train.check()
        for what, device in (("--render-device", self.render_options.get("device")),
                             ("--train-device", self.train.device if self.train else None)):
            if device is not None and not re.fullmatch(r"auto|cpu|cuda(:\d+)?", str(device)):
                raise VfxSwapError(f"{what} {device}: choose auto, cpu, cuda or cuda:N")
        try:
            words = shlex.split(self.engine)
        except ValueError as exc:  # what each task's shell would fail on, on every node
            raise VfxSwapError(f"--engine {self.engine!r}: not a shell word list ({exc})") from None
        if not words:
            raise VfxSwapError("--engine is empty: give the engine command on the farm nodes")

    @property
    def train_gpus(self) -> int:
        """GPUs the training task asks its host for (none when it trains on the CPU)."""
        return 0 if self.train is None or self.train.device == "cpu" else self.train.gpus

    def absolute(self) -> "FarmJob":
        """The same job with absolute paths, options' paths included (--like, --ocio, --init-from):
        farm nodes do not share our working directory."""

        def ab(p):
            return str(Path(p).absolute())

        model = self.model if self.model == "passthrough" else ab(self.model)  # the pipeline check, not a folder
        render = dict(self.render_options)
        if render.get("like"):
            render["like"] = [ab(p) for p in render["like"]]
        if render.get("ocio") and "://" not in render["ocio"]:  # a config file, not an ocio:// URI
            render["ocio"] = ab(render["ocio"])
        train = None
        if self.train:
            train = replace(self.train, src=ab(self.train.src), dst=ab(self.faceset), model_dir=model,
                            init_from=ab(self.train.init_from) if self.train.init_from else None)
        return replace(self, plates=ab(self.plates), model=model, faceset=ab(self.faceset), out=ab(self.out),
                       render_options=render, train=train)

    # --- commands (argument lists) ------------------------------------------------------------

    def extract_args(self) -> list[str]:
        return [*shlex.split(self.engine), "extract", self.plates, "--out", self.faceset, f"--frames={self.frames}"]

    def train_args(self) -> list[str]:
        """`vfxswap train` with every option the job was given; a retried task resumes its own
        last save (--resume-if-saved)."""
        if self.train is None:
            raise VfxSwapError("this job has no training step")
        return [*shlex.split(self.engine), "train", *to_argv(replace(self.train, resume_if_saved=True))]

    def render_args(self, frames: str) -> list[str]:
        """`vfxswap render` for one chunk with every render option; `frames` is a range or the
        farm's frame token."""
        job = {"model": self.model, "plates": self.plates, "faceset": self.faceset, "out": self.out,
               "frames": frames, "skip_existing": True, "progress": "json"}
        return [*shlex.split(self.engine), "render", *flags(RenderOptions, {**job, **self.render_options})]

    @property
    def output_name(self) -> str:
        """The layers' file name before the frame number (`--name`, face by default)."""
        return self.render_options.get("name") or "face"

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


def default_engine() -> str:
    """This vfxswap, as shell words."""
    return shlex.quote(find_command("vfxswap") or "vfxswap")
