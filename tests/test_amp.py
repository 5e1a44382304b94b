"""The amp architecture (vfxswap.models.amp): its parts and shapes, the morph's codes (0 = B's own
reconstruction, 1 = inter_A's code, DeepFaceLab's channel split between), training's random mix,
the model folder round trip, train --morph (recorded, kept on resume, exact on resume, refused for
other architectures) and render --morph (the layers, the header, the refusal). Small sizes, CPU."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from conftest import hooked_flops, write_faceset
from vfxswap.errors import VfxSwapError
from vfxswap.jobspec import RenderOptions, TrainOptions
from vfxswap.models import ARCHITECTURES, MORPHING_ARCHITECTURES, TRAIN_MORPH, build_model, store
from vfxswap.models.amp import AMP, morph_weights
from vfxswap.models.config import PRESETS, ModelConfig
from vfxswap.models.nets import count_params, flops_per_sample

TINY = ModelConfig("amp", 32, ae_dims=16, e_dims=4, d_dims=4, d_mask_dims=4)
REFS = {"release_ref_src": "REL-A (test)", "release_ref_dst": "REL-B (test)"}
SMALL = dict(arch="amp", resolution=32, ae_dims=32, e_dims=8, d_dims=8, d_mask_dims=8, variants="ud")


def images(n: int, res: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, res, res, generator=torch.Generator().manual_seed(seed))


def tiny(**kw) -> ModelConfig:
    return dataclasses.replace(TINY, **kw)


# --- the network ---------------------------------------------------------------------------------


def test_amp_is_registered_and_builds_its_parts():
    assert ARCHITECTURES.get("amp") is AMP and "amp" in MORPHING_ARCHITECTURES
    model = build_model(tiny(), seed=0)
    names = ["encoder", "bottleneck", "inter_A", "inter_B", "decoder"]
    assert model.part_names() == names and model.shared_part_names() == ["encoder", "bottleneck", "decoder"]
    assert sum(count_params(p) for p in model.parts.values()) == count_params(model)
    assert {k.split(".")[0] for k in model.state_dict()} == set(names)
    for k, v in build_model(tiny(), seed=0).state_dict().items():  # a seed fixes the weights
        assert torch.equal(v, model.state_dict()[k])


@pytest.mark.parametrize("variants", ["", "u", "ud", "udt"])
def test_forward_and_swap_shapes_and_range(variants):
    res = 64 if "t" in variants else 32
    model = build_model(tiny(variants=variants, resolution=res), seed=1)
    x = images(3, res)
    outputs = [model(x, "A"), model(x, "B")]
    model.eval()
    with torch.no_grad():
        outputs += [model(x, "A"), model.swap(x), model.swap(x, "A", morph=0.4), model.swap(x, "B")]
    for rgb, mask in outputs:
        assert rgb.shape == (3, 3, res, res) and mask.shape == (3, 1, res, res)
        assert rgb.dtype == mask.dtype == torch.float32
        assert torch.isfinite(rgb).all() and rgb.min() >= 0 and rgb.max() <= 1 and mask.min() >= 0 and mask.max() <= 1


@pytest.mark.parametrize("variants", ["", "ud", "t"])
def test_flops_count_the_b_pass_exactly(variants):
    """flops_per_sample counts a "B" pass: the bottleneck and inter_B make one nets Inter."""
    config = tiny(variants=variants, resolution=64)
    model = build_model(config, seed=0)
    assert flops_per_sample(config) == hooked_flops(model, images(1, 64), "B")


def test_the_amp_preset_is_smaller_than_df_with_the_same_dims():
    preset = PRESETS["amp-224"]
    assert preset.arch == "amp" and preset.resolution == 224
    with torch.device("meta"):
        amp, df = build_model(preset), build_model(dataclasses.replace(preset, arch="df"))
    assert 55e6 < count_params(amp) < count_params(df)  # one decoder, a shared bottleneck
    assert flops_per_sample(preset) == flops_per_sample(dataclasses.replace(preset, arch="df"))


def test_morph_0_is_b_s_own_reconstruction_and_1_is_inter_a_s_code():
    model = build_model(tiny(variants="u"), seed=2).eval()
    x = images(2, 32, seed=1)
    with torch.no_grad():
        f = model.bottleneck(model.encode(x))
        b_rgb, b_mask = model(x, "B")
        rgb0, mask0 = model.swap(x, "A", morph=0.0)
        assert torch.equal(rgb0, b_rgb) and torch.equal(mask0, b_mask)  # the render at 0 is B->B, exactly
        rgb1, mask1 = model.swap(x)  # the default: the full swap
        ref = model.decoder(model.inter_A(f))
        assert torch.equal(rgb1, ref[0]) and torch.equal(mask1, ref[1])
        assert (rgb1 - rgb0).abs().mean() > 1e-3
        # between them: DeepFaceLab's split, the first t * C channels from inter_A (C = 16: t = 0.25 is 4 channels)
        a, b = model.inter_A(f), model.inter_B(f)
        split = torch.cat([a[:, :4], b[:, 4:]], 1)
        assert torch.allclose(model.swap(x, "A", morph=0.25)[0], model.decoder(split)[0], atol=1e-6)
        # ... and the channel at the boundary blended: the dial is continuous
        assert torch.allclose(model.morphed_code(f, 0.25 + 0.5 / 16), torch.cat([a[:, :4], (a[:, 4:5] + b[:, 4:5]) / 2,
                                                                                   b[:, 5:]], 1), atol=1e-6)
        for t in (4 / 16, 0.3, 11 / 16):  # no jump where a whole channel changes hands (DeepFaceLab's int() has one)
            near = [model.swap(x, "A", morph=t + d)[0] for d in (-1e-4, 1e-4)]
            assert float((near[0] - near[1]).abs().max()) < 1e-2  # a whole channel moves it by ~0.5
        # inter_A moves every morph but 0
        for p in model.inter_A.parameters():
            p.add_(0.05)
        assert torch.equal(model.swap(x, "A", morph=0.0)[0], rgb0)
        assert not torch.allclose(model.swap(x, "A", morph=0.5)[0], model.swap(x, "A", morph=0.0)[0])
    assert torch.equal(morph_weights(0.5, 4).flatten(), torch.tensor([1.0, 1.0, 0.0, 0.0]))
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(VfxSwapError, match="morph"):
            model.swap(x, "A", morph=bad)


def test_training_mixes_a_s_code_channel_by_channel_at_the_train_morph():
    """In training, each channel of A's code comes from inter_A with probability p (per sample and
    channel), else from inter_B reading the same A face; out of training, A's code is the swap's
    mix at p (the expected code, without the draw)."""
    model = build_model(tiny(ae_dims=64), seed=3)
    model.train_morph = 0.25
    captured = []
    model.decoder.register_forward_pre_hook(lambda m, args: captured.append(args[0].detach()))
    x = images(8, 32, seed=2)
    torch.manual_seed(0)
    model(x, "A")
    with torch.no_grad():
        f = model.bottleneck(model.encode(x))
        a, b = model.inter_A(f), model.inter_B(f)
    code = captured[-1]
    from_a = (code == a).all(-1).all(-1)
    from_b = (code == b).all(-1).all(-1)
    assert bool((from_a | from_b).all())  # every channel is one inter's, whole
    share = float(from_a.float().mean())
    assert 0.15 < share < 0.35, share  # 512 channel draws at p = 0.25
    assert from_a.float().mean(1).std() > 0  # drawn per sample
    model.eval()
    with torch.no_grad():
        rgb, _ = model(x, "A")
        assert torch.equal(rgb, model.decoder(model.morphed_code(f, 0.25))[0])
        assert torch.equal(model(x, "B")[0], model.decoder(b)[0])  # B's code is inter_B's, in and out of training


def test_gradients_reach_both_inters_from_a_and_only_inter_b_from_b():
    model = build_model(tiny(variants="u"), seed=4)
    x = images(4, 32)
    for ident, used in (("A", set(model.part_names())), ("B", set(model.part_names()) - {"inter_A"})):
        model.zero_grad(set_to_none=True)
        rgb, mask = model(x, ident)
        ((rgb - x) ** 2).mean().add(mask.mean()).backward()
        for name, part in model.parts.items():
            grads = [p.grad for p in part.parameters()]
            assert all(g is not None for g in grads) if name in used else all(g is None for g in grads), name


def test_model_folder_round_trip(tmp_path):
    model = build_model(tiny(variants="ud"), seed=5)
    manifest = {"identities": {"A": {"name": "a", "release_ref": "REL-A"}, "B": {"name": "b", "release_ref": "REL-B"}},
                "colour": {"encoding": "acescct-norm", "ocio_config": "test"}, "iteration": 7, "train": {"morph": 0.2}}
    store.save_model(tmp_path / "m", model, manifest)
    on_disk = json.loads((tmp_path / "m" / "manifest.json").read_text())
    assert on_disk["config"]["arch"] == "amp" and on_disk["train"]["morph"] == 0.2
    assert (tmp_path / "m" / on_disk["files"]["weights"]["name"]).suffix == ".safetensors"
    loaded, m = store.load_model(tmp_path / "m", strict=True)
    assert type(loaded) is AMP and m["config"] == model.config.to_dict()
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())
    x = images(2, 32)
    with torch.no_grad():
        for t in (0.0, 0.3, 1.0):
            assert torch.equal(model.eval().swap(x, "A", morph=t)[0], loaded.eval().swap(x, "A", morph=t)[0])


# --- training ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def facesets(tmp_path_factory):
    root = tmp_path_factory.mktemp("amp_sets")
    return write_faceset(root / "A", seed=1), write_faceset(root / "B", seed=2)


def _options(a, b, model, **kw) -> TrainOptions:
    base = dict(src=str(a), dst=str(b), model_dir=str(model), **REFS, iters=3, batch=4, workers=0, **SMALL,
                preview_every=1000, save_every=1000, log_every=1, quiet=True, warmup=1)
    base.update(kw)
    return TrainOptions(**base)


def _history(folder) -> list[tuple]:
    lines = (folder / "history.jsonl").read_text().splitlines()
    return [(e["iter"], e["loss"], e["loss_A"], e["loss_B"]) for e in map(json.loads, lines) if "loss" in e]


def test_train_records_the_morph_and_a_resume_keeps_it(facesets, tmp_path):
    from vfxswap.train.trainer import Trainer, train

    a, b = facesets
    assert train(_options(a, b, tmp_path / "m", morph=0.2)) == 3
    model, manifest = store.load_model(tmp_path / "m")
    assert type(model) is AMP and manifest["config"]["arch"] == "amp" and manifest["train"]["morph"] == 0.2
    assert all(np.isfinite(h[1]) for h in _history(tmp_path / "m"))
    resumed = Trainer(_options(a, b, tmp_path / "m", iters=5, resume=True,
                               **{k: None for k in SMALL}))  # model options left out: the saved model's
    assert resumed.opt.morph == 0.2 and resumed.model.train_morph == 0.2
    for loader in resumed.data.values():
        loader.close()
    # a new amp model without --morph takes DeepFaceLab's typical 0.33
    assert train(_options(a, b, tmp_path / "n", iters=1)) == 1
    assert store.load_model(tmp_path / "n")[1]["train"]["morph"] == TRAIN_MORPH == 0.33


def test_amp_resume_continues_exactly_as_an_unbroken_run(facesets, tmp_path):
    """The random channel draws come from torch's RNG, whose state the save keeps."""
    from vfxswap.train.trainer import train

    a, b = facesets
    kw = dict(iters=6, seed=3, sharpen=0.0, morph=0.4)
    assert train(_options(a, b, tmp_path / "straight", **kw)) == 6
    assert train(_options(a, b, tmp_path / "split", **{**kw, "iters": 3})) == 3
    assert train(_options(a, b, tmp_path / "split", **kw, resume=True)) == 6
    straight, split = store.load_model(tmp_path / "straight")[0], store.load_model(tmp_path / "split")[0]
    assert all(torch.equal(v, split.state_dict()[k]) for k, v in straight.state_dict().items())
    assert _history(tmp_path / "split") == _history(tmp_path / "straight")


