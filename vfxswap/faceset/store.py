"""The faceset store: one folder, an SQLite index and one half-float EXR per aligned face.

    FACESET/
      faceset.db          index (schema below); WAL mode, one transaction per frame
      faces/<src>_<frame>_<i>.exr   aligned face in the model encoding: R, G, B (half) and the
                          landmark hull masks as `components.Y` and `extended.Y`
      masks/<src>_<frame>_<i>.seg.exr    the segmentation masker's matte of that face (`Y`, half)
      masks/<src>_<frame>_<i>.label.exr  a matte label imported for it (compositor roto or key)

Mattes live beside the faces, not in their EXRs: they are made again (a retrained masker, a new
import) while the face itself is extracted once, and a face file is never rewritten for them.

A frame is recorded in `frames` in the same transaction as its faces, including frames with no
face (an empty, not failed, row), so an interrupted extraction resumes where it stopped and
never duplicates a row. Face images are written atomically before their rows; a stray image
without a row is simply rewritten next time. A faceset of an older schema is brought up to
date in place when opened (see `_ADDED_COLUMNS`); one of a newer schema is refused.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vfxswap.errors import VfxSwapError

SCHEMA_VERSION = 3
DB_NAME = "faceset.db"

log = logging.getLogger("vfxswap")

_SCHEMA = """
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
    -- schema 2 (last, where ALTER TABLE puts them when a schema 1 faceset is migrated):
    dense BLOB,                   -- float32 (N, 2) plate pixels, the landmarker's dense points as
                                  -- detected (Face Mesh: 478 = 468 surface + 2 x 5 iris); NULL for dlib
    filled INTEGER NOT NULL DEFAULT 0,  -- 1: no face detected in this frame, interpolated from its track
    -- schema 3:
    seg TEXT,                     -- path of the segmentation matte (masks/...seg.exr), NULL until applied
    seg_model TEXT,               -- id of the masker model that made it (`masks apply` skips what it made)
    UNIQUE (source, frame, face_index));
