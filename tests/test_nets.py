"""Face networks: shapes, identities and parts, variants, precision/layout paths, config, accounting.

All on CPU with small batches; the big presets run at a reduced resolution and reduced dims (their
full size is only built on the meta device, which allocates nothing).
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torch import nn

from conftest import hooked_flops

from vfxswap.errors import VfxSwapError
from vfxswap.models import build_model
from vfxswap.models.config import PRESETS, ModelConfig
from vfxswap.models.nets import FaceModel, PatchDiscriminator, count_params, flops_per_sample

TINY = ModelConfig("df", 32, ae_dims=16, e_dims=4, d_dims=4, d_mask_dims=4)


def tiny(**kw) -> ModelConfig:
    return dataclasses.replace(TINY, **kw)


def small_version(config: ModelConfig) -> ModelConfig:
    """The preset's arch and variants at 64 px with dims cut by 4: the same graph, fast on CPU."""
    return dataclasses.replace(config, resolution=64, ae_dims=config.ae_dims // 4, e_dims=config.e_dims // 4,
                               d_dims=config.d_dims // 4, d_mask_dims=max(2, config.d_mask_dims // 4))


def images(n: int, res: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, res, res, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("arch", ["df", "liae"])
@pytest.mark.parametrize("preset", sorted(p for p, c in PRESETS.items() if c.arch != "sym"))  # sym: test_sym.py
def test_preset_shapes_and_range(preset, arch):
    full = dataclasses.replace(PRESETS[preset], arch=arch)
    full.validate()
    with torch.device("meta"):
        big = build_model(full)
    assert count_params(big) > (5e6 if preset == "quick" else 5e7)
    config = full if preset == "quick" else small_version(full)
    model = build_model(config, seed=0)
    x = images(2, config.resolution)
    for ident in ("A", "B"):
        rgb, mask = model(x, ident)
        assert rgb.shape == (2, 3, config.resolution, config.resolution)
        assert mask.shape == (2, 1, config.resolution, config.resolution)
        assert rgb.dtype == mask.dtype == torch.float32
        for t in (rgb, mask):
            assert torch.isfinite(t).all() and t.min() >= 0 and t.max() <= 1
    rgb, mask = model.swap(x)
    assert rgb.shape == x.shape and mask.shape == (2, 1, config.resolution, config.resolution)


def test_presets_grow_in_size():
    sizes = []
    for name in ("quick", "sae-256", "sae-512"):
        with torch.device("meta"):
            sizes.append(count_params(build_model(PRESETS[name])))
    assert sizes == sorted(sizes)


def test_part_names_and_state_dict_prefixes():
    for arch, names in (("df", ["encoder", "inter", "decoder_A", "decoder_B"]),
                        ("liae", ["encoder", "inter_AB", "inter_B", "decoder"])):
        model = build_model(tiny(arch=arch), seed=0)
        assert model.part_names() == names
        assert list(model.parts) == names
        assert sum(count_params(p) for p in model.parts.values()) == count_params(model)
        for key in model.state_dict():
            assert key.split(".")[0] in names


def test_each_architecture_is_a_registered_face_model():
    from vfxswap.models import ARCHITECTURES

    for arch in ARCHITECTURES:
        cls = ARCHITECTURES.get(arch)
        assert issubclass(cls, FaceModel) and cls.arch == arch and cls.PARTS[0] == "encoder"
        assert set(cls.SHARED_PARTS) <= set(cls.PARTS)
        assert type(build_model(tiny(arch=arch), seed=0)) is cls
    with pytest.raises(VfxSwapError, match="arch"):
        ARCHITECTURES.get("df")(tiny(arch="liae"))  # a class builds only its own arch


def test_df_identities_use_their_own_decoder():
    model = build_model(tiny(), seed=1)
    x = images(2, 32)
    with torch.no_grad():
        a0, b0 = model(x, "A"), model(x, "B")
        assert not torch.allclose(a0[0], b0[0])  # two independently initialised decoders
        for p in model.decoder_A.parameters():
            p.add_(0.05)
        a1, b1 = model(x, "A"), model(x, "B")
    assert not torch.allclose(a0[0], a1[0]) and not torch.allclose(a0[1], a1[1])
    assert torch.equal(b0[0], b1[0]) and torch.equal(b0[1], b1[1])
    assert torch.equal(model.swap(x, "A")[0], a1[0])


def test_liae_swap_uses_inter_ab_twice():
    model = build_model(tiny(arch="liae"), seed=2)
    x = images(2, 32)
    calls = {"inter_AB": 0, "inter_B": 0}
    for name in calls:
        getattr(model, name).register_forward_hook(lambda *_, n=name: calls.__setitem__(n, calls[n] + 1))
    with torch.no_grad():
        rgb, mask = model.swap(x, "A")
        assert calls == {"inter_AB": 1, "inter_B": 0}
        ab = model.inter_AB(model.encoder(x))
        ref = model.decoder(torch.cat([ab, ab], 1))
        assert torch.equal(rgb, ref[0]) and torch.equal(mask, ref[1])
        # B's code carries inter_B in the second half
        b_rgb, _ = model(x, "B")
        bb = model.inter_B(model.encoder(x))
        assert torch.equal(b_rgb, model.decoder(torch.cat([ab, bb], 1))[0])
        # changing inter_B moves B's reconstruction but never the swap
        for p in model.inter_B.parameters():
            p.add_(0.05)
        assert torch.equal(model.swap(x)[0], rgb)
        assert not torch.allclose(model(x, "B")[0], b_rgb)


@pytest.mark.parametrize("arch", ["df", "liae"])
def test_gradient_reaches_every_parameter_of_the_path(arch):
    model = build_model(tiny(arch=arch, variants="u"), seed=3)
    x = images(2, 32)
    for ident in ("A", "B"):
        model.zero_grad(set_to_none=True)
        rgb, mask = model(x, ident)
        ((rgb - x) ** 2).mean().add(mask.mean()).backward()
        if arch == "df":
            used = {"encoder", "inter", f"decoder_{ident}"}
        else:
            used = {"encoder", "inter_AB", "decoder"} | ({"inter_B"} if ident == "B" else set())
        for name, part in model.parts.items():
            for pname, p in part.named_parameters():
                if name in used:
                    assert p.grad is not None and p.grad.abs().sum() > 0, f"{name}.{pname}"
                else:
                    assert p.grad is None, f"{name}.{pname}"


def _spatial_sizes(module: nn.Module, x_fn) -> list[int]:
    sizes = []
    hooks = [m.register_forward_hook(lambda m, i, o: sizes.append(o.shape[-1])) for m in module]
    x_fn()
    for h in hooks:
        h.remove()
    return sizes


def test_variant_d_halves_the_decoder_and_keeps_output_size():
    plain, double = build_model(tiny(resolution=64), seed=0), build_model(tiny(resolution=64, variants="d"), seed=0)
    x = images(1, 64)
    with torch.no_grad():
        sizes_plain = _spatial_sizes(plain.decoder_A.res, lambda: plain(x, "A"))
        sizes_double = _spatial_sizes(double.decoder_A.res, lambda: double(x, "A"))
        assert double(x, "A")[0].shape == plain(x, "A")[0].shape == (1, 3, 64, 64)
    assert sizes_plain == [16, 32, 64] and sizes_double == [8, 16, 32]
    assert double.decoder_A.rgb.out_channels == 12 and plain.decoder_A.rgb.out_channels == 3
    assert len(double.decoder_A.mask_ups) == len(plain.decoder_A.mask_ups) + 1
    assert double.config.code_res == plain.config.code_res // 2 and double.config.internal_res == 32
    assert flops_per_sample(double.config) < flops_per_sample(plain.config) / 2.5


def test_variant_t_adds_a_level():
    plain, deep = build_model(tiny(resolution=64), seed=0), build_model(tiny(resolution=64, variants="t"), seed=0)
    assert len(deep.encoder.downs) == len(plain.encoder.downs) + 1 == 5
    assert len(deep.decoder_A.ups) == len(plain.decoder_A.ups) + 1 == 4
    assert len(deep.decoder_A.mask_ups) == len(plain.decoder_A.mask_ups) + 1
    assert deep.config.code_res == 2 and plain.config.code_res == 4
    assert deep(images(1, 64), "B")[0].shape == (1, 3, 64, 64)


def test_variant_u_pixel_normalises_the_code():
    model = build_model(tiny(variants="u"), seed=0)
    with torch.no_grad():
        feats = model.encode(images(3, 32) * 5)
    assert torch.allclose(feats.pow(2).mean(1), torch.ones(3), atol=1e-3)
    assert not build_model(tiny(), seed=0).encoder.pixel_norm


@pytest.mark.parametrize("arch", ["df", "liae"])
def test_channels_last_matches_contiguous(arch):
    config = tiny(arch=arch, resolution=64, variants="ud")
    model = build_model(config, seed=4)
    x = images(2, 64)
    with torch.no_grad():
        ref = model(x, "B")
        model_cl = build_model(config, seed=4).to(memory_format=torch.channels_last)
        out = model_cl(x.contiguous(memory_format=torch.channels_last), "B")
    for a, b in zip(ref, out):
        assert torch.allclose(a, b, atol=1e-5)


def test_bf16_autocast_forward_and_backward():
    model = build_model(tiny(variants="ud", resolution=64), seed=5)
    x = images(2, 64)
    with torch.no_grad():
        ref = model(x, "A")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        rgb, mask = model(x, "A")
        loss = (rgb - x).abs().mean() + mask.mean()
    loss.backward()
    assert rgb.dtype == mask.dtype == torch.float32
    assert torch.allclose(rgb, ref[0], atol=0.05) and torch.allclose(mask, ref[1], atol=0.05)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.decoder_A.parameters())


def test_seeded_init_is_deterministic_and_leaves_global_rng_alone():
    state = torch.get_rng_state()
    a, b, c = build_model(TINY, seed=7), build_model(TINY, seed=7), build_model(TINY, seed=8)
    assert torch.equal(state, torch.get_rng_state())
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k])
    assert any(not torch.equal(v, c.state_dict()[k]) for k, v in a.state_dict().items())
    torch.manual_seed(3)
    d = build_model(TINY)
    torch.manual_seed(3)
    e = build_model(TINY)
    assert all(torch.equal(v, e.state_dict()[k]) for k, v in d.state_dict().items())


