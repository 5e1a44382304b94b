"""Farm jobs: an OpenJD bundle for a GRID clip (extract, train on two gloo processes, render in
chunks of 4 through one engine per session) runs through `openjd run` and writes the same bytes
as one `vfxswap render`; a chunk killed mid-write and re-run leaves no partial frame; `farm
status` tells done, missing and failed; the session engine renders what a plain render does."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import make_astronaut_shot, need_shared
from vfxswap.atomic import is_temp_path, process_alive, temp_path_for
from vfxswap.errors import VfxSwapError
from vfxswap.farm import session
from vfxswap.farm.bundle import TRAIN_GRACE_S, check, parameter_values, run_bundle, run_command, template, write_bundle
from vfxswap.farm.job import FarmJob
from vfxswap.farm.status import farm_status
from vfxswap.jobspec import RenderOptions, TrainOptions, from_argv
from vfxswap.plates.frames import parse_frames
from vfxswap.render.render import render

BIN = Path(sys.executable).parent
ENGINE = str(BIN / "vfxswap")
GRID = "videos/grid/bbaf2n.mpg"


def _cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "vfxswap", *map(str, args)], capture_output=True, text=True,
                          timeout=600, **kw)


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("face.*.exr"))}


def _needs_openjd():
    """openjd-cli is a declared dependency: missing, it is an error, never a skip."""
    assert (BIN / "openjd").exists(), f"openjd-cli is not installed: no {BIN / 'openjd'}"


@pytest.fixture(autouse=True)
def _engine_on_path(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", f"{BIN}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # openjd's session folders


# --- the template -----------------------------------------------------------------------------

def test_template_steps_environments_and_values(tmp_path):
    (tmp_path / "fs").mkdir()
    job = FarmJob(plates=str(tmp_path / "p" / "plate.####.exr"), model=str(tmp_path / "m"), faceset=str(tmp_path / "fs"),
                  out=str(tmp_path / "out"), frames="1001-1012", chunk=4, render_options={"mask": "hull"},
                  train=TrainOptions(src=str(tmp_path / "a"), release_ref="REL-1", iters=50, gpus=4))
    doc = template(job)
    assert [s["name"] for s in doc["steps"]] == ["Extract", "Train", "Render"]
    assert doc["steps"][1]["dependencies"] == [{"dependsOn": "Extract"}]
    assert doc["steps"][2]["dependencies"] == [{"dependsOn": "Train"}]
    assert doc["steps"][1]["hostRequirements"]["amounts"] == [{"name": "amount.worker.gpu", "min": 4}]
    train_line = doc["steps"][1]["script"]["embeddedFiles"][0]["data"]
    assert '--gpus="$VFXSWAP_TRAIN_GPUS"' in train_line and "--resume-if-saved" in train_line
    render = doc["steps"][2]
    frame = render["parameterSpace"]["taskParameterDefinitions"][0]
    assert frame["type"] == "CHUNK[INT]" and frame["chunks"]["rangeConstraint"] == "CONTIGUOUS"
    enter = render["stepEnvironments"][0]["script"]["embeddedFiles"][0]["data"]
    assert "farm session start" in enter and "--skip-existing" in enter and "--mask=hull" in enter
    assert '--frames="{{Task.Param.Frame}}"' in render["script"]["embeddedFiles"][0]["data"]
    # values travel as environment variables: no path is ever pasted into a script
    assert str(tmp_path) not in yaml.safe_dump(doc)
    write_bundle(job, tmp_path / "bundle")  # validates with openjd-model
    values = {v["name"]: v["value"] for v in
              yaml.safe_load((tmp_path / "bundle" / "parameter_values.yaml").read_text())["parameterValues"]}
    assert values["ChunkSize"] == 4 and values["TrainGpus"] == 4 and values["ReleaseRef"] == "REL-1"
    # a faceset already extracted and no training: render alone; a CPU training step asks for no GPU
    (tmp_path / "fs" / "faceset.db").touch()
    cpu = FarmJob(plates=job.plates, model=job.model, faceset=job.faceset, out=job.out, frames="1001-1012",
                  train=TrainOptions(src="a", release_ref="R", device="cpu"))
    assert [s["name"] for s in template(cpu)["steps"]] == ["Train", "Render"]
    assert "hostRequirements" not in template(cpu)["steps"][0]


@pytest.mark.parametrize("frames, chunk", [("1001-1015", 7), ("1001-1020", 7), ("1-22,30-31", 7), ("1-9", 5),
                                           ("1001-1100x2", 10), ("5,7,9", 4), ("1001-1003", 10)])
def test_chunks_are_the_tasks_openjd_makes(tmp_path, frames, chunk):
    """FarmJob.chunks() (what the other exports, reports and bench use) gives the same render
    tasks as OpenJD instantiating the bundle's template: balanced contiguous chunks."""
    from openjd.model import StepParameterSpaceIterator

    job = FarmJob(plates=str(tmp_path / "plate.####.exr"), model=str(tmp_path / "m"), faceset=str(tmp_path / "fs"),
                  out=str(tmp_path / "out"), frames=frames, chunk=chunk)
    made = check(template(job), parameter_values(job), tmp_path)  # as a farm's server instantiates it
    render = next(step for step in made.steps if step.name == "Render")
    tasks = [task["Frame"].value for task in StepParameterSpaceIterator(space=render.parameterSpace)]
    assert tasks == [f"{a}-{b}" for a, b in job.chunks()]
    sizes = [b - a + 1 for a, b in job.chunks()]
    assert max(sizes) <= chunk and sum(sizes) == len(parse_frames(frames))


