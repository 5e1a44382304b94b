"""AWS Deadline Cloud takes the bundle `vfxswap farm bundle` writes, checked offline.

Deadline Cloud's own client library (`deadline` on PyPI, module `deadline.client`) reads the
bundle the way `deadline bundle submit BUNDLE` does before it talks to AWS: the bundle's files
stay inside it, the template and parameter_values.yaml are read, the parameters are merged with
the queue's and checked against the template's parameterDefinitions, PATH values become job
attachment inputs and outputs, and the CreateJob request is assembled. The full submission runs
with AWS stubbed out (botocore's Stubber answers GetQueue, sockets refuse to connect) and
writes its debug snapshot instead of calling CreateJob; the request is then checked against the
CreateJob input shape botocore ships. The client does not look inside the template (it sends it
verbatim); the service instantiates it per Open Job Description, which the last test does with
openjd-model from exactly the values CreateJob would carry.

`deadline` is a test dependency (the `test` extra, `pip install -e '.[test]'`): without it this file
fails to import, it does not skip.
"""

from __future__ import annotations

import json
import socket
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

import boto3  # deadline's own dependencies
from botocore.stub import Stubber
from botocore.validate import validate_parameters  # noqa: E402
from deadline.client import api  # noqa: E402
from deadline.client.config import config_file  # noqa: E402
from deadline.client.job_bundle.loader import (  # noqa: E402
    parse_yaml_or_json_content,
    read_yaml_or_json,
    read_yaml_or_json_object,
    validate_directory_symlink_containment,
)
from deadline.client.job_bundle.parameters import (  # noqa: E402
    apply_job_parameters,
    merge_queue_job_parameters,
    read_job_bundle_parameters,
)
from deadline.client.job_bundle.submission import AssetReferences, split_parameter_args  # noqa: E402

from vfxswap.farm.bundle import write_bundle  # noqa: E402
from vfxswap.farm.job import FarmJob  # noqa: E402
from vfxswap.jobspec import TrainOptions  # noqa: E402

FARM = "farm-" + "0" * 32
QUEUE = "queue-" + "1" * 32
# What a queue with the default Conda queue environment adds to every job's parameters.
QUEUE_PARAMETERS = [{"name": "CondaPackages", "type": "STRING", "default": ""},
                    {"name": "CondaChannels", "type": "STRING", "default": "deadline-cloud"}]


