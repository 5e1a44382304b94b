"""Face alignment: Umeyama, the mean face, face types, warps both ways and their round trip."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import dlib
import numpy as np
import pytest
import skimage.data

from vfxswap.errors import VfxSwapError
from vfxswap.faces import align
from vfxswap.faces.align import (FACE_TYPES, MEAN_FACE_68, MIRROR_68, alignment_matrix, face_box, invert,
                                 template_points, transform_points, umeyama, warp_to_aligned, warp_to_plate)


def similarity(angle: float, scale: float, tx: float, ty: float) -> np.ndarray:
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    return np.array([[c, -s, tx], [s, c, ty]])


@pytest.fixture(scope="module")
def astronaut():
    """(pixels (512, 512, 3) float32 0-1, dlib's 68 landmarks (68, 2)) of the NASA portrait."""
    # Found through the import system: face_recognition_models' __init__ imports pkg_resources.
    spec = importlib.util.find_spec("face_recognition_models")
    model = None
    if spec is not None and spec.submodule_search_locations:
        model = Path(list(spec.submodule_search_locations)[0]) / "models" / "shape_predictor_68_face_landmarks.dat"
    # face-recognition-models is a declared dependency: without its predictor this fails, never skips.
    assert model is not None and model.is_file(), "dlib's 68-point shape predictor (face-recognition-models) is missing"
    rgb = skimage.data.astronaut()  # public domain, ships inside scikit-image
    boxes, scores, _ = dlib.get_frontal_face_detector().run(rgb, 1)
    assert boxes, "no face found in the astronaut portrait"
    shape = dlib.shape_predictor(str(model))(rgb, boxes[int(np.argmax(scores))])
    landmarks = np.array([[p.x, p.y] for p in shape.parts()], np.float64)
    return rgb.astype(np.float32) / 255.0, landmarks


# --- Umeyama and matrices -------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_umeyama_recovers_a_known_similarity(seed):
    rng = np.random.default_rng(seed)
    src = rng.uniform(-200, 800, (30, 2))
    truth = similarity(rng.uniform(-np.pi, np.pi), rng.uniform(0.1, 10), *rng.uniform(-500, 500, 2))
    np.testing.assert_allclose(umeyama(src, transform_points(src, truth)), truth, rtol=0, atol=1e-9)


def test_umeyama_never_returns_a_reflection(rng):
    src = rng.normal(size=(20, 2))
    mirrored = src * [-1, 1]
    m = umeyama(src, mirrored)
    assert np.linalg.det(m[:, :2]) > 0


def test_umeyama_rejects_degenerate_points():
    with pytest.raises(ValueError):
        umeyama(np.ones((5, 2)), np.zeros((5, 2)))
    with pytest.raises(ValueError):
        umeyama(np.zeros((5, 2)), np.zeros((4, 2)))


def test_transform_points_through_invert_round_trips(rng):
    m = similarity(0.7, 3.2, 40.0, -12.5)
    m[0, 1] += 0.3  # invert handles any affine, not only similarities
    pts = rng.uniform(-1000, 1000, (50, 2))
    np.testing.assert_allclose(transform_points(transform_points(pts, m), invert(m)), pts, atol=1e-9)
    np.testing.assert_allclose(invert(m), cv2.invertAffineTransform(m), atol=1e-12)
    np.testing.assert_allclose(invert(invert(m)), m, atol=1e-12)


# --- The mean face and face types ----------------------------------------------------------


def test_mean_face_is_symmetric_level_and_normalised():
    assert MEAN_FACE_68.shape == (68, 2) and MEAN_FACE_68.dtype == np.float64
    assert not MEAN_FACE_68.flags.writeable
    np.testing.assert_array_equal(MIRROR_68[MIRROR_68], np.arange(68))  # a pairing
    np.testing.assert_array_equal(MEAN_FACE_68[MIRROR_68] * [-1, 1], MEAN_FACE_68)
    right_eye, left_eye = MEAN_FACE_68[36:42].mean(0), MEAN_FACE_68[42:48].mean(0)
    assert right_eye[1] == left_eye[1] and right_eye[0] < 0 < left_eye[0]
    assert MEAN_FACE_68[36, 1] == MEAN_FACE_68[45, 1]
    lo, hi = MEAN_FACE_68.min(0), MEAN_FACE_68.max(0)
    np.testing.assert_allclose((lo + hi) / 2, 0, atol=1e-4)
    assert (hi - lo).max() == pytest.approx(1.0)
    # Upright, in image axes: brows above eyes above nose tip above mouth above chin.
    ys = [MEAN_FACE_68[i, 1].mean() for i in (slice(17, 27), slice(36, 48), 30, slice(48, 68), 8)]
    assert ys == sorted(ys)


@pytest.mark.parametrize("name", list(FACE_TYPES))
@pytest.mark.parametrize("size", [64, 256, 1024])
def test_mean_face_placed_in_a_crop_aligns_to_identity(name, size):
    m = alignment_matrix(template_points(size, name), size, name)
    np.testing.assert_allclose(m, [[1, 0, 0], [0, 1, 0]], atol=1e-9)


def test_mean_face_placed_anywhere_gives_that_placement_inverted():
    placed = similarity(0.3, 0.5, 700.0, 200.0)  # crop -> plate: smaller, turned, moved
    plate_pts = transform_points(template_points(256, "full"), placed)
    np.testing.assert_allclose(alignment_matrix(plate_pts, 256, "full"), invert(placed), atol=1e-9)


def test_face_types_place_the_face_as_documented():
    size = 1000
    for name, ft in FACE_TYPES.items():
        pts = template_points(size, name)
        lo, hi = pts.min(0), pts.max(0)
        assert (hi - lo).max() == pytest.approx(ft.span * size)
        centre = (lo + hi) / 2
        np.testing.assert_allclose(centre, [(size - 1) / 2, (size - 1) / 2 + ft.offset * size], atol=1e-6)
        assert lo.min() > 0 and hi.max() < size - 1
    full, whole, head = (FACE_TYPES[k] for k in ("full", "whole_face", "head"))
    assert full.span > whole.span > head.span  # more margin
    assert full.offset == 0 < whole.offset and 0 < head.offset  # crop centre moves up the head


def test_unknown_face_type_is_a_user_error():
    with pytest.raises(VfxSwapError, match="whole_face"):
        alignment_matrix(template_points(256), 256, "wide")


# --- Warps ---------------------------------------------------------------------------------


def test_warp_follows_the_pixel_centre_convention():
    """A blob centred on plate point p lands, in the crop, centred on transform_points(p)."""
    h, w = 300, 400
    p = np.array([231.3, 117.8])
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    blob = np.exp(-((x - p[0]) ** 2 + (y - p[1]) ** 2) / (2 * 6.0**2)).astype(np.float32)
    m = similarity(0.4, 1.7, 0.0, 0.0)
    m[:, 2] = [121.4, 133.9] - m[:, :2] @ p  # p lands near the crop centre, off the pixel grid
    out = warp_to_aligned(blob, m, 256, interpolation=cv2.INTER_CUBIC)
    assert out.shape == (256, 256) and out.dtype == np.float32
    yy, xx = np.mgrid[0:256, 0:256]
    centroid = np.array([(out * xx).sum(), (out * yy).sum()]) / out.sum()
    np.testing.assert_allclose(centroid, transform_points(p[None], m)[0], atol=0.02)


def test_warp_keeps_float_values_and_handles_many_channels(rng):
    plate = rng.normal(0, 4, (60, 80, 7)).astype(np.float32)  # negatives and highlights
    plate[..., 3] += 1000.0
    m = similarity(0.2, 1.5, -10.0, 5.0)
    out = warp_to_aligned(plate, m, 48, interpolation=cv2.INTER_LINEAR)
    assert out.shape == (48, 48, 7) and out.dtype == np.float32
    for c in range(7):
        one = warp_to_aligned(plate[..., c:c + 1], m, 48, interpolation=cv2.INTER_LINEAR)
        assert one.shape == (48, 48, 1)
        # Each channel warped on its own gives the same values, to float32 rounding: OpenCV's SIMD
        # paths differ by channel count (an ulp here and there), which nothing promises to hide.
        # The tolerance is a few ulps of the channel's largest magnitude (an interpolated value's
        # rounding scales with its neighbours, not with itself): ~8e-6 for the N(0, 4) channels,
        # ~2.4e-4 for the one near 1000, while a channel mix-up would be off by units or ~1000.
        np.testing.assert_allclose(out[..., c], one[..., 0], rtol=0,
                                   atol=4 * np.spacing(np.abs(plate[..., c]).max()), err_msg=f"channel {c}")
    assert out[..., 3].min() > 900
    back = warp_to_plate(out, m, (60, 80), interpolation=cv2.INTER_LINEAR)
    assert back.shape == (60, 80, 7) and back.dtype == np.float32
    half = warp_to_aligned(plate.astype(np.float16), m, 48)
    assert half.dtype == np.float32
    with pytest.raises(ValueError):
        warp_to_aligned((plate * 0).astype(np.uint8), m, 48)


def test_face_box_holds_the_pasted_square():
    h, w = 400, 600
    placed = similarity(0.5, 1.25, 0.0, 0.0)  # crop -> plate, its centre on plate (300.3, 190.6)
    placed[:, 2] = [300.3, 190.6] - placed[:, :2] @ [63.5, 63.5]
    m = invert(placed)
    pasted = warp_to_plate(np.ones((128, 128, 1), np.float32), m, (h, w), interpolation=cv2.INTER_LINEAR)[..., 0]
    ys, xs = np.nonzero(pasted)
    x0, y0, x1, y1 = face_box(m, 128, (h, w))
    assert x0 <= xs.min() and xs.max() < x1 and y0 <= ys.min() and ys.max() < y1
    assert x1 - x0 <= xs.max() - xs.min() + 3 and y1 - y0 <= ys.max() - ys.min() + 3  # and is tight
    # Clipped to the plate, and empty when the square is off it.
    assert face_box(similarity(0, 0.1, 0, 0), 64, (h, w)) == (0, 0, w, h)
    x0, y0, x1, y1 = face_box(similarity(0, 1, 5000, 5000), 64, (h, w))
    assert x0 == x1 or y0 == y1


# --- A real face ---------------------------------------------------------------------------


def test_astronaut_landmarks_sit_on_the_template(astronaut):
    _, landmarks = astronaut
    for name in FACE_TYPES:
        for size in (256, 512):
            m = alignment_matrix(landmarks, size, name)
            got = transform_points(landmarks, m)
            err = np.linalg.norm(got - template_points(size, name), axis=1)
            face_side = FACE_TYPES[name].span * size
            # One real (broadly smiling) face against the mean one: measured 3% of the face's size
            # on the fitted points and over all 68; a bad fit or a wrong point order is 10%+.
            assert err[align.ALIGN_POINTS].mean() < 0.05 * face_side, (name, size)
            assert err.mean() < 0.05 * face_side, (name, size)
            # Upright: the eye line turns out level.
            eyes = got[42:48].mean(0) - got[36:42].mean(0)
            assert abs(np.degrees(np.arctan2(eyes[1], eyes[0]))) < 3


def test_plate_to_aligned_to_plate_round_trip_psnr(astronaut):
    """Plate -> aligned -> plate warp round trip of the face region: PSNR > 40 dB.

    The face region is the landmarks' convex hull eroded 3 px, inside the aligned square's
    footprint eroded 4 px, so neither the crop border nor the hull's edge is scored. Asserted
    when alignment upsamples (the crop resolves the face finer than the plate does); printed
    for every case.
    """
    plate, landmarks = astronaut
    h, w = plate.shape[:2]
    hull = np.zeros((h, w), np.uint8)
    cv2.fillConvexPoly(hull, cv2.convexHull(np.round(landmarks).astype(np.int32)), 1)
    hull = cv2.erode(hull, np.ones((7, 7), np.uint8)) > 0
    lines = []
    for size in (128, 256, 512):  # 128: head and whole_face downsample there, reported only
        for name in FACE_TYPES:
            m = alignment_matrix(landmarks, size, name)
            aligned = warp_to_aligned(plate, m, size)
            assert aligned.shape == (size, size, 3) and aligned.dtype == np.float32
            back = warp_to_plate(aligned, m, (h, w))
            footprint = warp_to_plate(np.ones((size, size, 1), np.float32), m, (h, w),
                                      interpolation=cv2.INTER_NEAREST)[..., 0]
            region = hull & (cv2.erode((footprint > 0).astype(np.uint8), np.ones((9, 9), np.uint8)) > 0)
            assert region.sum() > 2000
            mse = float(np.mean((back[region] - plate[region]) ** 2))
            psnr = 10 * np.log10(1.0 / max(mse, 1e-20))
            scale = float(np.sqrt(np.linalg.det(m[:, :2])))
            lines.append(f"{name:>10} @ {size}: scale {scale:.2f}, PSNR {psnr:.1f} dB over {int(region.sum())} px")
            if scale > 1:
                assert psnr > 40, lines[-1]
            else:
                lines[-1] += " (downsampling: not asserted)"
    print("\nround trip plate -> aligned -> plate (astronaut, Lanczos4):\n  " + "\n  ".join(lines))


def test_speech_does_not_move_the_crop():
    """Opening the mouth (lips apart by a fifth of the face, corners still) and raising the brows
    leaves the aligned crop where it was: the fit ignores lips and brows. Fitted on all 51 inner
    points, the same expression moved the crop's corners by 11.5% of its side."""
    face = template_points(400, "full") + np.array([300.0, 120.0])  # a face in plate pixels
    spoken = face.copy()
    lower = [55, 56, 57, 58, 59, 64, 65, 66, 67]
    upper = [49, 50, 51, 52, 53, 61, 62, 63]
    spoken[lower, 1] += 0.15 * 400
    spoken[upper, 1] -= 0.05 * 400
    spoken[17:27, 1] -= 0.04 * 400  # the brows rise with the voice
    corners = np.array([[-0.5, -0.5], [255.5, -0.5], [255.5, 255.5], [-0.5, 255.5]])
    still = transform_points(corners, invert(alignment_matrix(face, 256, "whole_face")))
    moved = transform_points(corners, invert(alignment_matrix(spoken, 256, "whole_face")))
    side = float(np.linalg.norm(still[1] - still[0]))
    shift = float(np.linalg.norm(moved - still, axis=1).max()) / side
    print(f"crop corner motion when the mouth opens: {100 * shift:.3f}% of the side")
    assert shift < 1e-6
