"""Render at the edges of its inputs: outputs that would overwrite the plates, frames the faceset
never processed, gaps in the plates, --skip-existing with a comp, soft mattes near the data
window, plates without colour in their first part, another shot's faceset, overscan comps."""

from __future__ import annotations

import shutil

import numpy as np
import OpenImageIO as oiio
import pytest

from conftest import make_astronaut_shot
from vfxswap.errors import VfxSwapError
from vfxswap.faceset import Faceset
from vfxswap.plates import Image, read_image, select_frames, write_image
from vfxswap.plates.image import Box
from vfxswap.jobspec import RenderOptions
from vfxswap.render.render import render

FRAMES = [1001, 1002, 1003]


@pytest.fixture(scope="module")
def shot(tmp_path_factory):
    return make_astronaut_shot(tmp_path_factory.mktemp("edges"), frames=3)


def _options(plates, faceset, out, **kw):
    base = dict(model="passthrough", plates=str(plates), faceset=faceset and str(faceset), out=str(out), resolution=128,
                color="none", mask="hull")
    base.update(kw)
    return RenderOptions(**base)


def _faceset_for(shot, pattern, dest):
    """A copy of the shot's faceset recorded as extracted from `pattern` (no detection rerun)."""
    shutil.copytree(shot / "faceset", dest)
    with Faceset(dest) as fs:
        for table in ("frames", "faces"):
            fs.db.execute(f"UPDATE {table} SET source = ?", (str(pattern),))
        fs.db.commit()
    return dest


def _plates_like(shot, folder, make=lambda rgba: rgba):
    """The shot's plates rewritten through `make` into `folder`, with a faceset recorded for them."""
    for frame in FRAMES:
        plate = read_image(shot / "plates" / f"plate.{frame}.exr")
        write_image(folder / f"plate.{frame}.exr", make(plate))
    pattern = folder / "plate.####.exr"
    return pattern, _faceset_for(shot, pattern, folder.parent / f"{folder.name}_fs")


