"""Faceset schema versions: a schema 1 faceset is migrated in place, a newer one is refused."""

from __future__ import annotations

import json
import logging
import re
import sqlite3

import numpy as np
import pytest

from vfxswap.errors import VfxSwapError
from vfxswap.faceset import SCHEMA_VERSION, Faceset, FaceRow

# The schema 1 tables exactly as vfxswap wrote them, kept here as a literal so the test does
# not depend on the code it checks.
SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS frames (
    source TEXT NOT NULL, frame INTEGER NOT NULL,
    stage TEXT NOT NULL,          -- 'detected' (raw landmarks) or 'aligned' (crops written)
    faces INTEGER NOT NULL, error TEXT,
    PRIMARY KEY (source, frame));
CREATE TABLE IF NOT EXISTS faces (
    id INTEGER PRIMARY KEY,
    source TEXT NOT NULL, frame INTEGER NOT NULL, face_index INTEGER NOT NULL,
    track_id INTEGER,
    box BLOB NOT NULL,            -- float32 (4,) x0 y0 x1 y1, plate pixels
    score REAL,
    landmarks_raw BLOB NOT NULL,  -- float32 (68, 2) plate pixels, as detected
    landmarks BLOB,               -- float32 (68, 2) plate pixels, smoothed along the track
    aligned_landmarks BLOB,       -- float32 (68, 2) aligned-crop pixels
    matrix BLOB,                  -- float64 (2, 3) plate -> aligned (cv2.warpAffine convention)
    face_type TEXT, size INTEGER,
    image TEXT,                   -- path of the aligned EXR, relative to the faceset folder
    embedding BLOB,               -- float32 (128,) dlib face descriptor
    embedded INTEGER NOT NULL DEFAULT 1,  -- 0: not measured on this face, its track's mean
    blur REAL, yaw REAL, pitch REAL, roll REAL,
    face_size REAL,               -- plate pixels (see faces.track.face_size)
    excluded INTEGER NOT NULL DEFAULT 0,
    rank INTEGER,
    UNIQUE (source, frame, face_index));
