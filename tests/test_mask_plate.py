"""Compositor mattes in and out of a faceset (`vfxswap.masks.plate`): a plate-space matte lands
in each face's aligned square where the face's matrix puts it, data windows honoured, and goes
back over the plate where it came from."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from vfxswap.errors import VfxSwapError
from vfxswap.faces import align
from vfxswap.faces.align import template_points
from vfxswap.faceset import Faceset, FaceRow
from vfxswap.masks import plate as mp
from vfxswap.masks.hull import hull_mask
from vfxswap.masks.labels import fill_polygons, label_matte, read_matte, write_matte
from vfxswap.plates import Box, Image, read_image, write_image

S = 128  # the faceset's size
W, H = 320, 240  # the plate's display window
FACE_FRAMES = {1001: (0.8, 10.0, (170.0, 120.0)),  # crop px per plate px (< 1: cut minifies), degrees, centre
               1002: (1.6, -5.0, (150.0, 110.0))}  # a small face: the crop magnifies it
FRAMES = (1001, 1002, 1003)  # 1003: no face


def similarity(scale: float, degrees: float, centre) -> np.ndarray:
    """Plate -> aligned: the plate point `centre` to the crop's centre, turned and scaled."""
    a = math.radians(degrees)
    rot = scale * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    m = np.empty((2, 3))
    m[:, :2] = rot
    m[:, 2] = (S - 1) / 2 - rot @ np.asarray(centre, np.float64)
    return m


def plate_polygon(frame: int, radius: float = 0.36, wobble: float = 0.22) -> np.ndarray:
    """An irregular 11-gon (plate pixels) on the face of `frame`, well inside its aligned square."""
    scale, _, (cx, cy) = FACE_FRAMES[frame]
    r = radius * S / scale
    t = np.linspace(0, 2 * np.pi, 11, endpoint=False)
    rr = r * (1 - wobble * (np.arange(11) % 3) / 2)
    return np.stack([cx + 3 + rr * np.cos(t), cy - 2 + rr * np.sin(t)], 1)


def raster(points, w: int = W, h: int = H) -> np.ndarray:
    """Antialiased fill of a polygon in pixel coordinates on a (h, w) canvas."""
    return fill_polygons([{"mode": "include", "points": np.asarray(points).tolist()}], max(w, h))[:h, :w]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0.5, b > 0.5
    return float((a & b).sum() / max(1, (a | b).sum()))


def make_faceset(root, disp: Box = Box(0, 0, W, H), record_plate: bool = True) -> tuple[str, str]:
    """A faceset of plates `root/plates/plate.####.exr` (never written): one face in 1001 and
    1002 with known matrices, none in 1003. Returns (faceset folder, source key)."""
    source = str(root / "plates" / "plate.####.exr")
    folder = root / "faceset"
    with Faceset(folder, create=True) as fs:
        fs.check_settings(face_type="whole_face", size=S, encoding="acescct-norm")
        if record_plate:
            fs.set_meta(f"plate:{source}", [disp.x, disp.y, disp.width, disp.height])
            fs.db.commit()
        for frame in FRAMES:
            rows = []
            if frame in FACE_FRAMES:
                m = similarity(*FACE_FRAMES[frame])
                aligned = template_points(S, "whole_face").astype(np.float32)
                points = align.transform_points(aligned, align.invert(m)).astype(np.float32)
                box = np.r_[points.min(0), points.max(0)].astype(np.float32)
                rows.append(FaceRow(source, frame, 0, box, points, landmarks=points, track_id=0))
            fs.record_detections(source, frame, rows)
            for row in rows:
                row.matrix, row.size, row.face_type = similarity(*FACE_FRAMES[frame]), S, "whole_face"
                row.aligned_landmarks = template_points(S, "whole_face").astype(np.float32)
                row.image = f"faces/plate_{frame:06d}_0.exr"
                hulls = [hull_mask(row.aligned_landmarks, (S, S), k)[..., None] for k in ("components", "extended")]
                px = np.concatenate([np.full((S, S, 3), 0.4, np.float32)] + hulls, 2)
                write_image(fs.folder / row.image, Image.from_array(px, ("R", "G", "B", "components.Y", "extended.Y")))
            fs.mark_aligned(source, frame, rows, ["matrix", "size", "image", "aligned_landmarks", "face_type"])
    return str(folder), source


