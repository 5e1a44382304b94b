"""Colour management: which OCIO config is in force, the invertible model encoding on CPU and
torch, sanitising of NaN/Inf, and display images for detectors."""

from __future__ import annotations

import logging

import numpy as np
import PyOpenColorIO as OCIO
import pytest
import torch

from vfxswap.color import (BUILTIN_CONFIG, ENCODING_NAME, ColorPipeline, NonFinite, apply_threaded, count_nonfinite,
                           guess_plate_space, resolve_config, sanitize, working_size)
from vfxswap.color import config as config_module
from vfxswap.color import kernels
from vfxswap.errors import VfxSwapError
from vfxswap.plates.image import read_image, read_info

LINEAR_SPACES = ["ACEScg", "Linear Rec.709 (sRGB)", "ACES2065-1"]
MARCIE = "exr/marcie/marcie_512_linear_srgb_DERIVED.exr"
RINGS = "exr/openexr_images/TestImages/BrightRingsNanInf.exr"


@pytest.fixture(scope="module")
def studio():
    """The built-in studio config, asked for explicitly so $OCIO and the project config do not matter."""
    return resolve_config(BUILTIN_CONFIG)


@pytest.fixture(scope="module")
def pipelines(studio):
    cache = {}

    def get(space):
        if space not in cache:
            cache[space] = ColorPipeline(space, config=studio)
        return cache[space]

    return get


def scene_samples() -> np.ndarray:
    """(1, N, 3) scene-linear values 2^-10 .. 2^10 in quarter stops: greys and moderate tints."""
    stops = 2.0 ** np.arange(-10.0, 10.001, 0.25)
    tints = np.array([[1, 1, 1], [1.2, 1, 0.8], [0.8, 1, 1.2], [1, 0.85, 0.7], [0.9, 1.1, 1.0], [1.1, 0.95, 1.05]])
    values = (stops[:, None, None] * tints[None]).reshape(1, -1, 3)
    return np.ascontiguousarray(values, dtype=np.float32)


