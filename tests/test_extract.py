"""Extraction on real data: GRID footage, HELEN landmarks, the astronaut, a face-less image,
resume after a kill, and temporal smoothing measured on a real clip."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import skimage.data

from vfxswap.faces import track
from vfxswap.faces.extract import extract
from vfxswap.jobspec import ExtractOptions
from vfxswap.faceset import Faceset
from vfxswap.plates import Image, read_image, write_image

from conftest import need_shared

GRID = "videos/grid/bbaf2n.mpg"


@pytest.fixture(scope="module")
def grid_faceset(tmp_path_factory, shared_file):
    """The GRID clip extracted once (dlib, smoothing on), shared by the tests below."""
    out = tmp_path_factory.mktemp("grid") / "faceset"
    report = extract(str(shared_file(GRID)), str(out), ExtractOptions(detector="dlib", landmarker="dlib", size=128))
    return out, report


def test_grid_every_frame_has_one_face_on_one_track(grid_faceset):
    out, report = grid_faceset
    assert not report.failed
    with Faceset(out) as fs:
        faces = fs.faces()
        frames = sorted({f.frame for f in faces})
        assert len(frames) == 75 and frames == list(range(1001, 1076))
        assert len(faces) == 75  # one face per frame
        assert {f.track_id for f in faces} == {0}
        assert all(f.image and fs.image_path(f).is_file() for f in faces)
        first = read_image(fs.image_path(faces[0]))
        assert first.channels == ("R", "G", "B", "components.Y", "extended.Y")
        assert first.pixels.shape == (128, 128, 5)
        assert first.attribute("vfxswap:encoding") == "acescct-norm"
        rgb = first.pixels[..., :3]
        assert 0.1 < float(rgb.mean()) < 0.7  # model encoding of a lit face, not 8-bit codes
        mask = first.pixels[..., 3]
        assert mask.max() == pytest.approx(1.0, abs=1e-3) and 0.15 < float(mask.mean()) < 0.8


def test_smoothing_lowers_jitter_without_lag(grid_faceset):
    out, _ = grid_faceset
    with Faceset(out) as fs:
        faces = fs.faces()
    raw = np.stack([f.landmarks_raw for f in faces])
    smooth = np.stack([f.landmarks for f in faces])
    size = track.face_size(raw)
    raw_j, smooth_j = track.jitter(raw, size), track.jitter(smooth, size)
    lag = track.lag(smooth, raw, size)
    print(f"GRID jitter raw {raw_j:.5f} smoothed {smooth_j:.5f} ({smooth_j / raw_j:.0%}); lag {lag:.4f} of face size")
    assert smooth_j < 0.7 * raw_j
    assert lag < 0.02


def test_helen_landmark_error_below_8_percent(shared_data, tmp_path):
    folder = shared_data / "landmarks" / "helen_300w_dev"
    if not folder.is_dir():
        need_shared("HELEN dev set absent")
    report = extract(str(folder), str(tmp_path / "helen"), ExtractOptions(detector="dlib", landmarker="dlib", size=64, smooth=0))
    errors, missed = [], []
    with Faceset(tmp_path / "helen") as fs:
        for jpg in sorted(folder.glob("*.jpg")):
            gt = np.loadtxt(jpg.with_suffix(".pts")) - 1.0  # 1-based (Matlab) -> 0-based pixel centres
            rows = fs.faces("source = ?", (str(jpg),))
            if not rows:
                missed.append(jpg.name)
                continue
            pts = min((r.landmarks_raw for r in rows), key=lambda p: np.abs(p - gt).mean())
            iod = np.linalg.norm(gt[36:42].mean(0) - gt[42:48].mean(0))
            errors.append(np.linalg.norm(pts - gt, axis=1).mean() / iod)
    nme = float(np.mean(errors))
    print(f"HELEN dev NME (inter-ocular) {nme:.4f} over {len(errors)} faces; no face found in {missed}")
    assert len(errors) >= 18
    assert nme < 0.08
    assert not report.failed


def test_astronaut_gives_one_face_and_a_blank_image_an_empty_row(tmp_path):
    stills = tmp_path / "stills"
    stills.mkdir()
    write_image(stills / "astronaut.png", Image.from_array(skimage.data.astronaut().astype(np.float32) / 255.0))
    write_image(stills / "wall.png", Image.from_array(np.full((200, 300, 3), 0.5, np.float32)))
    report = extract(str(stills), str(tmp_path / "fs"), ExtractOptions(detector="dlib", landmarker="dlib", size=96))
    assert not report.failed
    with Faceset(tmp_path / "fs") as fs:
        rows = dict(fs.db.execute("SELECT source, faces FROM frames"))
        assert rows == {str(stills / "astronaut.png"): 1, str(stills / "wall.png"): 0}
        (face,) = fs.faces()
        assert abs(face.yaw) < 25 and face.embedding.shape == (128,)
        x0, y0, x1, y1 = face.box
        assert 150 < (x0 + x1) / 2 < 300 and 60 < (y0 + y1) / 2 < 200  # her face, upper middle


def test_killed_extract_resumes_without_duplicates(shared_file, tmp_path):
    movie = shared_file(GRID)
    out = tmp_path / "fs"
    cmd = [sys.executable, "-m", "vfxswap", "extract", str(movie), "--out", str(out), "--detector", "dlib", "--landmarker", "dlib",
           "--size", "64", "--frames", "1001-1040"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until some frames are in, then kill hard
        if (out / "faceset.db").exists():
            with Faceset(out) as fs:
                if fs.counts()["frames"] >= 8:
                    break
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with Faceset(out) as fs:
        before = fs.counts()["frames"]
    assert 0 < before < 40
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    with Faceset(out) as fs:
        rows = fs.db.execute("SELECT source, frame, face_index, COUNT(*) FROM faces GROUP BY 1, 2, 3").fetchall()
        assert len(rows) == 40 and all(n == 1 for *_, n in rows)
        assert fs.counts()["aligned"] == 40
    assert "already done" in done.stdout
    stray = [p for p in (out / "faces").iterdir() if ".vfxswap-tmp" in p.name]
    assert not stray


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "vfxswap", *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=env)


def test_faceset_cli_info_sort_filter_and_debug(shared_data, tmp_path):
    """Two identities in one faceset; `filter --like` keeps the one the references show."""
    a = sorted((shared_data / "identities" / "A_grid_s1").glob("*.jpg"))
    b = sorted((shared_data / "identities" / "B_grid_brbk7n").glob("*.jpg"))
    if len(a) < 8 or len(b) < 8:
        need_shared("GRID identity stills absent")
    stills, refs = tmp_path / "stills", tmp_path / "refs"
    stills.mkdir()
    refs.mkdir()
    for p in a[:4] + b[:4]:
        (stills / p.name).symlink_to(p)
    (refs / a[-1].name).symlink_to(a[-1])
    out = tmp_path / "fs"
    done = _cli("extract", stills, "--out", out, "--detector", "dlib", "--landmarker", "dlib", "--size", "64", "--debug-dir", tmp_path / "dbg")
    assert done.returncode == 0, done.stderr
    assert len(list((tmp_path / "dbg").glob("*.png"))) == 8
    info = _cli("faceset", "info", out)
    assert info.returncode == 0 and "8 kept" in info.stdout
    with Faceset(out) as fs:
        assert len({f.track_id for f in fs.faces()}) == 2  # stills grouped by identity
    ranked = _cli("faceset", "sort", out, "--by", "blur")
    blurs = [float(line.split()[-1]) for line in ranked.stdout.splitlines()]
    assert len(blurs) == 8 and blurs == sorted(blurs, reverse=True)
    kept = _cli("faceset", "filter", out, "--like", refs, "--detector", "dlib", "--landmarker", "dlib")
    assert kept.returncode == 0, kept.stderr
    assert "kept 4 face(s), excluded 4" in kept.stdout
    with Faceset(out) as fs:
        keep = {f.source for f in fs.faces(include_excluded=False)}
        assert keep == {str(stills / p.name) for p in a[:4]}


def test_fan_without_weights_says_so_quickly(tmp_path):
    env = dict(os.environ, TORCH_HOME=str(tmp_path / "hub"), VFXSWAP_MODELS="")
    still = tmp_path / "a.png"
    write_image(still, Image.from_array(skimage.data.astronaut().astype(np.float32) / 255.0))
    t0 = time.time()
    out = _cli("extract", still, "--out", tmp_path / "fs", "--detector", "s3fd", "--landmarker", "fan", env=env)
    assert out.returncode == 1 and "s3fd detector unavailable" in out.stderr and "Traceback" not in out.stderr
    out = _cli("extract", still, "--out", tmp_path / "fs", "--detector", "dlib", "--landmarker", "fan", env=env)
    assert out.returncode == 1 and "fan landmarker unavailable" in out.stderr and "Traceback" not in out.stderr
    auto = _cli("extract", still, "--out", tmp_path / "fs2", "--detector", "auto", "--landmarker", "auto", env=env)
    assert auto.returncode == 0 and "face detector: mesh" in auto.stderr and "face landmarker: mesh" in auto.stderr
    assert time.time() - t0 < 120  # no hanging download attempt


def test_a_face_entering_between_full_detections_is_found_from_its_first_frame(tmp_path):
    """Full detection runs every 4th frame; a face that appears at 1006 is first seen by the
    full pass at 1009 and must be looked for back to 1006 (and not before)."""
    face = skimage.data.astronaut()[40:240, 130:320].astype(np.float32) / 255.0  # her head, 200x190
    for f in range(1001, 1013):
        canvas = np.full((300, 640, 3), 0.35, np.float32)
        canvas[50:250, 20 + (f - 1001):210 + (f - 1001)] = face  # A, drifting right
        if f >= 1006:
            canvas[60:260, 420:610] = face  # B enters at 1006
        write_image(tmp_path / f"plate.{f}.png", Image.from_array(canvas))
    report = extract(str(tmp_path / "plate.####.png"), str(tmp_path / "fs"),
                     ExtractOptions(detector="dlib", landmarker="dlib", size=64, detect_every=4))
    assert not report.failed
    with Faceset(tmp_path / "fs") as fs:
        per_frame = dict(fs.db.execute("SELECT frame, COUNT(*) FROM faces GROUP BY frame"))
        tracks = {f.track_id for f in fs.faces()}
    assert per_frame == {f: (2 if f >= 1006 else 1) for f in range(1001, 1013)}
    assert len(tracks) == 2


def test_models_fetch_offline_fails_fast_with_a_clear_line(tmp_path):
    t0 = time.time()
    out = _cli("models", "fetch", "--dir", tmp_path / "weights")
    if out.returncode == 0:
        # Kept as a skip: about this machine (online), not about the project or its data.
        pytest.skip("this machine reached the internet; nothing to check offline")
    assert out.returncode == 1 and "cannot download" in out.stderr and "Traceback" not in out.stderr
    assert not list((tmp_path / "weights").glob("*"))  # nothing half-written
    assert time.time() - t0 < 90
