"""The mask editor, offscreen: labels drawn (by calls and by mouse and keys), undone, saved and
read back; excluded faces; the grid's sort, filter and next unlabelled; the predicted matte's
tint; Train / Apply as engine jobs (fake commands here), with progress, failure and cancel; the
editor embedded as a tab, starting empty and opening facesets; the identity filter on real faces
(two GRID speakers); the yaw histogram of the faces shown; no torch in the UI process."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before any Qt import

import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("PySide6")

from PySide6 import QtTest  # noqa: E402

from conftest import need_shared, write_faceset  # noqa: E402
from vfxswap.errors import VfxSwapError  # noqa: E402
from vfxswap.faces.identity import SAME_PERSON, distance  # noqa: E402
from vfxswap.faceset import Faceset  # noqa: E402
from vfxswap.hosts.charts import yaw_bins  # noqa: E402
from vfxswap.hosts.jobs import EngineJob, JobRunner  # noqa: E402
from vfxswap.hosts.mask_editor import LIKE_CURRENT, MaskEditor, main, order_faces  # noqa: E402
from vfxswap.hosts.qt import QtCore, QtWidgets  # noqa: E402
from vfxswap.masks.hull import hull_mask  # noqa: E402
from vfxswap.masks.labels import label_matte, write_matte  # noqa: E402

Qt = QtCore.Qt
INCLUDE = [[8, 8], [56, 8], [56, 56], [8, 56]]
EXCLUDE = [[20, 20], [44, 20], [32, 40]]


@pytest.fixture(scope="module")
def app():
    return QtWidgets.QApplication.instance() or QtWidgets.QApplication([])


@pytest.fixture
def faceset(tmp_path):
    return write_faceset(tmp_path / "fs")  # 12 synthetic 64 px faces, ids 1-12 in frame order


@pytest.fixture
def editor(app, faceset):
    editors = []

    def make(**kwargs):
        ed = MaskEditor(faceset, **kwargs)
        ed.resize(1100, 720)
        editors.append(ed)
        return ed

    yield make
    for ed in editors:
        ed.close()


def _draw(ed, mode, points):
    ed.set_mode(mode)
    for x, y in points:
        ed.add_point(x, y)
    assert ed.close_polygon()


def _wait(app, done, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.01)
    app.processEvents()
    assert done(), "timed out"


def test_labels_are_drawn_undone_saved_and_read_back(app, editor, faceset):
    ed = editor()
    face_id = ed.current_id
    _draw(ed, "include", INCLUDE)
    _draw(ed, "exclude", EXCLUDE)
    _draw(ed, "include", [[1, 1], [5, 1], [3, 4]])
    assert ed.undo()  # the last polygon goes back to being drawn, then away point by point
    assert len(ed.polygons) == 2 and len(ed.draft) == 3
    assert ed.redo() and len(ed.polygons) == 3
    for _ in range(4):
        assert ed.undo()
    assert len(ed.polygons) == 2 and ed.draft == []
    assert ed.dirty and ed.save() and not ed.dirty
    expected = [{"mode": "include", "points": INCLUDE}, {"mode": "exclude", "points": EXCLUDE}]
    matte = ed.label_matte()
    assert matte[32, 12] == 1.0 and matte[28, 32] == 0.0 and matte[2, 2] == 0.0  # the cut is out
    ed.close()

    with Faceset(faceset) as fs:
        label = fs.labels()[face_id]
    assert label["polygons"] == expected and label["origin"] == "editor" and label["matte"] is None
    again = editor()
    assert again.current_id == face_id and again.polygons == expected and not again.dirty
    np.testing.assert_array_equal(again.label_matte(), matte)
    np.testing.assert_array_equal(label_matte(label, 64, folder=faceset), matte)


def test_leaving_a_face_saves_it_and_an_emptied_label_is_removed(app, editor, faceset):
    ed = editor()
    _draw(ed, "exclude", EXCLUDE)  # an exclusion alone: the label starts from the hull
    hull = hull_mask(ed.current_face.aligned_landmarks, (64, 64), "extended")
    assert ed.label_matte()[30, 32] == 0.0 and np.allclose(ed.label_matte()[50:], hull[50:])
    ed.add_point(1, 1)  # a polygon still being drawn is dropped on leaving
    assert ed.next_face() and ed.current_id == 2
    assert ed.labels[1]["polygons"] == [{"mode": "exclude", "points": EXCLUDE}]
    assert ed.previous_face() and ed.polygons == ed.labels[1]["polygons"] and ed.draft == []
    assert ed.delete_polygon_at(32, 25) and not ed.delete_polygon_at(2, 2)
    assert ed.save() and 1 not in ed.labels
    with Faceset(faceset) as fs:
        assert fs.labels() == {}


def test_mouse_and_keys_draw_move_and_delete(app, editor):
    ed = editor()
    ed.show()
    ed.activateWindow()
    QtTest.QTest.qWaitForWindowActive(ed)
    view = ed.view
    tolerance = 0.6 / view.scale + 1e-6  # a click lands on a whole screen pixel

    def click(x, y, button=Qt.MouseButton.LeftButton):
        QtTest.QTest.mouseClick(view, button, Qt.KeyboardModifier.NoModifier, view.to_widget(x, y).toPoint())

    for x, y in INCLUDE:
        click(x, y)
    click(*INCLUDE[0])  # on the first point: closes it
    assert ed.draft == [] and len(ed.polygons) == 1 and ed.polygons[0]["mode"] == "include"
    np.testing.assert_allclose(ed.polygons[0]["points"], INCLUDE, atol=tolerance)

    QtTest.QTest.keyClick(view, Qt.Key.Key_E)
    assert ed.mode == "exclude"
    for x, y in EXCLUDE:
        click(x, y)
    QtTest.QTest.keyClick(view, Qt.Key.Key_Return)
    assert [p["mode"] for p in ed.polygons] == ["include", "exclude"]

    start, end = view.to_widget(*EXCLUDE[2]).toPoint(), view.to_widget(32, 46).toPoint()
    QtTest.QTest.mousePress(view, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, start)
    QtTest.QTest.mouseMove(view, view.to_widget(32, 43).toPoint())
    QtTest.QTest.mouseMove(view, end)
    QtTest.QTest.mouseRelease(view, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, end)
    np.testing.assert_allclose(ed.polygons[1]["points"][2], [32, 46], atol=tolerance)
    QtTest.QTest.keyClick(view, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)  # the whole drag, at once
    np.testing.assert_allclose(ed.polygons[1]["points"][2], EXCLUDE[2], atol=tolerance)

    click(32, 25, Qt.MouseButton.RightButton)  # inside both: the topmost (the exclusion) goes
    assert [p["mode"] for p in ed.polygons] == ["include"]
    QtTest.QTest.mouseMove(view, view.to_widget(12, 50).toPoint())
    QtTest.QTest.keyClick(view, Qt.Key.Key_Delete)
    assert ed.polygons == []

    QtTest.QTest.keyClick(view, Qt.Key.Key_I)
    for x, y in INCLUDE:  # the last click is a double-click's first: it adds the point, the second closes
        click(x, y)
    QtTest.QTest.mouseDClick(view, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier,
                             view.to_widget(*INCLUDE[3]).toPoint())
    assert len(ed.polygons) == 1 and len(ed.polygons[0]["points"]) == 4 and ed.draft == []
    QtTest.QTest.keyClick(view, Qt.Key.Key_D)
    assert ed.current_id == 2 and 1 in ed.labels


def test_excluded_faces_persist_and_next_unlabelled_skips_labelled_ones(app, editor, faceset):
    with Faceset(faceset) as fs:
        fs.set_labels({2: {"polygons": [{"mode": "include", "points": INCLUDE}], "origin": "import"},
                       3: {"polygons": [{"mode": "include", "points": INCLUDE}], "origin": "import"}})
    ed = editor()
    ed.select_face(4)
    ed.set_excluded(True)
    assert ed.excluded_action.isChecked()
    ed.select_face(1)
    assert ed.next_unlabelled() and ed.current_id == 5  # 2 and 3 are labelled, 4 excluded
    ed.set_filter("excluded")
    assert ed.visible_ids() == [4]
    ed.set_filter("labelled")
    assert ed.visible_ids() == [2, 3]
    assert not ed.next_unlabelled()
    ed.set_filter("unlabelled")
    assert ed.visible_ids() == [1, 5, 6, 7, 8, 9, 10, 11, 12]
    ed.close()

    with Faceset(faceset) as fs:
        assert [f.id for f in fs.faces() if f.excluded] == [4]
        assert sorted(fs.labels()) == [2, 3]  # viewing a label does not rewrite it
    again = editor()
    again.select_face(4)
    assert again.excluded_action.isChecked()
    again.excluded_action.trigger()  # the toolbar's toggle takes it back
    assert not again.current_face.excluded


def test_the_grid_sorts_as_faceset_sort_does(app, editor):
    ed = editor()
    yaws = [ed.faces[i].yaw for i in ed.visible_ids()]
    assert yaws == [-42.0, -3.0, -1.0, 2.0, 4.0, 5.0, 6.0, 8.0, 12.0, 15.0, 33.0, None]
    ed.set_sort("yaw")
    ed.select_face(12)
    assert [ed.faces[i].yaw for i in ed.visible_ids()][:2] == [-42.0, -3.0]
    assert ed.visible_ids()[-1] == 12 and ed.grid.currentItem().data(Qt.ItemDataRole.UserRole) == 12
    faces = list(ed.faces.values())
    for i, f in enumerate(faces):
        f.blur = float(i % 5) if i != 3 else None
    assert [f.blur for f in order_faces(faces, "blur")][:3] == [4.0, 4.0, 3.0]
    assert order_faces(faces, "blur")[-1].blur is None
    ed.load_thumbnails()
    assert not ed.grid.item(0).icon().isNull()


def test_the_predicted_matte_is_tinted_over_the_face(app, editor, faceset):
    with Faceset(faceset) as fs:
        face = fs.faces()[0]
        matte = np.zeros((64, 64), np.float32)
        matte[:, 32:] = 1.0
        face.seg = fs.matte_path(face, "seg")
        write_matte(fs.folder / face.seg, matte)
        fs.update_faces([face], ["seg"])
    ed = editor()
    ed.show()
    assert ed.current_id == face.id and ed.view.overlay is not None
    np.testing.assert_array_equal(ed.predicted_matte(), matte)

    def pixel(x, y):
        p = ed.view.to_widget(x, y).toPoint()
        return np.array(ed.view.grab().toImage().pixelColor(p).getRgb()[:3], float)

    tinted = pixel(48, 30), pixel(12, 30)
    ed.show_overlay(False)
    assert not ed.overlay_action.isChecked()
    plain = pixel(48, 30), pixel(12, 30)
    assert np.abs(tinted[0] - plain[0]).max() > 20  # inside the matte: tinted
    assert np.abs(tinted[1] - plain[1]).max() <= 1  # outside: the face as it is
    ed.next_face()
    assert ed.view.overlay is None and ed.predicted_matte() is None


def _fake(code: str) -> SimpleNamespace:
    """A job whose command is a small Python program (stands in for `vfxswap masks ...`)."""
    return SimpleNamespace(command=lambda: [sys.executable, "-c", "import json, sys, time\n" + code])


def _events(total: int, pause: float = 0.0) -> str:
    return (f"print(json.dumps({{'event': 'start', 'total': {total}}}), flush=True)\n"
            f"for i in range({total}):\n"
            f"    print(json.dumps({{'event': 'progress', 'done': i + 1, 'total': {total}, 'loss': 0.5 / (i + 1)}}),"
            f" flush=True)\n"
            f"    time.sleep({pause})\n"
            f"print(json.dumps({{'event': 'done'}}), flush=True)\n")


def test_train_apply_runs_both_jobs_with_progress_and_shows_the_new_mattes(app, editor, faceset):
    apply = _events(3) + (
        "from vfxswap.faceset import Faceset\n"
        "from vfxswap.masks.labels import write_matte\n"
        "import numpy as np\n"
        "with Faceset(sys.argv[1]) as fs:\n"
        "    faces = fs.faces()\n"
        "    for f in faces:\n"
        "        f.seg = fs.matte_path(f, 'seg')\n"
        "        write_matte(fs.folder / f.seg, np.ones((64, 64), np.float32))\n"
        "    fs.update_faces(faces, ['seg'])\n")
    asked = []

    def jobs(folder, masker):
        asked.append((folder, masker))
        job = _fake(apply)
        return [("train", _fake(_events(5))),
                ("apply", SimpleNamespace(command=lambda: job.command() + [folder]))]

    ed = editor(jobs=jobs)
    _draw(ed, "include", INCLUDE)
    seen = []
    ed.job_runs.event.connect(lambda name, event: seen.append((name, event["event"], event.get("done"))))
    assert ed.view.overlay is None
    assert ed.train_apply() and not ed.train_apply()  # one at a time
    assert 1 in ed.labels  # saved first: the masker trains on what is drawn
    assert not ed.train_button.isEnabled() and ed.cancel_button.isEnabled()
    _wait(app, lambda: ed.job_result is not None)
    assert ed.job_result.ok, ed.job_result.error
    assert asked == [(str(faceset), str(faceset / "masker"))]
    assert [s for s in seen if s[1] == "progress"] == [("train", "progress", i) for i in range(1, 6)] + [
        ("apply", "progress", i) for i in range(1, 4)]
    assert ed.progress.value() == 100 and ed.train_button.isEnabled() and not ed.cancel_button.isEnabled()
    assert ed.current_face.seg and ed.view.overlay is not None  # the new mattes, without reopening
    assert all(f.seg for f in ed.faces.values())


def test_a_failing_job_says_why_and_stops_there(app, editor):
    ran = []
    fail = "print(json.dumps({'event': 'start', 'total': 2}), flush=True)\n" \
           "sys.stderr.write('vfxswap: error: no labelled face in the faceset\\n'); sys.exit(2)\n"
    ed = editor(jobs=lambda folder, masker: [("train", _fake(fail)), ("apply", _fake("sys.exit(0)"))])
    ed.job_runs.step.connect(ran.append)
    ed.masker_edit.setText("/elsewhere/masker")
    ed.train_apply()
    _wait(app, lambda: ed.job_result is not None)
    assert not ed.job_result.ok and ed.job_result.returncode == 2 and ran == ["train"]
    assert "no labelled face" in ed.job_result.error
    assert "no labelled face" in ed.statusBar().currentMessage()


def test_cancel_stops_the_job_and_the_next_one_never_starts(app, editor):
    ran = []
    ed = editor(jobs=lambda folder, masker: [("train", _fake(_events(200, 0.1))), ("apply", _fake(_events(1)))])
    ed.job_runs.step.connect(ran.append)
    progress = []
    ed.job_runs.event.connect(lambda name, event: progress.append(event))
    started = time.monotonic()
    ed.train_apply()
    _wait(app, lambda: any(e.get("event") == "progress" for e in progress))
    ed.cancel_button.click()
    _wait(app, lambda: ed.job_result is not None)
    assert ed.job_result.cancelled and not ed.job_result.ok and ran == ["train"]
    assert time.monotonic() - started < 15 and "cancelled" in ed.statusBar().currentMessage()


def test_the_engine_jobs_are_masks_train_then_apply(app, editor, faceset, tmp_path):
    ed = editor(python="/opt/engine/bin/python")
    (train_name, train), (apply_name, apply) = ed.masker_jobs(str(faceset), "/m")
    tail = [f"--faceset={faceset}", "--model=/m", "--progress=json"]  # built from jobspec, one word an option
    assert (train_name, apply_name) == ("train", "apply")
    assert train.command() == ["/opt/engine/bin/python", "-m", "vfxswap", "masks", "train", *tail]
    assert apply.command() == ["/opt/engine/bin/python", "-m", "vfxswap", "masks", "apply", *tail]
    # any engine command runs through the hosts' JobRunner
    engine = tmp_path / "engine"
    engine.write_text(f"#!{sys.executable}\nimport json, sys\n"
                      "print(json.dumps({'event': 'done', 'argv': sys.argv[1:]}), flush=True)\n")
    engine.chmod(0o755)
    events = []
    result = JobRunner(EngineJob(["masks", "info", "/m"], python=str(engine))).run(events.append)
    assert result.ok and events == [{"event": "done", "argv": ["-m", "vfxswap", "masks", "info", "/m"]}]


def test_main_opens_the_editor_on_the_faceset(app, faceset):
    opened = []

    def close_it():
        opened.extend(w for w in app.topLevelWidgets() if isinstance(w, MaskEditor) and w.isVisible())
        for w in opened:
            w.close()

    QtCore.QTimer.singleShot(300, close_it)
    before = signal.getsignal(signal.SIGTERM)
    try:
        assert main([str(faceset)]) == 0
    finally:
        signal.signal(signal.SIGTERM, before)
    assert len(opened) == 1 and opened[0].fs.folder == faceset
    assert opened[0].masker_edit.text() == str(faceset / "masker")


# --- embedded, identities, yaw coverage -------------------------------------------------------

@pytest.fixture(scope="module")
def two_speakers(shared_data, tmp_path_factory):
    """A real faceset of stills: three frames of each GRID speaker (A: s1, B: brbk7n), extracted
    with dlib, so each face has an identity embedding and extraction grouped them in two tracks."""
    from vfxswap.faces.extract import extract
    from vfxswap.jobspec import ExtractOptions

    a = sorted((shared_data / "identities" / "A_grid_s1").glob("*.jpg"))[:3]
    b = sorted((shared_data / "identities" / "B_grid_brbk7n").glob("*.jpg"))[:3]
    if len(a) < 3 or len(b) < 3:
        need_shared("GRID identity stills absent")
    root = tmp_path_factory.mktemp("speakers")
    (root / "stills").mkdir()
    for p in a + b:
        (root / "stills" / p.name).symlink_to(p)
    extract(str(root / "stills"), str(root / "fs"), ExtractOptions(detector="dlib", landmarker="dlib", size=64))
    return root / "fs"


def _speaker(face) -> str:
    return "A" if Path(face.source).name.startswith("s1_") else "B"


def test_an_empty_embedded_editor_opens_facesets_and_switching_saves_the_label(app, faceset, tmp_path):
    tabs = QtWidgets.QTabWidget()
    ed = MaskEditor(None, embedded=True)
    tabs.addTab(QtWidgets.QWidget(), "Extract")
    tabs.addTab(ed, "Faceset")
    tabs.setCurrentWidget(ed)
    tabs.resize(1100, 720)
    tabs.show()
    try:
        assert not ed.isWindow() and ed.fs is None and ed.visible_ids() == [] and ed.current_face is None
        assert "no faceset open" in ed.info_label.text() and not ed.train_button.isEnabled()
        assert not ed.train_apply() and ed.statusBar().currentMessage() == "open a faceset first"
        assert all(bar.isVisible() for bar in ed.findChildren(QtWidgets.QToolBar)) and ed.statusBar().isVisible()
        assert ed.yaw_chart.isVisible() and ed.yaw_chart.total == 0
        ed.grab()  # paints its empty state

        opened = []
        ed.facesetOpened.connect(opened.append)
        ed.faceset_edit.setText(str(faceset))
        assert ed._open_from_field()  # what Enter in the Faceset field does
        assert opened == [str(faceset)] and ed.current_id == 1 and len(ed.visible_ids()) == 12
        assert ed.masker_edit.text() == str(faceset / "masker") and ed.train_button.isEnabled()
        assert ed.yaw_chart.total == 11

        QtTest.QTest.qWaitForWindowActive(tabs)
        ed.view.setFocus()
        QtTest.QTest.keyClick(ed.view, Qt.Key.Key_D)  # the editor's keys work inside the tab
        assert ed.current_id == 2

        _draw(ed, "include", INCLUDE)  # not saved yet: opening another faceset saves it, as leaving it would
        other = write_faceset(tmp_path / "other", yaws=[-70.0, 60.0, 61.0], seed=3)
        ed.masker_edit.setText("/elsewhere/masker")  # a masker the artist chose stays chosen
        ed.open_faceset(other)
        with Faceset(faceset) as fs:
            assert fs.labels()[2]["polygons"] == [{"mode": "include", "points": INCLUDE}]
        assert ed.fs.folder == other and ed.faceset_edit.text() == str(other)
        assert ed.visible_ids() == [1, 2, 3] and ed.current_id == 1 and ed.polygons == [] and ed.labels == {}
        assert ed.masker_edit.text() == "/elsewhere/masker"
        assert ed.yaw_chart.counts == yaw_bins([-70.0, 60.0, 61.0])

        ed.faceset_edit.setText(str(tmp_path / "not_a_faceset"))
        assert not ed._open_from_field()  # said in the status bar; the open faceset stays
        assert "not a faceset" in ed.statusBar().currentMessage() and ed.fs.folder == other
        with pytest.raises(VfxSwapError, match="not a faceset"):
            ed.open_faceset(tmp_path / "not_a_faceset")
        assert ed.fs.folder == other and ed.current_id == 1
    finally:
        tabs.close()
        ed.close()
    assert ed._closed


def test_the_identity_filter_keeps_a_track_or_the_faces_like_the_current_one(app, two_speakers):
    ed = MaskEditor(two_speakers)
    try:
        faces = ed.faces
        assert len(faces) == 6 and all(f.embedding is not None for f in faces.values())
        tracks = {t: {i for i, f in faces.items() if f.track_id == t} for t in {f.track_id for f in faces.values()}}
        assert sorted(len(ids) for ids in tracks.values()) == [3, 3]
        assert ed.identity_choices() == ["every identity", "track 0 (3 faces)", "track 1 (3 faces)", LIKE_CURRENT]

        for track, ids in tracks.items():
            ed.set_identity(track)
            assert set(ed.visible_ids()) == ids
            assert len({_speaker(faces[i]) for i in ids}) == 1  # a track is one speaker
        a_ids = {i for i, f in faces.items() if _speaker(f) == "A"}

        # "like the current face": within dlib's same-person distance of its embedding
        first_a = min(a_ids)
        ed.set_identity(None)
        ed.select_face(first_a)
        ed.set_identity(LIKE_CURRENT)
        assert set(ed.visible_ids()) == a_ids and ed.like_id == first_a
        apart = {i: distance(f.embedding, faces[first_a].embedding) for i, f in faces.items()}
        assert all(apart[i] < SAME_PERSON for i in a_ids) and all(apart[i] >= SAME_PERSON for i in set(faces) - a_ids)
        assert f"like face {first_a}" in ed.count_label.text()
        ed.next_face()  # moving on keeps the comparison with the face it was chosen on
        assert ed.current_id != first_a and set(ed.visible_ids()) == a_ids and ed.like_id == first_a

        # it combines with the sort and the other filter
        ed.set_sort("blur")
        assert ed.visible_ids() == [f.id for f in order_faces([faces[i] for i in sorted(a_ids)], "blur")]
        excluded = sorted(a_ids)[1]
        ed.select_face(excluded)
        ed.set_excluded(True)
        ed.set_filter("excluded")
        assert ed.visible_ids() == [excluded]
        ed.set_filter("unlabelled")
        assert set(ed.visible_ids()) == a_ids - {excluded}
        assert ed.yaw_chart.counts == yaw_bins([faces[i].yaw for i in ed.visible_ids()])
        ed.set_identity(None)
        assert set(ed.visible_ids()) == set(faces) - {excluded} and ed.like_id is None
    finally:
        ed.close()


def test_the_yaw_histogram_counts_the_faces_shown_and_marks_the_current_one(app, editor, faceset):
    with Faceset(faceset) as fs:
        fs.set_labels({i: {"polygons": [{"mode": "include", "points": INCLUDE}], "origin": "import"}
                       for i in (1, 9, 11)})
    ed = editor()
    yaws = [-42.0, -3.0, -1.0, 2.0, 4.0, 5.0, 6.0, 8.0, 12.0, 15.0, 33.0, None]  # ids 1-12
    chart = ed.yaw_chart
    assert chart.counts == yaw_bins(yaws) and chart.total == 11 and chart.without_yaw == 1
    assert chart.current_bin == yaw_bins([-42.0]).index(1)  # face 1
    ed.select_face(11)
    assert chart.current_bin == yaw_bins([33.0]).index(1)
    ed.set_filter("labelled")
    assert chart.counts == yaw_bins([-42.0, 12.0, 33.0]) and chart.total == 3
    ed.set_filter("excluded")
    assert chart.total == 0 and chart.current_bin == yaw_bins([33.0]).index(1)  # still says where it is
    ed.set_filter("all")
    ed.set_identity(0)  # the synthetic faces are all track 0
    assert chart.counts == yaw_bins(yaws)


def test_the_editor_does_not_import_torch(faceset):
    """The UI process stays light: opening the editor on a faceset (faces shown, sorted by
    identity, filtered like the current face) loads neither torch nor dlib."""
    code = ("import sys\n"
            "from vfxswap.hosts.qt import QtWidgets\n"
            "import vfxswap.hosts.mask_editor as me\n"
            "app = QtWidgets.QApplication([])\n"
            "ed = me.MaskEditor(None, embedded=True)\n"
            "ed.open_faceset(sys.argv[1])\n"
            "ed.set_sort('identity'); ed.set_identity(me.LIKE_CURRENT); ed.load_thumbnails(); ed.grab()\n"
            "ed.close()\n"
            "print(sorted(m for m in ('torch', 'dlib') if m in sys.modules))\n")
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    done = subprocess.run([sys.executable, "-c", code, str(faceset)], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