def rel_error(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float((np.abs(got - want) / np.abs(want)).max())


def ocio_model(config: OCIO.Config, plate_space: str, plate: np.ndarray) -> np.ndarray:
    """The model encoding computed by OCIO itself: plate -> ACEScct, then normalised."""
    cpu = config.getProcessor(plate_space, "ACEScct").getDefaultCPUProcessor()
    out = np.ascontiguousarray(plate, dtype=np.float32).copy()
    cpu.applyRGB(out)
    return (out.astype(np.float64) - kernels.CCT_LIN_OFFSET) * kernels.NORM_SCALE


def to_tensor(hwc: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(hwc.transpose(2, 0, 1)))


def from_tensor(chw: torch.Tensor) -> np.ndarray:
    return chw.detach().cpu().numpy().transpose(1, 2, 0)


# --- config resolution --------------------------------------------------------------------

@pytest.fixture
def no_env_no_project(monkeypatch, tmp_path):
    monkeypatch.delenv("OCIO", raising=False)
    monkeypatch.setattr(config_module, "PROJECT_CONFIG", tmp_path / "absent" / "config.ocio")


def write_config(path, name: str):
    config = OCIO.Config.CreateFromFile("ocio://studio-config-latest")
    config.setName(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(config.serialize())
    return path


def test_builtin_config_recorded_versioned(no_env_no_project):
    choice = resolve_config()
    assert choice.source == "builtin"
    assert choice.uri.startswith("ocio://studio-config-v")
    assert "latest" not in choice.uri and "latest" not in choice.name
    assert "studio-config-v" in choice.name
    # The recorded URI loads exactly this config again (what a farm node does).
    assert OCIO.Config.CreateFromFile(choice.uri).getName() == choice.name
    assert choice.uri in choice.describe() and "builtin" in choice.describe()


def test_explicit_latest_is_recorded_versioned(no_env_no_project):
    choice = resolve_config("ocio://studio-config-latest")
    assert choice.source == "option"
    assert "studio-config-v" in choice.uri and "latest" not in choice.uri


def test_resolution_order(no_env_no_project, monkeypatch, tmp_path):
    project = write_config(tmp_path / "proj" / "ocio" / "config.ocio", "vfxswap-test-project")
    env = write_config(tmp_path / "env" / "config.ocio", "vfxswap-test-env")
    option = write_config(tmp_path / "opt" / "config.ocio", "vfxswap-test-option")

    assert resolve_config().source == "builtin"

    monkeypatch.setattr(config_module, "PROJECT_CONFIG", project)
    choice = resolve_config()
    assert (choice.source, choice.uri, choice.name) == ("project", str(project), "vfxswap-test-project")

    monkeypatch.setenv("OCIO", str(env))
    choice = resolve_config()
    assert (choice.source, choice.uri, choice.name) == ("$OCIO", str(env), "vfxswap-test-env")

    choice = resolve_config(option)
    assert (choice.source, choice.uri, choice.name) == ("option", str(option), "vfxswap-test-option")

    # An empty $OCIO is "not set", as for every OCIO application.
    monkeypatch.setenv("OCIO", "")
    assert resolve_config().source == "project"

    # A pipeline built from a config path records it.
    pipeline = ColorPipeline("ACEScg", config=str(option))
    assert pipeline.describe()["ocio_config_uri"] == str(option)
    assert pipeline.describe()["ocio_config"] == "vfxswap-test-option"


def test_project_config_in_repo_is_pinned(monkeypatch):
    monkeypatch.delenv("OCIO", raising=False)
    assert config_module.PROJECT_CONFIG.is_file(), f"the repository's {config_module.PROJECT_CONFIG} is missing"
    choice = resolve_config()
    assert choice.source == "project"
    assert "latest" not in choice.name and choice.name


def test_missing_config_is_an_error(no_env_no_project, monkeypatch, tmp_path):
    missing = tmp_path / "nope" / "config.ocio"
    with pytest.raises(VfxSwapError, match="no such file") as err:
        resolve_config(missing)
    assert str(missing) in str(err.value) and "option" in str(err.value)
    monkeypatch.setenv("OCIO", str(missing))
    with pytest.raises(VfxSwapError, match=r"\$OCIO"):
        resolve_config()
    with pytest.raises(VfxSwapError, match="no such file"):
        ColorPipeline("ACEScg")


def test_bad_config_is_an_error(no_env_no_project, tmp_path):
    with pytest.raises(VfxSwapError, match="ocio://no-such-builtin-config"):
        resolve_config("ocio://no-such-builtin-config")
    broken = tmp_path / "broken.ocio"
    broken.write_text("ocio_profile_version: 2\ncolorspaces: [this is not: a config\n")
    with pytest.raises(VfxSwapError, match="broken.ocio"):
        resolve_config(broken)


# --- the model encoding: CPU -------------------------------------------------------------

@pytest.mark.parametrize("space", LINEAR_SPACES)
def test_round_trip_cpu(pipelines, space):
    pipeline = pipelines(space)
    assert pipeline.plate_space == space
    assert pipeline.matrix is not None and pipeline.matrix.shape == (3, 3)
    plate = scene_samples()
    model = pipeline.to_model(plate)
    assert model.dtype == np.float32 and model.shape == plate.shape
    back = pipeline.from_model(model)
    assert back.dtype == np.float32 and back.shape == plate.shape
    assert rel_error(back, plate) < 1e-4
    # Monotone in exposure for greys: the encoding is a curve, not a tone map that folds.
    greys = model[0, ::6, 0]
    assert (np.diff(greys) > 0).all()


@pytest.mark.parametrize("space", LINEAR_SPACES)
def test_cpu_kernel_matches_ocio(pipelines, studio, space):
    plate = scene_samples()
    model = pipelines(space).to_model(plate)
    reference = ocio_model(studio.config, space, plate)
    assert np.abs(model - reference).max() < 1e-6
    # And the float64 reference curve agrees on ACEScg input.
    if space == "ACEScg":
        assert np.abs(model - kernels.cct_encode_np(plate)).max() < 1e-6


def test_extra_channels_ignored(pipelines, rng):
    plate = rng.uniform(0, 4, (5, 6, 4)).astype(np.float32)
    pipeline = pipelines("ACEScg")
    np.testing.assert_array_equal(pipeline.to_model(plate), pipeline.to_model(np.ascontiguousarray(plate[..., :3])))
    assert pipeline.to_model(plate).shape == (5, 6, 3)


def test_hdr_values_survive(pipelines):
    pipeline = pipelines("ACEScg")
    scene = np.array([[[0.18] * 3, [1.0] * 3, [16.0] * 3, [100.0] * 3, [1000.0] * 3, [0.0] * 3]], np.float32)
    model = pipeline.to_model(scene)
    np.testing.assert_allclose(model[0, :4, 0], [0.367, 0.519, 0.766, 0.929], atol=2e-3)
    assert model[0, 4, 0] > 1.0  # above ACEScct 1.0 (scene ~222): kept, not clipped
    assert model[0, 5, 0] == pytest.approx(0.0, abs=1e-7)
    back = pipeline.from_model(model)
    assert rel_error(back[0, :5], scene[0, :5]) < 1e-4
    assert back[0, 3, 0] == pytest.approx(100.0, rel=1e-5)
    assert back[0, 5, 0] == pytest.approx(0.0, abs=1e-7)


def test_half_max_is_the_ceiling(pipelines):
    pipeline = pipelines("ACEScg")
    model = pipeline.to_model(np.array([[[kernels.HALF_MAX] * 3]], np.float32))
    assert model[0, 0, 0] == pytest.approx((kernels.CCT_MAX - kernels.CCT_LIN_OFFSET) * kernels.NORM_SCALE, rel=1e-6)
    assert pipeline.from_model(model + 0.5)[0, 0, 0] == pytest.approx(kernels.HALF_MAX)  # above: held at half max


def test_non_linear_plate_uses_ocio_fallback(pipelines, studio):
    cct = pipelines("ACEScct")
    assert cct.matrix is None and cct.matrix_inv is None
    scene = scene_samples()
    plate = cct.convert(scene, "ACEScg", "ACEScct")  # the same colours written in ACEScct
    model = cct.to_model(plate)
    assert rel_error(cct.from_model(model), plate) < 1e-4
    # The fallback gives the same numbers as the fast path for the same scene colours.
    assert np.abs(model - pipelines("ACEScg").to_model(scene)).max() < 1e-5
    assert np.abs(model - ocio_model(studio.config, "ACEScct", plate)).max() < 1e-6


# --- the model encoding: torch -----------------------------------------------------------

@pytest.mark.parametrize("space", LINEAR_SPACES)
def test_round_trip_torch(pipelines, space):
    pipeline = pipelines(space)
    plate = scene_samples()
    t = to_tensor(plate)
    model_t = pipeline.to_model_torch(t)
    assert model_t.shape == t.shape and model_t.dtype == torch.float32
    # Same numbers as the CPU kernel.
    assert np.abs(from_tensor(model_t) - pipeline.to_model(plate)).max() < 1e-6
    back = from_tensor(pipeline.from_model_torch(model_t))
    assert rel_error(back, plate) < 1e-4
    # Batches (N, 3, H, W) too.
    batch = torch.stack([t, t * 0.5])
    back_batch = pipeline.from_model_torch(pipeline.to_model_torch(batch))
    assert back_batch.shape == batch.shape
    assert rel_error(back_batch.numpy(), batch.numpy()) < 1e-4


def test_torch_sanitises_like_cpu(pipelines):
    pipeline = pipelines("Linear Rec.709 (sRGB)")
    plate = np.array([[[np.nan, np.inf, -np.inf], [0.5, np.nan, 2.0]]], np.float32)
    cpu = pipeline.to_model(plate)
    gpu = from_tensor(pipeline.to_model_torch(to_tensor(plate)))
    assert np.isfinite(gpu).all()
    assert np.abs(gpu - cpu).max() < 1e-5


def test_non_linear_plate_torch_inside_domain(pipelines):
    cct = pipelines("ACEScct")
    scene = scene_samples()
    scene = scene[:, scene[0].max(axis=1) < 200.0]  # ACEScct below 1.0: the baked LUT's domain
    plate = cct.convert(scene, "ACEScg", "ACEScct")
    assert plate.max() < 1.0
    model_t = cct.to_model_torch(to_tensor(plate))
    assert np.abs(from_tensor(model_t) - cct.to_model(plate)).max() < 1e-5
    back = from_tensor(cct.from_model_torch(model_t))
    assert rel_error(back, plate) < 1e-4


def test_non_linear_plate_torch_keeps_highlights(pipelines):
    cct = pipelines("ACEScct")
    plate = cct.convert(np.array([[[500.0, 1000.0, 2000.0]]], np.float32), "ACEScg", "ACEScct")
    cpu = cct.to_model(plate)
    gpu = from_tensor(cct.to_model_torch(to_tensor(plate)))
    assert np.abs(gpu - cpu).max() < 1e-4


# --- NaN / Inf ----------------------------------------------------------------------------

def test_sanitize_rule():
    px = np.array([[[np.nan, np.inf, -np.inf], [1.5, -2.0, np.nan]]], np.float32)
    found = sanitize(px, "test")
    assert (found.nan, found.posinf, found.neginf) == (2, 1, 1)
    assert found.total == 4 and str(found) == "2 NaN, 1 +Inf, 1 -Inf"
    np.testing.assert_array_equal(px, [[[0.0, 65504.0, 0.0], [1.5, -2.0, 0.0]]])
    assert sanitize(px).total == 0
    assert count_nonfinite(px) == NonFinite()


def test_nan_inf_plate_reported_and_sanitised(shared_file, pipelines, caplog, monkeypatch):
    image = read_image(shared_file(RINGS))
    found = count_nonfinite(image.pixels)
    assert found.nan > 0 and found.posinf > 0 and found.neginf > 0
    monkeypatch.setattr(logging.getLogger("vfxswap"), "propagate", True)
    caplog.set_level(logging.WARNING, logger="vfxswap")

    pipeline = pipelines("Linear Rec.709 (sRGB)")
    model = pipeline.to_model(image.pixels, where="BrightRingsNanInf.exr")
    assert np.isfinite(model).all()
    assert np.isfinite(image.pixels).sum() < image.pixels.size  # the plate itself is untouched
    warnings = [r for r in caplog.records if r.name == "vfxswap" and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "BrightRingsNanInf.exr" in message and str(found) in message
    # NaN and -Inf pixels became black in the model, +Inf the brightest a half holds.
    y, x = np.argwhere(np.isnan(image.pixels).all(axis=2))[0]
    np.testing.assert_allclose(model[y, x], 0.0, atol=1e-6)
    y, x = np.argwhere(np.isposinf(image.pixels).all(axis=2))[0]
    assert model[y, x].min() > 1.2  # 65504 in every channel: far above ACEScct 1.0

    caplog.clear()
    pixels = image.pixels.copy()
    again = sanitize(pixels, "rings")
    assert again == found
    assert np.isfinite(pixels).all()
    assert any("rings" in r.getMessage() for r in caplog.records)

    # The OCIO fallback path sanitises and reports too.
    caplog.clear()
    fallback = pipelines("ACEScct").to_model(image.pixels, where="fallback")
    assert np.isfinite(fallback).all()
    assert any("fallback" in r.getMessage() for r in caplog.records)


def test_clean_plate_logs_nothing(pipelines, caplog, monkeypatch):
    monkeypatch.setattr(logging.getLogger("vfxswap"), "propagate", True)
    caplog.set_level(logging.WARNING, logger="vfxswap")
    pipelines("ACEScg").to_model(scene_samples(), where="clean")
    assert not [r for r in caplog.records if r.name == "vfxswap"]


# --- headers -> plate space ---------------------------------------------------------------

def test_marcie_plate_space_from_chromaticities(shared_file, studio):
    path = shared_file(MARCIE)
    image = read_image(path)
    assert ColorPipeline.for_image(image, config=studio).plate_space == "Linear Rec.709 (sRGB)"
    assert ColorPipeline.for_image(read_info(path), config=studio).plate_space == "Linear Rec.709 (sRGB)"
    assert ColorPipeline.for_image(image, config=studio, plate_space="ACEScg").plate_space == "ACEScg"


def test_aces_plate_space_from_chromaticities(shared_file, studio):
    info = read_info(shared_file("exr/openexr_images/ScanLines/Carrots.exr"))
    assert ColorPipeline.for_image(info, config=studio).plate_space == "ACES2065-1"


def test_guess_plate_space_rules(studio):
    rec709 = ("float[8]", (0.64, 0.33, 0.30, 0.60, 0.15, 0.06, 0.3127, 0.3290))
    assert guess_plate_space({"oiio:ColorSpace": ("string", "lin_ap1_scene")}, "half", studio) == "ACEScg"
    assert guess_plate_space({"oiio:ColorSpace": ("string", "ACES2065-1"), "chromaticities": rec709},
                             "half", studio) == "ACES2065-1"  # a named space beats primaries
    with pytest.raises(VfxSwapError, match="not a space"):  # a name it cannot read says more than primaries
        guess_plate_space({"oiio:ColorSpace": ("string", "not a space"), "chromaticities": rec709}, "float", studio)
    assert guess_plate_space({"chromaticities": rec709}, "float", studio) == "Linear Rec.709 (sRGB)"
    assert guess_plate_space({"chromaticities": rec709}, "uint8", studio) == "ACEScg"  # not linear light
    assert guess_plate_space({}, "half", studio) == "ACEScg"  # the config's scene_linear role


# --- display images -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def marcie(request):
    shared_file = request.getfixturevalue("shared_file")
    return read_image(shared_file(MARCIE))


def test_marcie_display(marcie, studio):
    pipeline = ColorPipeline.for_image(marcie, config=studio)
    display = pipeline.to_display(marcie.pixels)
    assert display.dtype == np.uint8 and display.shape == (389, 512, 3)
    # Measured 52.9 with the ACES 2.0 SDR view; a broken transfer or gamut would move it far.
    assert 42 < display.mean() < 64
    r, g, b = display[225:245, 262:285].reshape(-1, 3).mean(axis=0)  # her cheek
    assert r > g > b
    assert r - b > 10 and 70 < r < 140

    exact = pipeline.to_display(marcie.pixels, exact=True)
    assert exact.dtype == np.uint8 and exact.shape == display.shape
    assert np.abs(display.astype(int) - exact.astype(int)).mean() < 1.0

    small = pipeline.to_display(marcie.pixels, max_side=256)
    assert small.shape == (194, 256, 3)
    assert abs(small.mean() - display.mean()) < 2.0
    small_exact = pipeline.to_display(marcie.pixels, max_side=256, exact=True)
    assert np.abs(small.astype(int) - small_exact.astype(int)).mean() < 1.0


def test_display_sanitises(pipelines, caplog, monkeypatch):
    monkeypatch.setattr(logging.getLogger("vfxswap"), "propagate", True)
    caplog.set_level(logging.WARNING, logger="vfxswap")
    plate = np.full((4, 4, 3), 0.18, np.float32)
    plate[0, 0] = np.nan
    plate[1, 1] = np.inf
    pipeline = pipelines("ACEScg")
    out = pipeline.to_display(plate, where="display-test")
    assert out.dtype == np.uint8
    assert (out[0, 0] == out[0, 0].min()).all() and out[0, 0].max() < 10  # NaN -> black
    assert out[1, 1].min() > 200  # +Inf -> brightest
    assert any("display-test" in r.getMessage() for r in caplog.records)


def test_display_fallback_matches_exact(pipelines):
    cct = pipelines("ACEScct")
    plate = cct.convert(scene_samples() * 0.25, "ACEScg", "ACEScct")
    lut = cct.to_display(plate)
    exact = cct.to_display(plate, exact=True)
    assert np.abs(lut.astype(int) - exact.astype(int)).mean() < 1.0


@pytest.mark.parametrize("size, max_side, expected", [
    ((512, 389), 256, (256, 194)),
    ((389, 512), 256, (194, 256)),
    ((512, 389), None, (512, 389)),
    ((512, 389), 1024, (512, 389)),
    ((4000, 10), 100, (100, 1)),
])
def test_working_size(size, max_side, expected):
    assert working_size(*size, max_side) == expected


# --- names and errors ---------------------------------------------------------------------

def test_unknown_names_are_errors(studio, pipelines):
    with pytest.raises(VfxSwapError, match="unknown colour space 'No Such Space'"):
        ColorPipeline("No Such Space", config=studio)
    with pytest.raises(VfxSwapError, match="unknown display 'No Such Display'"):
        ColorPipeline("ACEScg", config=studio, display="No Such Display")
    with pytest.raises(VfxSwapError, match="unknown view 'No Such View'"):
        ColorPipeline("ACEScg", config=studio, view="No Such View")
    with pytest.raises(VfxSwapError, match="unknown colour space"):
        pipelines("ACEScg").convert(np.zeros((1, 1, 3), np.float32), "ACEScg", "No Such Space")


def test_names_roles_and_describe(studio):
    pipeline = ColorPipeline(config=studio)
    assert pipeline.plate_space == "ACEScg"  # scene_linear role
    assert ColorPipeline("lin_rec709_scene", config=studio).plate_space == "Linear Rec.709 (sRGB)"  # alias
    assert pipeline.display == studio.config.getDefaultDisplay()
    assert pipeline.view == studio.config.getDefaultView(pipeline.display)
    info = pipeline.describe()
    assert info["model_encoding"] == ENCODING_NAME
    assert info["plate_space"] == "ACEScg"
    assert "studio-config-v" in info["ocio_config_uri"] and "latest" not in info["ocio_config_uri"]
    assert info["ocio_config"] == studio.name


# --- OCIO plumbing ------------------------------------------------------------------------

@pytest.mark.parametrize("channels", [3, 4])
def test_apply_threaded_matches_single_apply(pipelines, rng, channels):
    pipeline = pipelines("ACEScg")
    cpu = pipeline.processor("ACEScg", "sRGB Encoded Rec.709 (sRGB)")
    pixels = rng.uniform(-0.1, 4.0, (37, 53, channels)).astype(np.float32)
    if channels == 4:
        pixels[..., 3] = rng.uniform(0.0, 1.0, (37, 53))  # a real alpha
    expect = pixels.copy()
    (cpu.applyRGBA if channels == 4 else cpu.applyRGB)(expect)
    got = pixels.copy()
    assert apply_threaded(cpu, got) is got
    np.testing.assert_array_equal(got, expect)
    assert not np.array_equal(got, pixels)
    if channels == 4:
        np.testing.assert_array_equal(got[..., 3], pixels[..., 3])
    # The view transform too (a heavier, non-linear processor), on a single row.
    view = pipeline.view_processor("ACEScg")
    row = np.ascontiguousarray(pixels[:1, :, :3])
    expect = row.copy()
    view.applyRGB(expect)
    np.testing.assert_array_equal(apply_threaded(view, row.copy()), expect)


def test_apply_threaded_rejects_bad_arrays(pipelines):
    cpu = pipelines("ACEScg").processor("ACEScg", "ACES2065-1")
    with pytest.raises(ValueError):
        apply_threaded(cpu, np.zeros((4, 4, 3), np.float64))
    with pytest.raises(ValueError):
        apply_threaded(cpu, np.zeros((4, 8, 3), np.float32)[:, ::2])
    with pytest.raises(ValueError):
        apply_threaded(cpu, np.zeros((4, 4, 2), np.float32))


def test_convert_keeps_alpha_and_extra_channels(pipelines, rng):
    pipeline = pipelines("ACEScg")
    pixels = rng.uniform(0, 2, (6, 7, 6)).astype(np.float32)
    out = pipeline.convert(pixels, "ACEScg", "ACES2065-1")
    assert out is not pixels and out.shape == pixels.shape
    np.testing.assert_array_equal(out[..., 3:], pixels[..., 3:])
    back = pipeline.convert(out, "ACES2065-1", "ACEScg")
    np.testing.assert_allclose(back, pixels, rtol=1e-5, atol=1e-6)
    rgba = pixels[..., :4].copy()
    out4 = pipeline.convert(rgba, "ACEScg", "ACES2065-1")
    np.testing.assert_array_equal(out4[..., 3], rgba[..., 3])
    np.testing.assert_allclose(out4[..., :3], out[..., :3], rtol=1e-6)


# --- writing into caller buffers ----------------------------------------------------------

@pytest.mark.parametrize("space", ["ACEScg", "ACEScct"])
def test_out_buffers(pipelines, rng, space):
    pipeline = pipelines(space)
    plate = np.ascontiguousarray(rng.uniform(0.0, 0.9, (6, 7, 4)), dtype=np.float32)
    plate[..., 3] = rng.uniform(0.0, 1.0, (6, 7))
    alpha = plate[..., 3].copy()
    model = pipeline.to_model(plate)

    buffer = np.full((6, 7, 3), -7.0, np.float32)
    assert pipeline.to_model(plate, out=buffer) is buffer
    np.testing.assert_array_equal(buffer, model)

    # Decode straight into the RGB of the plate's own RGBA buffer: alpha stays where it is.
    expect = pipeline.from_model(model)
    target = plate.copy()
    rgb_view = target[..., :3]
    result = pipeline.from_model(model, out=rgb_view)
    assert np.shares_memory(result, target)
    np.testing.assert_array_equal(target[..., :3], expect)
    np.testing.assert_array_equal(target[..., 3], alpha)

    # In place: out aliasing the input.
    inplace = model.copy()
    pipeline.from_model(inplace, out=inplace)
    np.testing.assert_array_equal(inplace, expect)


def test_out_buffer_checked(pipelines):
    pipeline = pipelines("ACEScg")
    plate = np.zeros((4, 5, 3), np.float32)
    with pytest.raises(ValueError):
        pipeline.to_model(plate, out=np.zeros((5, 4, 3), np.float32))
    with pytest.raises(ValueError):
        pipeline.from_model(plate, out=np.zeros((4, 5, 3), np.float64))


def test_reduced_display_contains_a_nan(pipelines):
    """A NaN in the plate spoils at most the one reduced pixel it falls in."""
    pipeline = pipelines("ACEScg")
    y, x = np.mgrid[0:64, 0:64].astype(np.float32)
    plate = np.stack([0.05 + x / 64, 0.05 + y / 64, np.full_like(x, 0.18)], -1)
    clean = pipeline.to_display(plate, max_side=16)
    dirty = plate.copy()
    dirty[21, 42] = np.nan
    shown = pipeline.to_display(dirty, max_side=16)
    assert shown.shape == clean.shape == (16, 16, 3)
    differs = np.argwhere((shown != clean).any(axis=2))
    assert [tuple(p) for p in differs] == [(21 // 4, 42 // 4)]


# --- what headers say, and what plates convert writes -------------------------------------------

def _plate(path, rgba, **attributes):
    from vfxswap.plates import Image, write_image

    image = Image.from_array(np.asarray(rgba, np.float32), ("R", "G", "B", "A")[:np.shape(rgba)[-1]])
    for name, value in attributes.items():
        image.set_attribute(name.replace("_", ":", 1) if name.startswith("oiio_") else name, value)
    write_image(path, image, dtype="float")
    return path


def test_a_header_space_the_config_does_not_know_is_an_error_naming_the_file(studio, tmp_path):
    """A LogC plate read under a config without LogC was taken for ACEScg, and converted and
    rendered as such with exit 0: every pixel wrong, silently."""
    from vfxswap.plates.info import plate_info

    plate = _plate(tmp_path / "logc.1001.exr", np.full((4, 4, 3), 0.4), oiio_ColorSpace="ARRI LogC9 (EI9000)")
    with pytest.raises(VfxSwapError, match=r"logc\.1001\.exr: the header names colour space 'ARRI LogC9"):
        ColorPipeline.for_image(read_image(plate), config=studio)
    assert ColorPipeline.for_image(read_image(plate), plate_space="ACEScct", config=studio).plate_space == "ACEScct"
    info = plate_info(str(plate), stats=False, ocio=BUILTIN_CONFIG)
    assert info.colorspace == "unknown" and "--plate-space" in info.errors[1001]


def test_plates_convert_through_a_view_is_ocio_in_float_unpremultiplied_and_says_so(studio, tmp_path):
    """Through the view, a sequence gets OCIO's own float result (it was the 8-bit preview LUT,
    up to 8/255 off), on the colour without its coverage (premultiplied colour through a
    non-linear view came out 26% bright at alpha 0.5), with a header naming the display space
    (it kept the plate's scene-linear interop ID)."""
    from vfxswap.plates.convert import convert

    rng = np.random.default_rng(5)
    colour = rng.uniform(0.0, 4.0, (6, 6, 3)).astype(np.float32)
    alpha = np.linspace(0.1, 1.0, 36, dtype=np.float32).reshape(6, 6, 1)
    _plate(tmp_path / "in.1001.exr", np.concatenate([colour * alpha, alpha], 2), oiio_ColorSpace="ACEScg")
    convert(str(tmp_path / "in.####.exr"), str(tmp_path / "out.####.exr"), view="ACES 2.0 - SDR 100 nits (Rec.709)",
            display="sRGB - Display", dtype="float", ocio=BUILTIN_CONFIG)
    out = read_image(tmp_path / "out.1001.exr")
    cpu = studio.config.getProcessor("ACEScg", "sRGB - Display", "ACES 2.0 - SDR 100 nits (Rec.709)",
                                     OCIO.TRANSFORM_DIR_FORWARD).getDefaultCPUProcessor()
    expected = np.ascontiguousarray(colour.copy())
    cpu.applyRGB(expected)
    np.testing.assert_allclose(out.pixels[..., :3], expected * alpha, atol=1e-5)
    np.testing.assert_array_equal(out.pixels[..., 3:], alpha)
    assert out.colorspace in ("sRGB - Display", "srgb_rec709_display")
    assert out.attribute("colorInteropID") in (None, "srgb_rec709_display")


def test_converted_chromaticities_follow_the_space(studio, tmp_path):
    """A Rec.709 plate converted to ACEScg kept its Rec.709 chromaticities beside an ACEScg name."""
    from vfxswap.color import chromaticities_of
    from vfxswap.plates.convert import convert

    rec709 = chromaticities_of("Linear Rec.709 (sRGB)", studio)
    _plate(tmp_path / "in.1001.exr", np.full((4, 4, 3), 0.3), oiio_ColorSpace="Linear Rec.709 (sRGB)",
           chromaticities=rec709)
    convert(str(tmp_path / "in.####.exr"), str(tmp_path / "cg.####.exr"), to_space="ACEScg", ocio=BUILTIN_CONFIG)
    np.testing.assert_allclose(read_image(tmp_path / "cg.1001.exr").attribute("chromaticities"),
                               chromaticities_of("ACEScg", studio), atol=1e-6)
    convert(str(tmp_path / "in.####.exr"), str(tmp_path / "cct.####.exr"), to_space="ACEScct", ocio=BUILTIN_CONFIG)
    assert read_image(tmp_path / "cct.1001.exr").attribute("chromaticities") is None  # not a linear space: none