def write_mattes(root, disp: Box = Box(0, 0, W, H), frames=(1001, 1002), extra=None) -> str:
    """Each frame's polygon as a plate-space matte EXR whose data window is smaller than the
    display window and not at its origin: A the polygon, R a box at its centre, `matte.A` its
    inverse. `extra(frame, pixels)` may spoil the pixels. Returns the pattern."""
    data = Box(disp.x + 40, disp.y + 30, W - 70, H - 50)
    for frame in frames:
        a = raster(plate_polygon(frame))
        _, _, (cx, cy) = FACE_FRAMES[frame]
        r = raster([[cx - 20, cy - 20], [cx + 20, cy - 20], [cx + 20, cy + 20], [cx - 20, cy + 20]])
        px = np.stack([r, a, 1 - a], 2)[data.y - disp.y:data.y1 - disp.y, data.x - disp.x:data.x1 - disp.x]
        if extra:
            extra(frame, px)
        image = Image.from_array(np.ascontiguousarray(px), ("R", "A", "matte.A"), origin=(data.x, data.y),
                                 display_window=disp)
        write_image(root / "mattes" / f"roto.{frame:04d}.exr", image, dtype="float")
    return str(root / "mattes" / "roto.####.exr")


def face_of(folder: str, frame: int) -> FaceRow:
    with Faceset(folder) as fs:
        return fs.faces("frame = ?", (frame,))[0]


def imported(folder: str, frame: int) -> np.ndarray:
    with Faceset(folder) as fs:
        face = fs.faces("frame = ?", (frame,))[0]
        return read_matte(fs.folder / fs.labels()[face.id]["matte"], face.size)


# --- in ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("disp", [Box(0, 0, W, H), Box(16, 8, W, H)], ids=["display-at-origin", "display-offset"])
def test_imported_matte_is_the_polygon_in_the_aligned_square(tmp_path, disp):
    """ACCEPTANCE: a plate-space polygon matte (data window smaller than and offset in the display
    window) lands in the aligned square as the polygon transformed by the face's matrix."""
    folder, source = make_faceset(tmp_path, disp)
    report = mp.import_mattes(folder, write_mattes(tmp_path, disp))
    assert report.imported == [1001, 1002] and report.faces == 2 and not report.failed
    assert report.without_matte == [] and report.source == source
    for frame in (1001, 1002):
        m = similarity(*FACE_FRAMES[frame])
        want = raster(align.transform_points(plate_polygon(frame), m), S, S)
        got = imported(folder, frame)
        score = iou(got, want)
        print(f"import IoU frame {frame} (display {disp}): {score:.4f}, mean abs {np.abs(got - want).mean():.4f}")
        assert score >= 0.98
        assert 0.0 <= got.min() and got.max() <= 1.0
    with Faceset(folder) as fs:
        labels = fs.labels()
        face = fs.faces("frame = 1001")[0]
        assert labels[face.id]["origin"] == "import" and labels[face.id]["polygons"] == []
        assert labels[face.id]["matte"] == fs.matte_path(face, "label")


def test_channel_selection(tmp_path):
    folder, _ = make_faceset(tmp_path)
    pattern = write_mattes(tmp_path)
    m = similarity(*FACE_FRAMES[1001])
    _, _, (cx, cy) = FACE_FRAMES[1001]
    square = [[cx - 20, cy - 20], [cx + 20, cy - 20], [cx + 20, cy + 20], [cx - 20, cy + 20]]
    mp.import_mattes(folder, pattern, channel="R")
    assert iou(imported(folder, 1001), raster(align.transform_points(square, m), S, S)) >= 0.97
    mp.import_mattes(folder, pattern, channel="matte.A", frames="1001")
    inverse = 1 - raster(align.transform_points(plate_polygon(1001), m), S, S)
    assert iou(imported(folder, 1001), inverse) >= 0.98


def test_missing_channel_is_one_line_naming_the_file(tmp_path):
    folder, _ = make_faceset(tmp_path)
    pattern = write_mattes(tmp_path)
    with pytest.raises(VfxSwapError) as err:
        mp.import_mattes(folder, pattern, channel="Y")
    message = str(err.value)
    print(message)
    assert "\n" not in message
    assert str(tmp_path / "mattes" / "roto.1001.exr") in message
    assert "no channel Y" in message and all(c in message for c in ("R", "A", "matte.A"))
    with Faceset(folder) as fs:
        assert fs.labels() == {}