CREATE TABLE IF NOT EXISTS labels (  -- schema 3: what a person (or a compositor's matte) says the face is
    face_id INTEGER PRIMARY KEY,  -- faces.id
    polygons TEXT NOT NULL,       -- JSON [{"mode": "include"|"exclude", "points": [[x, y], ...]}, ...]
                                  -- aligned-crop pixels at the faceset's size, in drawing order
    matte TEXT,                   -- path of an imported matte (masks/...label.exr) under the polygons, or NULL
    origin TEXT NOT NULL,         -- editor, import, ... (who made it)
    updated REAL NOT NULL);       -- unix time
CREATE INDEX IF NOT EXISTS faces_track ON faces (source, track_id, frame);
"""

# Columns added since schema 1 and their definitions: an older faceset gets them in place.
_ADDED_COLUMNS = {"dense": "BLOB", "filled": "INTEGER NOT NULL DEFAULT 0", "seg": "TEXT", "seg_model": "TEXT"}

# dtype and shape of each array column; -1: as many points as the landmarker gave.
_ARRAYS = {"box": (np.float32, (4,)), "landmarks_raw": (np.float32, (68, 2)), "landmarks": (np.float32, (68, 2)),
           "aligned_landmarks": (np.float32, (68, 2)), "matrix": (np.float64, (2, 3)),
           "embedding": (np.float32, (128,)), "dense": (np.float32, (-1, 2))}


def _pack(name: str, value):
    if value is None or name not in _ARRAYS:
        return value
    dtype, shape = _ARRAYS[name]
    return np.ascontiguousarray(value, dtype).reshape(shape).tobytes()


def _unpack(name: str, value):
    if value is None or name not in _ARRAYS:
        return value
    dtype, shape = _ARRAYS[name]
    return np.frombuffer(value, dtype).reshape(shape).copy()


@dataclass
class FaceRow:
    """One face as stored; arrays are numpy, absent values None."""

    source: str
    frame: int
    face_index: int
    box: np.ndarray
    landmarks_raw: np.ndarray
    score: float | None = None
    track_id: int | None = None
    landmarks: np.ndarray | None = None
    aligned_landmarks: np.ndarray | None = None
    dense: np.ndarray | None = None
    matrix: np.ndarray | None = None
    face_type: str | None = None
    size: int | None = None
    image: str | None = None
    embedding: np.ndarray | None = None
    embedded: int = 1
    blur: float | None = None
    yaw: float | None = None
    pitch: float | None = None
    roll: float | None = None
    face_size: float | None = None
    excluded: int = 0
    filled: int = 0
    seg: str | None = None
    seg_model: str | None = None
    rank: int | None = None
    id: int | None = None
    extra: dict = field(default_factory=dict)


_COLUMNS = [f for f in FaceRow.__dataclass_fields__ if f not in ("id", "extra")]


class Faceset:
    """Open (or create) a faceset folder. Use as a context manager or call `close()`."""

    def __init__(self, folder: str | Path, *, create: bool = False):
        self.folder = Path(folder)
        db = self.folder / DB_NAME
        if not db.exists() and not create:
            raise VfxSwapError(f"{self.folder}: not a faceset (no {DB_NAME})")
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "faces").mkdir(exist_ok=True)
        self.db = sqlite3.connect(str(db), timeout=30)
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(_SCHEMA)
            version = self.meta("schema_version")
            if version is None:
                self.set_meta("schema_version", SCHEMA_VERSION)
            self.db.commit()
            if version is not None and int(version) < SCHEMA_VERSION:
                self._migrate()
        except sqlite3.DatabaseError as exc:  # damaged, not a database, locked, unwritable
            self.db.close()
            raise VfxSwapError(f"{db}: cannot open the faceset database ({exc})") from None
        if version is not None and int(version) > SCHEMA_VERSION:
            self.db.close()
            raise VfxSwapError(f"{self.folder}: faceset schema {version} is newer than this vfxswap ({SCHEMA_VERSION})")

    def _migrate(self) -> None:
        """Bring an older faceset to SCHEMA_VERSION in place, in one transaction. The write lock
        is taken first and the version read again, so two processes opening it at once migrate
        it once."""
        with self.transaction() as db:
            db.execute("BEGIN IMMEDIATE")  # ALTER TABLE alone would not open a transaction
            version = int(self.meta("schema_version"))
            if version >= SCHEMA_VERSION:
                return
            have = {r[1] for r in db.execute("PRAGMA table_info(faces)")}
            for name, definition in _ADDED_COLUMNS.items():
                if name not in have:
                    db.execute(f"ALTER TABLE faces ADD COLUMN {name} {definition}")
            self.set_meta("schema_version", SCHEMA_VERSION)
        log.info("%s: faceset schema %d -> %d (dense landmarks, filled faces, mask labels and mattes)", self.folder,
                 version, SCHEMA_VERSION)

    def __enter__(self) -> "Faceset":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.db.close()

    # --- meta -------------------------------------------------------------------------

    def meta(self, key: str, default=None):
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def set_meta(self, key: str, value) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, json.dumps(value)))

    def check_settings(self, **settings) -> None:
        """Record extraction settings once; refuse to mix faces cut with different ones."""
        for key, value in settings.items():
            have = self.meta(key)
            if have is None:
                self.set_meta(key, value)
            elif have != value:
                raise VfxSwapError(f"{self.folder}: holds faces with {key}={have!r}, asked for {value!r}; "
                                   f"use a new faceset folder")
        self.db.commit()

    # --- frames and faces ---------------------------------------------------------------

    def frame_stage(self, source: str) -> dict[int, str]:
        return dict(self.db.execute("SELECT frame, stage FROM frames WHERE source = ?", (source,)))

    @contextmanager
    def transaction(self):
        try:
            yield self.db
            self.db.commit()
        except BaseException:
            self.db.rollback()
            raise

    def record_detections(self, source: str, frame: int, faces: list[FaceRow], error: str | None = None) -> None:
        """All faces of one frame (maybe none) and the frame's row, in one transaction."""
        with self.transaction() as db:
            db.execute("DELETE FROM faces WHERE source = ? AND frame = ?", (source, frame))
            for face in faces:
                self._insert(db, face)
            db.execute("INSERT OR REPLACE INTO frames (source, frame, stage, faces, error) VALUES (?, ?, ?, ?, ?)",
                       (source, frame, "detected", len(faces), error))

    def forget(self, source: str) -> None:
        """Remove a source's frames and faces in one transaction, so it is extracted afresh (its
        image files are rewritten by then, or left as strays no row points to)."""
        with self.transaction() as db:
            db.execute("DELETE FROM faces WHERE source = ?", (source,))
            db.execute("DELETE FROM frames WHERE source = ?", (source,))

    def rename_source(self, old: str, new: str) -> None:
        """Give a source another key (its rows, its colour description and plate size), in one transaction."""
        with self.transaction() as db:
            for table in ("frames", "faces"):
                db.execute(f"UPDATE {table} SET source = ? WHERE source = ?", (new, old))
            for what in ("source", "plate"):
                db.execute("UPDATE OR REPLACE meta SET key = ? WHERE key = ?", (f"{what}:{new}", f"{what}:{old}"))

    def _insert(self, db, face: FaceRow) -> None:
        cols = ", ".join(_COLUMNS)
        marks = ", ".join("?" for _ in _COLUMNS)
        face.id = db.execute(f"INSERT INTO faces ({cols}) VALUES ({marks})",
                             [_pack(c, getattr(face, c)) for c in _COLUMNS]).lastrowid

    def _count_faces(self, db, source: str, frames) -> None:
        for frame in frames:
            db.execute("UPDATE frames SET faces = (SELECT COUNT(*) FROM faces WHERE source = ? AND frame = ?) "
                       "WHERE source = ? AND frame = ?", (source, frame, source, frame))

    def add_filled(self, source: str, faces: list[FaceRow]) -> None:
        """Add faces filled in along a track (`filled` = 1) beside a frame's detected ones, in one
        transaction; their frames go back to 'detected' so the align pass cuts them. Sets ids."""
        with self.transaction() as db:
            for face in faces:
                self._insert(db, face)
            frames = sorted({f.frame for f in faces})
            self._count_faces(db, source, frames)
            db.executemany("UPDATE frames SET stage = 'detected' WHERE source = ? AND frame = ?",
                           [(source, f) for f in frames])

    def drop_filled(self, source: str) -> None:
        """Remove a source's filled-in faces (derived from its tracks, so made again each time
        they are tracked), in one transaction."""
        with self.transaction() as db:
            frames = [r[0] for r in db.execute("SELECT DISTINCT frame FROM faces WHERE source = ? AND filled = 1",
                                               (source,))]
            db.execute("DELETE FROM faces WHERE source = ? AND filled = 1", (source,))
            self._count_faces(db, source, frames)

    def update_faces(self, faces: list[FaceRow], columns: list[str]) -> None:
        """Write `columns` of existing rows (matched by id) in one transaction."""
        sets = ", ".join(f"{c} = ?" for c in columns)
        with self.transaction() as db:
            db.executemany(f"UPDATE faces SET {sets} WHERE id = ?",
                           [[_pack(c, getattr(f, c)) for c in columns] + [f.id] for f in faces])

    def mark_aligned(self, source: str, frame: int, faces: list[FaceRow], columns: list[str]) -> None:
        """The aligned columns of one frame's faces and its stage, in one transaction."""
        sets = ", ".join(f"{c} = ?" for c in columns)
        with self.transaction() as db:
            db.executemany(f"UPDATE faces SET {sets} WHERE id = ?",
                           [[_pack(c, getattr(f, c)) for c in columns] + [f.id] for f in faces])
            db.execute("UPDATE frames SET stage = 'aligned' WHERE source = ? AND frame = ?", (source, frame))

    def faces(self, where: str = "", params: tuple = (), *, include_excluded: bool = True) -> list[FaceRow]:
        clauses = [where] if where else []
        if not include_excluded:
            clauses.append("excluded = 0")
        sql = "SELECT id, " + ", ".join(_COLUMNS) + " FROM faces"
        if clauses:
            sql += " WHERE " + " AND ".join(f"({c})" for c in clauses)
        sql += " ORDER BY source, frame, face_index"
        rows = []
        for values in self.db.execute(sql, params):
            row = FaceRow(**{c: _unpack(c, v) for c, v in zip(_COLUMNS, values[1:])})
            row.id = values[0]
            rows.append(row)
        return rows

    def sources(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT DISTINCT source FROM frames ORDER BY source")]

    def counts(self) -> dict[str, int]:
        q = lambda sql: self.db.execute(sql).fetchone()[0]
        return {"frames": q("SELECT COUNT(*) FROM frames"),
                "frames_without_faces": q("SELECT COUNT(*) FROM frames WHERE faces = 0"),
                "faces": q("SELECT COUNT(*) FROM faces"),
                "excluded": q("SELECT COUNT(*) FROM faces WHERE excluded = 1"),
                "filled": q("SELECT COUNT(*) FROM faces WHERE filled = 1"),
                "labelled": q("SELECT COUNT(*) FROM labels WHERE face_id IN (SELECT id FROM faces)"),
                "segmented": q("SELECT COUNT(*) FROM faces WHERE seg IS NOT NULL"),
                "aligned": q("SELECT COUNT(*) FROM faces WHERE image IS NOT NULL"),
                "tracks": q("SELECT COUNT(*) FROM (SELECT DISTINCT source, track_id FROM faces)")}

    def image_path(self, face: FaceRow) -> Path:
        return self.folder / face.image

    def matte_path(self, face: FaceRow, kind: str) -> str:
        """Where face's `kind` matte ("seg" or "label") goes, relative to the faceset folder."""
        if kind not in ("seg", "label"):
            raise ValueError(f"matte kind {kind!r}: seg or label")
        return f"masks/{Path(face.image or f'{face.source}_{face.frame:06d}_{face.face_index}').stem}.{kind}.exr"

    # --- mask labels (schema 3) -----------------------------------------------------------

    def labels(self) -> dict[int, dict]:
        """face id -> {"polygons": [...], "matte": path or None, "origin": str, "updated": float}
        for every labelled face still in the faceset."""
        rows = self.db.execute("SELECT face_id, polygons, matte, origin, updated FROM labels "
                               "WHERE face_id IN (SELECT id FROM faces)")
        return {r[0]: {"polygons": json.loads(r[1]), "matte": r[2], "origin": r[3], "updated": r[4]} for r in rows}

    def set_labels(self, labels: dict[int, dict]) -> None:
        """Write (or, for a value of None, remove) the labels of some faces, in one transaction.
        A label: {"polygons": [{"mode", "points"}, ...], "matte": path or None, "origin": str}."""
        import time

        with self.transaction() as db:
            for face_id, label in labels.items():
                if label is None:
                    db.execute("DELETE FROM labels WHERE face_id = ?", (int(face_id),))
                    continue
                polygons = [{"mode": p["mode"], "points": [[float(x), float(y)] for x, y in p["points"]]}
                            for p in label.get("polygons", [])]
                db.execute("INSERT OR REPLACE INTO labels (face_id, polygons, matte, origin, updated) "
                           "VALUES (?, ?, ?, ?, ?)", (int(face_id), json.dumps(polygons), label.get("matte"),
                                                      label.get("origin", "editor"), time.time()))

