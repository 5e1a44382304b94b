"""Training losses (SSIM/DSSIM, masked MSE, GAN hinge) and the preview/loss-curve PNGs."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vfxswap.train import losses
from vfxswap.train.losses import (dssim, gan_loss_d, gan_loss_g, mask_loss, masked_mse, ms_dssim,
                                  reconstruction_loss, ssim, total_variation)
from vfxswap.train.preview import HEADER_PX, SEP_PX, loss_curve, loss_keys, preview_grid, read_history


def smooth_faces(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """(n, 3, size, size) smooth, textured images in 0..1 (a stand-in for model-encoded faces)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 6, 6, generator=g)
    img = F.interpolate(low, size=(size, size), mode="bicubic", align_corners=False)
    y, x = torch.meshgrid(torch.linspace(0, 6.28, size), torch.linspace(0, 6.28, size), indexing="ij")
    return (0.6 * img + 0.2 * torch.sin(3 * x) * torch.cos(2 * y) + 0.2).clamp(0, 1)


def noisy(x: torch.Tensor, sigma: float, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return x + sigma * torch.randn(x.shape, generator=g)


def half_mask(n: int, size: int) -> torch.Tensor:
    """(n, 1, size, size): 1 on the left half, 0 on the right half."""
    m = torch.zeros(n, 1, size, size)
    m[..., : size // 2] = 1
    return m


# --- SSIM / DSSIM -------------------------------------------------------------------------

def test_ssim_identity_and_dssim_grows_with_noise():
    x = smooth_faces(2, 64)
    s = ssim(x, x)
    assert s.shape == (2,) and s.dtype == torch.float32
    assert torch.allclose(s, torch.ones(2), atol=1e-6)
    assert float(dssim(x, x)) == pytest.approx(0.0, abs=1e-6)
    values = [float(dssim(x, noisy(x, sigma))) for sigma in (0.01, 0.03, 0.1, 0.3)]
    assert all(a < b for a, b in zip(values, values[1:])), values
    assert 0 < values[0] and values[-1] < 0.5
    # symmetric; unrelated images are far apart
    y = noisy(x, 0.1)
    assert float(dssim(x, y)) == pytest.approx(float(dssim(y, x)), rel=1e-5)
    assert float(dssim(x, smooth_faces(2, 64, seed=7))) > values[1]


def test_ssim_small_images_and_bad_shapes():
    x = smooth_faces(1, 4)  # smaller than the 11-tap window: the window shrinks
    assert torch.isfinite(ssim(x, noisy(x, 0.1))).all()
    assert float(ssim(x[..., :1, :1], x[..., :1, :1])) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        ssim(x, smooth_faces(1, 8))
    with pytest.raises(ValueError):
        ssim(x, x, window=10)


def test_ms_dssim_scales():
    x = smooth_faces(2, 48)
    y = noisy(x, 0.05)
    m = half_mask(2, 48)
    # below 2 * 32 px there is one scale only
    assert torch.equal(ms_dssim(x, y), dssim(x, y))
    assert float(ms_dssim(x, y, m)) == pytest.approx(float(dssim(x, y, m)), abs=1e-7)
    x = smooth_faces(2, 256)
    y = noisy(x, 0.05)
    full, multi = float(dssim(x, y)), float(ms_dssim(x, y))
    assert abs(multi - full) > 0.01 * full
    # by hand: the mean over 256, 128, 64, 32 px (16 would be below the minimum side)
    by_hand, a, b = [], x, y
    for _ in range(4):
        by_hand.append(float(dssim(a, b)))
        a, b = F.avg_pool2d(a, 2), F.avg_pool2d(b, 2)
    assert multi == pytest.approx(np.mean(by_hand), rel=1e-5)
    # odd sizes pool fine
    assert torch.isfinite(ms_dssim(smooth_faces(1, 131), smooth_faces(1, 131, seed=3)))


@pytest.mark.parametrize("loss", ["dssim", "ms_dssim", "masked_mse", "reconstruction"])
def test_mask_excludes_outside_pixels(loss):
    size = 128
    x = smooth_faces(2, size)
    y = noisy(x, 0.05)
    m = half_mask(2, size)
    w = torch.ones_like(m)
    w[..., 40:60, 20:40] = 3.0  # a priority region inside the mask
    fn = {"dssim": lambda a, b: dssim(a, b, m), "ms_dssim": lambda a, b: ms_dssim(a, b, m),
          "masked_mse": lambda a, b: masked_mse(a, b, m),
          "reconstruction": lambda a, b: reconstruction_loss(a, b, m, w)}[loss]
    base = fn(x, y)
    outside = x.clone()
    outside[..., size // 2:] = torch.rand(2, 3, size, size - size // 2)  # right next to the mask edge too
    assert torch.equal(fn(outside, y), base)
    target_outside = y.clone()
    target_outside[..., size // 2:] = 0.0
    assert torch.equal(fn(x, target_outside), base)
    inside = x.clone()
    inside[..., 10:30, 10:30] += 0.2
    assert float(fn(inside, y)) > float(base)


def test_gradients_finite_and_inputs_untouched():
    size = 64
    target = smooth_faces(2, size)
    target[1] = 0.5  # a flat image: zero variance everywhere
    pred = noisy(target, 0.05).clamp(0, 1).requires_grad_(True)
    m = half_mask(2, size)
    w = torch.ones_like(m) * 2
    pred_mask = torch.rand(2, 1, size, size, requires_grad=True)
    keep = (pred.detach().clone(), target.clone(), m.clone(), w.clone())
    loss = (reconstruction_loss(pred, target, m, w) + mask_loss(pred_mask, m) + total_variation(pred)
            + gan_loss_g(pred.mean(1, keepdim=True)))
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
    assert torch.isfinite(pred_mask.grad).all()
    for before, after in zip(keep, (pred.detach(), target, m, w)):
        assert torch.equal(before, after)
    # identical images: the gradient is defined (zero-ish), not NaN
    same = target.clone().requires_grad_(True)
    dssim(same, target, m).backward()
    assert torch.isfinite(same.grad).all()


def test_bf16_autocast_cpu():
    size = 64
    target = smooth_faces(2, size)
    conv = torch.nn.Conv2d(3, 3, 3, padding=1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[range(3), range(3), 1, 1] = 1.0
        conv.bias.zero_()
    inp = noisy(target, 0.05)
    m = half_mask(2, size)
    ref = reconstruction_loss(conv(inp), target, m)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pred = conv(inp)
        assert pred.dtype == torch.bfloat16
        s = ssim(pred, target)
        loss = reconstruction_loss(pred, target, m)
        d_loss = gan_loss_d(pred.mean((1, 2, 3)), -pred.mean((1, 2, 3)))
    assert s.dtype == loss.dtype == d_loss.dtype == torch.float32
    assert torch.isfinite(loss)
    # only the bf16 rounding of pred differs from the float32 reference
    assert float(loss.detach()) == pytest.approx(float(ref.detach()), rel=0.05)
    loss.backward()
    assert torch.isfinite(conv.weight.grad).all()


def test_masked_mse_normalisation():
    x = smooth_faces(2, 32)
    y = noisy(x, 0.1)
    plain = F.mse_loss(x, y)
    assert float(masked_mse(x, y)) == pytest.approx(float(plain), rel=1e-6)
    assert float(masked_mse(x, y, torch.ones(2, 1, 32, 32))) == pytest.approx(float(plain), rel=1e-6)
    assert float(masked_mse(x, y, torch.full((2, 1, 32, 32), 5.0))) == pytest.approx(float(plain), rel=1e-6)
    m = half_mask(2, 32)
    left = F.mse_loss(x[..., :16], y[..., :16])
    assert float(masked_mse(x, y, m)) == pytest.approx(float(left), rel=1e-6)
    # weight 3 on one pixel of the left half counts it three times
    w = m.clone()
    w[:, :, 0, 0] = 3
    sq = (x - y).square()
    expect = (sq[..., :16].sum() + 2 * sq[:, :, 0, 0].sum()) / (3 * (w.sum()))
    assert float(masked_mse(x, y, w)) == pytest.approx(float(expect), rel=1e-5)
    zero = masked_mse(x, y, torch.zeros(2, 1, 32, 32))
    assert float(zero) == 0.0 and torch.isfinite(zero)
    assert float(dssim(x, y, torch.zeros(2, 1, 32, 32))) == 0.0


def test_reconstruction_loss_composition():
    x = smooth_faces(2, 96)
    y = noisy(x, 0.05)
    m = half_mask(2, 96)
    w = torch.ones_like(m)
    got = reconstruction_loss(x, y, m, w, dssim_weight=2.0, mse_weight=3.0)
    dx, dy = losses.display_like(x), losses.display_like(y)  # compared as a viewer sees them
    expect = 2.0 * ms_dssim(dx, dy, m) + 3.0 * masked_mse(dx, dy, m)
    assert float(got) == pytest.approx(float(expect), rel=1e-6)
    assert float(reconstruction_loss(x, y, m)) == pytest.approx(float(reconstruction_loss(x, y, m, w)), rel=1e-6)
    assert float(mask_loss(m, m)) == 0.0
    assert float(mask_loss(torch.zeros_like(m), m)) == pytest.approx(0.5)


def test_gan_hinge_values():
    ones = torch.ones(4, 1, 5, 5)
    assert float(gan_loss_d(2 * ones, -2 * ones)) == 0.0  # confident and right: no push
    assert float(gan_loss_d(0 * ones, 0 * ones)) == pytest.approx(2.0)
    assert float(gan_loss_d(-ones, ones)) == pytest.approx(4.0)
    assert float(gan_loss_d(torch.tensor([0.5, 3.0]), torch.tensor([-0.5, -3.0]))) == pytest.approx(0.25 + 0.25)
    assert float(gan_loss_g(0.5 * ones)) == pytest.approx(-0.5)
    assert float(gan_loss_g(-2 * ones)) == pytest.approx(2.0)


def test_total_variation():
    assert float(total_variation(torch.full((1, 3, 8, 8), 0.3))) == 0.0
    ramp = torch.arange(8.0).view(1, 1, 1, 8).expand(1, 1, 8, 8) / 8
    assert float(total_variation(ramp)) == pytest.approx(1 / 8)


def test_autocast_switch_tolerates_any_device_type():
    with losses._full_precision(torch.device("meta")):
        pass


# --- previews -----------------------------------------------------------------------------

COLOURS = {"A": (0.7, 0.2, 0.2), "A->A": (0.2, 0.7, 0.2), "B": (0.2, 0.2, 0.7), "B->B": (0.7, 0.7, 0.2),
           "B->A": (0.5, 0.5, 0.5)}


def test_preview_grid_layout_and_colour(tmp_path):
    r, n = 48, 4
    columns = {}
    for label, rgb in COLOURS.items():
        t = torch.tensor(rgb).view(1, 3, 1, 1).expand(n, 3, r, r).clone()
        t[:, :, :8, :8] = 0.9  # a bright corner so rows are not flat
        columns[label] = t
    out = preview_grid(columns, tmp_path / "previews" / "grid.png", max_rows=3)
    assert out == tmp_path / "previews" / "grid.png"
    img = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    rows, cols = 3, len(COLOURS)
    assert img.shape == (HEADER_PX + rows * r + (rows - 1) * SEP_PX, cols * r + (cols - 1) * SEP_PX, 3)
    assert not [p for p in out.parent.iterdir() if p.name != "grid.png"]  # no temporary left behind
    means = []
    for c in range(cols):
        x0 = c * (r + SEP_PX)
        tile = img[HEADER_PX + r // 2: HEADER_PX + r, x0 + r // 2: x0 + r].reshape(-1, 3).astype(float)
        assert tile.std(axis=0).max() < 1.0  # flat colour inside a tile
        means.append(tile.mean(axis=0))
    for i in range(cols):
        for j in range(i + 1, cols):
            assert np.abs(means[i] - means[j]).max() > 10, (i, j)
    b, g, red = means[0]  # column "A" is reddish through the view, in BGR order on disk
    assert red > g and red > b
    header = img[:HEADER_PX]
    assert header.max() > 150  # the labels are drawn
    gap = img[HEADER_PX + r: HEADER_PX + r + SEP_PX, : r]
    assert np.ptp(gap) == 0  # separators are one flat colour


def test_preview_grid_masks_callable_and_sizes(tmp_path):
    r = 32
    faces = smooth_faces(2, r)
    masks = half_mask(2, r)
    big = smooth_faces(2, 2 * r)  # resized to the first column's tile size

    def view(model_rgb):
        assert model_rgb.dtype == np.float32 and model_rgb.shape == (2 * r + SEP_PX, r, 3)
        return model_rgb  # floats 0..1 are accepted

    out = preview_grid({"face": faces, "mask": masks, "big": big.to(torch.bfloat16)}, tmp_path / "g.png",
                       to_display=view)
    img = cv2.imread(str(out))
    assert img.shape == (HEADER_PX + 2 * r + SEP_PX, 3 * r + 2 * SEP_PX, 3)
    mask_tile = img[HEADER_PX:HEADER_PX + r, r + SEP_PX: 2 * r + SEP_PX, 0]
    assert mask_tile[:, : r // 2].min() == 255 and mask_tile[:, r // 2:].max() == 0
    with pytest.raises(ValueError):
        preview_grid({}, tmp_path / "empty.png")
    with pytest.raises(ValueError):
        preview_grid({"bad": torch.zeros(1, 2, r, r)}, tmp_path / "bad.png")


def write_history(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_loss_curve_decreasing_history(tmp_path):
    rng = np.random.default_rng(0)
    records = []
    for i in range(0, 5000, 10):
        a = 0.5 * np.exp(-i / 1500) + 0.02
        records.append({"iter": i, "time": i * 0.1, "loss_A": a * rng.uniform(0.8, 1.25),
                        "loss_B": 0.8 * a * rng.uniform(0.8, 1.25), "loss": 1.8 * a, "lr": 5e-5})
    history = write_history(tmp_path / "history.jsonl", records)
    with open(history, "a") as f:
        f.write('{"iter": 5000, "loss_A": 0.0')  # a line cut short by a killed job
    assert loss_keys(read_history(history)) == ["loss_A", "loss_B", "loss"]
    out = loss_curve(history, tmp_path / "previews" / "loss.png")
    img = cv2.imread(str(out))
    assert img.shape == (400, 800, 3)
    assert (img < 250).any(axis=2).mean() > 0.02  # axes, text and lines are drawn
    # each loss colour appears (blue for loss_A, orange for loss_B, green for loss; BGR)
    for bgr in [(180, 119, 31), (14, 127, 255), (44, 160, 44)]:
        assert (np.abs(img.astype(int) - bgr).sum(axis=2) < 30).sum() > 50, bgr
    # the curve falls: loss_A's colour sits higher (smaller y) on the left than on the right
    ys, xs = np.nonzero(np.abs(img.astype(int) - (180, 119, 31)).sum(axis=2) < 30)
    assert ys[xs < 250].mean() < ys[xs > 550].mean()


def test_loss_curve_short_histories(tmp_path):
    one = write_history(tmp_path / "one.jsonl", [{"iter": 100, "loss_A": 0.3, "loss_B": 0.25}])
    img = cv2.imread(str(loss_curve(one, tmp_path / "one.png", width=640, height=320)))
    assert img.shape == (320, 640, 3)
    for source in (tmp_path / "missing.jsonl", write_history(tmp_path / "empty.jsonl", [])):
        assert cv2.imread(str(loss_curve(source, tmp_path / "none.png"))).shape == (400, 800, 3)
    odd = write_history(tmp_path / "odd.jsonl", [{"iter": 1, "loss_G": -0.5, "loss_A": 0.2},
                                                 {"iter": 1, "loss_G": -0.4, "loss_A": 0.1},
                                                 {"iter": 2, "loss_A": float("nan")}])
    assert cv2.imread(str(loss_curve(odd, tmp_path / "odd.png"))) is not None
    with pytest.raises(ValueError):
        loss_curve(one, tmp_path / "tiny.png", width=100, height=50)


def test_reconstruction_loss_weighs_blur_as_a_viewer_sees_it():
    """A 3x3 blur of real skin (the astronaut's face) costs the model-encoded pair what the same
    DSSIM + MSE cost the sRGB pair: the loss judges in a display-like encoding. Computed on
    ACEScct code values directly it came out at ~0.45 of that (mid-tones squeezed), and faces
    trained soft."""
    import skimage.data

    from vfxswap.color import ColorPipeline

    srgb = skimage.data.astronaut().astype(np.float32)[100:228, 180:308] / 255.0
    lin = np.clip(ColorPipeline("sRGB Encoded Rec.709 (sRGB)").convert(srgb, "sRGB Encoded Rec.709 (sRGB)", "ACEScg"), 0, None)
    model = ColorPipeline("ACEScg").to_model(lin)
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))[None].float()
    blur = lambda a: cv2.blur(a, (3, 3))
    ones = torch.ones(1, 1, 128, 128)
    seen = float(10 * ms_dssim(t(blur(srgb)), t(srgb)) + 10 * masked_mse(t(blur(srgb)), t(srgb)))
    ratio = float(reconstruction_loss(t(blur(model)), t(model), ones)) / seen
    print(f"blur penalty, loss on the model encoding / the same terms on sRGB: {ratio:.3f}")
    assert 0.8 < ratio < 1.25