def test_frames_without_a_matte_file_are_skipped_and_counted(tmp_path):
    folder, _ = make_faceset(tmp_path)
    report = mp.import_mattes(folder, write_mattes(tmp_path, frames=(1001,)).replace("####", "%04d"))
    assert report.imported == [1001] and report.without_matte == [1002] and report.faces == 1
    with Faceset(folder) as fs:
        assert [fs.faces("id = ?", (i,))[0].frame for i in fs.labels()] == [1001]


def test_a_damaged_matte_fails_its_frame_alone(tmp_path):
    folder, _ = make_faceset(tmp_path)
    pattern = write_mattes(tmp_path)
    bad = tmp_path / "mattes" / "roto.1002.exr"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])  # cut short, as a crashed write leaves it
    report = mp.import_mattes(folder, pattern)
    assert report.imported == [1001] and list(report.failed) == [1002]
    print(report.failed[1002])
    assert "\n" not in report.failed[1002] and str(bad) in report.failed[1002]
    face = face_of(folder, 1002)
    with Faceset(folder) as fs:
        assert face.id not in fs.labels()
        assert not (fs.folder / fs.matte_path(face, "label")).exists()
        assert not [p for p in (fs.folder / "masks").iterdir() if p.name.startswith(".")]  # no temporary left


def test_values_are_clipped_and_nan_is_zero(tmp_path):
    folder, _ = make_faceset(tmp_path)

    def spoil(frame, px):
        px[..., 1] *= 3.0  # a key pulled hot
        px[60:120, 100:160, 1] = np.nan

    mp.import_mattes(folder, write_mattes(tmp_path, frames=(1001,), extra=spoil))
    got = imported(folder, 1001)
    assert np.isfinite(got).all() and got.min() >= 0.0 and got.max() <= 1.0
    # the NaN block covers plate x 140-200, y 90-150 (the data window starts at 40, 30): a hole
    # there, not a smear; the hot key is 1 (not more) elsewhere inside the polygon
    m = similarity(*FACE_FRAMES[1001])
    block = raster(align.transform_points([[134, 84], [206, 84], [206, 156], [134, 156]], m), S, S)
    hole = raster(align.transform_points([[146, 96], [194, 96], [194, 144], [146, 144]], m), S, S)
    inside = cv2.erode(raster(align.transform_points(plate_polygon(1001), m), S, S), np.ones((5, 5)))
    assert got[hole > 0].max() == 0.0
    assert got[(inside == 1) & (block == 0)].min() > 0.99


def test_reimport_keeps_the_artists_polygons(tmp_path):
    folder, _ = make_faceset(tmp_path)
    pattern = write_mattes(tmp_path)
    mp.import_mattes(folder, pattern)
    cut = {"mode": "exclude", "points": [[40.0, 40.0], [90.0, 40.0], [90.0, 90.0], [40.0, 90.0]]}
    face = face_of(folder, 1001)
    with Faceset(folder) as fs:
        label = fs.labels()[face.id]
        fs.set_labels({face.id: {"polygons": [cut], "matte": label["matte"], "origin": "editor"}})
    report = mp.import_mattes(folder, pattern)
    assert report.kept_polygons == 1 and report.faces == 2
    with Faceset(folder) as fs:
        label = fs.labels()[face.id]
        assert label["polygons"] == [cut] and label["origin"] == "import"
        assert label["matte"] == fs.matte_path(face, "label")
        matte = label_matte(label, S, folder=fs.folder)
    assert matte[45:85, 45:85].max() == 0.0 and imported(folder, 1001)[45:85, 45:85].mean() > 0.5


