"""Face tracks and landmark smoothing on synthetic faces (no detector, no real footage)."""

from __future__ import annotations

import numpy as np
import pytest

from vfxswap.faces.track import (FILL_MAX_GAP, Detection, assign_tracks, box_iou, face_size, fill_gaps, jitter, lag,
                                 sampling_step, smooth_detections, smooth_track)


def synthetic_face(size: float = 200.0) -> np.ndarray:
    """A plausible (68, 2) iBUG-ordered face drawn from simple curves, centred on 0, about
    `size` pixels wide: jaw arc, brows, nose bridge and base, two eyes, two mouth rings."""
    a = np.pi * (1 - np.linspace(0, 1, 17))
    jaw = np.stack([0.5 * np.cos(a), 0.05 + 0.55 * np.sin(a)], -1)
    u = np.linspace(-1, 1, 5)
    brow_l = np.stack([-0.22 + 0.12 * u, -0.27 + 0.04 * u ** 2], -1)
    brow_r = (brow_l * [-1, 1])[::-1]
    bridge = np.stack([np.zeros(4), np.linspace(-0.15, 0.1, 4)], -1)
    base = np.stack([0.1 * u, np.full(5, 0.17)], -1)

    def ring(n, rx, ry, cx, cy):
        th = np.linspace(np.pi, -np.pi, n, endpoint=False)
        return np.stack([cx + rx * np.cos(th), cy + ry * np.sin(th)], -1)

    pts = np.concatenate([jaw, brow_l, brow_r, bridge, base, ring(6, 0.08, 0.035, -0.2, -0.1),
                          ring(6, 0.08, 0.035, 0.2, -0.1), ring(12, 0.2, 0.08, 0, 0.35), ring(8, 0.13, 0.03, 0, 0.35)])
    return pts * size


FACE = synthetic_face()


def noisy(points: np.ndarray, rng, fraction: float = 0.01) -> np.ndarray:
    """Gaussian jitter of `fraction` of the face size per axis, frame by frame."""
    return points + rng.normal(size=points.shape) * fraction * face_size(points)[:, None, None]


def wandering_face(n: int = 120) -> np.ndarray:
    """Smooth motion: a face sweeping across frame (sinusoids) while zooming by +-20%."""
    t = np.arange(n)
    scale = 1 + 0.2 * np.sin(2 * np.pi * t / 90)
    offset = np.stack([960 + 100 * np.sin(2 * np.pi * t / 60), 540 + 40 * np.cos(2 * np.pi * t / 45)], -1)
    return FACE[None] * scale[:, None, None] + offset[:, None]


def head_turn(n: int = 60, at: int = 30) -> np.ndarray:
    """A fast real move: within 3 frames the head yaws 40 degrees and shifts 60 px."""
    w = np.clip((np.arange(n) - at) / 3, 0, 1)
    squash = np.stack([np.cos(np.deg2rad(40) * w), np.ones(n)], -1)
    return FACE[None] * squash[:, None] + np.stack([960 + 60 * w, np.full(n, 540.0)], -1)[:, None]


# --- measures ----------------------------------------------------------------------------

def test_face_size_is_box_geometric_mean():
    w, h = np.ptp(FACE, axis=0)
    assert face_size(FACE) == pytest.approx(np.sqrt(w * h))
    assert face_size(np.stack([FACE, 2 * FACE])).tolist() == pytest.approx([np.sqrt(w * h), 2 * np.sqrt(w * h)])


def test_jitter_of_white_noise_and_of_smooth_motion(rng):
    still = np.repeat(FACE[None] + 500, 200, axis=0)
    size = face_size(still)
    # White noise of sigma per axis: |difference of two 2-D draws| averages sqrt(pi) * sigma.
    assert jitter(noisy(still, rng), size) == pytest.approx(np.sqrt(np.pi) * 0.01, rel=0.1)
    smooth = wandering_face()
    assert jitter(smooth, face_size(smooth)) < 0.001
    assert jitter(still[:4], size[:4]) == 0.0  # too short to tell shake from motion
    assert jitter(noisy(still[:7], rng), size[:7]) > 0.005