def _listing(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


# 1 ----------------------------------------------------------------------------------------------

def test_an_output_that_would_overwrite_the_plates_is_refused_before_anything_is_written(shot, tmp_path):
    for name in ("face", "comp"):
        (tmp_path / name).mkdir()
        for frame in FRAMES:
            shutil.copy(shot / "plates" / f"plate.{frame}.exr", tmp_path / name / f"{name}.{frame}.exr")
    link = tmp_path / "link"
    link.symlink_to(shot / "plates")
    plates = shot / "plates" / "plate.####.exr"
    cases = [  # (plates, out, options)
        (tmp_path / "face" / "face.####.exr", tmp_path / "face", {}),  # --out is the plate folder
        (plates, shot / "plates", {"name": "plate"}),
        (plates, link, {"name": "plate"}),  # the same files through a link
        (tmp_path / "comp" / "comp.####.exr", tmp_path / "comp", {"comp": True}),  # the comp would
    ]
    for plates, out, extra in cases:
        before = _listing(plates.parent)
        with pytest.raises(VfxSwapError, match="would overwrite the plates"):
            render(_options(plates, None, out, **extra))  # (no faceset: one would be made in --out)
        assert _listing(plates.parent) == before  # no layer, no manifest, no hidden faceset


# 2 ----------------------------------------------------------------------------------------------

def test_a_frame_the_faceset_never_processed_fails_and_the_others_complete(shot, tmp_path):
    """Plates extended after extraction (1003), or an extraction killed between its passes (1002,
    detected but never smoothed): not 'no face' (an empty layer would let the performer's face
    show through) but failed frames, each named."""
    fs_copy = tmp_path / "fs"
    shutil.copytree(shot / "faceset", fs_copy)
    with Faceset(fs_copy) as fs:
        fs.db.execute("DELETE FROM faces WHERE frame = 1003")
        fs.db.execute("DELETE FROM frames WHERE frame = 1003")
        fs.db.execute("UPDATE faces SET landmarks = NULL WHERE frame = 1002")
        fs.db.execute("UPDATE frames SET stage = 'detected' WHERE frame = 1002")
        fs.db.commit()
    report = render(_options(shot / "plates" / "plate.####.exr", fs_copy, tmp_path / "out"))
    assert report.written == [1001] and not report.without_faces
    assert list(report.failed) == [1002, 1003]
    for frame in (1002, 1003):
        assert f"plate.{frame}.exr" in report.failed[frame] and "not extracted" in report.failed[frame]
        assert not (tmp_path / "out" / f"face.{frame}.exr").exists()


# 3 ----------------------------------------------------------------------------------------------

def test_skip_existing_renders_a_frame_whose_comp_is_missing(shot, tmp_path):
    out = tmp_path / "out"
    opts = _options(shot / "plates" / "plate.####.exr", shot / "faceset", out, frames="1001-1002", comp=True)
    render(opts)
    (out / "comp.1002.exr").unlink()  # killed between the layer and its comp
    kept = (out / "face.1001.exr").stat().st_mtime_ns, (out / "comp.1001.exr").stat().st_mtime_ns
    opts.skip_existing = True
    again = render(opts)
    assert again.skipped == [1001] and again.written == [1002]
    assert read_image(out / "comp.1002.exr").attribute("vfxswap:synthetic") == "true"
    assert ((out / "face.1001.exr").stat().st_mtime_ns, (out / "comp.1001.exr").stat().st_mtime_ns) == kept
    assert render(opts).skipped == [1001, 1002]


# 4 ----------------------------------------------------------------------------------------------

def test_a_gap_in_the_plates_fails_naming_the_frame(shot, tmp_path):
    pattern, fs = _plates_like(shot, tmp_path / "plates")
    (tmp_path / "plates" / "plate.1002.exr").unlink()
    for frames in (None, "1001-1003"):  # the whole sequence, or a range naming the gap
        out = tmp_path / f"out_{frames}"
        report = render(_options(pattern, fs, out, frames=frames))
        assert report.written == [1001, 1003] and list(report.failed) == [1002]
        assert "plate.1002.exr" in report.failed[1002]
    # other callers still refuse a range with a hole in it; render asks for the gaps
    with pytest.raises(VfxSwapError, match="missing on disk: 1002"):
        select_frames(str(pattern), "1001-1003")
    assert select_frames(str(pattern))[1] == [1001, 1003]
    assert select_frames(str(pattern), keep_missing=True)[1] == FRAMES


# 5 ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("erode, blur", [(0.0, 15.0), (-15.0, 10.0)])
def test_a_soft_matte_is_not_cut_by_the_layer_data_window(shot, tmp_path, erode, blur):
    render(_options(shot / "plates" / "plate.####.exr", shot / "faceset", tmp_path, frames="1001",
                    erode=erode, blur=blur))
    layer = read_image(tmp_path / "face.1001.exr")
    a, dw, disp = layer.pixels[..., 3], layer.data_window, layer.display_window
    borders = {"left": (dw.x > disp.x, a[:, 0]), "right": (dw.x1 < disp.x1, a[:, -1]),
               "top": (dw.y > disp.y, a[0]), "bottom": (dw.y1 < disp.y1, a[-1])}
    inside = [side for side, (inner, _) in borders.items() if inner]
    assert len(inside) >= 2  # the data window is a box inside the plate, not the plate
    for side in inside:  # an edge of the data window inside the plate: the matte has faded out
        assert borders[side][1].max() == 0.0, side


# 6 ----------------------------------------------------------------------------------------------

def _two_part(path, first, second):
    """A multi-part EXR of (name, Image) parts, in order."""
    specs = []
    for name, img in (first, second):
        h, w, c = img.pixels.shape
        spec = oiio.ImageSpec(w, h, c, "half")
        spec.channelnames = img.channels
        spec.attribute("name", name)
        spec.attribute("oiio:ColorSpace", "ACEScg")
        specs.append(spec)
    out = oiio.ImageOutput.create(str(path))
    assert out.open(str(path), specs), out.geterror()
    for i, (spec, (_, img)) in enumerate(zip(specs, (first, second))):
        if i:
            assert out.open(str(path), spec, "AppendSubimage")
        assert out.write_image(np.ascontiguousarray(img.pixels))
    assert out.close()


def test_plates_whose_first_part_has_no_colour(shot, tmp_path):
    """A multi-part plate with its depth part first renders from its RGBA part; a luminance-only
    plate fails each frame with one line naming the file, in render and extract alike."""
    from vfxswap.faces.extract import extract
    from vfxswap.jobspec import ExtractOptions

    folder = tmp_path / "depth_first"
    folder.mkdir()
    for frame in FRAMES:
        rgba = read_image(shot / "plates" / f"plate.{frame}.exr")
        depth = Image.from_array(np.full(rgba.pixels.shape[:2], 5.0, np.float32), ("Z",))
        _two_part(folder / f"plate.{frame}.exr", ("depth", depth), ("rgba", rgba))
    assert read_image(folder / "plate.1001.exr").channels == ("R", "G", "B", "A")
    assert read_image(folder / "plate.1001.exr", part=0).channels == ("Z",)
    pattern = folder / "plate.####.exr"
    report = render(_options(pattern, _faceset_for(shot, pattern, tmp_path / "fs"), tmp_path / "out",
                             frames="1001", comp=True))
    assert report.written == [1001] and not report.without_faces
    comp = read_image(tmp_path / "out" / "comp.1001.exr")
    plate = read_image(shot / "plates" / "plate.1001.exr")
    assert comp.channels == ("R", "G", "B", "A")
    np.testing.assert_allclose(comp.pixels[:5, :5], plate.pixels[:5, :5], atol=1e-3)  # away from the face

    luma = lambda p: Image.from_array(p.pixels[..., :3] @ np.array([0.27, 0.67, 0.06], np.float32), ("Y",))
    y_pattern, y_fs = _plates_like(shot, tmp_path / "luma", luma)
    report = render(_options(y_pattern, y_fs, tmp_path / "y_out", frames="1001-1002"))
    assert not report.written and list(report.failed) == [1001, 1002]
    assert "plate.1001.exr" in report.failed[1001] and "no R, G, B" in report.failed[1001]
    found = extract(str(y_pattern), str(tmp_path / "y_extract"), ExtractOptions(detector="dlib", landmarker="dlib", size=96))
    assert sorted(found.failed) == FRAMES and "no R, G, B" in found.failed[1001]


# 7 ----------------------------------------------------------------------------------------------

def test_a_faceset_is_matched_by_plate_name_only_when_its_plates_moved(shot, tmp_path):
    # another shot whose plates share the name: its faceset's own plates are still there
    other = tmp_path / "sh020"
    other.mkdir()
    for frame in FRAMES:
        plate = read_image(shot / "plates" / f"plate.{frame}.exr")
        write_image(other / f"plate.{frame}.exr", Image.from_array(plate.pixels[:, ::-1].copy()))
    with pytest.raises(VfxSwapError, match="still on disk"):
        render(_options(other / "plate.####.exr", shot / "faceset", tmp_path / "wrong"))
    assert not (tmp_path / "wrong").exists()
    # the same plates moved (a farm's path mapping): the recorded path is gone, the name matches
    moved, _ = _plates_like(shot, tmp_path / "moved")
    gone = _faceset_for(shot, tmp_path / "gone" / "plate.####.exr", tmp_path / "gone_fs")
    assert render(_options(moved, gone, tmp_path / "out", frames="1001")).written == [1001]


# 8 ----------------------------------------------------------------------------------------------

def test_the_comp_keeps_the_plate_overscan(shot, tmp_path):
    def overscan(plate):
        px = np.pad(plate.pixels, ((32, 32), (32, 32), (0, 0)), mode="edge")
        return Image(px, plate.channels, Box(-32, -32, 576, 576), Box(0, 0, 512, 512), dict(plate.attributes))

    pattern, fs = _plates_like(shot, tmp_path / "plates", overscan)
    render(_options(pattern, fs, tmp_path / "out", frames="1001", comp=True))
    plate = read_image(tmp_path / "plates" / "plate.1001.exr")
    comp = read_image(tmp_path / "out" / "comp.1001.exr")
    assert comp.data_window == plate.data_window and comp.display_window == plate.display_window
    layer = read_image(tmp_path / "out" / "face.1001.exr").on_window(plate.data_window)
    expect = layer[..., :3] + plate.pixels[..., :3] * (1 - layer[..., 3:4])
    assert np.abs(comp.pixels[..., :3] - expect).max() < 2e-3 * max(1.0, float(expect.max()))
    np.testing.assert_array_equal(comp.pixels[:32], plate.pixels[:32])  # the overscan rows, as they were


def _overscan(plate):  # 32 px of overscan all round: the data window starts at (-32, -32)
    px = np.pad(plate.pixels, ((32, 32), (32, 32), (0, 0)), mode="edge")
    return Image(px, plate.channels, Box(-32, -32, 576, 576), Box(0, 0, 512, 512), dict(plate.attributes))


def _offset(plate):  # a display window away from 0, and a data window missing its top 61 rows
    return Image(plate.pixels[61:500], plate.channels, Box(7, -13 + 61, 512, 439), Box(7, -13, 512, 512),
                 dict(plate.attributes))


@pytest.mark.parametrize("make", [_overscan, _offset], ids=["overscan", "offset"])
def test_the_layer_from_the_faces_rows_equals_the_one_from_the_whole_plate(shot, tmp_path, monkeypatch, make):
    """The render reads only the plate rows its crops need (the header alone for a frame without
    a face); with overscan or windows away from 0 the layer is the very one a whole read makes."""
    import vfxswap.render.render as rmod

    pattern, fs = _plates_like(shot, tmp_path / "plates", make)
    with Faceset(fs) as faceset:  # 1003 has no face: its layer comes from the header alone
        faceset.db.execute("DELETE FROM faces WHERE frame = 1003")
        faceset.db.commit()
    real, got = rmod.read_image, {}

    def whole(path, rows=None):  # the whole read the render made before
        assert rows is not None  # (the render asks for rows)
        return real(path)

    def rows_read(path, rows=None):
        image = real(path, rows=rows)
        got[int(str(path)[-8:-4])] = image.data_window
        return image

    monkeypatch.setattr(rmod, "read_image", whole)
    render(_options(pattern, fs, tmp_path / "whole", color="rct"))
    monkeypatch.setattr(rmod, "read_image", rows_read)
    render(_options(pattern, fs, tmp_path / "rows", color="rct"))
    assert all(0 < got[f].height < 400 for f in (1001, 1002)) and got[1003].height == 0  # the face's rows, or none
    for frame in FRAMES:
        assert (tmp_path / "rows" / f"face.{frame}.exr").read_bytes() == \
            (tmp_path / "whole" / f"face.{frame}.exr").read_bytes(), frame
    assert read_image(tmp_path / "rows" / "face.1001.exr").data_window.height > 100  # a face was rendered


# 9 ----------------------------------------------------------------------------------------------

def test_a_movie_plate_renders_over_its_frames_in_scene_linear(shot, tmp_path):
    """A movie extracted as it is (faces numbered from 1001) renders as it is too: its frames are
    decoded to scene-linear EXR beside the layers (as `plates convert` would), the faceset finds
    them under the movie's own name, and the layers sit in that scene-linear space."""
    from vfxswap.faces.extract import extract
    from vfxswap.jobspec import ExtractOptions
    from vfxswap.plates.convert import convert

    movie = tmp_path / "clip.mp4"
    convert(str(shot / "plates" / "plate.####.exr"), str(movie))  # an 8-bit H.264 through the view
    assert extract(str(movie), str(tmp_path / "fs"), ExtractOptions(detector="dlib", landmarker="dlib", size=128)).faces == len(FRAMES)
    report = render(_options(movie, tmp_path / "fs", tmp_path / "out"))
    assert report.written == FRAMES and not report.failed and not report.without_faces
    layer = read_image(tmp_path / "out" / "face.1002.exr")
    plate = read_image(tmp_path / "out" / ".plates" / "clip.1002.exr")
    assert layer.colorspace == plate.colorspace and "sRGB" not in layer.colorspace
    # passthrough: inside the face the premultiplied layer is the decoded plate times alpha
    box = layer.data_window
    under = plate.on_window(box)[..., :3]
    alpha = layer.pixels[..., 3:4]
    inside = alpha[..., 0] > 0.99
    assert inside.sum() > 1000
    diff = np.abs(layer.pixels[..., :3] - under * alpha)[inside]
    print(f"movie passthrough vs decoded plate inside the face: mean {diff.mean():.4f}, p99 {np.percentile(diff, 99):.4f}")
    assert diff.mean() < 0.01  # resampled through the aligned face; display-encoded values would be ~0.2 off


def test_a_track_the_faceset_does_not_hold_is_one_line(shot, tmp_path):
    """--track 5 with no track 5 wrote empty layers for every frame and exited 0."""
    with pytest.raises(VfxSwapError, match="--track 5: no such track"):
        render(_options(shot / "plates" / "plate.####.exr", shot / "faceset", tmp_path / "out", track=5))
    assert not (tmp_path / "out").exists()
