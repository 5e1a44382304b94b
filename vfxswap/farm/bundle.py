"""Open Job Description bundles: the job as chunked, retry-safe farm tasks.

A bundle is a folder with `template.yaml` (jobtemplate-2023-09 with the TASK_CHUNKING
extension) and `parameter_values.yaml`: what `openjd run` executes locally and what
`deadline bundle submit` sends to AWS Deadline Cloud unchanged. Steps, each after the last:
- `Extract` (only when the destination faceset does not exist yet): one task, because tracking
  and smoothing need the whole shot;
- `Train` (when asked): one task, `vfxswap train --gpus N` (N DDP processes on one node), which
  resumes its own last save when the farm retries it, and saves where it stopped when the task
  is cancelled or its host pre-empted (SIGTERM first, SIGKILL after TRAIN_GRACE_S);
- `Render`: `CHUNK[INT]` tasks over the range. The step environment starts a render engine per
  session (the model, landmarks and OCIO config load once; see `farm.session`), and each task
  sends it one chunk with `--skip-existing`, so a retried or duplicated chunk rewrites identical
  bytes (atomic writes, no wall-clock stamps) and never touches its neighbours' frames.
Parameter values reach the scripts as environment variables, so paths with spaces or quotes
need no escaping; the engine command is shell words (`'/opt/vfxswap 1.2/bin/vfxswap'`,
`python -m vfxswap`), split once by `eval` into an array.
"""

from __future__ import annotations

import copy
import json
import logging
import subprocess
from dataclasses import replace
from pathlib import Path

import yaml

from vfxswap.errors import VfxSwapError
from vfxswap.farm.job import FarmJob, find_command, shell_line
from vfxswap.plates.frames import range_text

log = logging.getLogger("vfxswap")

# job parameter -> (environment variable, definition)
_PATH = {"type": "PATH", "objectType": "DIRECTORY"}
_PARAMS = {
    # a folder (PATH, so Deadline Cloud's job attachments carry and remap it) + the file pattern in it
    "PlatesDir": ("VFXSWAP_PLATES_DIR", {**_PATH, "dataFlow": "IN", "description": "the plates' folder"}),
    "PlateName": ("VFXSWAP_PLATE_NAME", {"type": "STRING", "description": "the sequence in it: sh010.####.exr"}),
    "Model": ("VFXSWAP_MODEL", {**_PATH, "dataFlow": "IN"}),
    "Faceset": ("VFXSWAP_FACESET", {**_PATH, "dataFlow": "IN"}),
    "OutDir": ("VFXSWAP_OUT", {**_PATH, "dataFlow": "OUT"}),
    "Frames": ("VFXSWAP_FRAMES", {"type": "STRING", "default": "1001-1100"}),
    "ChunkSize": (None, {"type": "INT", "default": 10, "minValue": 1}),
    "Vfxswap": ("VFXSWAP_ENGINE", {"type": "STRING", "default": "vfxswap",
                                   "description": "the engine command on the node"}),
}
# training values a farm user may want to change at submission; the other train options are
# written into the task's command as given. field -> (parameter, variable, definition); a
# parameter is in the job only when its option is set (a resumed model keeps its own preset)
_TRAIN_PARAMS = {
    "src": ("TrainSrc", "VFXSWAP_TRAIN_SRC", {**_PATH, "dataFlow": "IN", "description": "faceset of identity A"}),
    "release_ref": ("ReleaseRef", "VFXSWAP_RELEASE_REF", {
        "type": "STRING", "minLength": 1, "description": "the performers' release reference, recorded verbatim"}),
    "release_ref_src": ("ReleaseRefSrc", "VFXSWAP_RELEASE_REF_SRC", {"type": "STRING", "minLength": 1}),
    "release_ref_dst": ("ReleaseRefDst", "VFXSWAP_RELEASE_REF_DST", {"type": "STRING", "minLength": 1}),
    "preset": ("Preset", "VFXSWAP_PRESET", {"type": "STRING"}),
    "iters": ("Iters", "VFXSWAP_ITERS", {"type": "INT", "minValue": 1}),
    "gpus": ("TrainGpus", "VFXSWAP_TRAIN_GPUS", {"type": "INT", "default": 1, "minValue": 1}),
}


def _ref(variable: str) -> str:
    """A script's reference to a job environment variable, quoted: `"$VFXSWAP_MODEL"`."""
    return f'"${variable}"'


def _var(name: str) -> str:
    return _ref(_PARAMS[name][0])


def _train_params(job: FarmJob) -> dict:
    """field -> (parameter, variable, definition) of the training values this job sets."""
    return {name: p for name, p in _TRAIN_PARAMS.items() if getattr(job.train, name) is not None}