def test_lag_is_mean_distance_over_face_size():
    a = np.repeat(FACE[None], 4, axis=0)
    size = face_size(a)
    shifted = a + [3.0, 4.0]  # 5 px everywhere
    assert lag(shifted, a, size) == pytest.approx(5.0 / size[0])


# --- tracking ----------------------------------------------------------------------------

def detection(frame, cx, cy, embedding=None, index=0, size=100.0) -> Detection:
    box = np.array([cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2])
    return Detection(frame, box, FACE * size / 200 + [cx, cy], embedding, index=index)


def identity(rng, n: int = 3) -> list[np.ndarray]:
    """n unit embeddings far apart (random 128-d unit vectors are ~1.4 apart)."""
    return [e / np.linalg.norm(e) for e in rng.normal(size=(n, 128))]


def near(embedding, rng, spread: float = 0.02) -> np.ndarray:
    """The same person seen again: a small change (distance ~0.2)."""
    return embedding + rng.normal(size=128) * spread


def test_box_iou():
    others = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 0, 0]])
    iou = box_iou(np.array([[0, 0, 10, 10]]), others)
    assert iou.shape == (1, 4) and iou[0].tolist() == pytest.approx([1.0, 1 / 3, 0.0, 0.0])


@pytest.mark.parametrize("with_embeddings", [False, True])
def test_crossing_faces_keep_their_ids(rng, with_embeddings):
    ea, eb, _ = identity(rng)
    dets, who = [], []
    for f in range(21):
        a = detection(1001 + f, 100 + 20 * f, 500, near(ea, rng) if with_embeddings else None, index=f % 2)
        b = detection(1001 + f, 500 - 20 * f, 540, near(eb, rng) if with_embeddings else None, index=1 - f % 2)
        dets += [a, b]
        who += ["a", "b"]
    ids = assign_tracks(dets)
    assert {i for i, w in zip(ids, who) if w == "a"} == {0}
    assert {i for i, w in zip(ids, who) if w == "b"} == {1}


def test_faces_cross_with_the_same_box_embeddings_decide(rng):
    # Both faces are at the very same place on frame 5: the boxes cannot tell them apart.
    ea, eb, _ = identity(rng)
    dets, who = [], []
    for f in range(11):
        dets += [detection(f, 300 + 10 * (f - 5), 300, near(ea, rng), index=1),
                 detection(f, 300 - 10 * (f - 5), 300, near(eb, rng), index=0)]
        who += ["a", "b"]
    ids = assign_tracks(dets)
    assert len({i for i, w in zip(ids, who) if w == "a"}) == 1
    assert len({i for i, w in zip(ids, who) if w == "b"}) == 1
    assert ids[0] != ids[1]


def occlusion(rng, returning_embedding, gap: int = 3, place=(800, 300)):
    """Face A seen frames 0-9, hidden for `gap` frames, back at `place`; B in view all along."""
    ea, eb, other = identity(rng)  # `other`: one person, who steps in if not A
    dets, tags = [], []
    for f in range(20):
        dets.append(detection(f, 200, 500, near(eb, rng), index=0))
        tags.append("b")
        if f < 10:
            dets.append(detection(f, 500, 300, near(ea, rng), index=1))
            tags.append("a")
        elif f >= 10 + gap:
            emb = near(ea if returning_embedding == "same" else other, rng)
            dets.append(detection(f, *place, emb, index=1))
            tags.append("back")
    return dets, tags


def ids_of(ids, tags, tag):
    return {i for i, t in zip(ids, tags) if t == tag}


def test_face_back_after_occlusion_gets_its_old_id(rng):
    dets, tags = occlusion(rng, "same")  # back far from where it was: only the embedding can tell
    ids = assign_tracks(dets)
    assert ids_of(ids, tags, "a") == ids_of(ids, tags, "back") == {1}
    assert ids_of(ids, tags, "b") == {0}


