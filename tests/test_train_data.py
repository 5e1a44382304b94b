"""Training samples: augmentation geometry and colour, priority maps, yaw sampling, loaders.

Most tests use a small synthetic faceset written through the Faceset store API; one builds a
real faceset with the extractor from the shared GRID stills (skipped without shared data).
"""

from __future__ import annotations

import shutil
import time

import cv2
import numpy as np
import pytest
import torch

from vfxswap.errors import VfxSwapError
from vfxswap.faces.align import MIRROR_68
from vfxswap.faceset import Faceset
from vfxswap.plates import read_image
from vfxswap.train.data import HALF_KEYS, EpochBatchSampler, FaceSamples, make_loader

from conftest import SIZE, YAWS, write_faceset

@pytest.fixture(scope="module")
def faceset(tmp_path_factory):
    return write_faceset(tmp_path_factory.mktemp("train") / "fs")


def sample_loaded(ds, i):
    """Face i as stored, resized to R independently of the dataset code."""
    px = read_image(ds.paths[i]).pixels.astype(np.float32)
    r = ds.resolution
    rgb = np.ascontiguousarray(px[:, :, :3])
    mask = np.ascontiguousarray(px[:, :, 4])  # extended.Y
    if r != px.shape[0]:
        down = r < px.shape[0]
        rgb = cv2.resize(rgb, (r, r), interpolation=cv2.INTER_AREA if down else cv2.INTER_CUBIC)
        mask = cv2.resize(mask, (r, r), interpolation=cv2.INTER_AREA if down else cv2.INTER_LINEAR)
    return rgb, mask


def test_shapes_dtypes_and_length(faceset):
    ds = FaceSamples(faceset, 48)
    assert len(ds) == len(YAWS) and ds.face_type == "whole_face"
    s = ds[3]
    shapes = {"input": (3, 48, 48), "target": (3, 48, 48), "mask": (1, 48, 48), "weights": (1, 48, 48),
              "landmarks": (68, 2)}
    assert {k: tuple(v.shape) for k, v in s.items()} == shapes
    assert all(v.dtype == torch.float32 for v in s.values())
    assert all(torch.isfinite(v).all() for v in s.values())


def test_no_augmentation_is_the_resized_face_exactly(faceset):
    for r in (48, 64, 96):  # down, same size, up
        ds = FaceSamples(faceset, r, augment=False, warp=False)
        for i in (0, 5):
            rgb, mask = sample_loaded(ds, i)
            s = ds[i]
            assert np.array_equal(s["input"].numpy(), rgb.transpose(2, 0, 1))
            assert np.array_equal(s["target"].numpy(), rgb.transpose(2, 0, 1))
            assert np.array_equal(s["mask"].numpy()[0], mask)
            want = (ds.landmarks[i].astype(np.float64) + 0.5) * r / SIZE - 0.5
            assert np.allclose(s["landmarks"].numpy(), want, atol=1e-4)


def test_hdr_values_are_not_clipped(faceset):
    ds = FaceSamples(faceset, SIZE, augment=False, warp=False)
    assert ds[0]["target"].max() > 1.5
    ds = FaceSamples(faceset, SIZE)
    assert max(float(ds[(0, 0, d, 0)]["target"].max()) for d in range(4)) > 1.2


def test_warp_changes_input_only_and_target_is_the_affine(faceset):
    ds = FaceSamples(faceset, 64, color_jitter=0.0)
    for key in [(0, 0, d, d % len(ds)) for d in range(4)]:
        s, aug = ds[key], ds.augmentation(key)
        rgb, mask = sample_loaded(ds, key[3])
        want = cv2.warpAffine(rgb, aug.matrix, (64, 64), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101)
        assert np.allclose(s["target"].numpy(), want.transpose(2, 0, 1), atol=1e-6)
        want_mask = cv2.warpAffine(mask, aug.matrix, (64, 64), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_REFLECT_101)
        assert np.allclose(s["mask"].numpy()[0], want_mask, atol=1e-6)
        diff = (s["input"] - s["target"]).abs()
        assert diff.mean() > 0.01  # the warp moved things
        assert diff[:, 28:36, 28:36].mean() < 0.5  # ... but not far: the same face
    # a warp alone (no affine): the crop's frame stays put, the inside moves
    ds = FaceSamples(faceset, 64, augment=False)
    s = ds[1]
    d = (s["input"] - s["target"]).abs()
    assert d[:, :, 0].mean() < 0.02 and d[:, 20:44, 20:44].mean() > 0.01
    for r in (96, 256):  # exactly, at every size (the grid's outer nodes sat R/10 inside the crop)
        shift = FaceSamples(faceset, r, augment=False).augmentation((0, 0, 3, 1)).displacement
        edge = np.concatenate([shift[0], shift[-1], shift[:, 0], shift[:, -1]])
        assert np.abs(edge).max() < 1e-4 and np.abs(shift).max() > 0.01 * r


