"""vfxswap.hosts: a real render job through the same code the hosts use, cancel, failure text."""

from __future__ import annotations

import os

import pytest

from vfxswap.hosts import JobRunner, RenderJob
from vfxswap.plates import read_image
from conftest import make_astronaut_shot


@pytest.fixture(scope="module")
def shot(tmp_path_factory):
    return make_astronaut_shot(tmp_path_factory.mktemp("hostshot"), frames=8)


def _job(shot, out, **options):
    return RenderJob(model="passthrough", plates=str(shot / "plates" / "plate.####.exr"), out=str(out),
                     faceset=str(shot / "faceset"), options={"color": "none", **options})


def test_a_real_render_job_streams_progress_and_names_its_outputs(shot, tmp_path):
    job = _job(shot, tmp_path / "out", frames="1001-1003", comp=True)
    events = []
    result = JobRunner(job).run(events.append)
    assert result.ok and result.written == [1001, 1002, 1003] and not result.error
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done" and kinds.count("frame") == 3
    assert [e["done"] for e in events if e["event"] == "frame"] == [1, 2, 3]
    outputs = job.outputs()
    assert outputs["layer"].endswith("face.####.exr") and outputs["comp"].endswith("comp.####.exr")
    for f in (1001, 1002, 1003):
        assert read_image(outputs["layer"].replace("####", str(f))).attribute("vfxswap:synthetic") == "true"


def test_a_cancelled_job_leaves_only_complete_frames(shot, tmp_path):
    out = tmp_path / "out"
    runner = JobRunner(_job(shot, out, resolution=512, layers=True)).start()
    for event in runner.events():
        if event["event"] == "frame":
            runner.cancel()  # as a host's Cancel button does
    result = runner.wait(timeout=120)
    assert result.cancelled and result.returncode != 0
    files = sorted(os.listdir(out))
    frames = [f for f in files if f.startswith("face.")]
    assert 1 <= len(frames) < 8
    assert not [f for f in files if f.startswith(".")]  # no temporary file left behind
    for name in frames:  # every frame on disk reads whole
        assert read_image(out / name).pixels.shape[2] == 10


def test_a_failing_engine_surfaces_its_error_text(shot, tmp_path):
    job = RenderJob(model=str(tmp_path / "no-such-model"), plates=str(shot / "plates" / "plate.####.exr"),
                    out=str(tmp_path / "out"), faceset=str(shot / "faceset"))
    result = JobRunner(job).run()
    assert not result.ok and result.returncode == 1
    assert "no-such-model" in result.error and "Traceback" not in result.error


def test_options_become_the_flags_the_cli_parses(tmp_path):
    """0 is a value, not an absent option: track 0 must reach the engine."""
    from vfxswap.jobspec import RenderOptions, from_argv

    job = RenderJob(model="m", plates="p.####.exr", out=str(tmp_path), frames="1001-1010",
                    options={"track": 0, "erode": 0.0, "layers": True, "comp": False, "like": ["a.jpg", "b dir"],
                             "plate_space": None})
    cmd = job.command()
    assert "--track=0" in cmd and "--erode=0.0" in cmd
    assert "--comp" not in cmd and not any(word.startswith("--plate-space") for word in cmd)
    args = from_argv(RenderOptions, cmd[cmd.index("render") + 1:])
    assert (args.track, args.erode, args.layers, args.comp, args.like) == (0, 0.0, True, False, ["a.jpg", "b dir"])


def _fake_engine(tmp_path, body: str) -> str:
    """An executable standing in for `python -m vfxswap render ...` (its arguments are ignored)."""
    import stat
    import sys

    script = tmp_path / "engine.py"
    script.write_text(f"#!{sys.executable}\nimport json, os, sys, time\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


def test_engine_output_that_is_not_utf8_or_not_an_event_does_not_stall_the_job(tmp_path):
    """A library's Latin-1 byte on stderr killed the stderr reader, and a bare `0` on stdout
    (valid JSON, not an event) killed the event loop: either way the engine then blocked on a
    full pipe and the host waited for ever. Both are text now, and the job completes."""
    engine = _fake_engine(tmp_path, """
os.write(2, b"warning: cannot read /shots/caf\\xe9/plate.1001.exr metadata\\n")
print("0", flush=True)
for f in range(1001, 1201):
    os.write(2, b"vfxswap: info: " + b"x" * 400 + b"\\n")  # 80 KB in all: more than a pipe holds
    print(json.dumps({"event": "frame", "frame": f, "status": "written", "done": f - 1000, "total": 200}), flush=True)
""")
    import threading

    runner = JobRunner(RenderJob(model="m", plates="p.####.exr", out=str(tmp_path), python=engine))
    events, results = [], []
    worker = threading.Thread(target=lambda: results.append(runner.run(events.append)), daemon=True)
    worker.start()
    worker.join(60)
    if worker.is_alive() or not results:  # stalled (or raised): free the engine, then fail
        runner._proc.kill()
        pytest.fail(f"the job did not complete: {len(events)} event(s) read")
    assert results[0].ok and results[0].written == list(range(1001, 1201))
    assert {"event": "log", "text": "0"} in events


def test_a_cancel_before_the_engine_starts_stops_it_as_it_starts(tmp_path):
    """The panel starts the engine on a worker thread; a Cancel (or closing the panel) in the
    moment before was dropped, and the whole range rendered."""
    import time

    engine = _fake_engine(tmp_path, """
for f in range(1001, 1061):
    print(json.dumps({"event": "frame", "frame": f, "status": "written", "done": f - 1000, "total": 60}), flush=True)
    time.sleep(0.5)
""")
    runner = JobRunner(RenderJob(model="m", plates="p.####.exr", out=str(tmp_path), python=engine))
    runner.cancel()
    started = time.monotonic()
    result = runner.run()
    assert result.cancelled and not result.ok and len(result.written) < 60
    assert time.monotonic() - started < 15


def test_outputs_carry_the_digits_and_name_the_engine_writes(tmp_path):
    """The engine keeps the plates' padding (at least 4) and --name: a host's Read must match."""
    job = RenderJob(model="m", plates="/shots/plate.########.exr", out=str(tmp_path),
                    options={"name": "swap", "comp": True})
    assert job.outputs() == {"layer": str(tmp_path / "swap.########.exr"), "comp": str(tmp_path / "comp.########.exr")}
    assert RenderJob(model="m", plates="/p/plate.%02d.exr", out="/o").outputs() == {"layer": "/o/face.####.exr"}