_PRELUDE = 'set -euo pipefail\neval "ENGINE=($VFXSWAP_ENGINE)"\n'
_ENGINE = '"${ENGINE[@]}"'
_ENGINE_WORD = "@vfxswap-engine@"  # stands for the engine in argument lists until quoted


TRAIN_GRACE_S, TASK_GRACE_S = 300, 60  # SIGTERM to SIGKILL on a cancel: a model's save; a frame in hand


def _script(line: str, grace_s: int = TASK_GRACE_S) -> dict:
    """A task's script. A cancel (or a pre-empted host) sends SIGTERM, then SIGKILL after
    `grace_s`, and the engine uses the time: training saves where it stopped, a render chunk
    finishes the frame in hand. `exec` makes the engine the process that gets the signal (bash
    would die at once and leave it to the SIGKILL); without NOTIFY_THEN_TERMINATE the farm
    sends SIGKILL straight away."""
    return {"actions": {"onRun": {"command": "bash", "args": ["{{Task.File.Run}}"], "cancelation": {
                "mode": "NOTIFY_THEN_TERMINATE", "notifyPeriodInSeconds": grace_s}}},
            "embeddedFiles": [{"name": "Run", "type": "TEXT", "data": f"{_PRELUDE}exec {line}\n"}]}


def template(job: FarmJob) -> dict:
    """The job template for `job` (its values go in parameter_values.yaml, not here)."""
    tok = copy.copy(job)  # the job with every value replaced by its environment variable
    tok.plates = '"$VFXSWAP_PLATES_DIR/$VFXSWAP_PLATE_NAME"'
    tok.model, tok.faceset, tok.out = _var("Model"), _var("Faceset"), _var("OutDir")
    tok.frames, tok.engine = _var("Frames"), _ENGINE_WORD
    keep = {tok.plates, tok.model, tok.faceset, tok.out, tok.frames, "{{Task.Param.Frame}}"}
    params = dict(_PARAMS)
    # what each folder's data does in this job (job attachments upload IN, bring back OUT)
    if job.extract:
        params["Faceset"] = ("VFXSWAP_FACESET", {**_PATH, "dataFlow": "OUT"})
    if job.train:
        train_params = _train_params(job)
        params.update({name: (var, definition) for name, var, definition in train_params.values()})
        tok.train = replace(job.train, dst=tok.faceset, model_dir=tok.model,
                            **{k: _ref(var) for k, (_, var, _) in train_params.items()})
        keep |= {_ref(var) for _, var, _ in train_params.values()}
        written = "INOUT" if (Path(job.model) / "manifest.json").exists() else "OUT"  # resumed, or new
        params["Model"] = ("VFXSWAP_MODEL", {**_PATH, "dataFlow": written})
    elif job.model == "passthrough":  # the pipeline check: a word, not a folder to resolve or carry
        params["Model"] = ("VFXSWAP_MODEL", {"type": "STRING"})
    keep = {k: k for k in keep if k} | {_ENGINE_WORD: _ENGINE}

    steps = []
    if job.extract:
        steps.append({"name": "Extract", "script": _script(shell_line(tok.extract_args(), keep))})
    if job.train:
        train = {"name": "Train", "script": _script(shell_line(tok.train_args(), keep), TRAIN_GRACE_S)}
        if job.train_gpus:
            train["hostRequirements"] = {"amounts": [{"name": "amount.worker.gpu", "min": job.train_gpus}]}
        steps.append(train)
    session = '"$VFXSWAP_SESSION"'
    render_argv = tok.render_args(tok.frames)
    render_argv = render_argv[render_argv.index("render") + 1:]  # what `vfxswap render` takes
    engine = f"{_ENGINE} farm session"
    steps.append({
        "name": "Render",
        "parameterSpace": {"taskParameterDefinitions": [{
            "name": "Frame", "type": "CHUNK[INT]", "range": "{{Param.Frames}}",
            "chunks": {"defaultTaskCount": "{{Param.ChunkSize}}", "rangeConstraint": "CONTIGUOUS"}}]},
        "stepEnvironments": [{"name": "RenderEngine", "variables": {
            "PYTHONUNBUFFERED": "1", "VFXSWAP_SESSION": "{{Session.WorkingDirectory}}"}, "script": {
            "actions": {"onEnter": {"command": "bash", "args": ["{{Env.File.Enter}}"]},
                        "onExit": {"command": "bash", "args": ["{{Env.File.Exit}}"]}},
            "embeddedFiles": [
                {"name": "Enter", "type": "TEXT", "data": f"{_PRELUDE}{engine} start {session} -- "
                 + shell_line(render_argv, keep) + "\n"},
                {"name": "Exit", "type": "TEXT", "data": f"{_PRELUDE}{engine} stop {session}\n"}]}}],
        "script": _script(f'{engine} render {session} --frames="{{{{Task.Param.Frame}}}}"'),
    })
    for before, step in zip(steps, steps[1:]):
        step["dependencies"] = [{"dependsOn": before["name"]}]
    return {"specificationVersion": "jobtemplate-2023-09", "extensions": ["TASK_CHUNKING"],
            "name": _job_name(job),
            "parameterDefinitions": [{"name": name, **definition} for name, (_, definition) in params.items()],
            "jobEnvironments": [{"name": "vfxswap", "variables": {
                var: f"{{{{Param.{name}}}}}" for name, (var, _) in params.items() if var}}],
            "steps": steps}


