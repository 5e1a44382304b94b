"""Farm bundles: an OpenJD bundle runs through `openjd run` in chunks and writes the same bytes as
one render; a killed chunk re-run completes with no partial frames."""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

import pytest

from conftest import make_astronaut_shot
from vfxswap.farm.bundle import run_bundle, template, write_bundle
from vfxswap.render import RenderOptions, render
from vfxswap.train.trainer import TrainOptions, train

ENGINE = str(Path(sys.executable).parent / "vfxswap")


@pytest.fixture(scope="module")
def shot_and_model(tmp_path_factory):
    if shutil.which("openjd") is None and not (Path(sys.executable).parent / "openjd").exists():
        pytest.skip("openjd-cli is not installed")
    root = make_astronaut_shot(tmp_path_factory.mktemp("farm"), frames=5)
    train(TrainOptions(src=str(root / "faceset"), dst=str(root / "faceset"), model_dir=str(root / "model"),
                       release_ref={"A": "REL-FARM", "B": "REL-FARM"}, iters=2, batch=2, workers=0, quiet=True,
                       preview_every=1000, save_every=1000))
    return root


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("face.*.exr"))}


def test_template_validates_and_chunks(tmp_path):
    doc = template(extract=True, options={"mask": "hull"})
    assert doc["extensions"] == ["TASK_CHUNKING"]
    assert [s["name"] for s in doc["steps"]] == ["Extract", "Render"]
    frame = doc["steps"][1]["parameterSpace"]["taskParameterDefinitions"][0]
    assert frame["type"] == "CHUNK[INT]" and frame["chunks"]["rangeConstraint"] == "CONTIGUOUS"
    assert "--skip-existing" in doc["steps"][1]["script"]["embeddedFiles"][0]["data"]


def test_bundle_through_openjd_matches_a_single_render_byte_for_byte(shot_and_model, tmp_path, monkeypatch):
    root = shot_and_model
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent) + ":" + __import__("os").environ["PATH"])
    plates = str(root / "plates" / "plate.####.exr")
    render(RenderOptions(model=str(root / "model"), plates=plates, faceset=str(root / "faceset"),
                         out=str(tmp_path / "single")))
    bundle = write_bundle(tmp_path / "bundle", plates=plates, model=str(root / "model"), faceset=str(root / "faceset"),
                          out=str(tmp_path / "farm"), frames="1001-1005", chunk=2, vfxswap=ENGINE)
    done = run_bundle(bundle, timeout=600)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-2000:])
    assert _digests(tmp_path / "farm") == _digests(tmp_path / "single") and len(_digests(tmp_path / "single")) == 5
    # a chunk killed midway: remove two frames (one whole chunk's worth) and run again
    for f in ("face.1003.exr", "face.1004.exr"):
        (tmp_path / "farm" / f).unlink()
    again = run_bundle(bundle, timeout=600)
    assert again.returncode == 0
    assert _digests(tmp_path / "farm") == _digests(tmp_path / "single")
    assert not [p for p in (tmp_path / "farm").iterdir() if p.name.startswith(".")]