def test_source_is_asked_for_when_the_faceset_holds_several(tmp_path):
    folder, source = make_faceset(tmp_path)
    pattern = write_mattes(tmp_path)
    with Faceset(folder) as fs:
        fs.record_detections(str(tmp_path / "other" / "other.####.exr"), 1, [])
    with pytest.raises(VfxSwapError, match="choose one with --source") as err:
        mp.import_mattes(folder, pattern)
    assert source in str(err.value) and "other.####.exr" in str(err.value)
    assert mp.import_mattes(folder, pattern, source=source).faces == 2
    assert mp.import_mattes(folder, pattern, source=str(tmp_path / "plates" / "plate.%04d.exr")).faces == 2
    with pytest.raises(VfxSwapError, match="not a source"):
        mp.import_mattes(folder, pattern, source="elsewhere.####.exr")


# --- out -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("disp", [Box(0, 0, W, H), Box(16, 8, W, H)], ids=["display-at-origin", "display-offset"])
def test_export_of_the_imported_label_gives_back_the_plate_matte(tmp_path, disp):
    folder, source = make_faceset(tmp_path, disp)
    mp.import_mattes(folder, write_mattes(tmp_path, disp))
    report = mp.export_mattes(folder, str(tmp_path / "out" / "face.####.exr"), kind="label")
    assert report.written == [1001, 1002, 1003] and report.empty == [1003] and not report.failed
    for frame in (1001, 1002):
        m = similarity(*FACE_FRAMES[frame])
        out = read_image(tmp_path / "out" / f"face.{frame}.exr")
        assert out.channels == ("A",) and out.display_window == disp
        x0, y0, x1, y1 = align.region_for(m, S, (H, W), margin=mp.MARGIN)
        assert out.data_window == Box(disp.x + x0, disp.y + y0, x1 - x0, y1 - y0)
        got = out.on_display_window()[..., 0]
        want = raster(plate_polygon(frame))
        score = iou(got[y0:y1, x0:x1], want[y0:y1, x0:x1])
        print(f"export IoU frame {frame} (display {disp}): {score:.4f}")
        assert score >= 0.98
        assert out.attribute("vfxswap:matteKind") == "label" and out.attribute("vfxswap:source") == source
        assert out.attribute("vfxswap:faceset") == str((tmp_path / "faceset").resolve())
    empty = read_image(tmp_path / "out" / "face.1003.exr")
    assert empty.display_window == disp and empty.data_window == Box(disp.x, disp.y, 1, 1)
    assert empty.pixels.max() == 0.0


def test_export_kinds_seg_and_hull(tmp_path):
    folder, _ = make_faceset(tmp_path)
    face = face_of(folder, 1001)
    with Faceset(folder) as fs:
        disc = raster(align.transform_points(plate_polygon(1001), face.matrix), S, S)
        face.seg = fs.matte_path(face, "seg")
        write_matte(fs.folder / face.seg, disc)
        fs.update_faces([face], ["seg"])
    report = mp.export_mattes(folder, str(tmp_path / "seg" / "seg.####.exr"))
    assert report.written == [1001, 1002, 1003] and report.empty == [1002, 1003]
    assert report.without_matte == [(1002, 0)]
    seg = read_image(tmp_path / "seg" / "seg.1001.exr").on_display_window()[..., 0]
    assert iou(seg, raster(plate_polygon(1001))) >= 0.98
    assert read_image(tmp_path / "seg" / "seg.1002.exr").pixels.max() == 0.0

    report = mp.export_mattes(folder, str(tmp_path / "hull" / "hull.####.exr"), kind="hull", frames="1001-1002")
    assert report.written == [1001, 1002] and report.empty == []
    for frame in (1001, 1002):
        hull = read_image(tmp_path / "hull" / f"hull.{frame}.exr").on_display_window()[..., 0]
        want = hull_mask(face_of(folder, frame).landmarks, (H, W), "extended")
        assert iou(hull, want) >= 0.97

    report = mp.export_mattes(folder, str(tmp_path / "label" / "label.####.exr"), kind="label")
    assert report.empty == [1001, 1002, 1003] and report.without_matte == [(1001, 0), (1002, 0)]