def _dfl_warp_rms(r: int) -> float:
    """The RMS displacement (px) of DeepFaceLab's warp at size r: a grid of n = 3, 5 or 9 nodes a
    side (equally likely) spanning the crop, a cell of r / (n - 1) px; each interior node moves by
    Normal(0, (0.24 cell)^2) per axis, the border nodes stay; the field is linearly interpolated
    between nodes (DeepFaceLab resizes the node grid bilinearly). Nodes are independent, so a
    pixel's variance per axis is sigma^2 (sum of its row weights^2) (sum of its column weights^2)
    over the interior nodes."""
    total = 0.0
    for n in (3, 5, 9):
        w = np.maximum(0.0, 1 - np.abs(np.linspace(0, n - 1, r)[:, None] - np.arange(1, n - 1)[None]))  # tents
        per_axis = (0.24 * r / (n - 1)) ** 2 * np.outer((w ** 2).sum(1), (w ** 2).sum(1)).mean()
        total += 2 * per_axis / 3  # two axes; each n a third of the time
    return float(np.sqrt(total))


def test_warp_is_deepfacelab_strength_and_the_border_stays(faceset):
    """The input warp as DeepFaceLab draws it (see _dfl_warp_rms): measured over many samples
    its RMS displacement is that model's, within 10%; the crop's border pixels never move; and
    warp=False gives the target itself as the input, with nothing else changed."""
    r = 64
    ds = FaceSamples(faceset, r)
    fields = np.stack([ds.augmentation((0, 0, d, d % len(ds))).displacement for d in range(600)])
    rms, want = float(np.sqrt((fields ** 2).sum(-1).mean())), _dfl_warp_rms(r)
    assert abs(rms / want - 1) < 0.1, (rms, want)
    assert rms > 0.04 * r  # several times the old +-0.04 uniform grid (about 0.016 r)
    edge = np.concatenate([fields[:, 0], fields[:, -1], fields[:, :, 0], fields[:, :, -1]], 1)
    assert not edge.any()
    still = FaceSamples(faceset, r, augment=False, color_jitter=0.0)
    for d in range(8):
        s = still[(0, 0, d, d % len(ds))]
        for border in (np.s_[:, 0], np.s_[:, -1], np.s_[:, :, 0], np.s_[:, :, -1]):
            assert np.allclose(s["input"][border], s["target"][border], atol=1e-5)
    flat = FaceSamples(faceset, r, warp=False)
    for key in [(1, 2, d, d % len(ds)) for d in range(6)]:
        s, w = flat[key], ds[key]
        assert flat.augmentation(key).displacement is None and torch.equal(s["input"], s["target"])
        assert all(torch.equal(s[k], w[k]) for k in ("target", "mask", "weights", "landmarks"))


def test_augmentation_changes_with_key_and_not_otherwise(faceset):
    ds = FaceSamples(faceset, 48)
    a, b = ds[(0, 0, 0, 2)], ds[(0, 0, 0, 2)]
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = ds[(0, 0, 1, 2)]  # same face drawn at another position of the epoch
    assert not torch.equal(a["input"], c["input"])
    d = ds[(0, 1, 0, 2)]  # next epoch
    assert not torch.equal(a["input"], d["input"])
    ds.set_epoch(5)
    assert torch.equal(ds[2]["input"], ds[(0, 5, 2, 2)]["input"])


def test_flip_mirrors_pixels_and_landmarks_consistently(faceset):
    ds = FaceSamples(faceset, 64, warp=False, rotation=0, scale=0, shift=0, color_jitter=0)
    plain = FaceSamples(faceset, 64, warp=False, augment=False)
    flips = [k for k in [(0, 0, d, 4) for d in range(16)] if ds.augmentation(k).flip]
    keeps = [k for k in [(0, 0, d, 4) for d in range(16)] if not ds.augmentation(k).flip]
    assert flips and keeps
    base = plain[4]
    s = ds[flips[0]]
    assert np.allclose(s["target"].numpy(), base["target"].numpy()[:, :, ::-1], atol=1e-6)
    assert np.allclose(s["mask"].numpy(), base["mask"].numpy()[:, :, ::-1], atol=1e-6)
    pts = base["landmarks"].numpy()
    mirrored = np.stack([63 - pts[:, 0], pts[:, 1]], 1)[MIRROR_68]
    assert np.allclose(s["landmarks"].numpy(), mirrored, atol=1e-4)
    lm = s["landmarks"].numpy()
    assert lm[36, 0] < lm[45, 0] and lm[48, 0] < lm[54, 0] and lm[0, 0] < lm[16, 0]  # semantics kept
    wd = (s["weights"] - base["weights"].flip(-1)).abs()  # the same hulls, mirrored (to raster rounding)
    assert wd.mean() < 0.01 and wd.max() < 0.3
    assert torch.equal(ds[keeps[0]]["target"], base["target"])
    # no flip when flip=False
    ds = FaceSamples(faceset, 64, flip=False)
    assert not any(ds.augmentation((0, 0, d, 4)).flip for d in range(16))