def test_morph_is_refused_for_other_architectures_and_outside_its_range(facesets, tmp_path):
    from vfxswap.train.trainer import train

    a, b = facesets
    for kw, message in ((dict(morph=0.3, arch="df"), "only an amp model morphs, and this one would be df"),
                        (dict(morph=0.3, arch=None, resolution=None, ae_dims=None, e_dims=None, d_dims=None,
                              d_mask_dims=None, variants=None), "would be df"),  # the default preset is df
                        (dict(morph=0.05), "from 0.1 to 0.5"), (dict(morph=0.9), "from 0.1 to 0.5"),
                        (dict(morph=float("nan")), "from 0.1 to 0.5")):
        with pytest.raises(VfxSwapError, match=message):
            _options(a, b, tmp_path / "x", **kw).check()
    _options(a, b, tmp_path / "x", morph=0.5).check()
    # a resume is checked when the saved model is loaded
    assert train(_options(a, b, tmp_path / "df", iters=1, arch="df")) == 1
    with pytest.raises(VfxSwapError, match="--morph 0.3: only an amp model morphs, and this one is df"):
        train(_options(a, b, tmp_path / "df", iters=2, resume=True, morph=0.3, **{k: None for k in SMALL}))
    assert not (tmp_path / "x").exists()


# --- render ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shot(tmp_path_factory):
    from conftest import make_astronaut_shot

    return make_astronaut_shot(tmp_path_factory.mktemp("amp_shot"), frames=1)