@pytest.fixture(params=["render", "extract+train"])
def shot(request, tmp_path):
    """A bundle and what Deadline Cloud must make of it: a render of an extracted faceset, or a
    job that still extracts its faceset and trains two GPUs first (paths with spaces and quotes)."""
    root = tmp_path / "show 'A'"
    (root / "plates").mkdir(parents=True)
    (root / "plates" / "sh010.1001.exr").write_bytes(b"plate")
    (root / "model").mkdir()
    (root / "model" / "model.safetensors").write_bytes(b"weights")
    src, dst, out = root / "faceset A", root / "faceset B", root / "layers"
    src.mkdir()
    (src / "faceset.db").write_bytes(b"A")
    train = None
    if request.param == "render":
        dst.mkdir()
        (dst / "faceset.db").write_bytes(b"B")  # exists: no Extract step
    else:
        train = TrainOptions(src=str(src), release_ref="REL-042 'A'", release_ref_dst="REL-043", preset="quick",
                             iters=500, gpus=2)
    job = FarmJob(plates=str(root / "plates" / "sh010.####.exr"), model=str(root / "model"), faceset=str(dst),
                  out=str(out), frames="1001-1020,1030-1035", chunk=7, engine="/opt/vfx swap/bin/vfxswap",
                  train=train)
    bundle = write_bundle(job, tmp_path / "bundle")[0].parent

    wire = {"PlatesDir": {"path": str(root / "plates")}, "PlateName": {"string": "sh010.####.exr"},
            "Model": {"path": job.model}, "Faceset": {"path": job.faceset},
            "OutDir": {"path": job.out}, "Frames": {"string": "1001-1020,1030-1035"}, "ChunkSize": {"int": "7"},
            "Vfxswap": {"string": "/opt/vfx swap/bin/vfxswap"}}
    # job attachments: the plates go up; the faceset goes up when it exists, comes back when extracted
    inputs, outputs = {str(root / "plates"), job.model}, {job.out}
    (inputs if request.param == "render" else outputs).add(job.faceset)
    if train:
        wire.update({"TrainSrc": {"path": str(src)}, "ReleaseRef": {"string": "REL-042 'A'"},
                     "ReleaseRefDst": {"string": "REL-043"}, "Preset": {"string": "quick"},
                     "Iters": {"int": "500"}, "TrainGpus": {"int": "2"}})
        inputs.add(str(src))
        inputs.discard(job.model)  # no saved model (manifest.json) yet: training writes it (OUT)
        outputs.add(job.model)
    return {"job": job, "bundle": bundle, "root": root, "wire": wire, "inputs": inputs, "outputs": outputs}


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No AWS: a config, cache and credentials of our own, no telemetry, and no sockets."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))  # deadline's hash cache lives in ~/.deadline/cache
    monkeypatch.setenv("DEADLINE_CONFIG_FILE_PATH", str(home / "deadline.ini"))
    monkeypatch.setenv("DEADLINE_CLOUD_TELEMETRY_OPT_OUT", "true")
    for var in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.setenv(var, str(home / "no-aws-file"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for var in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "DEADLINE_HOOKS_DIR"):
        monkeypatch.delenv(var, raising=False)

    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    yield home
    assert not attempts, f"tried the network (and something swallowed the error): {attempts}"


def test_deadline_reads_merges_and_validates_the_bundle(shot, offline):
    """The steps `deadline bundle submit` takes on the bundle before any AWS call, one by one."""
    bundle = str(shot["bundle"])
    validate_directory_symlink_containment(bundle)
    text, kind = read_yaml_or_json(bundle, "template", required=True)
    assert kind == "YAML" and text == (shot["bundle"] / "template.yaml").read_text()
    template = parse_yaml_or_json_content(text, kind, bundle, "template")
    assert template["specificationVersion"] == "jobtemplate-2023-09"
    assert template["extensions"] == ["TASK_CHUNKING"]  # no EXPR: PATH values are never URIs

    params = read_job_bundle_parameters(bundle)  # template definitions + parameter_values.yaml, checked
    written = yaml.safe_load((shot["bundle"] / "parameter_values.yaml").read_text())["parameterValues"]
    assert {p["name"]: p["value"] for p in params} == {v["name"]: v["value"] for v in written}

    merged = merge_queue_job_parameters(queue_id=QUEUE, job_parameters=params, queue_parameters=QUEUE_PARAMETERS)
    references = AssetReferences.from_dict(read_yaml_or_json_object(bundle, "asset_references", required=False))
    apply_job_parameters([], bundle, merged, references, allow_uri_path_values=False)
    app_parameters, job_parameters = split_parameter_args(merged, bundle)
    assert app_parameters == {}
    assert job_parameters == shot["wire"]  # the queue's own parameters keep their queue defaults

    assert references.input_directories == shot["inputs"]
    assert references.output_directories == shot["outputs"]
    assert not references.input_filenames and not references.referenced_paths


def test_deadline_takes_command_line_overrides(shot, offline, tmp_path, monkeypatch):
    """`deadline bundle submit BUNDLE -p Frames=... -p ChunkSize=... -p OutDir=rel`: overrides win,
    and a relative PATH given on the command line is made absolute against the working folder."""
    bundle = str(shot["bundle"])
    monkeypatch.chdir(tmp_path)
    merged = merge_queue_job_parameters(job_parameters=read_job_bundle_parameters(bundle), queue_parameters=[])
    references = AssetReferences()
    overrides = [{"name": "Frames", "value": "1001-1010"}, {"name": "ChunkSize", "value": "3"},
                 {"name": "OutDir", "value": "v002/layers"}]
    apply_job_parameters(overrides, bundle, merged, references)
    _, job_parameters = split_parameter_args(merged, bundle)
    out = str(tmp_path / "v002" / "layers")
    assert job_parameters == {**shot["wire"], "Frames": {"string": "1001-1010"}, "ChunkSize": {"int": "3"},
                              "OutDir": {"path": out}}
    assert out in references.output_directories and shot["job"].out not in references.output_directories


def test_deadline_bundle_submit_runs_offline_up_to_create_job(shot, offline, monkeypatch):
    """create_job_from_job_bundle (what `deadline bundle submit` calls) end to end: GetQueue
    answered by a stub, job attachments hashed into a local debug snapshot instead of S3, and the
    CreateJob request written out; that request fits botocore's CreateJob input shape."""
    session = boto3.session.Session(aws_access_key_id="test", aws_secret_access_key="test", region_name="us-west-2")
    client = session.client("deadline")
    stubber = Stubber(client)
    stubber.add_response("get_queue", {
        "farmId": FARM, "queueId": QUEUE, "displayName": "vfx", "status": "IDLE", "defaultBudgetAction": "NONE",
        "blockedReason": "NO_BUDGET_CONFIGURED", "createdAt": datetime(2026, 1, 1, tzinfo=timezone.utc),
        "createdBy": "test", "jobAttachmentSettings": {"s3BucketName": "bucket", "rootPrefix": "DeadlineCloud"},
    }, {"farmId": FARM, "queueId": QUEUE})
    stubber.activate()
    monkeypatch.setattr(api, "get_boto3_client", lambda *a, **k: client)
    monkeypatch.setattr(api, "get_queue_user_boto3_session", lambda *a, **k: session)  # AssumeQueueRoleForUser
    config = config_file.read_config()
    config_file.set_setting("defaults.farm_id", FARM, config=config)
    config_file.set_setting("defaults.queue_id", QUEUE, config=config)
    snapshot = offline / "snapshot"
    snapshot.mkdir()
    printed: list[str] = []
    try:
        job_id = api.create_job_from_job_bundle(
            str(shot["bundle"]), queue_parameter_definitions=QUEUE_PARAMETERS, config=config,
            known_asset_paths=[str(shot["root"])], debug_snapshot_dir=str(snapshot),
            print_function_callback=printed.append)
    finally:
        stubber.deactivate()
    stubber.assert_no_pending_responses()
    assert job_id is None  # a snapshot submits nothing

    request = json.loads((snapshot / "create_job_args.json").read_text())
    assert request["template"] == (shot["bundle"] / "template.yaml").read_text()  # sent verbatim
    assert request["templateType"] == "YAML"
    assert request["parameters"] == shot["wire"]
    (manifest,) = request["attachments"]["manifests"]
    root = Path(manifest["rootPath"])
    assert root == shot["root"] and manifest["rootPathFormat"] == "posix"
    assert {str(root / d) for d in manifest["outputRelativeDirectories"]} == shot["outputs"]
    assert request["attachments"]["fileSystem"] == "COPIED"
    validate_parameters(request, client.meta.service_model.operation_model("CreateJob").input_shape)


def test_the_service_instantiates_what_create_job_carries(shot):
    """The service's side, per Open Job Description: the template decodes with TASK_CHUNKING, the
    CreateJob values pass the parameter constraints, and the Render step's chunks are the ones
    FarmJob plans; the Train step asks for its GPUs with amount.worker.gpu."""
    from openjd.model import (DocumentType, StepParameterSpaceIterator, create_job, decode_job_template,
                              document_string_to_object, preprocess_job_parameters)
    from openjd.model.v2023_09 import STANDARD_AMOUNT_CAPABILITIES

    text = (shot["bundle"] / "template.yaml").read_text()
    template = decode_job_template(template=document_string_to_object(document=text, document_type=DocumentType.YAML),
                                   supported_extensions=["TASK_CHUNKING"])
    values = {name: next(iter(v.values())) for name, v in shot["wire"].items()}  # {"int": "7"} -> "7"
    # As a server does it: no workstation paths to resolve against.
    params = preprocess_job_parameters(job_template=template, job_parameter_values=values, job_template_dir=Path(),
                                       current_working_dir=Path(), allow_job_template_dir_walk_up=True)
    job = create_job(job_template=template, job_parameter_values=params)
    assert job.name == "vfxswap 1001-1020,1030-1035"
    steps = {step.name: step for step in job.steps}
    assert list(steps) == (["Extract", "Train", "Render"] if shot["job"].train else ["Render"])

    render = steps["Render"]
    chunks = [task["Frame"].value for task in StepParameterSpaceIterator(space=render.parameterSpace)]
    assert chunks == [f"{a}-{b}" for a, b in shot["job"].chunks()] == ["1001-1007", "1008-1014", "1015-1020",
                                                                       "1030-1035"]
    assert [e.name for e in render.stepEnvironments] == ["RenderEngine"]
    if shot["job"].train:
        (amount,) = steps["Train"].hostRequirements.amounts
        assert (amount.name, amount.min) == ("amount.worker.gpu", 2)
        assert amount.name in STANDARD_AMOUNT_CAPABILITIES  # an OpenJD name fleets report, not a custom one