def test_masks_in_unit_range_and_colour_jitter_is_shared(faceset):
    ds = FaceSamples(faceset, 48, color_jitter=0.1, mask_kind="components")
    for d in range(8):
        s = ds[(0, 0, d, d)]
        assert s["mask"].min() >= 0 and s["mask"].max() <= 1 and s["mask"].max() > 0.99
    # jitter: target = contrast * (clean - mean) + mean + offset, the same numbers on the input
    clean = FaceSamples(faceset, 48, color_jitter=0.0, warp=False)
    jit = FaceSamples(faceset, 48, color_jitter=0.1, warp=False)
    key = (3, 1, 2, 6)
    a, b, aug = clean[key]["target"].numpy(), jit[key]["target"].numpy(), jit.augmentation(key)
    mean = a.reshape(3, -1).mean(1)[:, None, None]
    want = (a - mean) * aug.contrast + mean + aug.offset[:, None, None]
    assert np.allclose(b, want, atol=1e-5) and not np.allclose(a, b, atol=1e-3)
    assert torch.equal(jit[key]["input"], jit[key]["target"])  # no warp: input = target, jitter included
    warped = FaceSamples(faceset, 48, color_jitter=0.1)[key]
    unjit = FaceSamples(faceset, 48, color_jitter=0.0)[key]
    assert np.allclose(warped["input"].numpy(), (unjit["input"].numpy() - mean) * aug.contrast + mean
                       + aug.offset[:, None, None], atol=1e-5)


def test_priority_weights_around_eyes_and_mouth(faceset):
    ds = FaceSamples(faceset, 96)
    for key in [(0, 0, d, d) for d in range(4)]:
        s = ds[key]
        w, lm = s["weights"][0].numpy(), s["landmarks"].numpy()
        assert w.min() == pytest.approx(1.0) and w.max() == pytest.approx(3.0)
        for part in (range(36, 42), range(42, 48), range(48, 60)):
            cx, cy = np.round(lm[list(part)].mean(0)).astype(int)
            assert w[cy, cx] == pytest.approx(3.0)
        for x, y in np.round(lm[[8, 0, 16, 30]]).astype(int):  # chin, jaw corners, nose tip
            assert w[np.clip(y, 0, 95), np.clip(x, 0, 95)] == pytest.approx(1.0)
        # dilated: just outside the outer eye corners is still weighted
        iod = np.hypot(*(lm[36:42].mean(0) - lm[42:48].mean(0)))
        for i, j in ((36, 39), (45, 42)):
            out = lm[i] + (lm[i] - lm[j]) / np.hypot(*(lm[i] - lm[j])) * 0.05 * iod
            assert w[int(round(out[1])), int(round(out[0]))] > 1.5
    ds = FaceSamples(faceset, 96, eyes_mouth_weight=5.0, augment=False, warp=False)
    assert ds[0]["weights"].max() == pytest.approx(5.0)


def test_uniform_yaw_weights(faceset):
    ds = FaceSamples(faceset, 32)
    w = ds.yaw_weights()
    assert w.shape == (len(YAWS),) and w.sum() == pytest.approx(1.0) and (w > 0).all()
    yaws = np.array([np.nan if v is None else v for v in YAWS])
    bins = np.where(np.isfinite(yaws), np.floor(np.nan_to_num(yaws) / 10), 99)
    totals = {b: w[bins == b].sum() for b in np.unique(bins)}
    assert len(totals) == 6 and np.allclose(list(totals.values()), 1 / 6)
    assert w[0] == pytest.approx(1 / 6) and w[1] == pytest.approx(1 / 6 / 2)  # lone -42 vs two in [-10, 0)
    # drawn that way, a lone profile appears about as often as the whole [0, 10) bin
    sampler = EpochBatchSampler(len(ds), 4, seed=1, weights=w)
    draws = np.concatenate([sampler.order(e) for e in range(300)])
    counts = np.bincount(draws, minlength=len(ds)) / len(draws)
    assert counts[0] == pytest.approx(1 / 6, abs=0.02) and counts[3:8].sum() == pytest.approx(1 / 6, abs=0.02)