def _saved(folder, arch="amp"):
    model = build_model(dataclasses.replace(TINY, arch=arch, variants="ud"), seed=6)
    manifest = {"identities": {"A": {"name": "a", "release_ref": "REL-A"},
                               "B": {"name": "b", "release_ref": "REL-B", "faceset_size": 96}},
                "colour": {"encoding": "acescct-norm", "ocio_config": "test"}, "iteration": 1, "train": {}}
    store.save_model(folder, model, manifest)
    return folder


def _render(shot, model, out, **kw):
    from vfxswap.render.render import render

    return render(RenderOptions(model=str(model), plates=str(shot / "plates" / "plate.####.exr"), out=str(out),
                                faceset=str(shot / "faceset"), color="none", mask="hull", **kw))


def test_render_morph_dials_the_layer_and_is_recorded(shot, tmp_path):
    from vfxswap.plates import read_image
    from vfxswap.render.render import ModelPredictor

    model_dir = _saved(tmp_path / "amp")
    layers = {}
    for t in (0.0, 0.5, 1.0):
        report = _render(shot, model_dir, tmp_path / f"out{t}", morph=t)
        assert report.written == [1001] and not report.failed
        layer = read_image(tmp_path / f"out{t}" / "face.1001.exr")
        assert layer.attribute("vfxswap:morph") == pytest.approx(t)
        layers[t] = layer.on_display_window()
    assert np.array_equal(layers[0.0][..., 3], layers[1.0][..., 3])  # the hull matte: the same face, drawn otherwise
    inside = layers[1.0][..., 3] > 0.99
    assert np.abs(layers[0.0] - layers[1.0])[inside][:, :3].mean() > 1e-3
    assert np.abs(layers[0.5] - layers[1.0])[inside][:, :3].mean() > 1e-4
    # the predictor the render uses: at 0 it gives the model's own B->B reconstruction
    faces = np.random.default_rng(0).uniform(0, 1, (2, 32, 32, 3)).astype(np.float32)
    zero, full = ModelPredictor(str(model_dir), device="cpu", morph=0.0), ModelPredictor(str(model_dir), device="cpu")
    with torch.no_grad():
        b_rgb, b_mask = zero.model(torch.from_numpy(faces.transpose(0, 3, 1, 2)), "B")
    rgb, mask = zero(faces)
    assert np.allclose(rgb, b_rgb.numpy().transpose(0, 2, 3, 1), atol=1e-6) and np.allclose(mask, b_mask.numpy()[:, 0])
    assert not np.allclose(full(faces)[0], rgb, atol=1e-3)
    manifests = list((tmp_path / "out0.0" / "manifests").glob("*.json"))
    assert json.loads(manifests[0].read_text())["options"]["morph"] == 0.0