def test_scripts_pass_values_and_a_quoted_engine_through_unharmed(tmp_path):
    """Each step's script, run by bash with the job environment's variables as the farm sets
    them: an engine path with a space and values with quotes arrive as single arguments."""
    engine_dir = tmp_path / "my engine"
    engine_dir.mkdir()
    fake = engine_dir / "vfxswap"
    fake.write_text('#!/usr/bin/env python3\nimport json, os, sys\n'
                    'open(os.environ["ARGV_LOG"], "a").write(json.dumps(sys.argv[1:]) + "\\n")\n')
    fake.chmod(0o755)
    odd = tmp_path / "it's a \"shot\""
    job = FarmJob(plates=str(odd / "plate.####.exr"), model=str(odd / "model"), faceset=str(odd / "fs"),
                  out=str(odd / "out"), frames="1001-1004", engine=f"{shlex.quote(str(fake))} --verbose",
                  train=TrainOptions(src=str(odd / "a"), release_ref="REL 9's \"A\"", iters=3))
    doc = template(job)
    env = dict(os.environ, ARGV_LOG=str(tmp_path / "argv.jsonl"))
    values = {v["name"]: v["value"] for v in parameter_values(job)["parameterValues"]}
    for var, value in doc["jobEnvironments"][0]["variables"].items():
        env[var] = str(values[value[len("{{Param."):-2]])
    assert doc["steps"][-1]["stepEnvironments"][0]["variables"]["VFXSWAP_SESSION"] == "{{Session.WorkingDirectory}}"
    env["VFXSWAP_SESSION"] = str(odd)
    scripts = [s["script"]["embeddedFiles"][0]["data"] for s in doc["steps"]]
    scripts.append(doc["steps"][-1]["stepEnvironments"][0]["script"]["embeddedFiles"][0]["data"])
    for text in scripts:
        text = text.replace("{{Task.Param.Frame}}", "1001-1002")
        subprocess.run(["bash", "-c", text], env=env, check=True)
    extract, train, render, enter = [json.loads(x) for x in (tmp_path / "argv.jsonl").read_text().splitlines()]
    assert extract == ["--verbose", "extract", str(odd / "plate.####.exr"), "--out", str(odd / "fs"),
                       "--frames=1001-1004"]
    assert "--release-ref=REL 9's \"A\"" in train and f"--src={odd / 'a'}" in train
    assert render == ["--verbose", "farm", "session", "render", str(odd), "--frames=1001-1002"]
    assert enter[:5] == ["--verbose", "farm", "session", "start", str(odd)]
    assert f"--plates={odd / 'plate.####.exr'}" in enter