@pytest.mark.parametrize("place", [(800, 300), (500, 300)])
def test_different_face_after_occlusion_gets_a_new_id(rng, place):
    # (500, 300) is exactly where A was: the box overlaps, the embedding says someone else.
    dets, tags = occlusion(rng, "other", place=place)
    ids = assign_tracks(dets)
    assert ids_of(ids, tags, "a") == {1}
    assert ids_of(ids, tags, "back") == {2}


def test_a_cut_to_another_actor_in_the_same_framing_starts_a_new_track(rng):
    """Shot / reverse shot: A's last frame, then B's first in the same place, no gap. The boxes
    overlap, the embeddings say someone else: B merged into A's track, and a render or a
    faceset filter "like A" then took B's frames for A's."""
    ea, eb, _ = identity(rng)
    dets = [detection(f, 500, 300, near(ea if f < 10 else eb, rng)) for f in range(20)]
    ids = assign_tracks(dets)
    assert set(ids[:10]) == {0} and set(ids[10:]) == {1}


def test_face_gone_too_long_gets_a_new_id(rng):
    dets, tags = occlusion(rng, "same", gap=6)  # back 7 frames after its last sighting > max_gap 5
    ids = assign_tracks(dets)
    assert ids_of(ids, tags, "back") == {2}
    assert assign_tracks(dets, max_gap=7) == [0 if t == "b" else 1 for t in tags]


def test_faces_of_one_frame_never_share_a_track(rng):
    ea = identity(rng)[0]
    dets = [detection(0, 300, 300, ea)]
    # Two identical copies of the same face next frame (a duplicate detection): one track each.
    dets += [detection(1, 300, 300, ea, index=0), detection(1, 302, 300, ea, index=1)]
    ids = assign_tracks(dets)
    assert ids[1] != ids[2] and 0 in ids[1:]
    # And on a random crowd, ids are unique within every frame.
    crowd = [detection(f, *rng.uniform(0, 400, 2), near(ea, rng, 0.05), index=k)
             for f in range(30) for k in range(int(rng.integers(1, 5)))]
    ids = assign_tracks(crowd)
    for f in range(30):
        frame_ids = [i for d, i in zip(crowd, ids) if d.frame == f]
        assert len(frame_ids) == len(set(frame_ids))


def test_ids_follow_first_appearance_whatever_the_input_order(rng):
    ea, eb, ec = identity(rng)
    dets = [detection(1010, 500, 500, ec), detection(1001, 100, 100, ea, index=1), detection(1001, 300, 100, eb),
            detection(1002, 100, 100, ea), detection(1004, 300, 102, eb, index=1)]
    assert assign_tracks(dets) == [2, 1, 0, 1, 0]
    assert assign_tracks([]) == []


def test_plate_every_other_frame_tracks_without_embeddings():
    dets = [detection(f, 100 + 5 * f, 100) for f in range(1001, 1041, 2)]
    assert set(assign_tracks(dets)) == {0}


# --- smoothing ---------------------------------------------------------------------------

def test_smoothing_removes_jitter_without_leaving_the_motion(rng):
    true = wandering_face()
    raw = noisy(true, rng)
    size = face_size(true)
    smoothed = smooth_track(np.arange(1001, 1001 + len(raw)), raw, 1.0)
    raw_jitter, smooth_jitter = jitter(raw, size), jitter(smoothed, size)
    raw_error, smooth_error = lag(raw, true, size), lag(smoothed, true, size)
    print(f"jitter raw {raw_jitter:.4f} smoothed {smooth_jitter:.4f}; "
          f"error vs truth raw {raw_error:.4f} smoothed {smooth_error:.4f}; vs raw {lag(smoothed, raw, size):.4f}")
    assert smooth_jitter < 0.5 * raw_jitter
    assert smooth_error < 0.6 * raw_error
    assert lag(smoothed, raw, size) < 0.02
    # A steady move, no noise: the smoother does not drag behind (zero-phase).
    assert lag(smooth_track(np.arange(len(true)), true), true, size) < 0.001