def test_export_needs_the_plates_when_their_size_was_not_recorded(tmp_path):
    disp = Box(0, 0, W, H)
    folder, source = make_faceset(tmp_path, record_plate=False)
    out = str(tmp_path / "out" / "m.####.exr")
    with pytest.raises(VfxSwapError, match="pass the plates with --plates"):
        mp.export_mattes(folder, out, kind="hull")
    plate = Image.from_array(np.zeros((100, 120, 3), np.float32), origin=(50, 40), display_window=disp)
    write_image(tmp_path / "plates" / "plate.1001.exr", plate)
    report = mp.export_mattes(folder, out, kind="hull", plates=source)
    assert report.written == [1001, 1002, 1003]
    assert read_image(tmp_path / "out" / "m.1001.exr").display_window == disp
    with Faceset(folder) as fs:
        fs.set_meta(f"plate:{source}", [0, 0, 2 * W, 2 * H])
        fs.db.commit()
    with pytest.raises(VfxSwapError, match="were found on 640x480"):
        mp.export_mattes(folder, out, kind="hull", plates=source)
    with pytest.raises(VfxSwapError, match="would overwrite"):
        mp.export_mattes(folder, source, kind="hull")
    with pytest.raises(VfxSwapError, match="not in"):
        mp.export_mattes(folder, out, kind="hull", frames="1001-1010")
    with pytest.raises(VfxSwapError, match="choose from seg, label, hull"):
        mp.export_mattes(folder, out, kind="roto")
    with pytest.raises(VfxSwapError, match="compression 'lzma'"):
        mp.export_mattes(folder, out, kind="hull", compression="lzma")


def test_extraction_records_the_plate_and_a_real_face_round_trips(tmp_path):
    """On a real face (the astronaut, dlib): extraction records the display window, and a
    plate matte with a data window smaller than the frame goes in and back out."""
    import skimage.data

    from vfxswap.faces.extract import extract
    from vfxswap.jobspec import ExtractOptions

    rgb = skimage.data.astronaut().astype(np.float32) / 255.0
    disp = Box(0, 0, 512, 512)
    data = Box(24, 16, 464, 480)
    plate = Image.from_array(np.ascontiguousarray(rgb[data.y:data.y1, data.x:data.x1]), origin=(data.x, data.y),
                             display_window=disp)
    plate.set_attribute("oiio:ColorSpace", "sRGB Encoded Rec.709 (sRGB)")
    write_image(tmp_path / "plates" / "plate.1001.exr", plate)
    extract(str(tmp_path / "plates" / "plate.####.exr"), str(tmp_path / "faceset"),
            ExtractOptions(detector="dlib", landmarker="dlib", size=96))
    with Faceset(tmp_path / "faceset") as fs:
        (source,) = fs.sources()
        assert fs.meta(f"plate:{source}") == [0, 0, 512, 512]
        face = fs.faces()[0]
    centre = face.landmarks[27:36].mean(0)
    r = 0.3 * (face.box[2] - face.box[0])
    t = np.linspace(0, 2 * np.pi, 9, endpoint=False)
    polygon = np.stack([centre[0] + r * np.cos(t) * (1 + 0.2 * np.sin(3 * t)), centre[1] + 1.2 * r * np.sin(t)], 1)
    want = raster(polygon, 512, 512)
    roto = Box(int(centre[0] - 2 * r), int(centre[1] - 2 * r), int(4 * r), int(4 * r))
    matte = Image.from_array(np.ascontiguousarray(want[roto.y:roto.y1, roto.x:roto.x1, None]), ("A",),
                             origin=(roto.x, roto.y), display_window=disp)
    write_image(tmp_path / "roto" / "roto.1001.exr", matte)
    mp.import_mattes(tmp_path / "faceset", str(tmp_path / "roto" / "roto.1001.exr"))
    got = imported(str(tmp_path / "faceset"), 1001)
    score = iou(got, raster(align.transform_points(polygon, face.matrix), 96, 96))
    print(f"astronaut import IoU: {score:.4f}")
    assert score >= 0.98
    mp.export_mattes(tmp_path / "faceset", str(tmp_path / "out" / "m.####.exr"), kind="label")
    out = read_image(tmp_path / "out" / "m.1001.exr")
    x0, y0, x1, y1 = align.region_for(face.matrix, 96, (512, 512), margin=mp.MARGIN)
    assert out.display_window == disp and out.data_window == Box(x0, y0, x1 - x0, y1 - y0)
    score = iou(out.on_display_window()[y0:y1, x0:x1, 0], want[y0:y1, x0:x1])
    print(f"astronaut export IoU: {score:.4f}")
    assert score >= 0.98