def test_render_morph_is_refused_for_a_model_that_does_not_morph(shot, tmp_path):
    from vfxswap.plates import read_image

    df = _saved(tmp_path / "df", arch="df")
    with pytest.raises(VfxSwapError, match=r"^--morph 0.5: only an amp model morphs, and .* is df; render it with "
                                           r"--morph 1$"):
        _render(shot, df, tmp_path / "out", morph=0.5)
    assert not (tmp_path / "out" / "face.1001.exr").exists()
    assert _render(shot, df, tmp_path / "out", morph=1.0).written == [1001]  # the full swap, recorded as 1
    assert read_image(tmp_path / "out" / "face.1001.exr").attribute("vfxswap:morph") == 1.0
    with pytest.raises(VfxSwapError, match="passthrough"):
        _render(shot, "passthrough", tmp_path / "pt", morph=0.0)
    for bad in (-0.5, 1.5, float("nan")):
        with pytest.raises(VfxSwapError, match="--morph"):
            RenderOptions(model="m", plates="p.####.exr", out="o", morph=bad).check()


def test_the_morph_grid_tool_writes_a_column_per_morph(facesets, tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    import cv2

    from vfxswap.train.preview import HEADER_PX, SEP_PX

    spec = importlib.util.spec_from_file_location("morph_grid", Path(__file__).parents[1] / "tools" / "morph_grid.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    a, b = facesets
    model_dir = _saved(tmp_path / "amp")
    args = ["--faceset", str(b), "--src-faceset", str(a), "--morphs", "0,0.5,1", "--rows", "3"]
    assert tool.main([str(model_dir), str(tmp_path / "grid.png"), *args]) == 0
    grid = cv2.imread(str(tmp_path / "grid.png"))
    assert grid.shape == (HEADER_PX + 3 * 32 + 2 * SEP_PX, 5 * 32 + 4 * SEP_PX, 3)  # B, three morphs, A
    assert tool.main([str(_saved(tmp_path / "df", arch="df")), str(tmp_path / "df.png"), *args]) == 1
    assert "does not morph" in capsys.readouterr().err and not (tmp_path / "df.png").exists()
