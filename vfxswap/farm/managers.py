"""One farm job exported for two render managers: OpenCue and Deadline 10.

Both exports are written from `FarmJob`'s argument lists, like the OpenJD bundle, so every
format runs the same commands. Steps: Extract (when the faceset is missing), Train (when asked),
Render (chunked); each step waits for the one before it. What each manager does with a job,
as read in its own sources, and so how we write it:

OpenCue (cuebot, RQD, PyOutline)
- Cuebot puts each task's exact frames into `#FRAMESPEC#` ("1001-1010", "1001-1019x2",
  "1009,1010,1020"), so one token is right for steps and gaps alike; `#FRAME_START#-#FRAME_END#`
  would span gaps and skipped frames, and before cuebot's 2024 fix overshot the last chunk.
- RQD runs a layer's command as a shell script: commands are POSIX-quoted.
- Cuebot validates the spec against the DTD its DOCTYPE names (it keeps every cjsl version);
  cjsl-1.13 is the oldest with all we use (gpus, gpu_memory).
- A layer waits for the whole layer before it (LAYER_ON_LAYER); PyOutline's default,
  FRAME_BY_FRAME (frame N on frame N), does not fit a one-task step.

Deadline 10 (CommandLine plugin)
- The plugin replaces `<STARTFRAME>` / `<ENDFRAME>` in Arguments with the task's first and last
  frame and, with ShellExecute=True, runs Arguments through `$SHELL -c` (or /bin/sh): POSIX
  quoting holds, on Linux and macOS workers.
- A task is ChunkSize consecutive frames of the job's list, so a stepped range passes its step
  (`<STARTFRAME>-<ENDFRAME>x2`) and a range with gaps becomes one render job per run.
- Job IDs exist only after submission, so order comes from `deadlinecommand -SubmitMultipleJobs
  -dependent`, which makes each job depend on the one listed before it (JobDependencies unused).
- The plugin has no GPU setting (GPUsPerTask belongs to renderer plugins): a Train job on GPUs
  says so in its Comment, and the farm routes it with a Group or Pool.
"""

from __future__ import annotations

import getpass
import os
import pprint
import re
from pathlib import Path
from xml.etree import ElementTree as ET

from vfxswap.atomic import write_text
from vfxswap.errors import VfxSwapError
from vfxswap.farm.job import FarmJob, shell_line
from vfxswap.plates.frames import FramePattern, frame_runs, parse_frames, range_text, run_text

CUE_FRAMES = "#FRAMESPEC#"
CUE_SPEC_VERSION = "1.13"
CUE_DOCTYPE = ('<!DOCTYPE spec PUBLIC "SPI Cue  Specification Language" '
               f'"http://localhost:8080/spcue/dtd/cjsl-{CUE_SPEC_VERSION}.dtd">')
CUE_GPU_MEMORY = "1g"  # cuebot wants a non-zero gpu_memory beside gpus (PyOutline's default too)
DL_FRAMES = "<STARTFRAME>-<ENDFRAME>"
LAYER_ENV = {"PYTHONUNBUFFERED": "1"}  # progress lines reach the farm log as they happen

_CUE_NAME = re.compile(r"^[A-Za-z0-9_.]{3,}$")  # cuebot's rule for shot and layer names
_CUE_WORD = re.compile(r"^[A-Za-z0-9_.-]+$")  # show and user: one word
_BAD_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


def _steps(job: FarmJob, render_frames: str) -> list[tuple[str, list[str], int]]:
    """(name, argv, gpus) for each step in order; gpus is what the step asks the farm for."""
    steps = []
    if job.extract:
        steps.append(("extract", job.extract_args(), 0))
    if job.train is not None:
        steps.append(("train", job.train_args(), job.train_gpus))
    steps.append(("render", job.render_args(render_frames), 0))
    return steps


def _check_text(what: str, text: str, *, one_line: bool = False) -> str:
    if _BAD_CHARS.search(text) or (one_line and ("\n" in text or "\r" in text)):
        raise VfxSwapError(f"{what}: {text!r} has control characters or line breaks the farm files cannot hold")
    return text


def _label(job: FarmJob) -> str:
    """The job's short name: the layers folder's name, in the characters cuebot allows."""
    return re.sub(r"[^A-Za-z0-9_.]+", "_", Path(job.out).name).strip("_").lower() or "job"


def _folder(folder) -> Path:
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise VfxSwapError(f"{folder}: exists and is not a folder")
    return folder


# --- OpenCue ----------------------------------------------------------------------------------

