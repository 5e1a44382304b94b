"""The segmentation masker (issue 17): labels as mattes, the network's files, apply's resume, the
mattes in training and render, and the acceptance figures against FaceSynthetics' ground truth."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import need_shared, write_faceset
from vfxswap.errors import VfxSwapError
from vfxswap.faceset import Faceset
from vfxswap.masks.labels import fill_polygons, label_matte, polygon, read_matte, write_matte

ROOT = Path(__file__).resolve().parent.parent


def _bench_masks():
    spec = importlib.util.spec_from_file_location("bench_masks", ROOT / "bench" / "masks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- labels -----------------------------------------------------------------------------------


def test_polygons_paint_in_drawing_order_with_exact_areas():
    square = polygon("include", [[10, 10], [50, 10], [50, 50], [10, 50]])
    hole = polygon("exclude", [[20, 20], [30, 20], [30, 30], [20, 30]])
    back = polygon("include", [[24, 24], [26, 24], [26, 26], [24, 26]])
    m = fill_polygons([square], 64)
    assert m.dtype == np.float32 and m.min() == 0 and m.max() == 1
    assert m.sum() == pytest.approx(40 * 40, rel=0.02)  # pixel centres at integers: 10..50 spans 40 px
    assert fill_polygons([square, hole], 64).sum() == pytest.approx(40 * 40 - 10 * 10, rel=0.02)
    assert fill_polygons([square, hole, back], 64).sum() == pytest.approx(40 * 40 - 10 * 10 + 4, rel=0.02)
    assert fill_polygons([hole, square], 64).sum() == pytest.approx(40 * 40, rel=0.02)  # order matters
    soft = ((m > 0) & (m < 1)).sum()
    diagonal = fill_polygons([polygon("include", [[5, 5], [60, 20], [20, 58]])], 64)
    assert ((diagonal > 0.05) & (diagonal < 0.95)).sum() > soft  # antialiased edges
    with pytest.raises(VfxSwapError, match="at least 3"):
        polygon("include", [[0, 0], [1, 1]])
    with pytest.raises(VfxSwapError, match="include or exclude"):
        polygon("cut", [[0, 0], [1, 1], [2, 0]])


def test_an_exclusion_alone_cuts_into_the_hull_and_an_imported_matte_is_the_base(tmp_path):
    hull = np.zeros((32, 32), np.float32)
    hull[4:28, 4:28] = 1
    cut = {"polygons": [polygon("exclude", [[-1, -1], [32, -1], [32, 9.5], [-1, 9.5]])]}  # rows 0-9 whole
    m = label_matte(cut, 32, folder=tmp_path, hull=hull)
    assert m[15:28, 4:28].min() == 1 and m[:10].max() == 0  # the hull, less the cut
    imported = np.full((32, 32), 0.25, np.float32)
    write_matte(tmp_path / "m.label.exr", imported)
    both = label_matte({**cut, "matte": "m.label.exr"}, 32, folder=tmp_path, hull=hull)
    assert both[20, 2] == pytest.approx(0.25, abs=1e-3) and both[:10].max() == 0
    assert read_matte(tmp_path / "m.label.exr", 32).shape == (32, 32)
    with pytest.raises(VfxSwapError, match="the faceset's faces are 64"):
        read_matte(tmp_path / "m.label.exr", 64)


# --- the masker's files, apply's resume ---------------------------------------------------------


def _labelled_faceset(folder, size=64):
    """A synthetic faceset with one face labelled: its hull less a bar across the eyes."""
    write_faceset(folder, size=size)
    with Faceset(folder) as fs:
        first = fs.faces()[0]
        fs.set_labels({first.id: {"polygons": [polygon("exclude", [[0, 20], [64, 20], [64, 28], [0, 28]])],
                                  "origin": "editor"}})
    return folder


def test_a_masker_trains_saves_loads_and_applies_resumably(tmp_path, monkeypatch):
    from vfxswap.masks import seg as segmod

    faceset = _labelled_faceset(tmp_path / "fs")
    events = []
    config = segmod.train_masker([faceset], tmp_path / "masker", iters=3, batch=2, resolution=64, device="cpu",
                                 emit=events.append)
    assert [e["event"] for e in events][0] == "start" and events[-1]["event"] == "done"
    assert events[0]["labelled"] == 1 and events[0]["faces"] == 12
    saved = json.loads((tmp_path / "masker" / "masker.json").read_text())
    assert saved["id"] == config.id and len(config.id) == 16 and saved["labelled"] == 1 and saved["hull_only"] == 11
    assert saved["face_type"] == "whole_face" and saved["resolution"] == 64 and saved["format"] == "vfxswap-masker/1"
    assert not list((tmp_path / "masker").glob("*.pkl")) and not list((tmp_path / "masker").glob("*.pt"))

    seg = segmod.Segmenter(tmp_path / "masker", "cpu")
    faces = np.random.default_rng(0).uniform(0, 1, (3, 64, 64, 3)).astype(np.float32)
    from vfxswap.faces.align import template_points

    out = seg.predict(faces, np.stack([template_points(64, "whole_face")] * 3))
    assert out.shape == (3, 64, 64) and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1

    # interrupted after the first batch: what was written is recorded, the rest is done on rerun
    from vfxswap.masks import labels as labelmod

    real_write, calls = labelmod.write_matte, []

    def failing(path, matte, **attrs):
        calls.append(path)
        if len(calls) > 4:
            raise KeyboardInterrupt
        return real_write(path, matte, **attrs)

    monkeypatch.setattr(labelmod, "write_matte", failing)
    with pytest.raises(KeyboardInterrupt):
        segmod.apply_masker(faceset, tmp_path / "masker", device="cpu", batch=4)
    monkeypatch.undo()
    with Faceset(faceset) as fs:
        assert sum(r.seg is not None for r in fs.faces()) == 4
    events = []
    done = segmod.apply_masker(faceset, tmp_path / "masker", device="cpu", batch=4, emit=events.append)
    assert done == {"applied": 8, "skipped": 4, "id": config.id}
    with Faceset(faceset) as fs:
        rows = fs.faces()
        assert all(r.seg_model == config.id for r in rows)
        assert fs.meta("masker")["id"] == config.id
        matte = read_matte(fs.folder / rows[0].seg, 64)
        assert matte.shape == (64, 64) and 0 <= matte.min() and matte.max() <= 1
    assert segmod.apply_masker(faceset, tmp_path / "masker", device="cpu")["applied"] == 0
    assert segmod.apply_masker(faceset, tmp_path / "masker", device="cpu", redo=True)["applied"] == 12


def test_a_masker_folder_that_is_not_whole_is_refused_in_one_line(tmp_path):
    from vfxswap.masks.seg import Segmenter, train_masker

    faceset = _labelled_faceset(tmp_path / "fs")
    train_masker([faceset], tmp_path / "m", iters=1, batch=2, resolution=64, device="cpu")
    weights = tmp_path / "m" / "masker.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 0xFF
    weights.write_bytes(bytes(blob))
    with pytest.raises(VfxSwapError, match="does not match masker.json"):
        Segmenter(tmp_path / "m", "cpu")
    with pytest.raises(VfxSwapError, match="not a masker folder"):
        Segmenter(tmp_path, "cpu")
    cli = subprocess.run([sys.executable, "-m", "vfxswap", "masks", "apply", "--faceset", str(faceset), "--model",
                          str(tmp_path / "nothing")], capture_output=True, text=True, timeout=300)
    assert cli.returncode == 1 and cli.stderr.strip().count("\n") == 0 and "not a masker folder" in cli.stderr


# --- the mattes in training ---------------------------------------------------------------------------


def test_training_samples_follow_the_segmentation_matte_when_asked_or_when_every_face_has_one(tmp_path):
    from vfxswap.train.data import FaceSamples, mask_kind_for

    faceset = write_faceset(tmp_path / "fs")
    assert mask_kind_for(faceset, "auto") == "extended" and mask_kind_for(faceset, "hull") == "extended"
    with pytest.raises(VfxSwapError, match="12 of 12 face"):
        FaceSamples(faceset, 64, mask_kind="seg")
    with Faceset(faceset) as fs:
        rows = fs.faces()
        for i, row in enumerate(rows):
            matte = np.zeros((64, 64), np.float32)
            matte[10 + i:40, 12:50] = 1
            row.seg = fs.matte_path(row, "seg")
            write_matte(fs.folder / row.seg, matte)
        fs.update_faces(rows, ["seg"])
    assert mask_kind_for(faceset, "auto") == "seg"
    ds = FaceSamples(faceset, 64, mask_kind="seg", augment=False, warp=False, flip=False)
    for i in (0, 5):
        mask = ds[i]["mask"][0].numpy()
        assert mask[10 + i:40, 12:50].min() == 1 and mask.sum() == pytest.approx((30 - i) * 38, abs=0.5)
    ds = FaceSamples(faceset, 32, mask_kind="seg", augment=False, warp=False, flip=False)  # resized with the face
    assert ds[0]["mask"].shape == (1, 32, 32) and ds[0]["mask"].sum() == pytest.approx(30 * 38 / 4, rel=0.05)


# --- render: occluders kept out of the layer ---------------------------------------------------------


def _bar_over(px: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A dark microphone-like bar pasted across a face's cheek and mouth: (plate, coverage)."""
    import cv2

    h, w = px.shape[:2]
    ss = 4
    a = points[4] * ss
    b = (points[35] + (points[35] - points[4]) * 0.6) * ss
    d = (b - a) / np.hypot(*(b - a))
    n = np.array([-d[1], d[0]]) * ss * 0.09 * np.hypot(*(points[16] - points[0]))
    fine = np.zeros((h * ss, w * ss), np.uint8)
    poly = np.array([a - n - d * 100 * ss, b - n, b + n, a + n - d * 100 * ss]) + (ss - 1) / 2
    cv2.fillPoly(fine, [np.round(poly * 16).astype(np.int32)], 255, shift=4)
    cover = cv2.resize(fine, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    shade = (0.02 + 0.05 * np.linspace(0, 1, h, dtype=np.float32))[:, None, None] * np.array([1.0, 0.95, 0.9], np.float32)
    out = px.copy()
    out[..., :3] = px[..., :3] * (1 - cover[..., None]) + shade * cover[..., None]
    return out, cover


@pytest.fixture(scope="module")
def occluded_grid(shared_data, tmp_path_factory):
    """GRID frames (a speaker), clean and with a bar across the face; their facesets; a masker
    trained on the clean faces alone (no labels: hulls and pasted occluders)."""
    from vfxswap.faces.extract import extract
    from vfxswap.jobspec import ExtractOptions
    from vfxswap.masks.seg import train_masker
    from vfxswap.plates import Image, read_image, write_image
    from vfxswap.plates.convert import convert

    movie = shared_data / "videos" / "grid" / "bbaf2n.mpg"
    if not movie.exists():
        need_shared(f"no GRID clip at {movie}")
    root = tmp_path_factory.mktemp("occluded")
    convert(str(movie), str(root / "clean" / "p.####.exr"), frames="1001-1006")
    extract(str(root / "clean" / "p.####.exr"), str(root / "fs_clean"), ExtractOptions(size=128))
    with Faceset(root / "fs_clean") as fs:
        points = {r.frame: r.landmarks for r in fs.faces()}
    covers = {}
    for frame in range(1001, 1007):
        plate = read_image(root / "clean" / f"p.{frame}.exr")
        px, covers[frame] = _bar_over(plate.pixels, points[frame])
        write_image(root / "occluded" / f"p.{frame}.exr",
                    Image.from_array(px, plate.channels, display_window=plate.display_window,
                                     attributes=plate.attributes))
    extract(str(root / "occluded" / "p.####.exr"), str(root / "fs_occluded"), ExtractOptions(size=128))
    train_masker([root / "fs_clean"], root / "masker", iters=400, resolution=128, device="cpu")
    return root, covers


def test_a_seg_render_keeps_an_occluder_out_of_the_layer_where_the_hull_does_not(occluded_grid):
    import cv2

    from vfxswap.jobspec import RenderOptions
    from vfxswap.masks.hull import hull_mask
    from vfxswap.plates import read_image
    from vfxswap.render.render import render

    root, covers = occluded_grid
    with Faceset(root / "fs_occluded") as fs:
        points = {r.frame: r.landmarks for r in fs.faces()}
    over = {}
    for mask in ("seg", "hull"):
        out = root / f"render_{mask}"
        report = render(RenderOptions(model="passthrough", plates=str(root / "occluded" / "p.####.exr"),
                                      faceset=str(root / "fs_occluded"), out=str(out), mask=mask,
                                      mask_model=str(root / "masker"), resolution=128, layers=True))
        assert report.written == list(range(1001, 1007)) and not report.without_faces
        values, face = [], []
        for frame in report.written:
            alpha = read_image(out / f"face.{frame}.exr").on_display_window()[..., 3]
            inside = hull_mask(points[frame], alpha.shape, "extended") > 0.99
            values.append(alpha[(covers[frame] > 0.99) & inside])
            # the face itself: the parts' hull (no forehead, where his fringe rightly leaves the matte)
            inside = hull_mask(points[frame], alpha.shape, "components") > 0.99
            away = cv2.dilate((covers[frame] > 0.01).astype(np.uint8), np.ones((9, 9), np.uint8)) == 0
            face.append(alpha[away & inside])
        face = np.concatenate(face)
        over[mask] = (float(np.concatenate(values).mean()), float(np.percentile(np.concatenate(values), 95)),
                      float(face.mean()), float(np.median(face)))
    print("alpha over the occluder (mean, 95th percentile) and over the rest of the face:", over)
    assert over["hull"][0] > 0.95  # the hull keeps the bar in the layer
    assert over["seg"][0] < 0.05 and over["seg"][1] < 0.2  # the segmentation matte keeps it out
    # and still holds the face around it. Measured 0.81 (median 0.91): trained here on 6 faces with
    # no label at all, it also leaves out the open mouth and the pupils (dark, like the blobs it
    # learned as occluders): labelled faces are what teach it those are face.
    assert over["seg"][2] > 0.75 and over["seg"][3] > 0.85


def test_the_seg_matte_is_steady_on_a_still_face(occluded_grid):
    """Frame-to-frame change of the layer's alpha on a speaker who holds still (GRID), inside the
    face: the masker's matte must not shimmer more than the landmark hull does."""
    from vfxswap.jobspec import RenderOptions
    from vfxswap.plates import read_image
    from vfxswap.render.render import render

    root, _ = occluded_grid
    change = {}
    for mask in ("seg", "hull"):
        out = root / f"still_{mask}"
        render(RenderOptions(model="passthrough", plates=str(root / "clean" / "p.####.exr"),
                             faceset=str(root / "fs_clean"), out=str(out), mask=mask,
                             mask_model=str(root / "masker"), resolution=128))
        alphas = [read_image(out / f"face.{f}.exr").on_display_window()[..., 3] for f in range(1001, 1007)]
        steps = [np.abs(b - a)[(a > 0.01) | (b > 0.01)].mean() for a, b in zip(alphas, alphas[1:])]
        change[mask] = float(np.mean(steps))
    print("mean |alpha change| a frame inside the face:", change)
    assert change["seg"] < 0.03 and change["seg"] < 2.0 * change["hull"]


def test_the_masks_commands_report_progress_as_json_and_info_reads_the_folder(tmp_path):
    faceset = _labelled_faceset(tmp_path / "fs")
    run = lambda *args: subprocess.run([sys.executable, "-m", "vfxswap", *map(str, args)], capture_output=True,
                                       text=True, timeout=600)
    train = run("masks", "train", "--faceset", faceset, "--model", tmp_path / "m", "--iters", 20, "--batch", 2,
                "--resolution", 64, "--device", "cpu", "--progress", "json")
    assert train.returncode == 0, train.stderr
    events = [json.loads(line) for line in train.stdout.splitlines()]
    assert events[0] == {"event": "start", "total": 20, "labelled": 1, "faces": 12}
    assert [e["done"] for e in events if e["event"] == "progress"] == [10, 20] and events[-1]["event"] == "done"
    apply = run("masks", "apply", "--faceset", faceset, "--model", tmp_path / "m", "--device", "cpu")
    assert apply.returncode == 0 and "12 matte(s) made, 0 already made" in apply.stdout
    info = json.loads(run("masks", "info", tmp_path / "m", "--json").stdout)
    assert info["iterations"] == 20 and info["labelled"] == 1 and info["resolution"] == 64 and info["bytes"] > 10_000
    shown = run("faceset", "info", faceset).stdout
    assert f"1 labelled, 12 with a segmentation matte (masker {info['id']})" in shown
    bad = run("masks", "train", "--faceset", faceset, "--model", tmp_path / "m2", "--resolution", 100)
    assert bad.returncode == 1 and "--resolution 100: must be a multiple of 16" in bad.stderr


# --- against ground truth ---------------------------------------------------------------------------


def test_the_masker_beats_the_hull_on_facesynthetics_held_out_faces(shared_data, tmp_path):
    """bench/masks.py at a CI-sized budget: 10 renders labelled from their class maps (as drawn),
    the masker applied to the other 10, IoU in plate space against their ground truth. The
    note's figures come from the bench's own budget (1500 iterations)."""
    bench = _bench_masks()
    if not bench.renders(shared_data):
        need_shared(f"no FaceSynthetics renders in {shared_data / bench.FOLDER}")
    res = bench.run(tmp_path, iters=600, resolution=128, seed=0, shared=shared_data)
    print({k: v for k, v in res.items() if k != "per_render"})
    assert res["labelled_faces"] == 10 and res["held_out_found"] >= 9
    assert res["labelled_iou_seg"] > 0.88  # it learned what it was shown
    assert res["held_iou_seg"] > res["held_iou_hull"] + 0.03  # and it carries over to faces it never saw
    assert res["held_iou_glasses_box"] >= res["held_iou_glasses_box_hull"] - 0.02