def test_loader_batches_and_epochs(faceset):
    with make_loader(FaceSamples(faceset, 32), 5, workers=0, seed=3) as it:
        assert it.batches_per_epoch == 2  # 12 faces, drop_last
        seen = []
        for _ in range(5):
            b = next(it)
            assert b["input"].shape == (5, 3, 32, 32) and b["landmarks"].shape == (5, 68, 2)
            seen.append((it.epoch, tuple(it.indices)))
    with pytest.raises(StopIteration):
        next(it)  # closed
    assert [e for e, _ in seen] == [0, 0, 1, 1, 2]
    assert len(set(seen[0][1] + seen[1][1])) == 10  # no repeats within an epoch
    assert seen[0][1] != seen[2][1]
    # fewer faces than a batch: faces repeat (with different augmentation), never an empty epoch
    with make_loader(FaceSamples(faceset, 32), 20, workers=0, uniform_yaw=True, start=(7, 0)) as it:
        b = next(it)
        assert b["input"].shape[0] == 20 and it.epoch == 7


def test_a_loader_continues_its_stream_from_a_saved_position(faceset):
    """What an exact resume needs: `position` after k batches (epoch, batch within the epoch),
    given back as the start of a new loader, continues the very same stream, mid-epoch included,
    for each rank of a sharded loader."""
    ds = FaceSamples(faceset, 32)
    for shard in (None, (0, 2), (1, 2)):
        with make_loader(ds, 2, workers=0, seed=4, distributed=shard) as it:
            assert it.position == (0, 0)
            stream = []
            for i in range(7):
                stream.append(next(it)["input"])
                if i == 3:
                    at = it.position
        per_epoch = it.batches_per_epoch
        assert at == divmod(4, per_epoch) and 0 < at[1]  # mid-epoch
        with make_loader(ds, 2, workers=0, seed=4, distributed=shard, start=at) as again:
            assert all(torch.equal(next(again)["input"], x) for x in stream[4:])


def test_batches_travel_as_half_and_hold_the_samples(faceset):
    """A worker's batch is its samples with the images rounded to float16 (HDR values kept)."""
    ds = FaceSamples(faceset, 32)
    with make_loader(ds, 4, workers=1, seed=2) as it:
        batch = next(it)
        keys = it.sampler.epoch_batches(0)[0]
    assert {k: v.dtype for k, v in batch.items()} == {**{k: torch.float16 for k in HALF_KEYS},
                                                       "landmarks": torch.float32}
    for i, key in enumerate(keys):
        sample = ds[key]
        for k in HALF_KEYS:
            assert torch.equal(batch[k][i], sample[k].half()), k
        assert torch.equal(batch["landmarks"][i], sample["landmarks"])
    with make_loader(FaceSamples(faceset, SIZE, augment=False, warp=False), 4, workers=0) as it:
        assert next(it)["target"].max() > 1.5  # the synthetic faces' highlight above 1 survives half


def test_same_seed_same_batches_whatever_the_workers(faceset):
    def first(workers, seed=11):
        with make_loader(FaceSamples(faceset, 32), 4, workers=workers, seed=seed, uniform_yaw=True) as it:
            return [next(it) for _ in range(2)]

    a = first(0)
    for b in (first(1), first(2)):
        for x, y in zip(a, b):
            assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
    c = first(0, seed=12)
    assert not torch.equal(a[0]["input"], c[0]["input"])


def test_distributed_shards_are_disjoint(faceset):
    n = len(YAWS)
    for epoch in range(3):
        shards = [EpochBatchSampler(n, 3, seed=5, rank=r, world=2).epoch_batches(epoch) for r in range(2)]
        idx = [[k[3] for b in s for k in b] for s in shards]
        pos = [[k[2] for b in s for k in b] for s in shards]
        assert len(idx[0]) == len(idx[1]) == 6
        assert not set(idx[0]) & set(idx[1]) and set(idx[0]) | set(idx[1]) == set(range(n))
        assert not set(pos[0]) & set(pos[1])
    ds = FaceSamples(faceset, 32)
    got = []
    for rank in range(3):
        with make_loader(ds, 2, workers=0, seed=5, distributed=(rank, 3)) as it:
            next(it)
            got.append(set(it.indices))
            next(it)
            got[-1] |= set(it.indices)
    assert all(len(g) == 4 for g in got) and len(set.union(*got)) == 12
    with pytest.raises(VfxSwapError, match="rank"):
        make_loader(ds, 2, workers=0, distributed=(2, 2))