def test_bad_job_input_is_one_clear_error(tmp_path):
    with pytest.raises(VfxSwapError, match="frame range"):
        FarmJob(plates="p.####.exr", model="m", faceset="f", out="o", frames="1010-1001")
    out = _cli("farm", "bundle", "--plates", "p.####.exr", "--model", "m", "--faceset", "f", "--render-out", "o",
               "--frames", "1001-1010", "--out", tmp_path / "b", "--train-src", "a")
    assert out.returncode == 1 and out.stderr.strip().splitlines() == [
        "vfxswap: error: --train-src needs --release-ref (the performers' release reference)"]
    with pytest.raises(VfxSwapError, match="untrained"):
        FarmJob(plates="p.####.exr", model="m", faceset="f", out="o", frames="1", train=TrainOptions(src="a",
                                                                                                release_ref="R", iters=0))
    with pytest.raises(VfxSwapError, match="--render-device gpu0"):  # would fail only on the farm
        FarmJob(plates="p.####.exr", model="m", faceset="f", out="o", frames="1", render_options={"device": "gpu0"})
    with pytest.raises(VfxSwapError, match="--preset huge"):
        FarmJob(plates="p.####.exr", model="m", faceset="f", out="o", frames="1",
                train=TrainOptions(src="a", release_ref="R", preset="huge"))
    with pytest.raises(VfxSwapError, match="shell word list"):  # every task's shell would fail on it
        FarmJob(plates="p.####.exr", model="m", faceset="f", out="o", frames="1", engine="'/opt/vfx swap/vfxswap")
    (tmp_path / "a file").write_text("")
    for where in (tmp_path / "a file", tmp_path / "a file" / "sub"):  # one line naming it, not a traceback
        out = _cli("farm", "bundle", "--plates", "p.####.exr", "--model", "m", "--faceset", "f", "--render-out", "o",
                   "--frames", "1001-1010", "--out", where)
        assert out.returncode == 1 and len(out.stderr.strip().splitlines()) == 1 and str(where) in out.stderr
    out = _cli("farm", "run", tmp_path / "no bundle")
    assert out.returncode == 1 and out.stderr.strip().splitlines() == [
        f"vfxswap: error: {tmp_path / 'no bundle' / 'template.yaml'}: No such file or directory"]


