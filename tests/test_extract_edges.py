"""Extraction at the edges of its inputs: an unreadable still, a folder typed another way,
impossible options or a mistyped path on a new faceset, a damaged index, and a re-run with
other detection settings. Stills of the astronaut (public domain), dlib detector and landmarker, offline."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import skimage.data

from conftest import write_faceset
from vfxswap.errors import VfxSwapError
from vfxswap.faces.extract import extract
from vfxswap.jobspec import ExtractOptions
from vfxswap.faceset import Faceset
from vfxswap.plates import Image, read_image, write_image

OPTS = dict(detector="dlib", landmarker="dlib", size=64)


def _stills(folder, names=("a.png", "c.png")):
    """Astronaut stills, one face each."""
    folder.mkdir()
    for name in names:
        write_image(folder / name, Image.from_array(skimage.data.astronaut().astype(np.float32) / 255.0))
    return folder


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "vfxswap", *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


def test_an_unreadable_still_fails_alone_and_the_rest_are_aligned(tmp_path):
    stills = _stills(tmp_path / "stills")
    (stills / "b.jpg").write_bytes(b"")  # sorted between the two good ones
    done = _cli("extract", stills, "--out", tmp_path / "fs", "--detector", "dlib", "--landmarker", "dlib", "--size", "64")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if "b.jpg" in line]
    assert len(errors) == 2 and "cannot read" in errors[0]  # as it happened, then the summary
    assert errors[1] == "vfxswap: error: 1 still(s) failed: b.jpg"
    with Faceset(tmp_path / "fs") as fs:
        assert fs.counts()["aligned"] == 2
        assert sorted(os.path.basename(s) for s in fs.sources()) == ["a.png", "c.png"]


def test_a_folder_of_stills_typed_another_way_is_the_same_sources(tmp_path, monkeypatch):
    _stills(tmp_path / "stills")
    monkeypatch.chdir(tmp_path)
    for typed in ("stills", str(tmp_path / "stills"), "./stills/"):
        extract(typed, str(tmp_path / "fs"), ExtractOptions(**OPTS))
    with Faceset(tmp_path / "fs") as fs:
        assert fs.sources() == [str(tmp_path / "stills" / n) for n in ("a.png", "c.png")]
        assert fs.counts()["faces"] == 2
        # A faceset from before, keyed by the path as typed, takes the new keys on its next run.
        for source in fs.sources():
            fs.rename_source(source, os.path.relpath(source))
    report = extract("stills", str(tmp_path / "fs"), ExtractOptions(**OPTS))
    assert report.frames_detected == 0 and report.faces == 2
    with Faceset(tmp_path / "fs") as fs:
        assert all(os.path.isabs(s) for s in fs.sources())


def test_a_failed_start_leaves_no_settings_behind(tmp_path):
    stills = _stills(tmp_path / "stills", ("a.png",))
    out = tmp_path / "fs"
    for src, options in ((stills, ExtractOptions(detector="dlib", landmarker="dlib", size=0)),
                         (stills, ExtractOptions(detector="dlib", landmarker="dlib", detect_side=0)),
                         (tmp_path / "stils", ExtractOptions(**OPTS)),
                         (tmp_path / "plate.####.exr", ExtractOptions(**OPTS))):
        with pytest.raises(VfxSwapError):
            extract(str(src), str(out), options)
        assert not out.exists()  # checked before the faceset is made
    with pytest.raises(VfxSwapError, match=r"^--detector nope: choose from auto, dlib, dlib-cnn, mesh, s3fd$"):
        extract(str(stills), str(out), ExtractOptions(detector="nope", size=32))
    assert not out.exists()  # the detector failed to load: no faceset, not an empty one
    assert extract(str(stills), str(out), ExtractOptions(**OPTS)).faces == 1
    bad = _cli("extract", stills, "--out", tmp_path / "fs2", "--size", "0")
    assert bad.returncode == 1 and "--size 0" in bad.stderr and "Traceback" not in bad.stderr


def test_a_damaged_faceset_index_is_one_line_naming_it(tmp_path):
    folder = write_faceset(tmp_path / "fs")
    db = folder / "faceset.db"
    os.truncate(db, db.stat().st_size // 2)
    with pytest.raises(VfxSwapError, match="faceset.db: cannot open"):
        Faceset(folder)
    with pytest.raises(VfxSwapError):
        Faceset(folder, create=True)  # nor is it written over
    done = _cli("faceset", "info", folder)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0 and str(db) in done.stderr
    db.write_bytes(b"not a database at all" * 10)
    with pytest.raises(VfxSwapError, match="faceset.db: cannot open"):
        Faceset(folder)


def test_other_detection_settings_detect_the_frames_again(tmp_path, caplog):
    stills = _stills(tmp_path / "stills", ("a.png",))
    out = str(tmp_path / "fs")
    first = extract(str(stills), out, ExtractOptions(min_size=1000, **OPTS))  # too large: no face
    assert first.faces == 0 and first.without_faces == ["a.png"]
    caplog.set_level(logging.WARNING, logger="vfxswap")
    again = extract(str(stills), out, ExtractOptions(**OPTS))
    assert again.frames_detected == 1 and again.faces == 1 and not again.without_faces
    (line,) = [r.getMessage() for r in caplog.records if "detection settings changed" in r.getMessage()]
    assert "min_size 1000" in line
    same = extract(str(stills), out, ExtractOptions(**OPTS))  # the same settings: resumed, not redone
    assert same.frames_skipped == 1 and same.frames_detected == 0 and same.faces == 1


def test_a_start_that_fails_after_the_options_leaves_no_faceset(tmp_path):
    """An OCIO config, detector or landmarker that cannot load left an empty faceset behind, which a farm
    export then took as extracted (and dropped its Extract step)."""
    stills = _stills(tmp_path / "stills", ("a.png",))
    with pytest.raises(VfxSwapError):
        extract(str(stills), str(tmp_path / "fs"), ExtractOptions(ocio=str(tmp_path / "no.ocio"), **OPTS))
    assert not (tmp_path / "fs").exists()


def test_landmarks_found_on_a_reduced_crop_land_on_plate_pixel_centres(tmp_path, monkeypatch):
    """A face wider than LANDMARK_SIDE is landmarked on a reduced crop; its points come back at
    the plate pixels they mark (crop pixel i is at (i + 0.5) / r - 0.5), not half a plate pixel
    times the reduction off. A bright square stands in for a face; the stand-in landmarker
    returns its centroid in the crop."""
    import vfxswap.faces.extract as ex
    from vfxswap.faces.backends import Face

    plate = np.full((1200, 1200, 3), 0.1, np.float32)
    plate[590:611, 700:721] = 1.0  # centre (710, 600) in plate pixels
    write_image(tmp_path / "p.1001.exr", Image.from_array(plate))

    class Box:
        name, min_score, native_min_face = "fake", 0.0, None

        def detect(self, image, upsample=0):
            k = image.shape[1] / 1200
            return [Face(np.array([300, 200, 1100, 1000], np.float32) * k, 1.0)]  # 800 px: reduced 3.1x

    class Centroid:
        name = "fake"

        def landmarks(self, image, box, detector=None):
            w = image.astype(np.float64).mean(2)
            w = np.clip(w - np.median(w), 0, None)
            ys, xs = np.mgrid[0:w.shape[0], 0:w.shape[1]]
            c = [(w * xs).sum() / w.sum(), (w * ys).sum() / w.sum()]
            return np.tile(np.array(c, np.float32), (68, 1))

    monkeypatch.setattr(ex, "load_detector", lambda *a: Box())
    monkeypatch.setattr(ex, "load_landmarker", lambda *a: Centroid())
    monkeypatch.setattr(ex.Extractor, "_identify", lambda self, row, *a: None)
    monkeypatch.setattr(ex.Extractor, "_cache_region", lambda self, row, image: None)
    (face,) = ex.Extractor(Faceset(tmp_path / "fs", create=True), ExtractOptions(size=64)).detect_frame(
        str(tmp_path / "p.####.exr"), 1001, read_image(tmp_path / "p.1001.exr"))
    assert np.abs(face.landmarks_raw[0] - [710, 600]).max() < 0.25  # was 1.1 and 1.7 px off (x, y) before
