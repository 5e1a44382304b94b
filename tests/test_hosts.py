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
    from vfxswap.cli import build_parser

    job = RenderJob(model="m", plates="p.####.exr", out=str(tmp_path), frames="1001-1010",
                    options={"track": 0, "erode": 0.0, "layers": True, "comp": False, "like": ["a.jpg", "b dir"],
                             "plate_space": None})
    cmd = job.command()
    assert cmd[cmd.index("--track") + 1] == "0" and cmd[cmd.index("--erode") + 1] == "0.0"
    assert "--comp" not in cmd and "--plate-space" not in cmd
    args = build_parser().parse_args(cmd[cmd.index("render"):])
    assert (args.track, args.erode, args.layers, args.comp, args.like) == (0, 0.0, True, False, ["a.jpg", "b dir"])
