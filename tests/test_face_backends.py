"""Face detectors and landmarkers as separate registry entries: any detector's boxes into any
landmarker, `auto`, unknown names, and facesets recorded when the two were one "backend".
The astronaut (skimage, public domain), offline. face-alignment's networks run here with random
weights (its real ones are not on this machine): enough to check the plumbing against its own code."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import skimage.data

from vfxswap.errors import VfxSwapError
from vfxswap.faces import DETECTORS, LANDMARKERS, backends, weights
from vfxswap.faces.backends import load_detector, load_landmarker
from vfxswap.faces.extract import detection_settings, extract, recorded_settings
from vfxswap.faceset import Faceset
from vfxswap.jobspec import ExtractOptions
from vfxswap.plates import Image, write_image

OPTS = dict(detector="dlib", landmarker="dlib", size=64)


@pytest.fixture(scope="module")
def astronaut():
    return skimage.data.astronaut()


def _grown(box, by):
    w, h = box[2] - box[0], box[3] - box[1]
    return np.array([box[0] - by * w, box[1] - by * h, box[2] + by * w, box[3] + by * h])


def _inside(points, box):
    return bool(((points >= box[:2]) & (points <= box[2:])).all())


def test_hog_boxes_into_the_dlib_landmarker_land_on_the_face(astronaut):
    face = load_detector("dlib").detect(astronaut, 0)[0]
    assert face.score > 0.5 and 80 < face.box[2] - face.box[0] < 100  # her face is about 90 px
    points = load_landmarker("dlib").landmarks(astronaut, face.box, detector="dlib")
    assert points.shape == (68, 2) and points.dtype == np.float32
    assert _inside(points[17:68], face.box)  # brows, eyes, nose and mouth inside HOG's box
    assert _inside(points, _grown(face.box, 0.1))  # the jaw line and chin just around it
    eyes = points[36:42].mean(0), points[42:48].mean(0)
    assert eyes[0][0] < eyes[1][0] and abs(eyes[0][1] - eyes[1][1]) < 10  # her right eye on the left, level


def test_mmod_boxes_into_the_dlib_landmarker_match_hog_ones(astronaut):
    hog, mmod = load_detector("dlib").detect(astronaut, 0)[0], load_detector("dlib-cnn").detect(astronaut, 0)[0]
    assert np.abs(mmod.box - hog.box).max() > 5  # the two conventions differ: MMOD's box sits higher
    predictor = load_landmarker("dlib")
    ref = predictor.landmarks(astronaut, hog.box, detector="dlib")
    got = predictor.landmarks(astronaut, mmod.box, detector="dlib-cnn")
    err = np.linalg.norm(got - ref, axis=1)
    assert err.mean() < 1.5 and err.max() < 4  # pixels, inter-ocular distance ~44 px


def test_the_dlib_landmarker_refits_a_box_off_its_convention(astronaut):
    """A box well above HOG's (as S3FD's are: they take in the forehead) throws the regression
    trees off; re-fitted from the first points, the landmarks come back to the HOG ones."""
    predictor = load_landmarker("dlib")
    hog = load_detector("dlib").detect(astronaut, 0)[0].box
    ref = predictor.landmarks(astronaut, hog, detector="dlib")
    high = hog + np.array([0, -0.25, 0, -0.05]) * (hog[3] - hog[1])  # taller, reaching up the forehead
    as_is = predictor.landmarks(astronaut, high, detector="dlib")  # taken as if it were HOG's
    refit = predictor.landmarks(astronaut, high, detector="s3fd")
    assert np.linalg.norm(as_is - ref, axis=1).mean() > 2 * np.linalg.norm(refit - ref, axis=1).mean()
    assert np.linalg.norm(refit - ref, axis=1).mean() < 2


def test_unknown_names_are_one_line_naming_the_choices(tmp_path):
    with pytest.raises(VfxSwapError) as err:
        ExtractOptions(detector="nope").check()
    assert str(err.value) == "--detector nope: choose from auto, dlib, dlib-cnn, mesh, s3fd"
    with pytest.raises(VfxSwapError) as err:
        load_detector("nope")
    assert "\n" not in str(err.value) and "nope" in str(err.value)
    assert all(name in str(err.value) for name in DETECTORS)
    with pytest.raises(VfxSwapError, match="landmarker.*choose from dlib, mesh, fan"):
        load_landmarker("hog")


def test_auto_picks_the_mesh_and_without_it_face_alignment_only_when_its_weights_are_cached(tmp_path, monkeypatch,
                                                                                            caplog):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    monkeypatch.setenv("VFXSWAP_MODELS", str(tmp_path / "models"))
    caplog.set_level(logging.INFO, logger="vfxswap")
    assert backends.resolve("detector") == "mesh" and backends.resolve("landmarker") == "mesh"
    assert any("face detector: mesh" in r.getMessage() for r in caplog.records)
    monkeypatch.setattr(weights, "mesh_models_dir", lambda: tmp_path / "no-mesh-models")  # a broken install
    caplog.clear()
    assert backends.resolve("detector") == "dlib" and backends.resolve("landmarker") == "dlib"
    assert any("not mesh: missing blazeface_full.safetensors" in r.getMessage() for r in caplog.records)
    assert any("face detector: dlib" in r.getMessage() and "not s3fd" in r.getMessage() for r in caplog.records)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "s3fd-619a316812.pth").write_bytes(b"")  # only seen, never loaded here
    assert backends.resolve("detector") == "s3fd" and backends.resolve("landmarker") == "dlib"
    assert backends.status("landmarker")["fan"][0] is False and backends.status("detector")["s3fd"][0] is True
    (tmp_path / "models" / "2DFAN4-11f355bf06.pth.tar").write_bytes(b"")
    assert backends.resolve("landmarker") == "fan"


def test_detection_settings_record_both_and_read_old_records():
    class Named:
        def __init__(self, name, min_score=0.0):
            self.name, self.min_score = name, min_score

    want = detection_settings(ExtractOptions(**OPTS), Named("dlib"), Named("dlib"))
    assert want["detector"] == "dlib" and want["landmarker"] == "dlib" and "backend" not in want
    old = {k: v for k, v in want.items() if k not in ("detector", "landmarker")}
    assert recorded_settings({"backend": "dlib", **old}) == want
    assert recorded_settings({"backend": "dlib-cnn", **old})["detector"] == "dlib-cnn"
    assert recorded_settings({"backend": "fan", **old}) | {"min_score": 0.5} == detection_settings(
        ExtractOptions(detector="s3fd", landmarker="fan"), Named("s3fd", 0.5), Named("fan"))
    assert recorded_settings(None) is None and recorded_settings(want) == want


def _old_style(out: str, backend: str) -> None:
    """Write the source's detection record as the code before the split did: a "backend" key."""
    with Faceset(out) as fs:
        (source,) = fs.sources()
        had = fs.meta(f"detect:{source}")
        assert had["detector"] == "dlib" and had["landmarker"] == "dlib"
        fs.set_meta(f"detect:{source}", {"backend": backend, **{k: v for k, v in had.items()
                                                                 if k not in ("detector", "landmarker")}})
        fs.db.commit()