def test_fast_head_turn_is_followed(rng):
    true = head_turn()
    size = face_size(true)
    frames = np.arange(len(true))
    clean = smooth_track(frames, true)
    worst = (np.linalg.norm(clean - true, axis=-1) / size[:, None]).max()
    around = lag(clean[27:37], true[27:37], size[27:37])
    print(f"head turn: mean {lag(clean, true, size):.4f}, around the turn {around:.4f}, worst point {worst:.4f}")
    assert lag(clean, true, size) < 0.02
    assert around < 0.02
    assert worst < 0.05
    raw = noisy(true, rng)
    smoothed = smooth_track(frames, raw)
    assert lag(smoothed, raw, size) < 0.02
    assert lag(smoothed, true, size) < lag(raw, true, size)


def test_a_track_extracted_every_other_frame_is_smoothed_like_the_same_motion_in_time(rng):
    """Every other frame extracted (--frames 1001-1100x2): each frame was its own segment, and
    nothing was smoothed. Now the step is the track's; smoothing is as strong in time."""
    true = wandering_face(160)
    raw = noisy(true, rng)
    size = face_size(true)
    frames = np.arange(0, 160, 2)
    assert sampling_step(frames) == 2 and sampling_step([5]) == 1
    every_other = smooth_track(frames, raw[::2], 1.0, step=2)
    assert jitter(every_other, size[::2]) < 0.5 * jitter(raw[::2], size[::2])
    assert lag(smooth_track(frames, true[::2], step=2), true[::2], size[::2]) < 0.002  # no drag
    assert np.array_equal(smooth_track(frames, raw[::2], 1.0), raw[::2])  # at step 1 these are all gaps


def test_strength_orders_the_smoothing(rng):
    true = wandering_face(80)
    raw = noisy(true, rng)
    size = face_size(true)
    frames = np.arange(len(raw))
    scores = [jitter(smooth_track(frames, raw, s), size) for s in (0.5, 1.0, 2.0)]
    assert scores[0] > scores[1] > scores[2]


def test_strength_zero_returns_the_input_exactly(rng):
    raw = noisy(wandering_face(10), rng).astype(np.float32)
    out = smooth_track(np.arange(10), raw, 0.0)
    assert out.dtype == np.float32 and np.array_equal(out, raw) and out is not raw


def test_short_tracks(rng):
    one = noisy(wandering_face(1), rng)
    assert np.array_equal(smooth_track(np.array([7]), one, 1.0), one)
    two = noisy(wandering_face(2), rng)
    out = smooth_track(np.array([7, 8]), two, 1.0)
    assert out.shape == (2, 68, 2) and np.all(np.isfinite(out))
    assert lag(out, two, face_size(two)) < 0.02
    assert np.array_equal(smooth_track(np.array([7, 9]), two, 1.0), two)  # not consecutive: two lone frames


def test_frame_gaps_split_the_track(rng):
    raw = noisy(wandering_face(40), rng)
    frames = np.r_[np.arange(1001, 1021), np.arange(1031, 1051)]
    out = smooth_track(frames, raw)
    assert np.allclose(out[:20], smooth_track(frames[:20], raw[:20]))
    assert np.allclose(out[20:], smooth_track(frames[20:], raw[20:]))
    shuffle = rng.permutation(40)
    assert np.allclose(smooth_track(frames[shuffle], raw[shuffle]), out[shuffle])
    with pytest.raises(ValueError):
        smooth_track(np.r_[frames[:-1], 1001], raw)


def test_smoothing_is_resolution_independent(rng):
    raw = noisy(wandering_face(60), rng)
    frames = np.arange(60)
    out = smooth_track(frames, raw)
    # Same shot at 4x the resolution, placed elsewhere: the same result, scaled.
    assert np.allclose(smooth_track(frames, 4 * raw + [100, -50]), 4 * out + [100, -50], atol=1e-6)


def test_smooth_detections_per_track(rng):
    dets, tags = occlusion(rng, "same")
    for d in dets:
        d.landmarks = noisy(d.landmarks[None], rng)[0]
    ids = assign_tracks(dets)
    out = smooth_detections(dets, ids)
    b = [k for k, t in enumerate(tags) if t == "b"]
    expected = smooth_track(np.array([dets[k].frame for k in b]), np.stack([dets[k].landmarks for k in b]))
    assert np.allclose(np.stack([out[k] for k in b]), expected)
    assert all(o.shape == (68, 2) for o in out)