@pytest.mark.parametrize("change, option", [
    (dict(arch="sae"), "arch"),
    (dict(resolution=72), "resolution"),  # not a multiple of 16
    (dict(resolution=80, variants="d"), "resolution"),  # "d" needs 32
    (dict(resolution=96, variants="dt"), "resolution"),  # "dt" needs 64
    (dict(resolution=0), "resolution"),
    (dict(ae_dims=0), "ae_dims"),
    (dict(e_dims=-4), "e_dims"),
    (dict(d_dims=8.0), "d_dims"),
    (dict(d_mask_dims=True), "d_mask_dims"),
    (dict(variants="x"), "variants"),
    (dict(variants="uu"), "variants"),
    (dict(face_type="torso"), "face_type"),
])
def test_validate_names_the_bad_option(change, option):
    config = dataclasses.replace(ModelConfig(), **change)
    with pytest.raises(VfxSwapError, match=f"model option {option}:"):
        config.validate()
    with pytest.raises(VfxSwapError):
        build_model(config)


def test_config_dict_round_trip():
    for config in list(PRESETS.values()) + [tiny(arch="liae", variants="udt", resolution=64)]:
        d = json.loads(json.dumps(config.to_dict()))
        assert ModelConfig.from_dict(d) == config
    with pytest.raises(VfxSwapError, match="unknown option"):
        ModelConfig.from_dict({**TINY.to_dict(), "layers": 3})
    with pytest.raises(VfxSwapError, match="resolution"):
        ModelConfig.from_dict({**TINY.to_dict(), "resolution": 33})
    model = build_model(TINY)
    model.config.arch = "liae"  # the model keeps its own copy of the config
    assert TINY.arch == "df"