def test_every_render_and_train_option_given_to_farm_bundle_reaches_its_step(tmp_path):
    """`vfxswap farm bundle` takes every `vfxswap render` option (and every `vfxswap train` one
    for its training step) and the bundle's steps run the engine with them: read back from the
    bundle's own scripts, as the farm will run them."""
    (tmp_path / "fs").mkdir()
    (tmp_path / "fs" / "faceset.db").touch()
    out = _cli("farm", "bundle", "--plates", tmp_path / "p" / "plate.####.exr", "--model", tmp_path / "m",
               "--faceset", tmp_path / "fs", "--render-out", tmp_path / "layers", "--frames", "1001-1010",
               "--out", tmp_path / "bundle", "--erode", "2", "--blur", "3", "--plate-space", "ACEScg", "--track", "0",
               "--color", "mkl", "--like", "refs/a.png", "refs/b dir", "--render-device", "cpu", "--comp",
               "--train-src", tmp_path / "a", "--release-ref", "REL-7", "--ae-dims", "64", "--arch", "liae",
               "--train-resolution", "64", "--flip-src", "--no-flip-dst", "--no-warp", "--train-gpus", "2")
    assert out.returncode == 0, out.stderr
    doc = yaml.safe_load((tmp_path / "bundle" / "template.yaml").read_text())
    values = {v["name"]: str(v["value"]) for v in
              yaml.safe_load((tmp_path / "bundle" / "parameter_values.yaml").read_text())["parameterValues"]}
    env = {var: values[ref[len("{{Param."):-2]] for var, ref in doc["jobEnvironments"][0]["variables"].items()}

    def words(script: str) -> list[str]:  # the script's command as the farm's bash runs it
        line = script.splitlines()[-1]
        for var, value in env.items():
            line = line.replace(f'"${var}"', shlex.quote(value))
        return shlex.split(line)

    steps = {step["name"]: step for step in doc["steps"]}
    render_argv = words(steps["Render"]["stepEnvironments"][0]["script"]["embeddedFiles"][0]["data"])
    options = from_argv(RenderOptions, render_argv[render_argv.index("--") + 1:])
    assert (options.erode, options.blur, options.plate_space, options.track) == (2.0, 3.0, "ACEScg", 0)
    assert (options.color, options.device, options.comp) == ("mkl", "cpu", True)
    assert options.like == [os.path.abspath("refs/a.png"), os.path.abspath("refs/b dir")]  # farm nodes have no cwd of ours
    assert options.skip_existing and options.progress == "json"
    train_argv = words(steps["Train"]["script"]["embeddedFiles"][0]["data"])
    train_options = from_argv(TrainOptions, train_argv[train_argv.index("train") + 1:])
    assert (train_options.ae_dims, train_options.arch, train_options.resolution) == (64, "liae", 64)
    assert (train_options.flip_src, train_options.flip_dst, train_options.warp) == (True, False, False)
    assert train_options.resume_if_saved and train_options.preset is None  # no --preset: a resumed model keeps its own
    assert (train_options.gpus, train_options.release_ref, train_options.model_dir) == (2, "REL-7", str(tmp_path / "m"))
    bad = _cli("farm", "bundle", "--plates", "p.####.exr", "--model", "m", "--faceset", "f", "--render-out", "o",
               "--frames", "1001-1010", "--out", tmp_path / "b2", "--train-src", "a", "--release-ref", "R",
               "--ae-dims", "0")  # refused here, not on the farm
    assert bad.returncode == 1 and bad.stderr.strip().splitlines() == [
        "vfxswap: error: model option ae_dims: 0 must be a positive integer"]


def test_a_long_fix_list_and_a_passthrough_check_make_jobs_openjd_accepts(tmp_path):
    """A fix list of scattered frames (OpenJD caps a job's name at 128 characters, and the name
    showed the frames), and `--model passthrough`, a word the farm must not resolve as a folder."""
    fixes = ",".join(str(1001 + 7 * i + i % 3) for i in range(40))
    job = FarmJob(plates=str(tmp_path / "plate.####.exr"), model="passthrough", faceset=str(tmp_path / "fs"),
                  out=str(tmp_path / "out"), frames=fixes, chunk=4).absolute()
    made = check(template(job), parameter_values(job), tmp_path)
    assert made.name == "vfxswap plate.####.exr"
    assert {v["name"]: v["value"] for v in parameter_values(job)["parameterValues"]}["Model"] == "passthrough"
    assert next(p for p in template(job)["parameterDefinitions"] if p["name"] == "Model")["type"] == "STRING"