# --- gap filling ---------------------------------------------------------------------------

def track_with_gap(rng, frames):
    """Noisy landmarks and boxes on the given frames (a track as the smoother hands it over)."""
    points = noisy(wandering_face(len(frames)), rng)
    boxes = np.concatenate([points.min(axis=1), points.max(axis=1)], -1)
    return np.asarray(frames), points, boxes


def test_fill_gaps_interpolates_a_short_gap_linearly(rng):
    frames, points, boxes = track_with_gap(rng, [f for f in range(1001, 1021) if f not in (1009, 1010, 1011)])
    before, after = list(frames).index(1008), list(frames).index(1012)
    filled = fill_gaps(frames, points, boxes, max_gap=FILL_MAX_GAP)
    assert [f for f, _, _ in filled] == [1009, 1010, 1011]
    for k, (frame, pts, box) in enumerate(filled, start=1):
        t = k / 4
        assert np.array_equal(pts, (1 - t) * points[before] + t * points[after])
        assert np.array_equal(box, (1 - t) * boxes[before] + t * boxes[after])
        assert pts.shape == (68, 2) and box.shape == (4,)
    # A straight-line move is reproduced exactly, and the input order does not matter.
    line = FACE[None] + np.arange(20)[:, None, None] * [3.0, -1.5]
    keep = np.r_[0:8, 11:20]
    shuffle = rng.permutation(len(keep))
    refilled = fill_gaps(keep[shuffle], line[keep][shuffle], boxes[:len(keep)], max_gap=FILL_MAX_GAP)
    assert np.allclose(np.stack([p for _, p, _ in refilled]), line[8:11], atol=1e-9)


def test_fill_gaps_leaves_long_gaps(rng):
    frames, points, boxes = track_with_gap(rng, [*range(0, 10), *range(16, 20), *range(24, 30)])  # 6 then 4 missing
    filled = fill_gaps(frames, points, boxes, max_gap=FILL_MAX_GAP)
    assert [f for f, _, _ in filled] == [20, 21, 22, 23]
    assert fill_gaps(frames, points, boxes, max_gap=6)[0][0] == 10


def test_fill_gaps_follows_the_sampling_step(rng):
    frames, points, boxes = track_with_gap(rng, [0, 2, 4, 6, 8, 12, 14])
    filled = fill_gaps(frames, points, boxes, max_gap=FILL_MAX_GAP, step=2)
    assert [f for f, _, _ in filled] == [10]  # 9 and 11 were never extracted
    assert np.allclose(filled[0][1], 0.5 * (points[4] + points[5]), rtol=0, atol=1e-9)
    assert fill_gaps(frames, points, boxes, max_gap=FILL_MAX_GAP, step=4) == []  # 8 and 12 are neighbours
    assert [f for f, _, _ in fill_gaps(frames, points, boxes, max_gap=FILL_MAX_GAP)] == [1, 3, 5, 7, 9, 10, 11, 13]


def test_fill_gaps_only_where_the_source_has_frames(rng):
    frames, points, boxes = track_with_gap(rng, [0, 1, 2, 5, 6])
    filled = fill_gaps(frames, points, boxes, max_gap=FILL_MAX_GAP, available={0, 1, 2, 4, 5, 6})
    assert [f for f, _, _ in filled] == [4]
    assert np.allclose(filled[0][1], (points[2] + 2 * points[3]) / 3, rtol=0, atol=1e-9)  # still between 2 and 5


def test_fill_gaps_nothing_to_fill(rng):
    frames, points, boxes = track_with_gap(rng, range(1001, 1021))
    assert fill_gaps(frames, points, boxes, max_gap=FILL_MAX_GAP) == []
    assert fill_gaps(frames[:1], points[:1], boxes[:1], max_gap=FILL_MAX_GAP) == []