def opencue_layers(job: FarmJob) -> list[dict]:
    """One dict a layer, in order: what both the outline script and the spec are built from."""
    layers = []
    for name, args, gpus in _steps(job, CUE_FRAMES):
        render = name == "render"
        command = _check_text(f"{name} command", shell_line(args, keep=(CUE_FRAMES,)))
        layers.append({"name": name, "command": command, "range": range_text(job.frames) if render else "1",
                       "chunk": job.chunk if render else 1, "gpus": gpus})
    return layers


def opencue_spec(job: FarmJob, *, show: str, shot: str, user: str, name: str) -> str:
    """The job spec XML (cjsl-1.13) that `opencue.api.launchSpec` sends to cuebot."""
    root = ET.Element("spec")
    for tag, text in (("show", show), ("shot", shot), ("user", user)):
        ET.SubElement(root, tag).text = text
    job_el = ET.SubElement(root, "job", name=name)
    ET.SubElement(job_el, "paused").text = "False"
    ET.SubElement(job_el, "env")
    layers_el = ET.SubElement(job_el, "layers")
    depends = ET.SubElement(root, "depends")
    previous = None
    for layer in opencue_layers(job):
        el = ET.SubElement(layers_el, "layer", name=layer["name"], type="Render")
        ET.SubElement(el, "cmd").text = layer["command"]
        ET.SubElement(el, "range").text = layer["range"]
        ET.SubElement(el, "chunk").text = str(layer["chunk"])
        if layer["gpus"]:
            ET.SubElement(el, "gpus").text = str(layer["gpus"])
            ET.SubElement(el, "gpu_memory").text = CUE_GPU_MEMORY
        env = ET.SubElement(el, "env")
        for key, value in LAYER_ENV.items():
            ET.SubElement(env, "key", name=key).text = value
        ET.SubElement(ET.SubElement(el, "services"), "service").text = "shell"
        if previous is not None:
            dep = ET.SubElement(depends, "depend", type="LAYER_ON_LAYER", anyframe="False")
            for tag, text in (("depjob", name), ("deplayer", layer["name"]), ("onjob", name), ("onlayer", previous)):
                ET.SubElement(dep, tag).text = text
        previous = layer["name"]
    ET.indent(root)
    return f'<?xml version="1.0"?>\n{CUE_DOCTYPE}\n{ET.tostring(root, encoding="unicode")}\n'


_OUTLINE_SCRIPT = '''\
"""OpenCue outline for a vfxswap farm job, written by vfxswap.

`python {script}` builds the layers with PyOutline (opencue-pyoutline) and submits them to the
cuebot it is configured for. Commands run as written, without the pycuerun wrapper, so farm
nodes need only vfxswap. {spec} is the same job as a spec for `opencue.api.launchSpec`.
"""

SHOW = {show!r}
SHOT = {shot!r}
USER = {user!r}
NAME = {name!r}
ENV = {env!r}
GPU_MEMORY = {gpu_memory!r}
# One layer a step, in order; a layer starts when the whole layer before it is done.
LAYERS = {layers}


def build(show=SHOW, shot=SHOT, user=USER):
    """The outline: a Shell layer a step, each depending on the one before (LAYER_ON_LAYER)."""
    from outline import Outline
    from outline.depend import DependType
    from outline.modules.shell import Shell

    ol = Outline(NAME, show=show, shot=shot, user=user)
    previous = None
    for spec in LAYERS:
        gpus = {{"gpus": spec["gpus"], "gpu_memory": GPU_MEMORY}} if spec["gpus"] else {{}}
        layer = Shell(spec["name"], command=spec["command"], range=spec["range"], chunk=spec["chunk"],
                      env=dict(ENV), **gpus)
        ol.add_layer(layer)
        if previous is not None:
            layer.depend_on(previous, DependType.LayerOnLayer)
        previous = layer
    return ol


if __name__ == "__main__":
    from outline.cuerun import launch

    for submitted in launch(build(), use_pycuerun=False):
        print(submitted.name())
'''


def write_opencue(job: FarmJob, folder) -> list[Path]:
    """Write `vfxswap_outline.py` (PyOutline) and `vfxswap_job.xml` (cuebot job spec) into `folder`.

    The job's `show` must exist on the cuebot; its `shot` defaults to the layers folder's name and
    its `user` to the current user (cuebot refuses jobs owned by root).
    """
    job = job.absolute()
    folder = _folder(folder)
    label = _label(job)
    show = job.show
    shot = job.shot if job.shot is not None else (label if len(label) >= 3 else "vfxswap")
    user = job.user if job.user is not None else getpass.getuser()
    if not _CUE_NAME.match(shot):
        raise VfxSwapError(f"OpenCue shot {shot!r}: use at least 3 letters, digits, '_' or '.'")
    for what, value in (("OpenCue show", show), ("OpenCue user", user)):
        if not _CUE_WORD.match(value):
            raise VfxSwapError(f"{what} {value!r}: use letters, digits, '_', '.' or '-'")
    name = f"vfxswap_{label}"
    script, spec = folder / "vfxswap_outline.py", folder / "vfxswap_job.xml"
    spec_text = opencue_spec(job, show=show, shot=shot, user=user, name=name)
    script_text = _OUTLINE_SCRIPT.format(
        script=script.name, spec=spec.name, show=show, shot=shot, user=user, name=name, env=LAYER_ENV,
        gpu_memory=CUE_GPU_MEMORY, layers=pprint.pformat(opencue_layers(job), width=100, sort_dicts=False))
    write_text(spec, spec_text)
    write_text(script, script_text)
    return [script, spec]


