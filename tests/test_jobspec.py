"""Job options (vfxswap.jobspec) and the stages' registries: one declaration, every front end."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from vfxswap.errors import VfxSwapError
from vfxswap.faces import DETECTORS, FACE_TYPES, LANDMARKERS
from vfxswap.farm import FORMATS
from vfxswap.jobspec import (MODEL_FIELDS, ExtractOptions, RenderOptions, TrainOptions, flags, from_argv, normalise,
                             spec, to_argv)
from vfxswap.masks import MASKERS
from vfxswap.models import ARCHITECTURES
from vfxswap.models.config import ModelConfig
from vfxswap.render import COLOR_MATCHES

REGISTRIES = (DETECTORS, LANDMARKERS, MASKERS, COLOR_MATCHES, ARCHITECTURES, FORMATS)


@pytest.mark.parametrize("registry", REGISTRIES, ids=lambda r: r.kind)
def test_every_registry_entry_loads_and_an_unknown_name_is_one_line(registry):
    for name in registry:
        assert callable(registry.get(name)), f"{registry.kind} {name}"
    with pytest.raises(VfxSwapError, match=r"^unknown .* 'nope' \(choose from "):
        registry.get("nope")
    with pytest.raises(VfxSwapError, match=r"^--x nope: unknown "):
        registry.check("nope", "--x")


def test_choices_are_the_registries_and_every_model_field_is_a_train_option():
    render, extract, train = spec(RenderOptions), spec(ExtractOptions), spec(TrainOptions)
    assert render["mask"].choices == MASKERS.names() and render["color"].choices == COLOR_MATCHES.names()
    assert extract["detector"].choices == ("auto", *DETECTORS) and extract["landmarker"].choices == ("auto", *LANDMARKERS)
    assert train["arch"].choices == ARCHITECTURES.names()
    assert render["face_type"].choices == extract["face_type"].choices == tuple(FACE_TYPES)
    assert set(MODEL_FIELDS) == {f.name for f in dataclasses.fields(ModelConfig)} <= set(train)
    assert all(s.help for cls in (ExtractOptions, TrainOptions, RenderOptions) for s in spec(cls).values() if s.cli)


def _sample(s):
    """A value of the option's type that is not its default."""
    if s.choices:
        return next(c for c in s.choices if c != s.default)
    if s.kind is bool:
        return not s.default
    if s.kind is list:
        return ["a b", "-c"] if not s.sep else ["encoder", "inter"]
    if s.kind is int:
        return -3 if s.name == "track" else 7
    if s.kind is float:
        return -2.5
    return "-3--2" if s.name == "frames" else "a 'quoted' value"


@pytest.mark.parametrize("cls", [ExtractOptions, TrainOptions, RenderOptions])
def test_every_option_survives_a_command_line_and_back(cls):
    """What the farm and hosts write is what the engine reads: every field, one word each, values
    that start with '-' (pre-roll frames, negative erode) included."""
    values = {name: _sample(s) for name, s in spec(cls).items() if s.cli}
    obj = cls(**values)
    argv = to_argv(obj)
    assert all(word.startswith("--") for word in argv)
    back = from_argv(cls, argv)
    assert {k: getattr(back, k) for k in values} == values


def test_options_dicts_from_hosts_are_checked_and_typed():
    assert normalise(RenderOptions, {"skip-existing": "yes", "erode": "2", "--track": 0, "like": ["x"]}) == {
        "skip_existing": True, "erode": 2.0, "track": 0, "like": ["x"]}
    assert normalise(TrainOptions, {"no-flip-dst": True, "flip-src": "yes", "parts": ["encoder"]}) == {
        "flip_dst": False, "flip_src": True, "init_parts": ["encoder"]}
    assert flags(RenderOptions, {"comp": False, "plate_space": None, "track": 0}) == ["--track=0"]
    for bad, message in (({"maks": "hull"}, "unknown render option 'maks'"), ({"erode": "two"}, "--erode 'two': not a number"),
                         ({"mask": "blob"}, "--mask blob: choose from product, learned, hull"),
                         ({"quiet": True}, "unknown train option 'quiet'")):
        with pytest.raises(VfxSwapError, match=message):
            normalise(RenderOptions if "quiet" not in bad else TrainOptions, bad)


def test_warp_and_no_warp_both_exist_and_the_last_word_counts():
    """--no-warp turns the random warp off and --warp back on (a resume after a --no-warp session);
    either survives flags() and to_argv(), and a negated bool set explicitly is said explicitly."""
    required = ["--src=a", "--dst=b", "--model=m"]
    assert from_argv(TrainOptions, required).warp is True
    assert from_argv(TrainOptions, [*required, "--no-warp"]).warp is False
    assert from_argv(TrainOptions, [*required, "--no-warp", "--warp"]).warp is True
    assert from_argv(TrainOptions, [*required, "--warp", "--no-warp"]).warp is False
    assert flags(TrainOptions, {"warp": True}) == ["--warp"] and flags(TrainOptions, {"no-warp": True}) == ["--no-warp"]
    assert flags(TrainOptions, {"warp": "off", "flip-dst": True}) == ["--no-warp", "--flip-dst"]
    for warp in (True, False):
        options = TrainOptions(src="a", dst="b", model_dir="m", warp=warp, sharpen=0.25, ct_mode="rct")
        assert from_argv(TrainOptions, to_argv(options, always=("warp",))) == options
        every = {k: v for k, v in dataclasses.asdict(options).items() if k != "quiet"}  # quiet: no option
        assert from_argv(TrainOptions, flags(TrainOptions, every)) == options
    with pytest.raises(VfxSwapError, match=r"options: .*\bwarp, no-warp\b"):
        normalise(TrainOptions, {"wrap": True})


def test_ct_mode_takes_the_render_colour_matches():
    assert spec(TrainOptions)["ct_mode"].choices == COLOR_MATCHES.names() and spec(TrainOptions)["ct_mode"].default == "none"
    assert from_argv(TrainOptions, ["--src=a", "--dst=b", "--model=m", "--ct-mode=mkl"]).ct_mode == "mkl"
    with pytest.raises(VfxSwapError, match="--ct-mode lab: choose from rct, lct, mkl, idt, sot, none"):
        TrainOptions(src="a", dst="b", model_dir="m", ct_mode="lab").check()


def test_model_options_are_validated_as_the_model_validates_them():
    options = TrainOptions(src="a", dst="b", model_dir="m", preset="sae-256", ae_dims=64, variants="")
    assert options.asked_config() == dataclasses.replace(ModelConfig("df", 256, 64, 64, 64, 22, ""))
    assert TrainOptions(src="a", dst="b", model_dir="m").asked_config() is None  # a resumed model keeps its own
    with pytest.raises(VfxSwapError, match="resolution: 100 must be a multiple of 32"):
        TrainOptions(src="a", dst="b", model_dir="m", resolution=100).check()


def test_importing_the_options_loads_no_heavy_library():
    """The CLI lists commands and a host builds a job without torch, Qt, OCIO, OpenCV or numpy."""
    code = ("import sys, vfxswap.jobspec, vfxswap.hosts.jobs; "
            "print(sorted(m for m in ('torch', 'PySide6', 'PyOpenColorIO', 'cv2', 'numpy', 'OpenImageIO') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
