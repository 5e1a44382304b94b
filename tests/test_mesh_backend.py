"""The `mesh` face backend (MediaPipe BlazeFace, Face Mesh and Iris in torch, weights shipped with
vfxswap), its tracking inside extraction, and faces filled in over short gaps of a track.

Real faces: the astronaut (skimage, public domain) and, where present, the shared 300-W HELEN
faces with their human landmarks."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import skimage.data

from vfxswap.faces import graphnet, mesh_backend, track
from vfxswap.faces.backends import load_detector, load_landmarker
from vfxswap.faces.extract import Extractor, extract
from vfxswap.faceset import Faceset
from vfxswap.faceset.tools import format_info, info
from vfxswap.jobspec import ExtractOptions, RenderOptions
from vfxswap.plates import Image, read_image, write_image
from vfxswap.render.render import render


@pytest.fixture(scope="module")
def astronaut():
    return skimage.data.astronaut()


@pytest.fixture(scope="module")
def dlib_face(astronaut):
    det, lm = load_detector("dlib"), load_landmarker("dlib")
    face = det.detect(astronaut, 0)[0]
    return face.box, lm.landmarks(astronaut, face.box, "dlib")


def _nme(points, truth):
    return float(np.linalg.norm(points - truth, axis=1).mean() / np.linalg.norm(truth[36] - truth[45]))


def test_the_shipped_graphs_are_what_the_converter_wrote_and_load_anywhere():
    for name in ("blazeface_full", "face_mesh", "iris"):
        spec = json.loads((mesh_backend.MODELS / f"{name}.json").read_text())
        assert spec["format"] == "vfxswap-graphnet" and spec["source"]["licence"] == "Apache-2.0"
        assert len(spec["source"]["sha256"]) == 64
    assert "Apache License" in (mesh_backend.MODELS / "LICENSE").read_text()
    assert "MediaPipe" in (mesh_backend.MODELS / "NOTICE").read_text()


def test_tensorflow_same_padding_puts_the_odd_pixel_after():
    assert graphnet._same_pad(192, 3, 2) == (0, 1)  # TensorFlow pads stride-2 3x3 convs only below/right
    assert graphnet._same_pad(96, 3, 1) == (1, 1)
    assert graphnet._same_pad(5, 2, 2) == (0, 1)


def test_depth_to_space_follows_tensorflow_order():
    import torch

    spec = {"format": "vfxswap-graphnet", "version": 1, "inputs": [0], "outputs": [1],
            "ops": [{"op": "depth_to_space", "in": [0], "out": 1, "block": 2}]}
    nhwc = np.arange(1 * 1 * 1 * 8, dtype=np.float32).reshape(1, 1, 1, 8)  # TF: out[i, j, c] = in[(i*2+j)*2 + c]
    (out,) = graphnet.GraphNet(spec, {})(torch.from_numpy(nhwc.transpose(0, 3, 1, 2).copy()))
    assert out.numpy()[0, :, :, 0].tolist() == [[0, 2], [4, 6]]
    assert out.numpy()[0, :, :, 1].tolist() == [[1, 3], [5, 7]]


def test_the_mesh_detector_finds_the_astronaut_with_her_eyes_where_dlib_puts_them(astronaut, dlib_face):
    box, truth = dlib_face
    found = load_detector("mesh").detect_raw(astronaut, 0)
    assert len(found) == 1
    mbox, keypoints, score = found[0]
    assert score > 0.8
    assert track.box_iou(mbox[None], np.asarray(box, np.float32)[None])[0, 0] > 0.5
    eyes = truth[36:42].mean(0), truth[42:48].mean(0)  # the subject's right eye (image left), then left
    iod = np.linalg.norm(eyes[1] - eyes[0])
    assert np.linalg.norm(keypoints[0] - eyes[0]) < 0.15 * iod and np.linalg.norm(keypoints[1] - eyes[1]) < 0.15 * iod


def test_tiles_find_a_face_too_small_for_the_whole_picture(astronaut):
    """A 960x540 working view with the astronaut's face about 31 px wide: the one 192 px input of
    the whole view shows it at 6 px and misses it; upsample 1 adds tiles that find it."""
    canvas = np.full((540, 960, 3), 90, np.uint8)
    canvas[300:450, 650:800] = cv2.resize(astronaut, (150, 150), interpolation=cv2.INTER_AREA)
    face = np.array([650 + 223 * 150 / 512, 300 + 118 * 150 / 512])  # where her face is, scaled with the tile

    def near(faces):
        return [f for f in faces if np.abs((f.box[:2] + f.box[2:]) / 2 - face).max() < 20]

    det = load_detector("mesh")
    assert near(det.detect(canvas, 0)) == []
    assert len(near(det.detect(canvas, 1))) == 1
    assert det.native_min_fraction * 960 > 31  # what the extractor is told: faces this small need tiles


def test_mesh_68_points_agree_with_dlib_and_come_with_478_dense_points(astronaut, dlib_face):
    box, truth = dlib_face
    lm = load_landmarker("mesh")
    points, dense, presence = lm.measure(astronaut, [box])[0]
    assert points.shape == (68, 2) and dense.shape == (478, 2) and presence > 0.9
    assert _nme(points, truth) < 0.05
    for eye, (outer, inner) in zip((468, 473), mesh_backend.EYES):  # each iris centre lies between its eye's corners
        a, b = dense[outer], dense[inner]
        t = np.dot(dense[eye] - a, b - a) / np.dot(b - a, b - a)
        d = dense[eye] - a
        off_line = abs((b - a)[0] * d[1] - (b - a)[1] * d[0]) / np.linalg.norm(b - a)
        assert 0.2 < t < 0.8 and off_line < 0.2 * np.linalg.norm(b - a)
    # any box convention: a box 20% too high and too big still lands on the face (re-fitted)
    w = box[2] - box[0]
    off = np.array([box[0] - 0.1 * w, box[1] - 0.3 * w, box[2] + 0.1 * w, box[3] - 0.1 * w])
    assert _nme(lm.landmarks(astronaut, off), truth) < 0.05


def test_the_traced_graph_gives_what_the_op_list_gives():
    import torch

    lm = load_landmarker("mesh")
    x = torch.rand(2, 3, 192, 192)
    traced = lm.mesh(x)
    assert lm.mesh._cache or not hasattr(torch.jit, "trace")  # traced where torch can (2.13 here)
    lm.mesh.trace = False
    try:
        eager = lm.mesh(x)
    finally:
        lm.mesh.trace = True
    for a, b in zip(traced, eager):
        assert torch.allclose(a, b, atol=1e-4)


def test_mesh_batches_faces_as_it_runs_them_alone(astronaut, dlib_face):
    box, _ = dlib_face
    wide = np.concatenate([astronaut, astronaut[:, ::-1]], axis=1)  # two faces, one mirrored
    mirrored = np.array([1024 - box[2], box[1], 1024 - box[0], box[3]])
    lm = load_landmarker("mesh")
    both = lm.measure(wide, [box, mirrored])
    alone = [lm.measure(wide, [b])[0] for b in (box, mirrored)]
    for (p, d, s), (p1, d1, s1) in zip(both, alone):
        assert np.abs(p - p1).max() < 1e-2 and np.abs(d - d1).max() < 1e-2


def test_tracking_follows_a_moved_face_without_a_detector(astronaut, dlib_face):
    box, _ = dlib_face
    lm = load_landmarker("mesh")
    points, dense, _ = lm.measure(astronaut, [box])[0]
    moved = np.roll(astronaut, (6, 9), axis=(0, 1))
    p2, d2, presence = lm.track(moved, [dense])[0]
    assert presence > 0.9
    assert np.abs((p2 - points).mean(0) - [9, 6]).max() < 1.0
    # a region with no face in it says so
    _, _, gone = lm.track(np.full_like(astronaut, 128), [dense])[0]
    assert gone < lm.min_presence


def test_mesh_landmarks_on_helen_are_close_to_the_human_ones(shared_file):
    """The 300-W HELEN test faces: the mesh's 68 points (from each face's human-point box) within
    a mean 6% of the inter-ocular distance of the human points (bench/faces.py has the figures)."""
    folder = shared_file("landmarks/helen_300w_dev")
    lm = load_landmarker("mesh")
    errors = []
    for jpg in sorted(folder.glob("*.jpg")):
        truth = np.loadtxt(jpg.with_suffix(".pts"), dtype=np.float32) - 1.0
        image = cv2.cvtColor(cv2.imread(str(jpg)), cv2.COLOR_BGR2RGB)
        box = np.concatenate([truth.min(0), truth.max(0)])
        errors.append(_nme(lm.landmarks(image, box), truth))
    assert len(errors) == 20 and np.mean(errors) < 0.06


def _astronaut_plates(root, frames):
    from vfxswap.color import ColorPipeline

    lin = ColorPipeline("sRGB Encoded Rec.709 (sRGB)").convert(
        skimage.data.astronaut().astype(np.float32) / 255.0, "sRGB Encoded Rec.709 (sRGB)", "ACEScg")
    for i in range(frames):
        img = Image.from_array(np.concatenate([np.roll(lin, 2 * i, axis=1), np.ones((512, 512, 1), np.float32)], 2))
        img.set_attribute("oiio:ColorSpace", "ACEScg")
        write_image(root / "plates" / f"plate.{1001 + i}.exr", img)
    return str(root / "plates" / "plate.####.exr")


def test_extraction_with_the_mesh_tracks_between_detections_and_stores_dense_points(tmp_path, monkeypatch):
    plates = _astronaut_plates(tmp_path, 6)
    calls = {"detect": 0, "track": 0}
    det_cls, lm_cls = mesh_backend.MeshDetector, mesh_backend.MeshLandmarker
    detect, follow = det_cls.detect, lm_cls.track
    monkeypatch.setattr(det_cls, "detect", lambda self, *a: calls.__setitem__("detect", calls["detect"] + 1) or detect(self, *a))
    monkeypatch.setattr(lm_cls, "track", lambda self, *a: calls.__setitem__("track", calls["track"] + 1) or follow(self, *a))
    extract(plates, str(tmp_path / "fs"), ExtractOptions(detector="mesh", landmarker="mesh", size=64, detect_every=4))
    assert calls == {"detect": 2, "track": 4}  # frames 1001 and 1005 detected, the others followed
    with Faceset(tmp_path / "fs") as fs:
        faces = sorted(fs.faces(), key=lambda f: f.frame)
    assert [f.frame for f in faces] == list(range(1001, 1007)) and {f.track_id for f in faces} == {0}
    assert all(f.dense.shape == (478, 2) and f.filled == 0 for f in faces)
    shift = np.array([f.landmarks_raw.mean(0)[0] for f in faces])
    assert np.abs(np.diff(shift) - 2.0).max() < 0.5  # the plate moves 2 px a frame; so do the points


def test_three_frames_lost_in_a_track_are_filled_and_rendered(tmp_path, monkeypatch, caplog):
    plates = _astronaut_plates(tmp_path, 10)
    lost = {1004, 1005, 1006}
    real = Extractor.detect_frame
    monkeypatch.setattr(Extractor, "detect_frame",
                        lambda self, source, frame, *a: [] if frame in lost else real(self, source, frame, *a))
    caplog.set_level("INFO", logger="vfxswap")
    extract(plates, str(tmp_path / "fs"), ExtractOptions(detector="dlib", landmarker="dlib", size=64))
    with Faceset(tmp_path / "fs") as fs:
        faces = sorted(fs.faces(), key=lambda f: f.frame)
    assert [f.frame for f in faces] == list(range(1001, 1011)) and {f.track_id for f in faces} == {0}
    filled = [f for f in faces if f.filled]
    assert [f.frame for f in filled] == sorted(lost) and all(f.image for f in filled)
    before, after = faces[2].landmarks, faces[6].landmarks  # frames 1003 and 1007 bracket the gap
    assert np.allclose(filled[1].landmarks, (before + after) / 2, atol=1e-3)
    assert any("3 face(s) filled in" in r.getMessage() for r in caplog.records)
    monkeypatch.undo()
    # extracting again keeps them (made again from the tracks, not twice)
    extract(plates, str(tmp_path / "fs"), ExtractOptions(detector="dlib", landmarker="dlib", size=64))
    with Faceset(tmp_path / "fs") as fs:
        assert sorted(f.frame for f in fs.faces() if f.filled) == sorted(lost) and len(fs.faces()) == 10
        assert "3 filled in over short track gaps" in format_info(info(fs))
    report = render(RenderOptions(model="passthrough", plates=plates, out=str(tmp_path / "out"),
                                  faceset=str(tmp_path / "fs"), resolution=64, color="none", mask="hull"))
    assert report.without_faces == []
    for frame in sorted(lost):
        alpha = read_image(tmp_path / "out" / f"face.{frame}.exr").pixels[..., 3]
        assert alpha.max() > 0.99 and (alpha > 0.5).sum() > 2000


def _turn_sequence():
    """bench/faces.py's synthetic head turn (the face warped about a vertical axis)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "faces.py"
    spec = importlib.util.spec_from_file_location("bench_faces", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_head_turning_from_minus_to_plus_60_degrees_keeps_one_track_where_dlib_loses_it(tmp_path, astronaut):
    faces = _turn_sequence()
    r0, r1, c0, c1 = faces.ASTRONAUT_CROP
    image = cv2.resize(astronaut[r0:r1, c0:c1], None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
    box = (np.array(faces.ASTRONAUT_BOX, np.float64) - [c0, r0, c0, r0]) * 2
    yaws = list(range(-60, 61, 4))
    (tmp_path / "turn").mkdir()
    for i, frame in enumerate(faces.turn_sequence(image, box, yaws)):
        cv2.imwrite(str(tmp_path / "turn" / f"turn.{1001 + i}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    found = {}
    for name in ("mesh", "dlib"):
        extract(str(tmp_path / "turn" / "turn.####.png"), str(tmp_path / name),
                ExtractOptions(detector=name, landmarker=name, size=64))
        with Faceset(tmp_path / name) as fs:
            found[name] = fs.faces()
    mesh = found["mesh"]
    assert sorted(f.frame for f in mesh) == list(range(1001, 1001 + len(yaws))) and {f.track_id for f in mesh} == {0}
    assert not any(f.filled for f in mesh)  # found in every frame, not filled in
    seen = {f.frame for f in found["dlib"] if not f.filled}
    lost = [y for i, y in enumerate(yaws) if 1001 + i not in seen]
    assert lost  # dlib's HOG loses the face towards +-60 (measured: +-56 and 60, with extraction's searches)
