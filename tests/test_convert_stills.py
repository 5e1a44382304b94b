"""`plates convert` with one image in or out, and files OpenImageIO cannot read.

The CLI is run as a user runs it (a subprocess); the same behaviour is checked on
`vfxswap.plates.convert.convert` directly, which is what the CLI, hosts and farm jobs call.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import OpenImageIO as oiio
import pytest

from vfxswap.atomic import is_temp_path
from vfxswap.errors import VfxSwapError
from vfxswap.plates import Image, list_parts, read_image, read_info, write_image
from vfxswap.plates.convert import convert

SRGB = "sRGB Encoded Rec.709 (sRGB)"


def run(*args):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, "-m", "vfxswap", "plates", "convert", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=300)


def make_plate(path, frame=1001, size=(24, 32), dtype="float"):
    """A scene-linear ACEScg RGBA frame with a highlight, a timecode and a studio attribute;
    its values depend on `frame`, so frames can be told apart."""
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rgb = np.stack([xx / w, yy / h, np.full_like(xx, 0.18)], -1) * (1 + (frame - 1001) * 0.1)
    rgb[h // 2, w // 2] = 12.0
    img = Image.from_array(np.concatenate([rgb, np.ones((h, w, 1), np.float32)], -1))
    img.set_attribute("oiio:ColorSpace", "ACEScg")
    img.set_attribute("smpte:TimeCode", (0x01000000 + (frame - 1001), 0), "timecode")
    img.set_attribute("studio:shot", "sh010")
    write_image(path, img, dtype=dtype)
    return path


def make_plates(folder, frames=range(1001, 1006)):
    folder.mkdir(parents=True, exist_ok=True)
    for f in frames:
        make_plate(folder / f"plate.{f}.exr", f)
    return folder / "plate.####.exr"


def names(folder):
    return sorted(os.listdir(folder))


def assert_one_error_line(out, *words):
    assert out.returncode == 1, out
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vfxswap: error: "), out.stderr
    for word in words:
        assert str(word) in lines[0], (word, out.stderr)
    assert "pending error" not in out.stderr + out.stdout and "Traceback" not in out.stderr
    return lines[0]


# --- one file in, one file out -----------------------------------------------------------------


def test_one_exr_to_one_exr_is_a_bit_exact_copy_with_its_header(tmp_path):
    src = make_plate(tmp_path / "one.exr")
    dst = tmp_path / "out" / "other.exr"
    out = run(src, dst)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"wrote 1 frame(s) to {dst}"
    before, after = read_image(src), read_image(dst)
    assert after.source_format == before.source_format == "float"
    assert np.array_equal(after.pixels, before.pixels)
    assert after.attribute("smpte:TimeCode") == before.attribute("smpte:TimeCode")
    assert after.attribute("studio:shot") == "sh010" and after.colorspace == "ACEScg"
    assert names(tmp_path / "out") == ["other.exr"]  # written atomically: no temporary left


@pytest.mark.parametrize("ext, fmt", [("png", "uint8"), ("tif", "uint16"), ("jpg", "uint8"), ("dpx", "uint16")])
def test_one_exr_to_a_still_format_matches_the_sequence_path(tmp_path, ext, fmt):
    """The same colour conversion, pixel type and header a sequence conversion of that frame gives."""
    pattern = make_plates(tmp_path / "src", [1001, 1002])
    one = run(tmp_path / "src" / "plate.1001.exr", tmp_path / f"still.{ext}", "--to-space", SRGB)
    assert one.returncode == 0, one.stderr
    seq = run(pattern, tmp_path / "seq" / f"seq.####.{ext}", "--frames", "1001", "--to-space", SRGB)
    assert seq.returncode == 0, seq.stderr
    still, frame = read_image(tmp_path / f"still.{ext}"), read_image(tmp_path / "seq" / f"seq.1001.{ext}")
    assert still.source_format == frame.source_format == fmt
    assert np.array_equal(still.pixels, frame.pixels)
    assert still.colorspace == frame.colorspace and still.colorspace in (SRGB, "srgb_tx", "srgb_rec709_scene")
    assert 0.0 <= float(still.pixels.min()) and float(still.pixels.max()) <= 1.0


def test_one_file_through_a_view_with_dtype_and_compression(tmp_path):
    src = make_plate(tmp_path / "one.exr")
    view = run(src, tmp_path / "view.exr", "--view", "Un-tone-mapped", "--dtype", "half", "--compression", "piz")
    assert view.returncode == 0, view.stderr
    seq = run(src, tmp_path / "seq" / "v.####.exr", "--view", "Un-tone-mapped", "--dtype", "half",
              "--compression", "piz")
    assert seq.returncode == 0, seq.stderr
    info = read_info(tmp_path / "view.exr")
    assert info.format == "half" and info.attributes["compression"][1] == "piz"
    assert np.array_equal(read_image(tmp_path / "view.exr").pixels, read_image(tmp_path / "seq" / "v.1001.exr").pixels)


def test_a_numbered_file_alone_is_that_frame_and_with_frames_names_its_sequence(tmp_path):
    make_plates(tmp_path / "src")
    out = run(tmp_path / "src" / "plate.1003.exr", tmp_path / "f.exr")
    assert out.returncode == 0, out.stderr
    np.testing.assert_array_equal(read_image(tmp_path / "f.exr").pixels,
                                  read_image(tmp_path / "src" / "plate.1003.exr").pixels)
    out = run(tmp_path / "src" / "plate.1001.exr", tmp_path / "g.exr", "--frames", "1005")
    assert out.returncode == 0, out.stderr
    np.testing.assert_array_equal(read_image(tmp_path / "g.exr").pixels,
                                  read_image(tmp_path / "src" / "plate.1005.exr").pixels)


# --- a range in, one file out ------------------------------------------------------------------


def test_several_frames_into_one_file_are_refused_naming_both(tmp_path):
    pattern = make_plates(tmp_path / "src")
    dst = tmp_path / "out" / "one.exr"
    line = assert_one_error_line(run(pattern, dst), pattern, dst, "5 frames", "--frames")
    assert "1001-1005" in line
    assert_one_error_line(run(tmp_path / "src" / "plate.1001.exr", dst, "--frames", "1001-1002"), dst)
    assert not (tmp_path / "out").exists()
    out = run(pattern, dst, "--frames", "1004")  # a range of one frame is fine
    assert out.returncode == 0, out.stderr
    np.testing.assert_array_equal(read_image(dst).pixels, read_image(tmp_path / "src" / "plate.1004.exr").pixels)


def test_a_movie_to_one_file_takes_one_frame_only(tmp_path):
    from vfxswap.plates.video import write_preview

    movie = tmp_path / "clip.mp4"
    frames = [np.full((32, 48, 3), 40 + 40 * i, np.uint8) for i in range(4)]
    assert write_preview(movie, iter(frames), fps=24.0) == 4
    assert_one_error_line(run(movie, tmp_path / "all.png"), movie, tmp_path / "all.png", "4 frames")
    assert_one_error_line(run(movie, tmp_path / "two.png", "--frames", "1001-1002"), "2 frames")
    out = run(movie, tmp_path / "third.png", "--frames", "1003", "--to-space", SRGB)
    assert out.returncode == 0, out.stderr
    px = read_image(tmp_path / "third.png").pixels
    assert px.shape == (32, 48, 3)
    assert abs(float(px.mean()) * 255 - 120) < 4  # the third frame's code value, back to sRGB
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "third.png"]


# --- one file in, a pattern out ----------------------------------------------------------------


def test_a_still_without_a_frame_number_to_a_pattern_is_frame_start(tmp_path):
    src = make_plate(tmp_path / "ref.exr")
    out = run(src, tmp_path / "a" / "ref.####.exr")
    assert out.returncode == 0, out.stderr
    assert names(tmp_path / "a") == ["ref.1001.exr"]
    out = run(src, tmp_path / "b" / "ref.####.exr", "--start", "1")
    assert out.returncode == 0, out.stderr
    assert names(tmp_path / "b") == ["ref.0001.exr"]
    assert_one_error_line(run(src, tmp_path / "c" / "ref.####.exr", "--frames", "7"), src, "1001")
    assert not (tmp_path / "c").exists()


def test_a_numbered_file_to_a_pattern_converts_its_sequence(tmp_path):
    make_plates(tmp_path / "src", [1001, 1002, 1003])
    out = run(tmp_path / "src" / "plate.1002.exr", tmp_path / "out" / "o.####.exr")
    assert out.returncode == 0, out.stderr
    assert names(tmp_path / "out") == ["o.1001.exr", "o.1002.exr", "o.1003.exr"]


# --- never over the source ---------------------------------------------------------------------


def test_the_source_is_never_overwritten(tmp_path):
    pattern = make_plates(tmp_path / "src", [1001, 1002])
    one = tmp_path / "src" / "plate.1001.exr"
    before = {p: p.read_bytes() for p in (tmp_path / "src").iterdir()}
    assert_one_error_line(run(one, one), one, "overwrite the source")
    assert_one_error_line(run(one, tmp_path / "src" / ".." / "src" / "plate.1001.exr"), "overwrite the source")
    assert_one_error_line(run(pattern, pattern, "--to-space", SRGB), "overwrite the source", "1001")
    os.link(one, tmp_path / "hard.exr")  # another name for the same file
    assert_one_error_line(run(one, tmp_path / "hard.exr"), "overwrite the source")
    assert {p: p.read_bytes() for p in (tmp_path / "src").iterdir()} == before


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    src = make_plate(tmp_path / "one.exr")
    dst = tmp_path / "out" / "other.exr"
    make_plate(dst, 1005)
    before = dst.read_bytes()
    monkeypatch.setattr(oiio.ImageOutput, "write_image", lambda self, pixels: False)
    with pytest.raises(VfxSwapError, match="write failed"):
        convert(str(src), str(dst))
    assert dst.read_bytes() == before
    assert not any(is_temp_path(n) for n in names(tmp_path / "out"))


# --- the same cases on the library call --------------------------------------------------------


def test_convert_one_file_and_its_refusals_directly(tmp_path):
    pattern = make_plates(tmp_path / "src", [1001, 1002])
    report = convert(str(tmp_path / "src" / "plate.1002.exr"), str(tmp_path / "one.png"), to_space=SRGB)
    assert report.written == [1002] and not report.failed
    assert read_image(tmp_path / "one.png").source_format == "uint8"
    with pytest.raises(VfxSwapError, match="2 frames .* cannot go into the single file"):
        convert(str(pattern), str(tmp_path / "two.exr"))
    with pytest.raises(VfxSwapError, match="overwrite the source"):
        convert(str(tmp_path / "src" / "plate.1001.exr"), str(tmp_path / "src" / "plate.1001.exr"))
    assert convert(str(pattern), str(tmp_path / "x.exr"), frames="1001").written == [1001]
    assert convert(str(tmp_path / "one.png"), str(tmp_path / "p.####.exr"), start=5).written == [5]
    assert (tmp_path / "p.0005.exr").is_file()


# --- luminance/chroma (subsampled) EXR ---------------------------------------------------------


def write_luminance_chroma(path, size=(16, 24), alpha=False):
    """What OpenEXR's RgbaOutputFile writes in its YC modes: Y at full resolution, RY and BY
    (chroma) sampled every 2nd pixel in x and y; OpenImageIO reads no subsampled channel."""
    import OpenEXR

    h, w = size
    y = np.linspace(0.05, 1.5, h * w, dtype=np.float32).reshape(h, w).astype(np.float16)
    chroma = {"RY": 0.25, "BY": -0.125}
    channels = {"Y": OpenEXR.Channel(y)}
    channels.update({n: OpenEXR.Channel(np.full((h, w), v, np.float16), 2, 2) for n, v in chroma.items()})
    if alpha:
        channels["A"] = OpenEXR.Channel(np.ones((h, w), np.float16))
    with OpenEXR.File({"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}, channels) as f:
        f.write(str(path))
    check = OpenEXR.File(str(path), separate_channels=True).channels()
    assert (check["RY"].xSampling, check["RY"].pixels.shape) == (2, (h // 2, w // 2))  # really subsampled
    return path


@pytest.mark.parametrize("dst", ["out.exr", "out.png", "out.####.exr"])
def test_a_luminance_chroma_exr_is_one_clean_line(tmp_path, dst):
    src = write_luminance_chroma(tmp_path / "yc.exr", alpha=dst == "out.png")
    out = run(src, tmp_path / "out" / dst)
    assert "pending error" not in out.stderr + out.stdout and "Traceback" not in out.stderr
    if "#" in dst:  # a range: the frame is named as it fails, then one summary line (the CLI's)
        assert out.returncode == 1
        errors = out.stderr.strip().splitlines()
        assert len(errors) == 2 and "frame 1001" in errors[0] and str(src) in errors[0], out.stderr
    else:
        assert out.stdout == ""
        assert_one_error_line(out, src, "luminance/chroma", "RY, BY")
    assert not (tmp_path / "out").exists() or names(tmp_path / "out") == []


def test_a_luminance_chroma_exr_is_named_by_info_and_the_readers(tmp_path):
    src = write_luminance_chroma(tmp_path / "yc.exr")
    with pytest.raises(VfxSwapError, match=r"yc\.exr: cannot read as an image: a luminance/chroma EXR "
                                           r"\(channels Y, RY, BY; RY, BY sampled 2x2\)") as err:
        read_image(src)
    assert "\n" not in str(err.value)
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    info = subprocess.run([sys.executable, "-m", "vfxswap", "plates", "info", str(src)], capture_output=True,
                          text=True, env=env, timeout=300)
    assert_one_error_line(info, src, "luminance/chroma")


def test_a_subsampled_part_of_a_multi_part_exr_is_named_not_dropped(tmp_path):
    """A depth part OIIO reads, then the picture as luminance/chroma: the part list stopped at
    the part OIIO could not seek to (the error left unread on the ImageInput), so the file
    looked like a lone depth pass and converted as one."""
    import OpenEXR

    h, w = 8, 12
    luma = np.linspace(0.1, 1.0, h * w, dtype=np.float32).reshape(h, w).astype(np.float16)
    yc = {"Y": OpenEXR.Channel(luma), "RY": OpenEXR.Channel(np.zeros((h, w), np.float16), 2, 2),
          "BY": OpenEXR.Channel(np.zeros((h, w), np.float16), 2, 2)}
    parts = [OpenEXR.Part({"name": "depth", "type": OpenEXR.scanlineimage},
                          {"Z": OpenEXR.Channel(np.ones((h, w), np.float32))}),
             OpenEXR.Part({"name": "picture", "type": OpenEXR.scanlineimage}, yc)]
    path = tmp_path / "two.exr"
    with OpenEXR.File(parts) as f:
        f.write(str(path))
    with pytest.raises(VfxSwapError, match=r"two\.exr: part 1: cannot read as an image: a luminance/chroma"):
        list_parts(path)
    assert_one_error_line(run(path, tmp_path / "out.exr"), path, "part 1")
    assert not (tmp_path / "out.exr").exists()