def _job_name(job: FarmJob) -> str:
    """The frames the job renders, as a farm monitor lists it; a long fix list (OpenJD caps a job
    name at 128 characters) gives way to the plate's name."""
    return "vfxswap {{Param.Frames}}" if len(range_text(job.frames, step_mark=":")) <= 100 else \
        "vfxswap {{Param.PlateName}}"


def parameter_values(job: FarmJob) -> dict:
    plates = Path(job.plates)
    values = {"PlatesDir": str(plates.parent), "PlateName": plates.name, "Model": job.model,
              "Faceset": job.faceset, "OutDir": job.out, "ChunkSize": int(job.chunk), "Vfxswap": job.engine,
              "Frames": range_text(job.frames, step_mark=":")}  # OpenJD's range syntax: `1001-1099:2`
    if job.train:
        values.update({param: getattr(job.train, name) for name, (param, _, _) in _train_params(job).items()})
    return {"parameterValues": [{"name": k, "value": v} for k, v in values.items()]}


def write_bundle(job: FarmJob, bundle: str | Path) -> list[Path]:
    """Write a bundle folder for `job`, checked first with openjd-model as a farm would use it
    (nothing is written for a job the farm would refuse); returns its files. `vfxswap farm run
    BUNDLE` runs it here; `deadline bundle submit BUNDLE` sends it to Deadline Cloud."""
    from vfxswap.atomic import write_text

    job = job.absolute()
    bundle = Path(bundle)
    doc, values = template(job), parameter_values(job)
    check(doc, values, bundle)
    bundle.mkdir(parents=True, exist_ok=True)
    files = [bundle / "template.yaml", bundle / "parameter_values.yaml"]
    write_text(files[0], yaml.safe_dump(doc, sort_keys=False))
    write_text(files[1], yaml.safe_dump(values, sort_keys=False))
    log.info("run it here: vfxswap farm run %s; on Deadline Cloud: deadline bundle submit %s", bundle, bundle)
    return files


def check(doc: dict, values: dict, bundle: Path):
    """Decode the template and instantiate the job from these values, as a farm's server does ->
    openjd's Job. A value the template refuses (a range OpenJD cannot read, say) fails here, in
    one line naming the bundle."""
    from openjd.model import ParameterValue, ParameterValueType, create_job, decode_job_template

    try:
        decoded = decode_job_template(template=doc, supported_extensions=["TASK_CHUNKING"])
    except Exception as exc:  # openjd raises its own DecodeValidationError
        raise VfxSwapError(f"{bundle}/template.yaml: not a valid job template: {exc}") from None
    types = {p["name"]: p["type"] for p in doc["parameterDefinitions"]}
    given = {v["name"]: ParameterValue(type=ParameterValueType(types[v["name"]]), value=str(v["value"]))
             for v in values["parameterValues"]}
    try:
        return create_job(job_template=decoded, job_parameter_values=given)
    except Exception as exc:
        raise VfxSwapError(f"{bundle}: OpenJD cannot make a job of these values: {exc}") from None


def openjd_command() -> str:
    found = find_command("openjd")
    if found is None:
        raise VfxSwapError("openjd (openjd-cli) is not installed: pip install openjd-cli")
    return found


def run_command(bundle: str | Path) -> list[str]:
    """The `openjd run` command line that runs every step of a bundle on this machine."""
    bundle = Path(bundle)
    last = yaml.safe_load((bundle / "template.yaml").read_text())["steps"][-1]["name"]
    # The bundle keeps Deadline Cloud's `parameterValues` list; `openjd run` takes a flat mapping.
    values = yaml.safe_load((bundle / "parameter_values.yaml").read_text())["parameterValues"]
    params = json.dumps({v["name"]: v["value"] for v in values})
    return [openjd_command(), "run", str(bundle / "template.yaml"), "--job-param", params, "--step", last,
            "--run-dependencies"]


def run_bundle(bundle: str | Path, *, timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run every step of a bundle on this machine through `openjd run` (openjd-cli)."""
    return subprocess.run(run_command(bundle), capture_output=True, text=True, timeout=timeout)