def test_bad_input_and_identity_are_refused():
    model = build_model(TINY, seed=0)
    with pytest.raises(VfxSwapError, match="identity"):
        model(images(1, 32), "C")
    with pytest.raises(VfxSwapError, match="resolution 32"):
        model(images(1, 64), "A")


@pytest.mark.parametrize("arch", ["df", "liae"])
@pytest.mark.parametrize("variants", ["", "d", "t", "udt"])
def test_flops_match_the_layers_run(arch, variants):
    config = tiny(arch=arch, variants=variants, resolution=64)
    model = build_model(config, seed=0)
    assert flops_per_sample(config) == hooked_flops(model, images(1, 64), "B")


def test_flops_scale_with_resolution():
    for name, config in PRESETS.items():
        f1 = flops_per_sample(config)
        f2 = flops_per_sample(dataclasses.replace(config, resolution=2 * config.resolution))
        assert f1 > 0 and 3.5 < f2 / f1 < 4.5, name


def test_patch_discriminator():
    disc = PatchDiscriminator(dims=8, seed=0)
    x = images(2, 64).requires_grad_()
    logits = disc(x)
    assert logits.shape == (2, 1, 8, 8) and logits.dtype == torch.float32
    logits.mean().backward()
    assert x.grad is not None and all(p.grad is not None for p in disc.parameters())
    assert PatchDiscriminator(layers=4)(images(1, 96)).shape == (1, 1, 6, 6)
    same = PatchDiscriminator(dims=8, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(disc.state_dict().values(), same.state_dict().values()))
    assert count_params(PatchDiscriminator()) > 0


def test_network_input_is_soft_limited_to_the_range_it_learned():
    """A saturated out-of-gamut colour on an ACES2065-1 plate encodes near -85: the encoder never
    sees it (nor a 100x highlight); in-range pixels reach it untouched."""
    from vfxswap.models.nets import INPUT_KNEE

    model = build_model(PRESETS["quick"], seed=0).eval()
    r = model.config.resolution
    x = torch.rand(1, 3, r, r, generator=torch.Generator().manual_seed(0))
    x[0, :, :10, :10] = -85.0
    x[0, 0, -10:, -10:] = 100.0
    seen = []
    hook = model.encoder.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    with torch.no_grad():
        rgb, mask = model(x, "A")
    hook.remove()
    fed = seen[0]
    assert float(fed.min()) >= -INPUT_KNEE and float(fed.max()) <= 1.0 + INPUT_KNEE
    inside = (x >= 0) & (x <= 1)
    assert torch.equal(fed[inside], x[inside])
    assert torch.isfinite(rgb).all() and torch.isfinite(mask).all()