CREATE INDEX IF NOT EXISTS faces_track ON faces (source, track_id, frame);
"""

BOX = np.array([10, 20, 110, 140], np.float32)
POINTS = (np.arange(136, dtype=np.float32).reshape(68, 2) * 0.5 + 7.25).astype(np.float32)


def make_v1(folder, version=1):
    """A faceset folder written by schema 1 code: one frame with one face, `version` in meta."""
    (folder / "faces").mkdir(parents=True)
    db = sqlite3.connect(str(folder / "faceset.db"))
    db.executescript(SCHEMA_V1)
    db.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?)", (json.dumps(version),))
    db.execute("INSERT INTO frames (source, frame, stage, faces, error) VALUES ('shot', 1001, 'detected', 1, NULL)")
    db.execute("INSERT INTO faces (source, frame, face_index, track_id, box, score, landmarks_raw, landmarks) "
               "VALUES ('shot', 1001, 0, 0, ?, 0.9, ?, ?)", (BOX.tobytes(), POINTS.tobytes(), POINTS.tobytes()))
    db.commit()
    db.close()
    return folder


def columns(folder) -> list[str]:
    db = sqlite3.connect(str(folder / "faceset.db"))
    try:
        return [r[1] for r in db.execute("PRAGMA table_info(faces)")]
    finally:
        db.close()


@pytest.fixture
def migrations(caplog, monkeypatch):
    """The migration messages logged so far (the CLI may have stopped propagation)."""
    monkeypatch.setattr(logging.getLogger("vfxswap"), "propagate", True)
    caplog.set_level(logging.INFO, logger="vfxswap")
    return lambda: [r.getMessage() for r in caplog.records if "faceset schema" in r.getMessage()]


def test_schema_1_faceset_is_migrated_in_place(tmp_path, migrations):
    folder = make_v1(tmp_path / "fs")
    assert "dense" not in columns(folder)
    with Faceset(folder) as fs:
        assert fs.meta("schema_version") == SCHEMA_VERSION == 3
        (old,) = fs.faces()
        assert old.dense is None and old.filled == 0
        assert np.array_equal(old.box, BOX) and np.array_equal(old.landmarks_raw, POINTS)
        assert old.score == pytest.approx(0.9) and old.embedded == 1 and old.excluded == 0

        dense = np.random.default_rng(3).uniform(0, 4096, (478, 2)).astype(np.float32)
        new = FaceRow("shot", 1002, 0, BOX, POINTS, landmarks=POINTS, track_id=0, dense=dense, filled=1)
        fs.record_detections("shot", 1002, [new])
        (back,) = fs.faces("frame = ?", (1002,))
        assert back.dense.dtype == np.float32 and back.dense.shape == (478, 2)
        assert np.array_equal(back.dense, dense) and back.filled == 1

        # The update paths write the new columns too.
        old.dense, old.filled = dense[:10], 1
        fs.update_faces([old], ["dense", "filled"])
        back.dense = None
        fs.mark_aligned("shot", 1002, [back], ["dense", "image"])
        rows = {r.frame: r for r in fs.faces()}
        assert np.array_equal(rows[1001].dense, dense[:10]) and rows[1001].filled == 1
        assert rows[1002].dense is None and rows[1002].filled == 1
        assert fs.frame_stage("shot") == {1001: "detected", 1002: "aligned"}
        # schema 3: segmentation mattes and labels
        assert rows[1001].seg is None and fs.labels() == {}
        rows[1001].seg, rows[1001].seg_model = "masks/x.seg.exr", "abc"
        fs.update_faces([rows[1001]], ["seg", "seg_model"])
        fs.set_labels({rows[1001].id: {"polygons": [{"mode": "include", "points": [[1, 2], [3, 4], [5, 1]]}],
                                       "origin": "editor"}})
        again = {r.frame: r for r in fs.faces()}[1001]
        assert (again.seg, again.seg_model) == ("masks/x.seg.exr", "abc")
        assert fs.labels()[again.id]["polygons"] == [{"mode": "include", "points": [[1, 2], [3, 4], [5, 1]]}]
        assert fs.counts()["labelled"] == 1 and fs.counts()["segmented"] == 1
    assert columns(folder)[-4:] == ["dense", "filled", "seg", "seg_model"]
    assert migrations() == [f"{folder}: faceset schema 1 -> 3 (dense landmarks, filled faces, mask labels and mattes)"]

    with Faceset(folder) as fs:  # already migrated: nothing to do
        assert fs.meta("schema_version") == 3 and len(fs.faces()) == 2
    assert len(migrations()) == 1
    assert columns(folder).count("dense") == 1


def test_new_faceset_has_the_current_schema(tmp_path, migrations):
    folder = tmp_path / "fresh"
    with Faceset(folder, create=True) as fs:
        assert fs.meta("schema_version") == SCHEMA_VERSION
    migrated = make_v1(tmp_path / "old")
    Faceset(migrated).close()
    assert columns(folder) == columns(migrated)  # a migrated faceset has the same table as a new one
    assert len(migrations()) == 1


def test_newer_faceset_is_refused_untouched(tmp_path, migrations):
    folder = make_v1(tmp_path / "future", version=4)
    before = columns(folder)
    with pytest.raises(VfxSwapError, match=re.escape(f"{folder}: faceset schema 4 is newer")):
        Faceset(folder)
    assert columns(folder) == before and not migrations()


def test_a_failed_migration_leaves_schema_1_as_it_was(tmp_path, monkeypatch, migrations):
    from vfxswap.faceset import store

    folder = make_v1(tmp_path / "fs")
    before = columns(folder)
    # The second column cannot be added (NOT NULL without a default): the first must not stay.
    monkeypatch.setattr(store, "_ADDED_COLUMNS", {"dense": "BLOB", "filled": "INTEGER NOT NULL"})
    with pytest.raises(VfxSwapError, match="cannot open the faceset database"):
        Faceset(folder)
    assert columns(folder) == before and not migrations()
    db = sqlite3.connect(str(folder / "faceset.db"))
    assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("1",)
    db.close()
