"""Training-time colour transfer (`train --ct-mode`, vfxswap.train.ct): A's faces take B's colour
statistics inside the masks, input and target through one map, values finite and in range."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vfxswap.render import COLOR_MATCHES
from vfxswap.render import color_transfer as numpy_ct
from vfxswap.train.ct import CT_RANGE, _stats, match_colours, pairing, transfer_batch

MODES = tuple(m for m in COLOR_MATCHES if m != "none")
N, R = 4, 32


def _batch(seed: int, base: float, spread: float, mix: float):
    """(images (N, 3, R, R), masks (N, 1, R, R)): textured faces with correlated channels, a
    different mask per sample, and values outside the mask unlike those inside."""
    g = torch.Generator().manual_seed(seed)
    x = base + spread * torch.rand(N, 3, R, R, generator=g)
    x[:, 1] += mix * (x[:, 0] - base)
    x[:, 2] -= 0.5 * mix * (x[:, 1] - base)
    mask = torch.zeros(N, 1, R, R)
    for i in range(N):
        mask[i, :, 3 + i:R - 4, 5:R - 3 - i] = 1.0
    x = torch.where(mask > 0.5, x, torch.full_like(x, 0.9))
    return x, mask


def _masked(x, mask):
    mean, cov, n = _stats(x, mask)
    std = (torch.diagonal(cov, dim1=1, dim2=2) * ((n - 1) / n)[:, None]).sqrt()
    return mean, cov, std


@pytest.mark.parametrize("mode", MODES)
def test_each_mode_moves_a_to_b_statistics_inside_the_mask(mode):
    a, mask_a = _batch(1, 0.25, 0.3, 0.6)
    b, mask_b = _batch(2, 0.45, 0.15, -0.4)
    seeds = [11, 12, 13, 14]
    out, = match_colours(mode, a, mask_a, b, mask_b, seeds=seeds)
    (ma, ca, _), (mb, cb, sb), (mo, co, so) = _masked(a, mask_a), _masked(b, mask_b), _masked(out, mask_a)
    if mode == "rct":  # per channel mean and spread
        assert torch.allclose(mo, mb, atol=1e-5) and torch.allclose(so, sb, atol=1e-5)
    elif mode in ("lct", "mkl"):  # the whole covariance
        assert torch.allclose(mo, mb, atol=1e-5) and torch.allclose(co, cb, atol=1e-6)
    else:  # distribution transfers: much nearer than before
        assert (mo - mb).abs().max() < 0.1 * (ma - mb).abs().max()
        assert (co - cb).abs().max() < 0.2 * (ca - cb).abs().max()
    # the render's method, batched in torch: the same numbers (idt and sot: the same random axes,
    # float32 here against float64 there, a little amplified where a quantile step is steep)
    errors = []
    for i in range(N):
        hwc = lambda t: t[i].permute(1, 2, 0).numpy()
        p, r = numpy_ct._pixels(hwc(a), mask_a[i, 0].numpy()), numpy_ct._pixels(hwc(b), mask_b[i, 0].numpy())
        kw = {"seed": seeds[i]} if mode in ("idt", "sot") else {}
        want = np.clip(getattr(numpy_ct, mode)(hwc(a).astype(np.float64), p, r, **kw), *CT_RANGE)
        errors.append(np.abs(hwc(out) - want))
    errors = np.concatenate([e.ravel() for e in errors])
    assert errors.max() < (1e-5 if mode in ("rct", "lct", "mkl") else 5e-3) and errors.mean() < 1e-4


@pytest.mark.parametrize("mode", MODES)
def test_input_and_target_go_through_one_map(mode):
    """The input is the target moved about (here mirrored: any warp only moves pixels); the
    transfer must commute with that, so the model is taught no colour change between them."""
    a, mask_a = _batch(3, 0.3, 0.3, 0.5)
    b, mask_b = _batch(4, 0.5, 0.2, 0.0)
    warped = torch.flip(a, dims=[3])
    target, inp = match_colours(mode, a, mask_a, b, mask_b, warped, seeds=[7, 8, 9, 10])
    assert torch.equal(inp, torch.flip(target, dims=[3]))
    assert not torch.allclose(target, a, atol=1e-3)  # it did something
    batch_a = {"input": warped, "target": a, "mask": mask_a, "weights": torch.ones_like(mask_a)}
    batch_b = {"input": b.clone(), "target": b, "mask": mask_b}
    out = transfer_batch(mode, batch_a, batch_b, seed=3, iteration=11)
    assert torch.equal(out["input"], torch.flip(out["target"], dims=[3]))
    assert out["mask"] is mask_a and out["weights"] is batch_a["weights"]  # only the colours change; B not at all
    again = transfer_batch(mode, batch_a, batch_b, seed=3, iteration=11)  # (seed, iteration) decide everything
    assert torch.equal(again["target"], out["target"]) and torch.equal(again["input"], out["input"])


def test_a_colour_match_without_a_torch_twin_runs_the_render_function_per_sample():
    """A colour match the render registers later, with no batched version here, still works:
    the numpy function per sample, one map for all of a sample's images."""
    from vfxswap.train import ct

    a, mask_a = _batch(9, 0.3, 0.3, 0.5)
    b, mask_b = _batch(10, 0.5, 0.2, 0.0)
    for mode in ("rct", "sot"):
        target, inp = ct._numpy_match(mode, a, mask_a, b, mask_b, [a, a.flip(3)], [1, 2, 3, 4])
        assert torch.equal(inp, target.flip(3))
        batched, = match_colours(mode, a, mask_a, b, mask_b, seeds=[1, 2, 3, 4])
        inside = (mask_a > 0.5).expand_as(a)  # sot: other random axes, the same method
        assert (target - batched)[inside].abs().mean() < 0.01


