"""Render: the pass-through exactness check, HDR survival, headers and provenance, corrupt
frames, --skip-existing, and byte-identical re-renders."""

from __future__ import annotations

import hashlib
import json

import cv2
import numpy as np
import pytest
import skimage.data

from vfxswap.color import ColorPipeline
from vfxswap.errors import VfxSwapError
from vfxswap.faces import align
from vfxswap.faces.extract import extract
from vfxswap.jobspec import ExtractOptions, RenderOptions
from vfxswap.plates import Image, read_image, write_image
from vfxswap.render.render import render

FRAMES = (1001, 1002, 1003)


@pytest.fixture(scope="module")
def shot(tmp_path_factory):
    """Three ACEScg half-EXR frames of the (public-domain) astronaut, band-limited so a correct
    warp round trip is exact to half precision, with highlights above 1.0 on her face."""
    root = tmp_path_factory.mktemp("shot")
    srgb = cv2.resize(skimage.data.astronaut().astype(np.float32) / 255.0, (768, 768), interpolation=cv2.INTER_CUBIC)
    lin = ColorPipeline("sRGB Encoded Rec.709 (sRGB)").convert(srgb, "sRGB Encoded Rec.709 (sRGB)", "ACEScg")
    lin = np.clip(lin, 0, None)
    lin[158:170, 318:342] *= 12.0  # a specular highlight on the forehead, well above display white
    lin = cv2.GaussianBlur(lin, (0, 0), 1.5)
    for i, frame in enumerate(FRAMES):
        px = np.concatenate([np.roll(lin, i, axis=1), np.ones((768, 768, 1), np.float32)], axis=2)
        img = Image.from_array(px)
        img.set_attribute("oiio:ColorSpace", "ACEScg")
        img.set_attribute("smpte:TimeCode", (0x10000000 + i, 0), "timecode")
        write_image(root / "plates" / f"plate.{frame}.exr", img)
    extract(str(root / "plates" / "plate.####.exr"), str(root / "faceset"), ExtractOptions(detector="dlib", landmarker="dlib", size=128))
    return root


def _options(shot, out, **kw):
    base = dict(model="passthrough", plates=str(shot / "plates" / "plate.####.exr"), out=str(out),
                faceset=str(shot / "faceset"), resolution=512, color="none", mask="hull")
    base.update(kw)
    return RenderOptions(**base)


