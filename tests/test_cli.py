"""The `vfxswap` command as a user meets it: help, doctor, plates info and convert, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from vfxswap.plates import Image, find_sequence, read_image, write_image


def run(*args, cwd=None):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, "-m", "vfxswap", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


def make_plates(folder, frames=range(1001, 1006), size=(48, 64), dtype=None):
    """A short scene-linear ACEScg sequence with a highlight above 1.0 and a timecode."""
    h, w = size
    for f in frames:
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        rgb = np.stack([xx / w, yy / h, np.full_like(xx, 0.18)], -1) * (1 + (f - 1001) * 0.1)
        rgb[h // 2, w // 2] = 12.0
        alpha = np.ones((h, w, 1), np.float32)
        img = Image.from_array(np.concatenate([rgb, alpha], -1))
        img.set_attribute("oiio:ColorSpace", "ACEScg")
        img.set_attribute("smpte:TimeCode", (0x01000000 + (f - 1001), 0), "timecode")
        write_image(folder / f"plate.{f:04d}.exr", img, dtype=dtype)
    return folder / "plate.####.exr"


def test_help_lists_commands():
    out = run("--help")
    assert out.returncode == 0
    for word in ("doctor", "plates"):
        assert word in out.stdout
    sub = run("plates", "convert", "--help")
    assert sub.returncode == 0 and "--from-space" in sub.stdout and "--frames" in sub.stdout


def test_doctor_reports_versions_backends_and_ocio():
    out = run("doctor", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["libraries"]["OpenColorIO"].startswith("2.")
    assert {b["name"] for b in data["face_backends"]} == {"dlib", "fan", "mesh"}
    for name in ("dlib", "mesh"):  # dlib-bin + face-recognition-models are dependencies; the mesh ships inside
        backend = next(b for b in data["face_backends"] if b["name"] == name)
        assert backend["available"], backend["detail"]
    assert "studio-config-v" in data["ocio"]["config"]
    assert data["ffmpeg"]["path"]
    text = run("doctor").stdout
    assert "auto   ->" in text and "OCIO:" in text


def test_plates_info_reports_frames_gaps_and_range(tmp_path):
    pattern = make_plates(tmp_path, frames=[1001, 1002, 1004, 1005])
    out = run("plates", "info", pattern)
    assert out.returncode == 1  # a gap is worth a non-zero exit for scripts
    assert "1001-1002,1004-1005 (4 frames)" in out.stdout
    assert "missing     1003" in out.stdout
    assert "ACEScg (header oiio:ColorSpace)" in out.stdout
    assert "01:00:00:00" in out.stdout
    assert "range       R 0..12  G 0..12" in out.stdout  # the HDR highlight is reported, not clipped
    full = run("plates", "info", tmp_path / "plate.1001.exr", "--frames", "1001-1002")
    assert full.returncode == 0 and "missing     none" in full.stdout


@pytest.mark.parametrize("dtype", ["float", "half"])
def test_a_plain_copy_keeps_the_plates_pixel_type_bit_exact(tmp_path, dtype):
    """No colour options: `plates convert` copies, and a float plate is not narrowed to half."""
    src = make_plates(tmp_path / "src", frames=[1001], dtype=dtype)
    out = run("plates", "convert", src, tmp_path / "out" / "copy.####.exr")
    assert out.returncode == 0, out.stderr
    before, after = read_image(tmp_path / "src" / "plate.1001.exr"), read_image(tmp_path / "out" / "copy.1001.exr")
    assert after.source_format == before.source_format == dtype
    assert np.array_equal(after.pixels, before.pixels)


def test_corrupt_frame_is_named_and_the_rest_converts(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    make_plates(src)
    bad = src / "plate.1003.exr"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    out_dir = tmp_path / "out"
    out = run("plates", "convert", src / "plate.####.exr", out_dir / "lin709.####.exr",
              "--to-space", "Linear Rec.709 (sRGB)")
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    errors = [line for line in out.stderr.splitlines() if "error" in line]
    assert any("1003" in line and "plate.1003.exr" in line for line in errors), out.stderr
    seq = find_sequence(out_dir / "lin709.####.exr")
    assert seq.frames == [1001, 1002, 1004, 1005]
    assert sorted(os.listdir(out_dir)) == [f"lin709.{f}.exr" for f in (1001, 1002, 1004, 1005)]  # no temp files
    converted = read_image(out_dir / "lin709.1001.exr")
    assert converted.colorspace == "Linear Rec.709 (sRGB)" or converted.colorspace == "lin_rec709_scene"
    assert converted.attribute("smpte:TimeCode") is not None
    info = run("plates", "info", src / "plate.####.exr")
    assert info.returncode == 1 and "error       frame 1003" in info.stdout


def test_missing_input_is_one_line_without_traceback(tmp_path):
    out = run("plates", "info", tmp_path / "nothing.####.exr")
    assert out.returncode == 1
    assert out.stderr.strip().count("\n") == 0 and "nothing.####.exr" in out.stderr
    out = run("plates", "convert", tmp_path / "a.####.exr", tmp_path / "b.####.exr", "--to-space", "NoSuchSpace")
    assert out.returncode == 1 and "Traceback" not in out.stderr


def test_unknown_colour_space_names_it(tmp_path):
    pattern = make_plates(tmp_path, frames=[1001])
    out = run("plates", "convert", pattern, tmp_path / "x.####.exr", "--to-space", "NoSuchSpace")
    assert out.returncode == 1
    assert "NoSuchSpace" in out.stderr and "Traceback" not in out.stderr


def test_sequence_to_preview_mp4_and_back(tmp_path):
    pattern = make_plates(tmp_path)
    movie = tmp_path / "review.mp4"
    out = run("plates", "convert", pattern, movie, "--fps", "24")
    assert out.returncode == 0, out.stderr
    assert movie.stat().st_size > 0
    back = run("plates", "convert", movie, tmp_path / "back.####.exr", "--start", "1001")
    assert back.returncode == 0, back.stderr
    assert find_sequence(tmp_path / "back.####.exr").frames == list(range(1001, 1006))


GRID = "videos/grid/bbaf2n.mpg"


def test_movie_to_exr_sequence_on_real_footage(shared_file, tmp_path):
    movie = shared_file(GRID)
    out = run("plates", "convert", movie, tmp_path / "grid.####.exr", "--frames", "1001-1005")
    assert out.returncode == 0, out.stderr
    img = read_image(tmp_path / "grid.1003.exr")
    assert img.pixels.shape == (288, 360, 3)
    assert img.colorspace in ("ACEScg", "lin_ap1_scene")
    assert 0.0 <= float(img.pixels.min()) and float(img.pixels.max()) <= 1.01  # sRGB code 1.0 -> linear 1.0
    fps = img.attribute("framesPerSecond")
    assert fps is not None and fps[0] / fps[1] == pytest.approx(25.0)


def test_a_bad_value_for_the_whole_run_is_one_line_before_any_frame(tmp_path):
    """An unknown colour space, display or pixel type printed an error for every frame (and a
    render left its manifests behind): it is checked once, before any frame."""
    src = make_plates(tmp_path / "src")
    for args in (("plates", "convert", src, tmp_path / "c" / "p.####.exr", "--to-space", "Bogus"),
                 ("plates", "convert", src, tmp_path / "c" / "p.####.exr", "--dtype", "bogus"),
                 ("plates", "convert", src, tmp_path / "c" / "p.####.exr", "--view", "Bogus"),
                 ("render", "--model", "passthrough", "--plates", src, "--out", tmp_path / "r",
                  "--plate-space", "Bogus")):
        out = run(*args)
        assert out.returncode == 1 and len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert "Bogus" in out.stderr or "bogus" in out.stderr
    assert not (tmp_path / "c").exists() and not (tmp_path / "r").exists()


def test_doctor_and_demo_fail_in_one_line_on_what_they_cannot_use(tmp_path):
    """doctor with a config it cannot load exited 0; demo took --frames 0 and failed after work."""
    doctor = run("doctor", "--ocio", tmp_path / "none.ocio")
    assert doctor.returncode == 1 and "none.ocio" in doctor.stdout + doctor.stderr
    demo = run("demo", "--out", tmp_path / "d", "--frames", "0")
    assert demo.returncode == 1 and demo.stderr.strip().splitlines() == ["vfxswap: error: --frames 0: must be at least 2"]
    assert not (tmp_path / "d").exists()