def test_a_faceset_recorded_with_a_backend_is_not_detected_again(tmp_path, astronaut, caplog):
    write_image(tmp_path / "a.png", Image.from_array(astronaut.astype(np.float32) / 255.0))
    out = str(tmp_path / "fs")
    assert extract(str(tmp_path / "a.png"), out, ExtractOptions(**OPTS)).faces == 1
    _old_style(out, "dlib")
    caplog.set_level(logging.WARNING, logger="vfxswap")
    same = extract(str(tmp_path / "a.png"), out, ExtractOptions(**OPTS))
    assert same.frames_skipped == 1 and same.frames_detected == 0 and same.faces == 1
    assert not [r for r in caplog.records if "detection settings changed" in r.getMessage()]
    with Faceset(out) as fs:  # the record is left as it was; make it say dlib-cnn
        (source,) = fs.sources()
        assert fs.meta(f"detect:{source}")["backend"] == "dlib"
        fs.set_meta(f"detect:{source}", dict(fs.meta(f"detect:{source}"), backend="dlib-cnn"))
        fs.db.commit()
    again = extract(str(tmp_path / "a.png"), out, ExtractOptions(**OPTS))  # dlib-cnn then, HOG now
    assert again.frames_detected == 1 and again.faces == 1
    (line,) = [r.getMessage() for r in caplog.records if "detection settings changed" in r.getMessage()]
    assert "detector 'dlib-cnn' -> 'dlib'" in line and "landmarker" not in line


