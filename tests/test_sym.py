"""sym, the convolutional DF for high resolutions: shapes and parts at a tiny size, no weight that
depends on the resolution, the presets' widths, FLOP accounting, the model store, and a few real
training iterations through the trainer (then resume, --init-from and the render's predictor).

Everything runs on CPU at 32-64 px; the presets themselves are only built on the meta device."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from conftest import write_faceset
from vfxswap.errors import VfxSwapError
from vfxswap.models import build_model, store, transfer
from vfxswap.models.config import PRESETS, ModelConfig
from vfxswap.models.nets import count_params, flops_per_sample
from vfxswap.models.sym import Sym

# the tiny sibling: 64 px, code grid 64 / 2^5 = 2, widths 4, 8, 16, 32 (cap), 32
TINY = ModelConfig("sym", 64, ae_dims=8, e_dims=4, d_dims=4, d_mask_dims=2, variants="ud", max_dims=32)
SYM_PRESETS = ("sym-256", "sym-512", "sym-1024")
REFS = {"release_ref_src": "REL-2026-0042 (test)", "release_ref_dst": "REL-2026-0043 (test)"}


def tiny(**kw) -> ModelConfig:
    return dataclasses.replace(TINY, **kw)


def images(n: int, res: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, res, res, generator=torch.Generator().manual_seed(seed))


def meta(config: ModelConfig) -> Sym:
    with torch.device("meta"):
        return build_model(config)


@pytest.mark.parametrize("variants", ["", "u", "d", "ud", "udt"])
def test_tiny_sym_shapes_parts_and_range(variants):
    config = tiny(variants=variants, resolution=128 if "t" in variants else 64)
    r = config.resolution
    model = build_model(config, seed=0)
    assert type(model) is Sym and model.part_names() == ["encoder", "inter", "decoder_A", "decoder_B"]
    assert model.shared_part_names() == ["encoder", "inter"]
    assert {k.split(".")[0] for k in model.state_dict()} == set(model.part_names())
    x = images(2, r)
    with torch.no_grad():
        feats = model.encode(x)
        g = r >> config.levels
        assert g == 2 and feats.shape == (2, model.encoder.out_features, g, g)  # spatial, not flattened
        assert model.inter.code(feats).shape == (2, config.ae_dims, g, g)
        for ident in ("A", "B"):
            rgb, mask = model(x, ident)
            assert rgb.shape == (2, 3, r, r) and mask.shape == (2, 1, r, r)
            assert rgb.dtype == mask.dtype == torch.float32
            for t in (rgb, mask):
                assert torch.isfinite(t).all() and t.min() >= 0 and t.max() <= 1
        rgb, mask = model.swap(x)
        assert rgb.shape == x.shape and mask.shape == (2, 1, r, r)
        assert torch.equal(rgb, model(x, "A")[0])  # B->A: the shared code through A's decoder


def test_no_dense_layer_and_no_weight_depends_on_the_resolution():
    model = build_model(TINY, seed=0)
    assert not any(isinstance(m, nn.Linear) for m in model.modules())
    for name in SYM_PRESETS:
        config = PRESETS[name]
        assert not any(isinstance(m, nn.Linear) for m in meta(config).modules())
        # the same config at twice the size: one more pixel per pixel, not one more weight
        twice = dataclasses.replace(config, resolution=2 * config.resolution)
        assert count_params(meta(twice)) == count_params(meta(config))
        assert 3.9 < flops_per_sample(twice) / flops_per_sample(config) < 4.1
    p256, p512, p1024 = (count_params(meta(PRESETS[n])) for n in SYM_PRESETS)
    assert p512 < 1.5 * p256 and p1024 < 1.5 * p512  # DF: sae-256 -> sae-512 is 3x, and only with "t"
    with torch.device("meta"):
        df = build_model(dataclasses.replace(PRESETS["sae-256"], resolution=512))
    assert count_params(df) > 2 * count_params(meta(PRESETS["sae-256"]))  # DF's dense inter does grow


def test_the_presets_trade_filters_for_pixels():
    """Widths double per level towards the code up to max_dims; the decoder's last level holds the
    same channels x pixels at every size; the code grid is R/32 (sym-256) or R/64 ("t")."""
    expect = {"sym-256": (8, [64, 128, 256, 512, 512], [512, 512, 256, 128, 64]),
              "sym-512": (8, [32, 64, 128, 256, 512, 512], [512, 512, 256, 128, 64, 32]),
              "sym-1024": (16, [16, 32, 64, 128, 256, 512], [512, 256, 128, 64, 32, 16])}
    for name, (grid, enc, dec) in expect.items():
        config = PRESETS[name]
        model = meta(config)
        assert Sym.code_grid(config) == grid and config.resolution // grid in (32, 64)
        assert [c.out_channels for c in model.encoder.downs] == enc
        assert [model.decoder_A.ups[0].conv.in_channels] + [u.conv.out_channels // 4 for u in model.decoder_A.ups] \
            == dec
        last = config.resolution // 2  # "d": the decoder's last level is at R/2
        assert dec[-1] * last == 8192
        assert max(m.in_channels for m in model.modules() if isinstance(m, nn.Conv2d)) == config.max_dims
        assert Sym.code_grid(config) ** 2 * config.ae_dims == 4096  # the code: 4096 numbers in each preset


def test_max_dims_is_sym_only_and_checked():
    with pytest.raises(VfxSwapError, match="model option max_dims: 64 caps sym's widths; df takes 0"):
        dataclasses.replace(PRESETS["quick"], max_dims=64).validate()
    with pytest.raises(VfxSwapError, match="model option max_dims"):
        tiny(max_dims=-1).validate()
    with pytest.raises(VfxSwapError, match="model option resolution: 48 must be a multiple of 64"):
        tiny(resolution=48).validate()  # sym 32, x2 with "d"
    uncapped = build_model(tiny(max_dims=0), seed=0)
    assert uncapped.encoder.downs[-1].out_channels == 4 * 16 and count_params(uncapped) > count_params(
        build_model(TINY, seed=0))


def test_flops_are_the_convolutions_one_pass_runs():
    for config in (TINY, tiny(variants="", resolution=64), PRESETS["sym-1024"]):
        model = meta(config)
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            model(torch.empty(1, 3, config.resolution, config.resolution, device="meta"), "B")
        assert flops_per_sample(config) == counter.get_total_flops() > 0
    # sym-1024 costs far less a sample than sae-512, at 4x the pixels
    assert flops_per_sample(PRESETS["sym-1024"]) < flops_per_sample(PRESETS["sae-512"]) / 4


def test_identities_use_their_own_decoder_and_gradients_reach_the_path():
    model = build_model(tiny(variants="u"), seed=1)
    x = images(2, 64)
    for ident in ("A", "B"):
        model.zero_grad(set_to_none=True)
        rgb, mask = model(x, ident)
        ((rgb - x) ** 2).mean().add(mask.mean()).backward()
        used = {"encoder", "inter", f"decoder_{ident}"}
        for name, part in model.parts.items():
            for pname, p in part.named_parameters():
                if name in used:
                    assert p.grad is not None and p.grad.abs().sum() > 0, f"{name}.{pname}"
                else:
                    assert p.grad is None, f"{name}.{pname}"
    with torch.no_grad():
        b0 = model(x, "B")
        for p in model.decoder_A.parameters():
            p.add_(0.05)
        assert torch.equal(model(x, "B")[0], b0[0])


def test_channels_last_and_bf16_autocast():
    model = build_model(TINY, seed=4)
    x = images(2, 64)
    with torch.no_grad():
        ref = model(x, "B")
        cl = build_model(TINY, seed=4).to(memory_format=torch.channels_last)
        out = cl(x.contiguous(memory_format=torch.channels_last), "B")
    for a, b in zip(ref, out):
        assert torch.allclose(a, b, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        rgb, mask = model(x, "A")
        loss = (rgb - x).abs().mean() + mask.mean()
    loss.backward()
    assert rgb.dtype == mask.dtype == torch.float32
    assert torch.allclose(rgb, model(x, "A")[0].detach(), atol=0.05)


def test_store_round_trip(tmp_path):
    model = build_model(TINY, seed=3)
    manifest = {"identities": {"A": {"name": "a", "release_ref": "REL-A"}, "B": {"name": "b", "release_ref": "REL-B"}},
                "colour": {"encoding": "acescct-norm"}, "iteration": 7}
    store.save_model(tmp_path / "m", model, manifest)
    loaded, saved = store.load_model(tmp_path / "m", strict=True)
    assert type(loaded) is Sym and loaded.config == TINY and saved["config"]["max_dims"] == 32
    from vfxswap.models.info import format_info, model_info

    assert "mask 2  max 32" in format_info(model_info(tmp_path / "m"))
    assert loaded.state_dict().keys() == model.state_dict().keys()
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())
    x = images(1, 64)
    with torch.no_grad():
        assert torch.equal(model.swap(x)[0], loaded.swap(x)[0])
    # --init-from into a sym of another resolution: encoder and inter carry over, as no weight depends on R
    bigger = build_model(tiny(resolution=128), seed=9)
    copied = transfer.init_from(bigger, tmp_path / "m", ["encoder", "inter"])
    assert copied and all(torch.equal(bigger.state_dict()[k], model.state_dict()[k]) for k in copied)


def test_training_resume_init_from_and_render_predictor(tmp_path):
    from vfxswap.jobspec import TrainOptions
    from vfxswap.render.render import ModelPredictor
    from vfxswap.train.trainer import train

    a, b = write_faceset(tmp_path / "A", seed=1), write_faceset(tmp_path / "B", seed=2)  # 64 px faces
    dims = dict(resolution=64, ae_dims=8, e_dims=4, d_dims=4, d_mask_dims=2, max_dims=32)

    def options(model, **kw):
        return TrainOptions(src=str(a), dst=str(b), model_dir=str(model), **REFS, batch=2, workers=0,
                            preview_every=1000, save_every=1000, log_every=1, quiet=True, warmup=1, **kw)

    assert train(options(tmp_path / "m", preset="sym-256", iters=3, **dims)) == 3
    model, manifest = store.load_model(tmp_path / "m")
    assert type(model) is Sym and manifest["config"] == {**PRESETS["sym-256"].to_dict(), **dims}
    assert manifest["train"]["preset"] == "sym-256"
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert train(options(tmp_path / "m", iters=5, resume=True)) == 5
    resumed, manifest = store.load_model(tmp_path / "m")
    assert manifest["iteration"] == 5 and any(not torch.equal(v, resumed.state_dict()[k]) for k, v in before.items())
    # a second model from the first one's shared parts, the encoder frozen
    assert train(options(tmp_path / "n", preset="sym-256", iters=2, init_from=str(tmp_path / "m"),
                         freeze=["encoder"], **dims)) == 2
    second, _ = store.load_model(tmp_path / "n")
    for k, v in resumed.state_dict().items():
        if k.startswith("encoder."):
            assert torch.equal(second.state_dict()[k], v)
    # the render's predictor runs it as any model
    faces = np.random.default_rng(0).uniform(0, 1, (3, 64, 64, 3)).astype(np.float32)
    rgb, mask = ModelPredictor(str(tmp_path / "m"), device="cpu")(faces)
    assert rgb.shape == (3, 64, 64, 3) and mask.shape == (3, 64, 64) and np.isfinite(rgb).all()