def _comp_error(shot, out, frame=1001):
    """The layer over the plate against the plate, inside the mask (eroded a few pixels)."""
    layer = read_image(out / f"face.{frame}.exr").on_display_window()
    plate = read_image(shot / "plates" / f"plate.{frame}.exr").pixels[..., :3]
    a = layer[..., 3:4]
    comp = layer[..., :3] + plate * (1.0 - a)
    inside = cv2.erode((a[..., 0] > 0.999).astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    err = np.abs(comp - plate)[inside]
    return err, plate[inside], layer, inside


def test_pass_through_layer_over_plate_equals_plate(shot, tmp_path):
    report = render(_options(shot, tmp_path / "out"))
    assert report.written == list(FRAMES) and not report.failed
    err, plate, layer, inside = _comp_error(shot, tmp_path / "out")
    assert inside.sum() > 10_000  # the whole face
    rel = err / np.maximum(np.abs(plate), 0.05)
    print(f"pass-through: max rel {rel.max():.2e}, mean rel {rel.mean():.2e} over {inside.sum()} px")
    # Half floats hold ~3.3 digits (a relative step of 4.9e-4 to 9.8e-4): the error left is that
    # rounding (measured: mean 3e-6, max 1.05e-3) - exact warps, colour and premultiplication.
    assert rel.mean() < 1e-4 and rel.max() < 2e-3
    # HDR: the 12x highlight (far above display white) survives into the layer
    hot = plate.max()
    assert hot > 4.0 and layer[..., :3].max() > 0.95 * hot


def test_a_half_pixel_warp_mistake_is_caught(shot, tmp_path, monkeypatch):
    """The check is sharp: a half-pixel slip in the warp back alone fails it by far."""
    real = align.warp_exact

    def slipped(image, matrix, out_shape, **kw):
        if out_shape != (512, 512):  # the warp back to the plate
            matrix = np.array(matrix, np.float64)
            matrix[0, 2] += 0.5
        return real(image, matrix, out_shape, **kw)

    monkeypatch.setattr(align, "warp_exact", slipped)
    render(_options(shot, tmp_path / "bad", frames="1001"))
    err, plate, _, _ = _comp_error(shot, tmp_path / "bad")
    rel = err / np.maximum(np.abs(plate), 0.05)
    assert rel.max() > 2e-2 and rel.mean() > 1e-3


def test_layer_windows_channels_and_provenance_headers(shot, tmp_path):
    render(_options(shot, tmp_path / "out", frames="1002"))
    layer = read_image(tmp_path / "out" / "face.1002.exr", dtype="native")
    assert layer.channels == ("R", "G", "B", "A") and layer.source_format == "half"
    assert layer.display_window == read_image(shot / "plates" / "plate.1002.exr").display_window
    dw = layer.data_window
    assert 0 < dw.width < 768 and 0 < dw.height < 768  # the face's padded box only
    assert layer.colorspace in ("ACEScg", "lin_ap1_scene")
    assert layer.attribute("chromaticities") == pytest.approx((0.713, 0.293, 0.165, 0.830, 0.128, 0.044, 0.32168, 0.33767))
    assert layer.attribute("vfxswap:synthetic") == "true"
    assert "SYNTHETIC" in layer.attribute("ImageDescription")  # the EXR `comments` attribute
    assert layer.attribute("vfxswap:model") == "passthrough"
    assert layer.attribute("smpte:TimeCode") is not None
    matrices = json.loads(layer.attribute("vfxswap:alignment"))
    assert len(matrices) == 1 and len(matrices[0]) == 6
    rgba = layer.pixels.astype(np.float32)
    assert np.all(rgba[..., :3] <= rgba[..., 3:4] * rgba[..., :3].max() + 1e-6)  # premultiplied: no colour where A = 0
    outside = rgba[..., 3] == 0
    assert outside.any() and np.all(rgba[outside][:, :3] == 0)


def test_corrupt_frame_fails_alone_and_skip_existing_fills_only_the_hole(shot, tmp_path):
    import shutil

    plates = tmp_path / "plates"
    shutil.copytree(shot / "plates", plates)
    bad = plates / "plate.1002.exr"
    good = bad.read_bytes()
    bad.write_bytes(good[: len(good) // 3])
    opts = _options(shot, tmp_path / "out", plates=str(plates / "plate.####.exr"))
    # the faceset was extracted from the original folder: point the render at the same faces
    opts.plates = str(shot / "plates" / "plate.####.exr")
    first = render(opts)
    assert first.written == list(FRAMES)  # sanity: the original plates render
    (tmp_path / "out" / "face.1002.exr").unlink()
    shutil.copy(bad, shot / "plates" / "plate.1002.exr.bad")
    try:
        (shot / "plates" / "plate.1002.exr").rename(shot / "plates" / "plate.1002.exr.good")
        (shot / "plates" / "plate.1002.exr.bad").rename(shot / "plates" / "plate.1002.exr")
        opts.skip_existing = True
        broken = render(opts)
        assert broken.skipped == [1001, 1003] and list(broken.failed) == [1002]
        assert "plate.1002.exr" in broken.failed[1002]
        assert not (tmp_path / "out" / "face.1002.exr").exists()
    finally:
        (shot / "plates" / "plate.1002.exr").unlink()
        (shot / "plates" / "plate.1002.exr.good").rename(shot / "plates" / "plate.1002.exr")
    before = {f: (tmp_path / "out" / f"face.{f}.exr").stat().st_mtime_ns for f in (1001, 1003)}
    fixed = render(opts)
    assert fixed.written == [1002] and fixed.skipped == [1001, 1003]
    assert before == {f: (tmp_path / "out" / f"face.{f}.exr").stat().st_mtime_ns for f in (1001, 1003)}
    manifests = sorted((tmp_path / "out" / "manifests").glob("*.json"), key=lambda p: p.stat().st_mtime_ns)
    assert len(manifests) == 3 and json.loads(manifests[-1].read_text())["written"] == "1002"


def test_rendering_twice_gives_the_same_bytes(shot, tmp_path):
    render(_options(shot, tmp_path / "a", frames="1001"))
    render(_options(shot, tmp_path / "b", frames="1001"))
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()
    assert digest(tmp_path / "a" / "face.1001.exr") == digest(tmp_path / "b" / "face.1001.exr")


def test_without_a_faceset_faces_are_found_live(shot, tmp_path):
    report = render(_options(shot, tmp_path / "live", faceset=None, frames="1001"))
    assert report.written == [1001] and not report.without_faces
    assert (tmp_path / "live" / ".faceset" / "faceset.db").is_file()
    err, plate, _, _ = _comp_error(shot, tmp_path / "live")
    assert (err / np.maximum(np.abs(plate), 0.05)).max() < 2e-3


def test_like_keeps_the_referenced_identity(shot, tmp_path, shared_file):
    ref = tmp_path / "ref.png"
    write_image(ref, Image.from_array(skimage.data.astronaut().astype(np.float32) / 255.0))
    assert render(_options(shot, tmp_path / "a", frames="1001", like=[str(ref)])).without_faces == []
    other = sorted(shared_file("identities/A_grid_s1").glob("*.jpg"))[:2]  # a different person
    with pytest.raises(VfxSwapError, match="looks like"):
        render(_options(shot, tmp_path / "b", frames="1001", like=[str(p) for p in other]))


@pytest.mark.parametrize("method", ["rct", "lct", "mkl", "idt", "sot"])
def test_colour_match_moves_the_prediction_onto_the_plate_face(method):
    from vfxswap.render.color_transfer import color_transfer

    rng = np.random.default_rng(0)
    ref = rng.normal([0.45, 0.38, 0.33], [0.05, 0.04, 0.03], (64, 64, 3)).astype(np.float32)
    ref[..., 1] += 0.5 * (ref[..., 0] - 0.45)  # correlated channels, as skin is
    pred = (rng.normal([0.30, 0.40, 0.50], [0.02, 0.06, 0.02], (64, 64, 3))).astype(np.float32)
    mask = np.zeros((64, 64), np.float32)
    mask[8:56, 8:56] = 1
    out = color_transfer(pred, ref, mask, method)
    inside = mask > 0.5
    before = np.abs(pred[inside].mean(0) - ref[inside].mean(0)).max()
    after = np.abs(out[inside].mean(0) - ref[inside].mean(0)).max()
    assert after < 0.1 * before
    if method in ("lct", "mkl"):
        assert np.allclose(np.cov(out[inside].T), np.cov(ref[inside].T), atol=2e-4)
    assert out.dtype == np.float32 and np.isfinite(out).all()


@pytest.mark.parametrize("method", ["rct", "lct", "mkl", "idt", "sot"])
def test_colour_match_keeps_soft_edge_values_ordered_and_a_flat_face_tame(method):
    """Pixels past the masked range (a soft matte's edge) keep their order and are not clipped
    (idt held them at the range's end, sot turned brighter into darker); a flat prediction
    matches the plate's mean only (a 1e-6 spread floor scaled a 0.01 edge step to 514)."""
    from vfxswap.render.color_transfer import color_transfer

    rng = np.random.default_rng(1)
    ref = rng.normal(0.5, 0.05, (64, 64, 3)).astype(np.float32)
    mask = np.zeros((64, 64), np.float32)
    mask[8:56, 8:56] = 1
    pred = rng.normal(0.4, 0.03, (64, 64, 3)).astype(np.float32)
    pred[0, :6] = [[0.6] * 3, [0.7] * 3, [0.9] * 3, [1.2] * 3, [2.0] * 3, [4.0] * 3]  # past the face's range
    edge = color_transfer(pred, ref, mask, method)[0, :6, 0]
    assert np.all(np.diff(edge) > 0.05), edge
    flat = np.full((64, 64, 3), 0.5, np.float32)
    flat[4:8] = 0.51  # the soft edge, a touch brighter
    out = color_transfer(flat, ref, mask, method)
    np.testing.assert_allclose(out[30, 30], ref[mask > 0.5].mean(0), atol=1e-3)
    np.testing.assert_allclose(out[5, 30], ref[mask > 0.5].mean(0) + 0.01, atol=1e-3)


def test_layers_comp_and_preview(shot, tmp_path):
    out = tmp_path / "out"
    report = render(_options(shot, out, frames="1001-1002", layers=True, comp=True, preview=True))
    assert report.written == [1001, 1002]
    layer = read_image(out / "face.1001.exr")
    assert set(layer.channels) == {"R", "G", "B", "A", "raw.R", "raw.G", "raw.B", "matte.Y", "stmap.R", "stmap.G"}
    # The ST map says where each plate pixel sits in the aligned square (Nuke STMap convention).
    from vfxswap.faceset import Faceset

    with Faceset(shot / "faceset") as fs:
        face = [f for f in fs.faces() if f.frame == 1001][0]
    matrix = align.alignment_matrix(face.landmarks, 512, "whole_face")
    x, y = np.round(face.landmarks[30]).astype(int)  # the nose tip, in plate pixels
    st = layer.select(["stmap.R", "stmap.G"]).on_display_window()[y, x]
    ax, ay = align.transform_points(np.array([[x, y]], float), matrix)[0]
    assert st[0] == pytest.approx((ax + 0.5) / 512, abs=1e-5) and st[1] == pytest.approx(1 - (ay + 0.5) / 512, abs=1e-5)
    # The comp is the layer over the plate and is marked synthetic too.
    comp = read_image(out / "comp.1001.exr")
    plate = read_image(shot / "plates" / "plate.1001.exr").pixels
    full = layer.on_display_window()
    expect = full[..., :3] + plate[..., :3] * (1 - full[..., 3:4])
    assert np.abs(comp.pixels[..., :3] - expect).max() < 2e-3 * max(1.0, float(expect.max()))
    assert comp.attribute("vfxswap:synthetic") == "true"
    assert (out / "preview.mp4").stat().st_size > 1000


def test_demo_runs_end_to_end_in_small(tmp_path, capsys):
    from vfxswap.demo import run

    where = run(str(tmp_path / "demo"), frames=3, iters=2, batch=2)
    layer = read_image(where["face layers"].replace("####", "1002"))
    assert layer.attribute("vfxswap:synthetic") == "true"
    assert "public domain" in layer.attribute("vfxswap:releaseRef")
    assert (tmp_path / "demo" / "render" / "preview.mp4").is_file()
    assert "where to look" in capsys.readouterr().out


def test_marcie_hdr_highlights_survive_pass_through(shared_file, tmp_path):
    """The shared Marcie portrait pushed 1.5 stops: her skin highlights pass 1.0 and come back
    in the layer as they were (the pipeline never clips at display white)."""
    m = read_image(shared_file("exr/marcie/marcie_512_linear_srgb_DERIVED.exr"))
    hot = Image(m.pixels * np.array([2.83, 2.83, 2.83, 1.0], np.float32), m.channels, m.data_window,
                m.display_window, dict(m.attributes))
    write_image(tmp_path / "plates" / "m.1001.exr", hot)
    extract(str(tmp_path / "plates" / "m.####.exr"), str(tmp_path / "fs"), ExtractOptions(detector="dlib", landmarker="dlib", size=128))
    render(RenderOptions(model="passthrough", plates=str(tmp_path / "plates" / "m.####.exr"), faceset=str(tmp_path / "fs"),
                         out=str(tmp_path / "out"), resolution=512, color="none", mask="hull"))
    face = read_image(tmp_path / "out" / "face.1001.exr").on_display_window()
    core = face[..., 3] > 0.999
    plate = hot.pixels[..., :3]
    over = core & (plate.max(axis=2) > 1.0)
    assert over.sum() > 50  # highlights above display white inside the face
    assert np.allclose(face[..., :3][over], plate[over], rtol=2e-2)
    assert hot.colorspace is None and read_image(tmp_path / "out" / "face.1001.exr").colorspace == "Linear Rec.709 (sRGB)"


def test_a_frame_without_a_face_gets_an_empty_layer(shot, tmp_path):
    import shutil

    from vfxswap.faceset import Faceset

    fs_copy = tmp_path / "faceset"
    shutil.copytree(shot / "faceset", fs_copy)
    with Faceset(fs_copy) as fs:
        fs.db.execute("DELETE FROM faces WHERE frame = 1002")
        fs.db.commit()
    report = render(_options(shot, tmp_path / "out", faceset=str(fs_copy)))
    assert report.written == list(FRAMES) and report.without_faces == [1002]
    empty = read_image(tmp_path / "out" / "face.1002.exr")
    assert empty.data_window.width == 1 and empty.data_window.height == 1
    assert not empty.pixels.any() and empty.display_window.width == 768
    assert empty.attribute("vfxswap:synthetic") == "true"


def _laplacian_energy(rgb: np.ndarray) -> float:
    return float((cv2.Laplacian(np.ascontiguousarray(rgb.mean(axis=2)), cv2.CV_32F) ** 2).mean())


def test_render_feeds_the_model_faces_cut_as_its_training_faces_were(tmp_path):
    """A 2K plate with skin-fine texture, a face ~900 px wide cut to 96 px: the render's model input
    has the high-frequency energy of the training samples the faceset gives (today's point-sampled
    cut straight to 96 px had several times more: aliasing the model never saw)."""
    from types import SimpleNamespace

    from vfxswap.render.render import Renderer
    from vfxswap.train.data import FaceSamples

    srgb = skimage.data.astronaut().astype(np.float32) / 255.0
    lin = np.clip(ColorPipeline("sRGB Encoded Rec.709 (sRGB)").convert(srgb, "sRGB Encoded Rec.709 (sRGB)", "ACEScg"), 0, None)
    big = cv2.resize(lin, (1600, 1600), interpolation=cv2.INTER_CUBIC)
    grain = cv2.GaussianBlur(np.random.default_rng(3).normal(size=big.shape).astype(np.float32), (0, 0), 0.8)
    big = np.clip(big * (1.0 + 0.6 * grain), 0, None)  # pores and grain at the plate's own pixel scale
    plate = np.full((1080, 2048, 3), 0.05, np.float32)
    plate[:, 224:1824] = big[60:1140]
    write_image(tmp_path / "plates" / "plate.1001.exr", Image.from_array(plate))
    extract(str(tmp_path / "plates" / "plate.####.exr"), str(tmp_path / "faceset"),
            ExtractOptions(detector="dlib", landmarker="dlib", size=256, face_type="whole_face"))
    trained = FaceSamples(tmp_path / "faceset", 96, augment=False, warp=False, flip=False).face(0)[0]

    renderer = Renderer(RenderOptions(model="passthrough", plates=str(tmp_path / "plates" / "plate.####.exr"),
                                      out=str(tmp_path / "out"), faceset=str(tmp_path / "faceset"),
                                      resolution=96, face_type="whole_face"))
    renderer.pipe = ColorPipeline("ACEScg", config=renderer.choice)
    renderer.predict = SimpleNamespace(input_size=256, resolution=96, face_type="whole_face")  # a model trained on 256 px facesets
    face = renderer.faces[1001][0]
    given = renderer.face_input(read_image(tmp_path / "plates" / "plate.1001.exr").pixels[..., :3], face.landmarks, "t")
    assert given.shape == trained.shape == (96, 96, 3)
    ratio = _laplacian_energy(given) / _laplacian_energy(trained)
    point = align.warp_exact(renderer.pipe.to_model(plate), align.alignment_matrix(face.landmarks, 96, "whole_face"), (96, 96))
    print(f"high-frequency energy, render input / training sample: {ratio:.3f} "
          f"(a point-sampled cut: {_laplacian_energy(point) / _laplacian_energy(trained):.2f})")
    assert 0.9 < ratio < 1.1
    assert np.abs(given - trained).mean() < 0.01  # the same face, not only the same spectrum


class _ConstantFace:
    """A model stand-in that always draws the same face: the layer's changes from frame to frame
    are then the colour match's alone."""

    def __init__(self, resolution=128, face_type="full"):
        self.resolution, self.face_type, self.input_size, self.identity_b = resolution, face_type, resolution, None
        self.provenance = {"model_id": "constant", "manifest_sha256": "", "identities": {}}
        yy, xx = np.mgrid[0:resolution, 0:resolution] / resolution
        self.face = np.stack([0.45 + 0.1 * xx, 0.4 + 0.1 * yy, 0.35 + 0.05 * xx * yy], 2).astype(np.float32)

    def __call__(self, faces):
        n = len(faces)
        return np.repeat(self.face[None], n, 0), np.ones((n, self.resolution, self.resolution), np.float32)


def test_colour_match_is_smoothed_along_the_track(tmp_path):
    """One frame of seven has the face's lower half a stop darker (a mouth opening, a hand's
    shadow): matched frame by frame the whole replaced face dips with it; smoothed along the
    track (the default) the dip is spread thin, and a steady shot stays as it was."""
    from vfxswap.render.render import Renderer

    srgb = cv2.resize(skimage.data.astronaut().astype(np.float32) / 255.0, (768, 768), interpolation=cv2.INTER_AREA)
    lin = np.clip(ColorPipeline("sRGB Encoded Rec.709 (sRGB)").convert(srgb, "sRGB Encoded Rec.709 (sRGB)", "ACEScg"), 0, None)
    frames = range(1001, 1008)
    for frame in frames:
        px = lin.copy()
        if frame == 1004:
            px[200:270, 280:400] *= 0.5  # the lower face
        write_image(tmp_path / "plates" / f"plate.{frame}.exr", Image.from_array(px))
    extract(str(tmp_path / "plates" / "plate.####.exr"), str(tmp_path / "faceset"),
            ExtractOptions(detector="dlib", landmarker="dlib", size=128))

    def layer_means(smooth):
        out = tmp_path / f"out{smooth}"
        r = Renderer(RenderOptions(model="passthrough", plates=str(tmp_path / "plates" / "plate.####.exr"), out=str(out),
                                   faceset=str(tmp_path / "faceset"), resolution=128, color="rct", mask="hull",
                                   color_smooth=smooth))
        r.predict = _ConstantFace()
        assert r.run().written == list(frames)
        means = []
        for frame in frames:
            layer = read_image(out / f"face.{frame}.exr").on_display_window()
            means.append(float(layer[..., :3].sum() / max(layer[..., 3].sum(), 1.0)))
        return np.array(means)

    alone, smoothed = layer_means(0), layer_means(2.0)
    dip = lambda m: float(np.median(m) - m[3])
    print(f"layer brightness dip at the dark frame: matched alone {dip(alone):.4f}, smoothed {dip(smoothed):.4f}")
    assert dip(alone) > 0.01  # the per-frame match pumps
    assert dip(smoothed) < 0.35 * dip(alone)
    steady = [0, 1, 5, 6]  # far from the dark frame's weight: what a steady shot gets
    assert np.abs(smoothed[steady] - alone[steady]).max() < 0.3 * dip(alone)


def test_default_render_replaces_only_the_models_identity_b(shared_file, tmp_path, caplog):
    """Two real speakers side by side (GRID s1 and brbk7n); the model's B is brbk7n. By default
    only her face is replaced; --all-faces replaces both; a frame where she is absent gets an
    empty layer, and the log says so."""
    import logging

    from vfxswap.faceset.store import Faceset
    from vfxswap.faces.identity import mean_embedding
    from vfxswap.render.render import Renderer

    s1 = cv2.imread(str(shared_file("identities/A_grid_s1/s1_bbaf3s_001.jpg")))[..., ::-1]
    her = cv2.imread(str(shared_file("identities/B_grid_brbk7n/" + sorted(
        p.name for p in (shared_file("identities/B_grid_brbk7n")).iterdir())[0])))[..., ::-1]
    to_lin = ColorPipeline("sRGB Encoded Rec.709 (sRGB)")
    lin = lambda a: np.clip(to_lin.convert(a.astype(np.float32) / 255.0, "sRGB Encoded Rec.709 (sRGB)", "ACEScg"), 0, None)
    both, alone = np.concatenate([lin(s1), lin(her)], 1), np.concatenate([lin(s1), np.full_like(lin(her), 0.05)], 1)
    for frame, px in ((1001, both), (1002, both), (1003, alone)):
        write_image(tmp_path / "plates" / f"plate.{frame}.exr", Image.from_array(np.ascontiguousarray(px)))
    extract(str(tmp_path / "plates" / "plate.####.exr"), str(tmp_path / "faceset"),
            ExtractOptions(detector="dlib", landmarker="dlib", size=128))
    with Faceset(tmp_path / "faceset") as fs:
        right = [r.embedding for r in fs.faces() if r.box[0] > s1.shape[1]]
    half = s1.shape[1]

    def covered(all_faces):
        out = tmp_path / f"out{all_faces}"
        r = Renderer(RenderOptions(model="passthrough", plates=str(tmp_path / "plates" / "plate.####.exr"), out=str(out),
                                   faceset=str(tmp_path / "faceset"), resolution=128, all_faces=all_faces))
        r.predict = _ConstantFace()
        r.predict.identity_b, r.predict.identity_b_name = mean_embedding(right), "brbk7n"
        r.faces = r._faces()  # chosen again, now that the model has an identity B
        report = r.run()
        alphas = [read_image(out / f"face.{f}.exr").on_display_window()[..., 3] for f in (1001, 1002, 1003)]
        return [(float(a[:, :half].max()), float(a[:, half:].max())) for a in alphas], report

    with caplog.at_level(logging.INFO, logger="vfxswap"):
        default, report = covered(False)
    assert default[0][0] == 0.0 and default[0][1] > 0.99  # s1 left alone, she is replaced
    assert default[2] == (0.0, 0.0) and report.without_faces == [1003]
    assert "1003" in caplog.text and "empty" in caplog.text
    every, _ = covered(True)
    assert every[0][0] > 0.99 and every[0][1] > 0.99 and every[2][0] > 0.99


def test_the_cpu_predictor_uses_its_own_threads_and_gives_the_process_back_its_own():
    """The forward pass runs on `threads` intra-op threads (2 threads on 2 shared cores were up
    to 20 times slower than 1), and torch's count for the rest of the process is left as it was,
    whatever the model does; `limited` runs on one."""
    from types import SimpleNamespace

    import torch

    from vfxswap.render.render import ModelPredictor, cpu_predict_threads, limited

    seen = []

    def swap(x, to):
        seen.append(torch.get_num_threads())
        if to != "A":
            raise RuntimeError("boom")
        return x, x[:, :1]

    predictor = ModelPredictor.__new__(ModelPredictor)  # no model folder: the call is what is tested
    predictor.device, predictor.threads, predictor.model = torch.device("cpu"), 1, SimpleNamespace(swap=swap)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        rgb, mask = predictor(np.full((1, 8, 8, 3), 0.5, np.float32))
        assert seen == [1] and torch.get_num_threads() == 2
        assert rgb.shape == (1, 8, 8, 3) and mask.shape == (1, 8, 8)
        predictor.model = SimpleNamespace(swap=lambda x, to: swap(x, "B"))
        with pytest.raises(RuntimeError):
            predictor(np.zeros((1, 8, 8, 3), np.float32))
        assert seen == [1, 1] and torch.get_num_threads() == 2  # given back after a failure too
        np.testing.assert_array_equal(limited(np.full((4, 4, 3), 0.5, np.float32)), 0.5)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert 1 <= cpu_predict_threads() <= max(1, torch.get_num_threads())