def test_a_cancelled_training_task_saves_where_it_stopped(tmp_path):
    """`openjd run` of the Train step, cancelled (SIGTERM to openjd, which cancels the running
    action as a farm worker does): the engine gets the notify signal, not a bare SIGKILL, and
    saves at the iteration it reached; nothing was due to be saved yet, so only the cancel
    handling can have written the model."""
    _needs_openjd()
    from conftest import write_faceset

    a, b = write_faceset(tmp_path / "A", seed=1), write_faceset(tmp_path / "B", seed=2)
    job = FarmJob(plates=str(tmp_path / "p" / "plate.####.exr"), model=str(tmp_path / "model"), faceset=str(b),
                  out=str(tmp_path / "out"), frames="1001-1004", engine=f"{shlex.quote(sys.executable)} -m vfxswap",
                  train=TrainOptions(src=str(a), release_ref="REL-1", iters=100000, batch=2, device="cpu"))
    assert not job.extract
    bundle = write_bundle(job, tmp_path / "bundle")[0].parent
    command = run_command(bundle)
    command[command.index("--step") + 1] = "Train"
    history = tmp_path / "model" / "history.jsonl"
    proc = subprocess.Popen([*command, "--no-run-dependencies"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    deadline = time.time() + 180
    while time.time() < deadline and not (history.exists() and len(history.read_text().splitlines()) >= 3):
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    log = proc.communicate(timeout=TRAIN_GRACE_S + 60)[0]
    assert proc.returncode != 0, log[-3000:]
    manifest = json.loads((tmp_path / "model" / "manifest.json").read_text())
    logged = [json.loads(line)["iter"] for line in history.read_text().splitlines()]
    assert 30 <= manifest["iteration"] < 250, log[-3000:]  # logged every 10; --save-every defaults to 250
    assert manifest["iteration"] == logged[-1]  # the loss curve ends where the model does
    assert "stopped by SIGTERM" in log


# --- the GRID clip through openjd run ------------------------------------------------------------

@pytest.fixture(scope="module")
def grid_farm(tmp_path_factory, shared_file):
    """GRID frames 1001-1012 as EXR plates and a faceset of identity A; then the whole bundle
    (extract, train with two gloo processes, render in chunks of 4) through `openjd run`.
    The folder name has a space and a quote: values must reach the scripts unharmed."""
    _needs_openjd()
    clip = shared_file(GRID)
    stills = sorted((clip.parents[2] / "identities" / "A_grid_s1").glob("*.jpg"))[:24]
    if len(stills) < 24:
        need_shared("GRID identity stills absent")
    root = tmp_path_factory.mktemp("farm") / "shot 01's"
    os.environ["PATH"] = f"{BIN}{os.pathsep}{os.environ['PATH']}"
    assert _cli("plates", "convert", clip, root / "plates" / "plate.####.exr", "--frames", "1001-1012",
                "--to-space", "ACEScg").returncode == 0
    (root / "a_stills").mkdir()
    for p in stills:
        (root / "a_stills" / p.name).symlink_to(p)
    assert _cli("extract", root / "a_stills", "--out", root / "faceset_a", "--detector", "dlib", "--landmarker", "dlib").returncode == 0
    job = FarmJob(plates=str(root / "plates" / "plate.####.exr"), model=str(root / "model"),
                  faceset=str(root / "faceset_b"), out=str(root / "farm"), frames="1001-1012", chunk=4,
                  engine=ENGINE, render_options={"color": "rct"},
                  train=TrainOptions(src=str(root / "faceset_a"), release_ref="REL-GRID-s1", release_ref_dst="REL-GRID-s2",
                                  iters=4, batch=2, gpus=2, device="cpu"))
    bundle = write_bundle(job, root / "bundle")[0].parent
    env = dict(os.environ, TMPDIR=str(root))
    started = time.time()
    done = subprocess.run(run_command(bundle), capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stdout[-3000:]
    print(f"GRID bundle (extract, train x2 gloo, render 3 chunks): {time.time() - started:.1f} s")
    return root, job, bundle, done.stdout


def test_grid_bundle_matches_a_single_render_byte_for_byte(grid_farm):
    root, job, bundle, log = grid_farm
    assert [s["name"] for s in yaml.safe_load((bundle / "template.yaml").read_text())["steps"]] == \
        ["Extract", "Train", "Render"]
    assert [ln.split("= ")[1] for ln in log.splitlines() if "Frame(CHUNK[INT]) =" in ln] == \
        ["1001-1004", "1005-1008", "1009-1012"]
    # training ran as two DDP processes and recorded both release references verbatim
    manifest = json.loads((root / "model" / "manifest.json").read_text())
    assert manifest["train"]["world_size"] == 2 and manifest["iteration"] == 4
    assert {i["release_ref"] for i in manifest["identities"].values()} == {"REL-GRID-s1", "REL-GRID-s2"}
    # one engine per session: one "engine ready" and three chunks served by it, no fallback
    assert log.count("ready for session") == 1 and "rendering frames" not in log
    single = root / "single"
    out = _cli("render", "--model", job.model, "--plates", job.plates, "--faceset", job.faceset, "--out", single,
               "--color", "rct")
    assert out.returncode == 0, out.stderr
    farm, ref = _digests(root / "farm"), _digests(single)
    assert len(ref) == 12 and farm == ref
    runs = sorted((root / "farm" / "manifests").glob("render_*.json"))
    assert [json.loads(p.read_text())["frames"] for p in runs] == ["1001-1004", "1005-1008", "1009-1012"]
    status = farm_status(bundle)
    assert status.complete and status.done == list(range(1001, 1013)) and status.chunks_run == 3
    assert _cli("farm", "status", bundle).returncode == 0


def _engine_pids(out: Path) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"serve" in cmd and str(out).encode() in cmd:
                pids.append(int(proc.name))
    return pids


def test_a_chunk_killed_mid_write_reruns_to_the_same_bytes(grid_farm):
    """kill -9 of the node's processes while a frame is being written, then the bundle again."""
    if not Path("/proc").is_dir():
        pytest.skip("needs /proc to find the engine")  # the OS, not the project
    root, job, _, _ = grid_farm
    ref = _digests(root / "farm")
    out = root / "killed"
    rerun = FarmJob(plates=job.plates, model=job.model, faceset=job.faceset, out=str(out), frames=job.frames,
                    chunk=4, engine=ENGINE, render_options={"color": "rct"})
    bundle = write_bundle(rerun, root / "bundle_kill")[0].parent
    proc = subprocess.Popen(run_command(bundle), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env=dict(os.environ, TMPDIR=str(root)))
    caught = None
    deadline = time.time() + 300
    while time.time() < deadline and caught is None:
        if out.is_dir():
            temps = [p for p in out.iterdir() if is_temp_path(p.name)]
            whole = [p for p in out.glob("face.*.exr")]
            if temps and len(whole) >= 5:  # into the second chunk, mid-write
                caught = temps
                for pid in _engine_pids(out):
                    os.kill(pid, signal.SIGKILL)
                os.killpg(proc.pid, signal.SIGKILL)
        time.sleep(0.005)
    proc.wait(timeout=60)
    assert caught, "never caught a frame mid-write"
    status = farm_status(bundle)
    print(f"killed with {len(status.done)} frame(s) whole, {len(status.temp_files)} temp file(s) left")
    assert not status.complete and status.missing and set(status.done) < set(range(1001, 1013))
    for frame in status.done:  # what is on disk is whole and final
        name = f"face.{frame}.exr"
        assert _digests(out)[name] == ref[name]
    assert _cli("farm", "status", bundle).returncode == 1
    again = run_bundle(bundle, timeout=600)
    assert again.returncode == 0, again.stdout[-2000:]
    assert _digests(out) == ref
    assert not [p for p in out.iterdir() if is_temp_path(p.name)]  # the killed writer's leftover went too
    assert farm_status(bundle).complete


# --- the session engine and status on a small synthetic shot -------------------------------------

@pytest.fixture(scope="module")
def shot(tmp_path_factory):
    return make_astronaut_shot(tmp_path_factory.mktemp("shot"), frames=6)


def _render_argv(shot: Path, out: Path, frames="1001-1006") -> list[str]:
    return ["--model", "passthrough", "--plates", str(shot / "plates" / "plate.####.exr"), "--faceset",
            str(shot / "faceset"), "--out", str(out), "--frames", frames, "--skip-existing", "--progress", "json"]


def test_session_engine_renders_chunks_like_a_plain_render(shot, tmp_path, capsys):
    render(RenderOptions(model="passthrough", plates=str(shot / "plates" / "plate.####.exr"),
                         faceset=str(shot / "faceset"), out=str(tmp_path / "plain")))
    sess = tmp_path / "session"
    state = session.start(sess, _render_argv(shot, tmp_path / "engine"), idle_timeout=60)
    try:
        assert oct((sess / session.STATE).stat().st_mode & 0o777) == "0o600"
        assert session.render_chunk(sess, "1001-1003") == 0
        assert session.render_chunk(sess, "1004-1006") == 0
        events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [e["frame"] for e in events if e["event"] == "frame"] == list(range(1001, 1007))
        with pytest.raises(Exception, match="outside the range"):
            session.render_chunk(sess, "1007-1008")
        # a stranger without the token is ignored, and the engine keeps serving
        import socket
        with socket.create_connection(("127.0.0.1", state["port"])) as s:
            s.sendall(b'{"token": "wrong", "stop": true}\n')
        assert session.render_chunk(sess, "1001") == 0  # skipped: already whole
    finally:
        assert session.stop(sess)
    assert not process_alive(state["pid"])
    assert _digests(tmp_path / "engine") == _digests(tmp_path / "plain")


def test_a_cancelled_task_stops_its_chunk_and_the_engine_serves_on(shot, tmp_path):
    """The farm cancels a task (SIGTERM to the task's process): the engine stops that chunk after
    the frame in hand, leaves only whole frames, and serves the session's next task."""
    sess = tmp_path / "session"
    state = session.start(sess, _render_argv(shot, tmp_path / "engine"), idle_timeout=60)
    try:
        task = subprocess.Popen([sys.executable, "-m", "vfxswap", "farm", "session", "render", str(sess),
                                 "--frames", "1001-1006"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first = json.loads(task.stdout.readline())
        assert first["event"] == "start"
        task.send_signal(signal.SIGTERM)
        assert task.wait(timeout=60) == 130
        time.sleep(1.0)
        on_disk = sorted(_digests(tmp_path / "engine"))
        assert len(on_disk) < 6, "the cancelled chunk ran to the end"
        assert not [p for p in (tmp_path / "engine").iterdir() if is_temp_path(p.name)]
        assert process_alive(state["pid"])
        assert session.render_chunk(sess, "1001-1006") == 0
        assert farm_status(tmp_path / "engine", frames="1001-1006").complete
    finally:
        session.stop(sess)


def test_a_task_whose_engine_died_renders_its_chunk_itself(shot, tmp_path):
    sess = tmp_path / "session"
    state = session.start(sess, _render_argv(shot, tmp_path / "engine"), idle_timeout=60)
    os.kill(state["pid"], signal.SIGKILL)
    while process_alive(state["pid"]):
        time.sleep(0.05)
    out = _cli("farm", "session", "render", sess, "--frames", "1002-1003")
    assert out.returncode == 0, out.stderr
    assert "the engine is not answering; rendering frames 1002-1003 in this task" in out.stderr
    assert sorted(_digests(tmp_path / "engine")) == ["face.1002.exr", "face.1003.exr"]


def test_an_abandoned_engine_stops_by_itself(shot, tmp_path):
    sess = tmp_path / "session"
    state = session.start(sess, _render_argv(shot, tmp_path / "engine"), idle_timeout=1.5)
    deadline = time.time() + 30
    while process_alive(state["pid"]) and time.time() < deadline:
        time.sleep(0.1)
    assert not process_alive(state["pid"]), "idle engine still running"
    state = session.start(sess, _render_argv(shot, tmp_path / "engine"), idle_timeout=600)
    (sess / session.STATE).unlink()  # the farm removed the session folder's contents
    deadline = time.time() + 30
    while process_alive(state["pid"]) and time.time() < deadline:
        time.sleep(0.1)
    assert not process_alive(state["pid"]), "engine outlived its session"


def test_an_engine_that_cannot_load_says_why(shot, tmp_path):
    argv = _render_argv(shot, tmp_path / "engine")
    argv[argv.index("--faceset") + 1] = str(tmp_path / "nowhere")  # the test's own argv: two words
    with pytest.raises(VfxSwapError, match="stopped while loading: .*nowhere"):
        session.start(tmp_path / "session", argv, idle_timeout=60)


def test_status_reports_done_missing_failed_and_leftovers(shot, tmp_path):
    out = tmp_path / "layers"
    render(RenderOptions(model="passthrough", plates=str(shot / "plates" / "plate.####.exr"),
                         faceset=str(shot / "faceset"), out=str(out), frames="1001-1004"))
    # a later chunk that failed one frame (as its run manifest records), and a frame cut short
    record = json.loads(next((out / "manifests").glob("render_*.json")).read_text())
    record.update(frames="1005-1006", written="1006", skipped="", failed={"1005": "plate.1005.exr: corrupt"},
                  time="9999-12-31T00:00:00")
    (out / "manifests" / "render_1005-1006_x.json").write_text(json.dumps(record))
    good = (out / "face.1004.exr").read_bytes()
    (out / "face.1004.exr").write_bytes(good[: len(good) // 2])
    leftover = temp_path_for(out / "face.1003.exr")
    leftover.write_bytes(b"partial")
    status = farm_status(out)
    assert status.frames == list(range(1001, 1007))
    assert status.done == [1001, 1002, 1003]
    assert status.missing == [1004, 1005, 1006] and status.unreadable == [1004]
    assert status.failed == {1005: "plate.1005.exr: corrupt"}
    assert status.temp_files == [str(leftover)] and not status.complete
    text = _cli("farm", "status", out, "--json")
    assert text.returncode == 1 and json.loads(text.stdout)["missing"] == "1004-1006"
    assert "failed 1005: plate.1005.exr: corrupt" in _cli("farm", "status", out).stdout
    # a render of the range heals it, and removes the dead writer's leftover on this host
    dead = Path(str(leftover).replace(f"-{os.getpid()}.", "-999999999."))
    leftover.rename(dead)
    render(RenderOptions(model="passthrough", plates=str(shot / "plates" / "plate.####.exr"),
                         faceset=str(shot / "faceset"), out=str(out), skip_existing=True))
    healed = farm_status(out)
    assert healed.complete and not healed.failed and not healed.temp_files
    assert np.array_equal(np.frombuffer((out / "face.1004.exr").read_bytes()[:100], np.uint8),
                          np.frombuffer(good[:100], np.uint8))


def test_status_before_any_chunk_finished_reads_the_layers_a_render_writes(shot, tmp_path):
    """No run manifest yet (the first chunk was cancelled mid-way): the layers' pattern comes from
    the bundle's plates, whose 6-digit padding the render keeps, so whole frames count as done."""
    job = FarmJob(plates=str(tmp_path / "p" / "plate.######.exr"), model="passthrough",
                  faceset=str(shot / "faceset"), out=str(tmp_path / "layers"), frames="1001-1004")
    bundle = write_bundle(job, tmp_path / "bundle")[0].parent
    (tmp_path / "layers").mkdir()
    for frame in (1001, 1002):
        (tmp_path / "layers" / f"face.{frame:06d}.exr").write_bytes((shot / "plates" / f"plate.{frame}.exr").read_bytes())
    status = farm_status(bundle)
    assert status.output.endswith("face.######.exr")
    assert status.done == [1001, 1002] and status.missing == [1003, 1004]


def test_render_finds_the_faces_of_plates_under_a_mapped_path(shot, tmp_path):
    """A farm node sees the plates under another root (path mapping, another mount): the faceset's
    one source with the same sequence name is used, and the layers are the same bytes."""
    render(RenderOptions(model="passthrough", plates=str(shot / "plates" / "plate.####.exr"),
                         faceset=str(shot / "faceset"), out=str(tmp_path / "here"), frames="1001-1002"))
    mount = tmp_path / "mnt" / "show"
    mount.parent.mkdir()
    mount.symlink_to(shot / "plates")
    render(RenderOptions(model="passthrough", plates=str(mount / "plate.####.exr"), faceset=str(shot / "faceset"),
                         out=str(tmp_path / "mapped"), frames="1001-1002"))
    assert _digests(tmp_path / "mapped") == _digests(tmp_path / "here") and len(_digests(tmp_path / "here")) == 2