def test_the_pairing_is_a_permutation_of_the_step_drawn_from_its_seed():
    one = pairing(8, 8, 123)
    assert sorted(one.tolist()) == list(range(8)) and torch.equal(one, pairing(8, 8, 123))
    assert any(not torch.equal(one, pairing(8, 8, s)) for s in range(1, 5))
    assert pairing(6, 2, 5).max() <= 1 and len(pairing(6, 2, 5)) == 6
    a, mask = _batch(5, 0.3, 0.3, 0.5)
    b, mask_b = _batch(6, 0.5, 0.2, 0.0)
    batches = ({"input": a, "target": a, "mask": mask}, {"input": b, "target": b, "mask": mask_b})
    steps = [transfer_batch("rct", *batches, seed=0, iteration=it)["target"] for it in range(4)]
    assert any(not torch.equal(steps[0], s) for s in steps[1:])  # a new pairing each step
    assert transfer_batch("none", *batches, seed=0, iteration=0) is batches[0]


@pytest.mark.parametrize("mode", MODES)
def test_extreme_inputs_give_finite_values_in_the_encoding_range(mode):
    """A flat face, huge values, NaN and Inf, an empty mask, a flat or wild B: every pixel out is
    finite and inside CT_RANGE, and a sound sample beside them is matched as usual."""
    a, mask_a = _batch(7, 0.3, 0.3, 0.5)
    b, mask_b = _batch(8, 0.5, 0.2, 0.0)
    a, b = a.repeat(2, 1, 1, 1), b.repeat(2, 1, 1, 1)
    mask_a, mask_b = mask_a.repeat(2, 1, 1, 1), mask_b.repeat(2, 1, 1, 1)
    a[0] = 0.4  # flat A: its mean alone is matched
    a[1, :, 10:12, 10:12] = 1e30  # float32 squares overflow
    a[2, 0, 12, 12], a[2, 1, 13, 13] = float("nan"), float("inf")
    mask_a[3] = 0.0  # nothing to learn from
    b[4] = 0.6  # flat B: contrast to nothing
    b[5] = b[5] * 1e6  # a wild B
    a[6, :, 8:24, 8:24] = torch.linspace(-50.0, 50.0, 16)  # far outside the encoding
    a[7, :, 0, 0] = float("inf")  # outside its mask: no part of what is learnt
    target, inp = match_colours(mode, a, mask_a, b, mask_b, a.flip(3))
    for out in (target, inp):
        assert torch.isfinite(out).all()
        assert out.min() >= CT_RANGE[0] and out.max() <= CT_RANGE[1]
    mean, _, _ = _masked(target[:1], mask_a[:1])
    assert torch.allclose(mean, _masked(b[:1], mask_b[:1])[0], atol=1e-4)  # flat A: B's mean
    assert torch.allclose(target[3], a[3].clamp(*CT_RANGE))  # no masked pixels: left as it is
    if mode in ("rct", "lct", "mkl"):
        mo, mb = _masked(target[7:], mask_a[7:])[0], _masked(b[7:], mask_b[7:])[0]
        assert torch.allclose(mo, mb, atol=1e-5)  # the sound sample, matched as ever
    else:
        assert (_masked(target[7:], mask_a[7:])[0] - _masked(b[7:], mask_b[7:])[0]).abs().max() < 0.02