def test_empty_faceset_and_face_type_mismatch(tmp_path, faceset):
    with Faceset(tmp_path / "empty", create=True):
        pass
    with pytest.raises(VfxSwapError, match="empty.*no aligned faces"):
        FaceSamples(tmp_path / "empty", 64)
    with pytest.raises(VfxSwapError, match="not a faceset"):
        FaceSamples(tmp_path, 64)
    with pytest.raises(VfxSwapError, match="'whole_face'.*'head'"):
        FaceSamples(faceset, 64, face_type="head")
    assert FaceSamples(faceset, 64, face_type="whole_face").face_type == "whole_face"
    with pytest.raises(VfxSwapError, match="mask_kind"):
        FaceSamples(faceset, 64, mask_kind="hair")
    # every face excluded counts as empty
    folder = write_faceset(tmp_path / "excl", yaws=[0.0, 1.0])
    with Faceset(folder) as fs:
        fs.db.execute("UPDATE faces SET excluded = 1")
        fs.db.commit()
    with pytest.raises(VfxSwapError, match="excl"):
        FaceSamples(folder, 64)


def test_cache_is_bounded_and_not_pickled(faceset):
    ds = FaceSamples(faceset, 64, cache_mb=0.1)  # room for one 64x64x4 float32 face (64 KiB)
    for i in range(4):
        ds[i]
    assert len(ds._cache) == 1
    assert ds.__getstate__()["_cache"] == {}  # what a spawned worker receives: no cached faces
    ds = FaceSamples(faceset, 64, cache_mb=0)
    ds[0]
    assert ds._cache == {}


def test_real_faceset_from_the_extractor(tmp_path, shared_file):
    from vfxswap.faces.extract import extract
    from vfxswap.jobspec import ExtractOptions

    stills = tmp_path / "stills"
    stills.mkdir()
    for p in sorted(shared_file("identities/A_grid_s1").glob("*.jpg"))[:10]:
        shutil.copy(p, stills / p.name)  # a few frames keep the test quick; copied to tmp only
    out = tmp_path / "fs"
    report = extract(str(stills), str(out), ExtractOptions(detector="dlib", landmarker="dlib", size=128))
    assert report.faces == 10
    ds = FaceSamples(out, 96, face_type="whole_face")
    plain = FaceSamples(out, 96, augment=False, warp=False)
    s, p = ds[(0, 0, 0, 0)], plain[0]
    assert s["input"].shape == (3, 96, 96) and 0.2 < float(p["mask"].mean()) < 0.8
    lm = p["landmarks"].numpy()
    w = p["weights"][0].numpy()
    for part in (range(36, 42), range(42, 48), range(48, 60)):
        cx, cy = np.round(lm[list(part)].mean(0)).astype(int)
        assert w[cy, cx] == pytest.approx(3.0)
    assert (w > 1).mean() < 0.15  # eyes and mouth only, not the whole face
    with pytest.raises(VfxSwapError, match="'whole_face'.*'full'"):
        FaceSamples(out, 96, face_type="full")
    with make_loader(ds, 8, workers=0) as it:
        next(it)
        t = time.perf_counter()
        b = next(it)
        assert b["input"].shape == (8, 3, 96, 96) and time.perf_counter() - t < 5


def test_default_workers_follow_the_cores_and_a_cgroup_quota(tmp_path, monkeypatch):
    from vfxswap.train import data

    quota = tmp_path / "cpu.max"
    quota.write_text("400000 100000\n")  # 4 cores' worth of CPU time
    monkeypatch.setattr(data.os, "sched_getaffinity", lambda pid: set(range(32)), raising=False)
    assert data.usable_cores(str(quota)) == 4
    quota.write_text("max 100000\n")
    assert data.usable_cores(str(quota)) == 32
    assert data.usable_cores(str(tmp_path / "absent")) == 32
    quota.write_text("150000 100000\n")
    assert data.usable_cores(str(quota)) == 2  # a part of a core counts as one
    monkeypatch.setattr(data, "usable_cores", lambda: 16)
    assert data.default_workers() == 7 and data.default_workers(2) == 3 and data.default_workers(16) == 1
    monkeypatch.setattr(data, "usable_cores", lambda: 64)
    assert data.default_workers() == 8
