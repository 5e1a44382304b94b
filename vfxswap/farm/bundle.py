"""Open Job Description bundles: the render as chunked, retry-safe farm tasks.

A bundle is a folder with `template.yaml` (jobtemplate-2023-09 with the TASK_CHUNKING
extension) and `parameter_values.yaml`: what `openjd run` executes locally and what
`deadline bundle submit` sends to AWS Deadline Cloud unchanged. Steps:
- `Extract` (only when the destination faceset does not exist yet): one task, because tracking
  and smoothing need the whole shot;
- `Render`: `CHUNK[INT]` tasks over the frame range, each `vfxswap render --frames <chunk>
  --skip-existing`, so a retried or duplicated chunk rewrites identical bytes (atomic writes,
  no wall-clock stamps) and never touches its neighbours' frames.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from vfxswap.errors import VfxSwapError
from vfxswap.plates.frames import parse_frames


def _render_script(options: dict) -> str:
    flags = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            flags.append(flag)
        elif value not in (None, False):
            flags += [flag, shlex.quote(str(value))]
    return ("set -euo pipefail\n"
            '"{{Param.Vfxswap}}" render --model "{{Param.Model}}" --plates "{{Param.Plates}}" '
            '--faceset "{{Param.Faceset}}" --out "{{Param.OutDir}}" --frames "{{Task.Param.Frame}}" '
            "--skip-existing --progress json " + " ".join(flags) + "\n")


def template(*, extract: bool, options: dict) -> dict:
    params = [
        {"name": "Plates", "type": "STRING", "description": "plate sequence pattern (####)"},
        {"name": "Model", "type": "PATH", "objectType": "DIRECTORY", "dataFlow": "IN"},
        {"name": "Faceset", "type": "PATH", "objectType": "DIRECTORY", "dataFlow": "INOUT"},
        {"name": "OutDir", "type": "PATH", "objectType": "DIRECTORY", "dataFlow": "OUT"},
        {"name": "Frames", "type": "STRING", "default": "1001-1100"},
        {"name": "ChunkSize", "type": "INT", "default": 10, "minValue": 1},
        {"name": "Vfxswap", "type": "STRING", "default": "vfxswap", "description": "the engine command on the node"},
    ]
    render = {
        "name": "Render",
        "parameterSpace": {"taskParameterDefinitions": [{
            "name": "Frame", "type": "CHUNK[INT]", "range": "{{Param.Frames}}",
            "chunks": {"defaultTaskCount": "{{Param.ChunkSize}}", "rangeConstraint": "CONTIGUOUS"}}]},
        # One engine process per chunk: the model loads once per chunk, not once per frame.
        "stepEnvironments": [{"name": "Engine", "variables": {"PYTHONUNBUFFERED": "1"}}],
        "script": {"actions": {"onRun": {"command": "bash", "args": ["{{Task.File.Run}}"]}},
                   "embeddedFiles": [{"name": "Run", "type": "TEXT", "data": _render_script(options)}]},
    }
    steps = []
    if extract:
        steps.append({"name": "Extract", "script": {
            "actions": {"onRun": {"command": "bash", "args": ["{{Task.File.Run}}"]}},
            "embeddedFiles": [{"name": "Run", "type": "TEXT", "data":
                               'set -euo pipefail\n"{{Param.Vfxswap}}" extract "{{Param.Plates}}" '
                               '--out "{{Param.Faceset}}" --frames "{{Param.Frames}}"\n'}]}})
        render["dependencies"] = [{"dependsOn": "Extract"}]
    steps.append(render)
    return {"specificationVersion": "jobtemplate-2023-09", "extensions": ["TASK_CHUNKING"],
            "name": "vfxswap {{Param.Frames}}", "parameterDefinitions": params, "steps": steps}


def write_bundle(bundle: str | Path, *, plates: str, model: str, faceset: str, out: str, frames: str,
                 chunk: int = 10, options: dict | None = None, vfxswap: str = "vfxswap") -> Path:
    """Write a bundle folder and validate it with openjd-model; returns the folder."""
    parse_frames(frames)  # a clear error now rather than on the farm
    bundle = Path(bundle)
    bundle.mkdir(parents=True, exist_ok=True)
    doc = template(extract=not (Path(faceset) / "faceset.db").exists(), options=dict(options or {}))
    values = {"parameterValues": [
        {"name": "Plates", "value": str(Path(plates).absolute())}, {"name": "Model", "value": str(Path(model).absolute())},
        {"name": "Faceset", "value": str(Path(faceset).absolute())}, {"name": "OutDir", "value": str(Path(out).absolute())},
        {"name": "Frames", "value": frames}, {"name": "ChunkSize", "value": int(chunk)},
        {"name": "Vfxswap", "value": vfxswap}]}
    from vfxswap.atomic import write_text

    write_text(bundle / "template.yaml", yaml.safe_dump(doc, sort_keys=False))
    write_text(bundle / "parameter_values.yaml", yaml.safe_dump(values, sort_keys=False))
    validate(bundle)
    return bundle


def validate(bundle: str | Path) -> None:
    from openjd.model import DocumentType, decode_job_template, document_string_to_object

    text = (Path(bundle) / "template.yaml").read_text()
    try:
        decode_job_template(template=document_string_to_object(document=text, document_type=DocumentType.YAML),
                            supported_extensions=["TASK_CHUNKING"])
    except Exception as exc:  # openjd raises its own DecodeValidationError
        raise VfxSwapError(f"{bundle}/template.yaml: not a valid job template: {exc}") from None


def run_bundle(bundle: str | Path, *, timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run every step of a bundle on this machine through `openjd run` (openjd-cli)."""
    beside = Path(sys.executable).parent / "openjd"  # a venv's own openjd, when the venv is not on PATH
    openjd = shutil.which("openjd") or (str(beside) if beside.exists() else None)
    if openjd is None:
        raise VfxSwapError("openjd (openjd-cli) is not installed: pip install openjd-cli")
    import json

    bundle = Path(bundle)
    template_doc = yaml.safe_load((bundle / "template.yaml").read_text())
    last = template_doc["steps"][-1]["name"]
    # The bundle keeps Deadline's `parameterValues` list; `openjd run` takes a flat mapping.
    values = yaml.safe_load((bundle / "parameter_values.yaml").read_text())["parameterValues"]
    params = json.dumps({v["name"]: v["value"] for v in values})
    return subprocess.run([openjd, "run", str(bundle / "template.yaml"), "--job-param", params, "--step", last,
                           "--run-dependencies"], capture_output=True, text=True, timeout=timeout)