# --- Deadline 10 ------------------------------------------------------------------------------

def _output_name(job: FarmJob) -> str:
    """`face.####.exr` as the render writes it: the plate's padding, at least 4 digits."""
    padding = FramePattern.parse(job.plates).padding if FramePattern.has_token(job.plates) else 4
    return f"{job.output_name}.{'#' * max(padding, 4)}.exr"


def _key_values(pairs) -> str:
    return "".join(f"{key}={_check_text(key, str(value), one_line=True)}\n" for key, value in pairs)


def deadline10_jobs(job: FarmJob) -> list[tuple[str, list, list]]:
    """(file stem, job info pairs, plugin info pairs) for each Deadline job, in submission order."""
    label = _label(job)
    env = [(f"EnvironmentKeyValue{i}", f"{key}={value}") for i, (key, value) in enumerate(LAYER_ENV.items())]
    jobs = []

    def add(step: str, info: list, argv: list[str], token: str | None = None) -> None:
        plugin = [("ShellExecute", "True"), ("Shell", "default"),
                  ("Arguments", shell_line(argv, keep=(token,) if token else ()))]
        jobs.append((f"{len(jobs) + 1:02d}_{step}",
                     [("Plugin", "CommandLine"), *info, ("BatchName", f"vfxswap {label}"), *env], plugin))

    for name, args, gpus in _steps(job, DL_FRAMES):
        if name != "render":  # one task: Frames=0, the command carries its own frame range
            info = [("Name", f"vfxswap {label} {name}"), ("Frames", 0), ("ChunkSize", 1)]
            if gpus:
                info.append(("Comment", f"needs {gpus} GPU(s) on one worker: route it with a GPU Group or Pool"))
            add(name, info, args)
            continue
        for first, last, step in frame_runs(parse_frames(job.frames)):  # a job per run: no task spans a gap
            token = DL_FRAMES + (f"x{step}" if step > 1 else "")
            frames = run_text(first, last, step)
            add(name, [("Name", f"vfxswap {label} render {frames}"), ("Frames", frames), ("ChunkSize", job.chunk),
                       ("OutputDirectory0", job.out), ("OutputFilename0", _output_name(job))],
                job.render_args(token), token)
    return jobs


def write_deadline10(job: FarmJob, folder) -> list[Path]:
    """Write `NN_step_job_info.job` / `NN_step_plugin_info.job` per Deadline job and `submit.sh`."""
    job = job.absolute()
    folder = _folder(folder)
    files = {}  # every text first, so bad input leaves nothing half-written
    for stem, info, plugin in deadline10_jobs(job):
        files[folder / f"{stem}_job_info.job"] = _key_values(info)
        files[folder / f"{stem}_plugin_info.job"] = _key_values(plugin)
    names = [path.name for path in files]
    gpus = job.train_gpus
    gpu_note = (f"# The train job needs {gpus} GPU(s) on one worker; the CommandLine plugin cannot ask for\n"
                "# GPUs, so give that job a Group or Pool of GPU workers (Monitor, or Group= in its job info).\n"
                if gpus else "")
    submit = folder / "submit.sh"
    files[submit] = ("#!/bin/sh\n"
                     "# Submits this vfxswap job to Deadline 10. -dependent makes each job wait for the one\n"
                     "# listed before it: extract, train, then the render job(s), in this order.\n"
                     "# Set DEADLINE_COMMAND when deadlinecommand is not on PATH\n"
                     "# (e.g. /opt/Thinkbox/Deadline10/bin/deadlinecommand).\n"
                     f"{gpu_note}"
                     "set -e\n"
                     'cd "$(dirname "$0")"\n'
                     'exec "${DEADLINE_COMMAND:-deadlinecommand}" -SubmitMultipleJobs -dependent \\\n'
                     + " \\\n".join(f"  -job {names[i]} {names[i + 1]}" for i in range(0, len(names), 2)) + "\n")
    for path, text in files.items():
        write_text(path, text)
    os.chmod(submit, 0o755)
    return list(files)