def test_mmod_detector_with_the_dlib_landmarker_extracts(tmp_path, astronaut):
    write_image(tmp_path / "a.png", Image.from_array(astronaut.astype(np.float32) / 255.0))
    hog = extract(str(tmp_path / "a.png"), str(tmp_path / "hog"), ExtractOptions(**OPTS))
    cnn = extract(str(tmp_path / "a.png"), str(tmp_path / "cnn"),
                  ExtractOptions(detector="dlib-cnn", landmarker="dlib", size=64))
    assert hog.faces == cnn.faces == 1
    with Faceset(tmp_path / "hog") as a, Faceset(tmp_path / "cnn") as b:
        (fa,), (fb,) = a.faces(), b.faces()
        assert np.abs(fa.landmarks_raw - fb.landmarks_raw).mean() < 1.5


# --- face-alignment's pieces, with random weights -------------------------------------------


@pytest.fixture(scope="module")
def fan_weights(tmp_path_factory):
    """A folder with face-alignment's weight files holding random (seeded) weights."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("face_alignment")
    from face_alignment.detection.sfd.net_s3fd import s3fd
    from face_alignment.models import FAN

    folder = tmp_path_factory.mktemp("fan_models")
    torch.manual_seed(0)
    torch.save(s3fd().state_dict(), folder / "s3fd-619a316812.pth")
    torch.save(FAN(4).state_dict(), folder / "2DFAN4-11f355bf06.pth.tar")
    return folder


def test_fan_landmarker_matches_face_alignment_for_one_box(fan_weights, monkeypatch, astronaut):
    """FanLandmarker runs 2D-FAN on one box as FaceAlignment.get_landmarks_from_image does."""
    import torch
    from face_alignment import FaceAlignment, LandmarksType

    from vfxswap.faces.fan_backend import FanLandmarker

    monkeypatch.setenv("VFXSWAP_MODELS", str(fan_weights))
    fan = FanLandmarker("cpu")
    reference = FaceAlignment.__new__(FaceAlignment)  # its own code, with the same network
    reference.face_detector = type("S3fd", (), {"reference_scale": 195})()
    reference.face_alignment_net, reference.flip_input, reference.device = fan.net, True, "cpu"
    reference.dtype, reference.landmarks_type, reference.max_batch_size = torch.float32, LandmarksType.TWO_D, 1
    crop = np.ascontiguousarray(astronaut[40:240, 140:320])
    for box in (np.array([39.0, 43.0, 127.0, 131.0], np.float32), np.array([30.5, 20.0, 130.0, 140.0], np.float32)):
        want = reference.get_landmarks_from_image(crop, detected_faces=[[*map(float, box), 1.0]])[0][:, :2]
        got = fan.landmarks(crop, box, detector="dlib")
        assert got.shape == (68, 2) and got.dtype == np.float32
        np.testing.assert_allclose(got, want, atol=1e-4)


def test_s3fd_detector_and_the_fan_landmarker_load_and_compose(fan_weights, monkeypatch, astronaut):
    from face_alignment.detection.sfd.sfd_detector import SFDDetector

    monkeypatch.setenv("VFXSWAP_MODELS", str(fan_weights))
    detector, landmarker = DETECTORS.get("s3fd")("cpu"), LANDMARKERS.get("fan")("cpu")
    assert detector.native_min_face is None and detector.min_score == 0.5
    small = np.ascontiguousarray(astronaut[::4, ::4])
    faces = detector.detect(small, 2)
    raw = SFDDetector("cpu", path_to_detector=str(fan_weights / "s3fd-619a316812.pth"), filter_threshold=0.1)
    assert len(faces) == len(raw.detect_from_image(small.copy()))  # RGB in, as face-alignment's api gives it
    assert [f.score for f in faces] == sorted((f.score for f in faces), reverse=True)
    box = faces[0].box if faces else np.array([44.0, 20.0, 68.0, 44.0], np.float32)
    for points in (landmarker.landmarks(small, box, detector="s3fd"),
                   load_landmarker("dlib").landmarks(small, box, detector="s3fd")):  # S3FD boxes into dlib's
        assert points.shape == (68, 2) and np.isfinite(points).all()
