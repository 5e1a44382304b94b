"""The mask editor (`vfxswap faceset edit F`): say what the face is, for the segmentation masker.

A grid of the faceset's faces on the left; on the right one face, its predicted matte as a tint,
and its label's polygons: include (green) paints face in, exclude (red) cuts an occluder out, in
drawing order (`vfxswap.masks.labels`). Points are aligned-crop pixels at the faceset's size,
pixel centres at integers, whatever the zoom. A face's label is written when you leave it (or
save), with origin "editor". Train / Apply runs `masks train`, then `masks apply`, as engine
subprocesses (`hosts.jobs`, as every host runs the engine), then shows the new mattes.

The grid's faces can be narrowed to one identity (a track, or the faces within the same-person
distance of the current face's embedding), and a yaw histogram under it shows the poses the faces
shown cover, so the gaps are plain. The editor runs standalone or embedded (`embedded=True`,
the artist window's Faceset tab), where it starts with no faceset and opens one from its
Faceset field.

Mouse: click adds a point; a click on the first point, a double-click or Enter closes the
polygon; drag a point to move it; right-click removes the polygon under the cursor; the wheel
zooms, a middle-drag pans. Keys: I / E include / exclude, Delete removes the polygon under the
cursor, Esc drops the one being drawn, Ctrl+Z / Ctrl+Shift+Z undo / redo, X excludes the face,
D / A (PgDown / PgUp) next / previous, N the next unlabelled face, O the matte tint, F fits the
face to the view, Ctrl+S saves.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from vfxswap.errors import VfxSwapError
from vfxswap.faceset.store import Faceset, FaceRow
from vfxswap.faceset.tools import SORT_KEYS, ordered
from vfxswap.faces.identity import SAME_PERSON, distance
from vfxswap.hosts.charts import YawHistogram
from vfxswap.hosts.jobs import EngineJob, JobResult
from vfxswap.hosts.panel import to_pixmap
from vfxswap.hosts.qt import QtCore, QtGui, QtWidgets, Signal, run_window
from vfxswap.hosts.qt_jobs import QtJobs
from vfxswap.masks.hull import hull_mask
from vfxswap.masks.labels import label_matte, read_matte

SORTS = ("frame",) + SORT_KEYS  # frame: the faceset's own order (source, frame, face)
FILTERS = ("all", "labelled", "unlabelled", "excluded")  # unlabelled: the work left (not excluded)
EVERY_IDENTITY = "every identity"
LIKE_CURRENT = "like the current face"  # within SAME_PERSON of its embedding, as `faceset filter --like`
THUMB = 96  # grid thumbnail side
COLOURS = {"include": (70, 220, 90), "exclude": (240, 70, 70)}
TINT = (40, 150, 255)  # the predicted matte's overlay colour, away from the polygons' green and red
TINT_ALPHA = 0.45
HIT_PX = 7.0  # how near (screen pixels) a click must be to take a point
UNDO_DEPTH = 200
CACHE = 48  # display images kept (the grid keeps only thumbnails)

Qt = QtCore.Qt
QAction = getattr(QtGui, "QAction", None) or QtWidgets.QAction  # QtGui in Qt 6, QtWidgets in Qt 5
QActionGroup = getattr(QtGui, "QActionGroup", None) or QtWidgets.QActionGroup


def _pos(event) -> "QtCore.QPointF":
    """A mouse or wheel event's position in the widget (Qt 6 and Qt 5 names)."""
    return event.position() if hasattr(event, "position") else QtCore.QPointF(event.pos())


@lru_cache(maxsize=1)
def _pipeline():
    """ColorPipeline("ACEScg"), built once (its display LUT takes about a second)."""
    from vfxswap.color import ColorPipeline

    return ColorPipeline("ACEScg")


def face_display(path: str | Path) -> np.ndarray:
    """An aligned face file (model encoding) as a (S, S, 3) uint8 display image, as the training
    previews show faces: back to ACEScg, then the config's display view."""
    from vfxswap.plates import read_image

    rgb = read_image(path, channels=["R", "G", "B"]).on_display_window().astype(np.float32)
    pipe = _pipeline()
    return np.ascontiguousarray(pipe.to_display(pipe.from_model(np.nan_to_num(rgb), where=str(path))))


def order_faces(faces: list[FaceRow], by: str) -> list[FaceRow]:
    """`faces` in the order `faceset sort --by` ranks them (`faceset.tools.ordered`), without writing ranks."""
    return ordered(faces, by)


def matte_image(matte: np.ndarray, rgb=TINT, alpha: float = TINT_ALPHA) -> "QtGui.QImage":
    """A (S, S) matte as an RGBA tint: `rgb` where the matte is 1, clear where it is 0."""
    rgba = np.empty(matte.shape + (4,), np.uint8)
    rgba[..., :3] = rgb
    rgba[..., 3] = np.clip(matte * (alpha * 255.0), 0, 255).astype(np.uint8)
    h, w = matte.shape
    return QtGui.QImage(rgba.data, w, h, 4 * w, QtGui.QImage.Format.Format_RGBA8888).copy()


def _inside(points, x: float, y: float) -> bool:
    return cv2.pointPolygonTest(np.asarray(points, np.float32).reshape(-1, 1, 2), (float(x), float(y)), False) >= 0


class FaceView(QtWidgets.QWidget):
    """The face, the matte tint and the polygons at any zoom; the mouse edits the editor's label
    in crop pixels. Crop pixel i covers [i - 0.5, i + 0.5], so the image spans -0.5 .. S - 0.5."""

    def __init__(self, editor: "MaskEditor"):
        super().__init__()
        self.editor = editor
        self.image: QtGui.QImage | None = None
        self.overlay: QtGui.QImage | None = None
        self.side = 1
        self.scale = 1.0
        self.offset = QtCore.QPointF(0.0, 0.0)
        self.fitted = True  # follow the widget's size until the artist zooms or pans
        self.hover: tuple[float, float] | None = None  # crop point under the cursor
        self._drag: list | None = None  # [polygon, point, recorded] being moved
        self._pan: QtCore.QPointF | None = None
        self.setMouseTracking(True)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setMinimumSize(360, 360)

    def set_face(self, image: QtGui.QImage | None, side: int, overlay: QtGui.QImage | None) -> None:
        self.image, self.side, self.overlay = image, side, overlay
        if self.fitted:
            self.fit()
        self.update()

    # --- crop <-> widget ------------------------------------------------------------------------

    def to_widget(self, x: float, y: float) -> QtCore.QPointF:
        return QtCore.QPointF((x + 0.5) * self.scale + self.offset.x(), (y + 0.5) * self.scale + self.offset.y())

    def to_crop(self, pos: QtCore.QPointF) -> tuple[float, float]:
        return ((pos.x() - self.offset.x()) / self.scale - 0.5, (pos.y() - self.offset.y()) / self.scale - 0.5)

    def fit(self) -> None:
        self.fitted = True
        self.scale = max(min(self.width(), self.height()) / self.side, 1e-3)
        self.offset = QtCore.QPointF((self.width() - self.side * self.scale) / 2,
                                     (self.height() - self.side * self.scale) / 2)
        self.update()

    def zoom(self, factor: float, anchor: QtCore.QPointF | None = None) -> None:
        """Zoom by `factor`, keeping the crop point under `anchor` (default: the centre) still."""
        anchor = anchor or QtCore.QPointF(self.width() / 2, self.height() / 2)
        x, y = self.to_crop(anchor)
        self.scale = float(np.clip(self.scale * factor, 0.1, 64.0))
        self.offset = QtCore.QPointF(anchor.x() - (x + 0.5) * self.scale, anchor.y() - (y + 0.5) * self.scale)
        self.fitted = False
        self.update()

    def point_at(self, pos: QtCore.QPointF) -> tuple[int, int] | None:
        """(polygon, point) of the label point within HIT_PX of `pos`, topmost first."""
        for p in reversed(range(len(self.editor.polygons))):
            for i, (x, y) in enumerate(self.editor.polygons[p]["points"]):
                d = self.to_widget(x, y) - pos
                if d.x() ** 2 + d.y() ** 2 <= HIT_PX ** 2:
                    return p, i
        return None

    # --- events -----------------------------------------------------------------------------------

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt's names, here and below
        if self.fitted:
            self.fit()
        super().resizeEvent(event)

    def wheelEvent(self, event) -> None:
        self.zoom(1.25 ** (event.angleDelta().y() / 120.0), _pos(event))

    def mousePressEvent(self, event) -> None:
        pos, editor = _pos(event), self.editor
        x, y = self.to_crop(pos)
        button = event.button()
        if button == Qt.MouseButton.MiddleButton:
            self._pan = pos
        elif button == Qt.MouseButton.RightButton:
            editor.delete_polygon_at(x, y)
        elif button == Qt.MouseButton.LeftButton:
            if editor.draft:
                first = self.to_widget(*editor.draft[0]) - pos
                if len(editor.draft) >= 3 and first.x() ** 2 + first.y() ** 2 <= HIT_PX ** 2:
                    editor.close_polygon()
                else:
                    editor.add_point(x, y)
            elif (hit := self.point_at(pos)) is not None:
                self._drag = [*hit, False]
            else:
                editor.add_point(x, y)

    def mouseDoubleClickEvent(self, event) -> None:
        if event.button() == Qt.MouseButton.LeftButton:  # its first click added the last point
            self.editor.close_polygon()

    def mouseMoveEvent(self, event) -> None:
        pos = _pos(event)
        self.hover = self.to_crop(pos)
        if self._pan is not None:
            self.offset += pos - self._pan
            self._pan, self.fitted = pos, False
        elif self._drag is not None:
            p, i, recorded = self._drag
            self.editor.move_point(p, i, *self.hover, record=not recorded)
            self._drag[2] = True
        self.update()

    def mouseReleaseEvent(self, event) -> None:
        self._drag = self._pan = None

    def leaveEvent(self, event) -> None:
        self.hover = None
        self.update()

    def paintEvent(self, event) -> None:
        painter = QtGui.QPainter(self)
        painter.fillRect(self.rect(), QtGui.QColor(32, 32, 32))
        if self.image is None:
            painter.setPen(QtGui.QColor(140, 140, 140))
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter,
                             "open a faceset" if self.editor.fs is None else "no face")
            return
        target = QtCore.QRectF(self.to_widget(-0.5, -0.5), self.to_widget(self.side - 0.5, self.side - 0.5))
        painter.setRenderHint(QtGui.QPainter.RenderHint.SmoothPixmapTransform, self.scale < 2.0)
        painter.drawImage(target, self.image)
        if self.overlay is not None and self.editor.overlay_shown:
            painter.drawImage(target, self.overlay)
        painter.setRenderHint(QtGui.QPainter.RenderHint.Antialiasing, True)
        for poly in self.editor.polygons:
            self._draw(painter, poly["points"], COLOURS[poly["mode"]], closed=True)
        draft = self.editor.draft
        if draft:
            points = draft + ([list(self.hover)] if self.hover is not None else [])
            self._draw(painter, points, COLOURS[self.editor.mode], closed=False)
            first = self.to_widget(*draft[0])
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.setPen(QtGui.QPen(QtGui.QColor(255, 255, 255), 1.5))
            painter.drawEllipse(first, HIT_PX, HIT_PX)  # click here to close

    def _draw(self, painter: QtGui.QPainter, points, rgb, closed: bool) -> None:
        colour = QtGui.QColor(*rgb)
        corners = [self.to_widget(x, y) for x, y in points]
        shape = QtGui.QPolygonF(corners)
        style = Qt.PenStyle.SolidLine if closed else Qt.PenStyle.DashLine
        for pen in (QtGui.QPen(QtGui.QColor(0, 0, 0, 150), 4.0), QtGui.QPen(colour, 2.0, style)):  # dark halo
            painter.setPen(pen)
            painter.setBrush(QtGui.QColor(rgb[0], rgb[1], rgb[2], 50) if closed and pen.color() == colour
                             else Qt.BrushStyle.NoBrush)
            (painter.drawPolygon if closed else painter.drawPolyline)(shape)
        painter.setPen(QtGui.QPen(QtGui.QColor(20, 20, 20), 1.0))
        painter.setBrush(colour)
        for point in (corners if closed else corners[:len(self.editor.draft)]):
            painter.drawRect(QtCore.QRectF(point.x() - 3, point.y() - 3, 6, 6))


class MaskEditor(QtWidgets.QMainWindow):
    """Label a faceset's faces for the masker; see the module docstring for the controls.

    `faceset`: the faceset to open, or None to start empty (`open_faceset` opens one later);
    `masker`: the masker model folder (default `<faceset>/masker`); `python`: the engine's
    interpreter; `jobs(faceset, masker)`: the [(name, job)] Train / Apply runs in turn (default
    `masker_jobs`; a test gives fake commands); `env`: added to the jobs' environment;
    `embedded`: a widget inside another (the window's Faceset tab), not a window of its own.
    """

    jobFinished = Signal(object)  # JobResult of the last step run
    facesetOpened = Signal(str)  # the faceset folder now shown

    def __init__(self, faceset: str | Path | None = None, *, masker: str | Path | None = None,
                 python: str | None = None, jobs=None, env: dict | None = None, embedded: bool = False,
                 parent=None):
        super().__init__(parent)
        if embedded:  # a QMainWindow is a window unless told otherwise; its tool and status bars stay
            self.setWindowFlags(Qt.WindowType.Widget)
        self.fs: Faceset | None = None
        self.python = python or sys.executable
        self.jobs = jobs or self.masker_jobs
        self.env = env
        self.faces: dict[int, FaceRow] = {}
        self.labels: dict[int, dict] = {}
        self.side = 256
        self.like_id: int | None = None  # the face "like the current face" compares with (when chosen)
        self.current_id: int | None = None
        self.polygons: list[dict] = []  # the current face's label, as edited (saved on leaving it)
        self.draft: list[list[float]] = []  # the polygon being drawn
        self.mode = "include"
        self.overlay_shown = True
        self.job_result: JobResult | None = None
        self._undo: list = []
        self._redo: list = []
        self._images: OrderedDict[int, QtGui.QImage] = OrderedDict()
        self._thumbs: dict[int, QtGui.QPixmap] = {}
        self._thumb_queue: list[int] = []
        self._items: dict[int, QtWidgets.QListWidgetItem] = {}
        self._closed = False
        self.job_runs = QtJobs(self, env=env)  # Train / Apply, off the UI thread
        self.job_runs.step.connect(self._on_step)
        self.job_runs.event.connect(self._on_event)
        self.job_runs.finished.connect(self._on_finished)
        self.setWindowTitle("vfxswap mask editor")
        self._thumb_timer = QtCore.QTimer(self)
        self._thumb_timer.timeout.connect(self._load_some_thumbnails)
        self._build(masker)
        if faceset is not None:
            self.open_faceset(faceset)
        else:
            self.refresh_grid()
            self._changed()
        self.view.setFocus()  # the keys (I, E, D, ...) are the editor's from the start

    def open_faceset(self, path: str | Path) -> None:
        """Show faceset `path` in place of the open one, saving the current face's label first (as
        leaving a face does). A folder that is not a faceset raises VfxSwapError and leaves the open
        one as it was; so does a Train / Apply still running on it (its mattes are on their way)."""
        if self.job_running:
            raise VfxSwapError(f"Train / Apply is running on {self.fs.folder}: wait for it or cancel it "
                               "before opening another faceset")
        fs = Faceset(path)
        old_default = self._default_masker()
        if self.fs is not None and not self._closed:
            self.save()
            self.fs.close()
        self.fs, self._closed = fs, False  # a tab closed with its window and shown again is live again
        self.faces = {f.id: f for f in fs.faces() if f.image}
        self.labels = fs.labels()
        sizes = [f.size for f in self.faces.values() if f.size]
        self.side = int(fs.meta("size") or (sizes[0] if sizes else 256))
        self.current_id, self.like_id = None, None
        self.polygons, self.draft, self._undo, self._redo = [], [], [], []
        self._images.clear()
        self._thumbs.clear()
        self._thumb_queue = []
        self.view.fitted = True
        self.faceset_edit.setText(str(fs.folder))
        if self.masker_edit.text().strip() in ("", old_default):  # a folder the artist chose stays
            self.masker_edit.setText(self._default_masker())
        self.setWindowTitle(f"vfxswap mask editor: {fs.folder}")
        self.train_button.setEnabled(True)
        self._fill_identities()
        self.refresh_grid()
        ids = self.visible_ids()
        if ids:
            self.select_face(ids[0])
        else:
            self.view.set_face(None, self.side, None)
            self._changed()
        self.facesetOpened.emit(str(fs.folder))

    def _default_masker(self) -> str:
        return str(self.fs.folder / "masker") if self.fs is not None else ""

    # --- layout -----------------------------------------------------------------------------------

    def _action(self, text: str, keys, slot, *, tip: str = "", checkable: bool = False) -> QAction:
        keys = [keys] if isinstance(keys, str) else keys
        action = QAction(text, self)
        action.setShortcuts([QtGui.QKeySequence(k) for k in keys])
        action.setToolTip(f"{tip or text} ({', '.join(keys)})")
        action.setCheckable(checkable)
        if checkable:
            action.toggled.connect(slot)
        else:
            action.triggered.connect(lambda _checked=False: slot())
        self.addAction(action)  # shortcuts work wherever the focus is in the window
        return action

    def _build(self, masker) -> None:
        self.sort_combo = QtWidgets.QComboBox()
        self.sort_combo.addItems(SORTS)
        self.sort_combo.setToolTip("order of the grid: as `faceset sort --by` ranks faces")
        self.filter_combo = QtWidgets.QComboBox()
        self.filter_combo.addItems(FILTERS)
        self.identity_combo = QtWidgets.QComboBox()
        self.identity_combo.setToolTip("one person: a track (for stills, an identity across them), or the faces "
                                       "within the same-person distance of the face current when chosen")
        self.identity_combo.setSizeAdjustPolicy(
            QtWidgets.QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)  # long shot names: no wider
        self.identity_combo.setMinimumContentsLength(10)
        self.sort_combo.currentTextChanged.connect(lambda _: self.refresh_grid())
        self.filter_combo.currentTextChanged.connect(lambda _: self.refresh_grid())
        self.identity_combo.currentIndexChanged.connect(self._on_identity)
        self._fill_identities()
        self.grid = QtWidgets.QListWidget()
        self.grid.setViewMode(QtWidgets.QListView.ViewMode.IconMode)
        self.grid.setIconSize(QtCore.QSize(THUMB, THUMB))
        self.grid.setGridSize(QtCore.QSize(THUMB + 10, THUMB + 24))
        self.grid.setResizeMode(QtWidgets.QListView.ResizeMode.Adjust)
        self.grid.setMovement(QtWidgets.QListView.Movement.Static)
        self.grid.setUniformItemSizes(True)
        self.grid.setMinimumWidth(3 * (THUMB + 10) + 24)
        self.grid.currentItemChanged.connect(self._on_grid_current)
        self.count_label = QtWidgets.QLabel()
        self.yaw_chart = YawHistogram()
        self.yaw_chart.setToolTip("yaw coverage of the faces shown; the current face's bin highlighted, "
                                  "empty bins (poses missing) marked red")
        self.yaw_chart.setFixedHeight(max(150, 9 * self.fontMetrics().height()))
        self.faceset_edit = QtWidgets.QLineEdit()
        self.faceset_edit.setPlaceholderText("faceset folder")
        self.faceset_edit.setToolTip("the faceset shown: type a folder and press Enter, or browse")
        self.faceset_edit.returnPressed.connect(self._open_from_field)
        self.faceset_edit.setFocusPolicy(Qt.FocusPolicy.ClickFocus)  # not where the editor's letter keys go
        faceset_browse = QtWidgets.QToolButton()
        faceset_browse.setText("…")
        faceset_browse.setToolTip("open another faceset")
        faceset_browse.clicked.connect(self._browse_faceset)
        opener = QtWidgets.QHBoxLayout()
        opener.addWidget(QtWidgets.QLabel("Faceset"))
        opener.addWidget(self.faceset_edit, 1)
        opener.addWidget(faceset_browse)
        combos = QtWidgets.QHBoxLayout()
        for text, combo in (("Sort", self.sort_combo), ("Show", self.filter_combo)):
            combos.addWidget(QtWidgets.QLabel(text))
            combos.addWidget(combo, 1)
        combos.addWidget(self.identity_combo, 2)
        left = QtWidgets.QWidget()
        lay = QtWidgets.QVBoxLayout(left)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addLayout(opener)
        lay.addLayout(combos)
        lay.addWidget(self.grid, 1)
        lay.addWidget(self.count_label)
        lay.addWidget(self.yaw_chart)

        self.view = FaceView(self)
        self.info_label = QtWidgets.QLabel()
        self.info_label.setWordWrap(True)
        self.info_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        toolbar = self.addToolBar("edit")
        toolbar.setMovable(False)
        modes = QActionGroup(self)
        self.include_action = self._action("Include", "I", lambda on: on and self.set_mode("include"),
                                           tip="draw polygons that paint face in", checkable=True)
        self.exclude_action = self._action("Exclude", "E", lambda on: on and self.set_mode("exclude"),
                                           tip="draw polygons that cut an occluder out", checkable=True)
        for action in (self.include_action, self.exclude_action):
            modes.addAction(action)
            toolbar.addAction(action)
        self.include_action.setChecked(True)
        toolbar.addSeparator()
        self._action("Close polygon", ["Return", "Enter"], self.close_polygon)
        self._action("Drop polygon", "Esc", self.cancel_polygon)
        self.delete_action = self._action("Delete polygon", "Del", self.delete_under_cursor,
                                          tip="delete the polygon under the cursor (or right-click it)")
        for text, keys, slot in (("Undo", "Ctrl+Z", self.undo), ("Redo", ["Ctrl+Shift+Z", "Ctrl+Y"], self.redo)):
            toolbar.addAction(self._action(text, keys, slot))
        toolbar.addSeparator()
        self.overlay_action = self._action("Matte", "O", self.show_overlay, checkable=True,
                                           tip="tint the predicted matte (the masker's) over the face")
        self.overlay_action.setChecked(True)
        self.excluded_action = self._action("Exclude face", "X", self.set_excluded, checkable=True,
                                            tip="leave this face out of training")
        toolbar.addAction(self.overlay_action)
        toolbar.addAction(self.excluded_action)
        toolbar.addSeparator()
        for text, keys, slot, tip in (
                ("◀ Prev", ["A", "PgUp"], self.previous_face, "previous face in the grid"),
                ("Next ▶", ["D", "PgDown"], self.next_face, "next face in the grid"),
                ("Next unlabelled", "N", self.next_unlabelled, "next face with no label, not excluded"),
                ("Fit", "F", lambda: self.view.fit(), "fit the face to the view"),
                ("Save", "Ctrl+S", self.save, "write this face's label (leaving a face saves it too)")):
            toolbar.addAction(self._action(text, keys, slot, tip=tip))

        self.masker_edit = QtWidgets.QLineEdit(str(masker or ""))
        self.masker_edit.setToolTip("the masker model folder Train / Apply trains and applies")
        browse = QtWidgets.QToolButton()
        browse.setText("…")
        browse.clicked.connect(self._browse_masker)
        self.train_button = QtWidgets.QPushButton("Train / Apply")
        self.train_button.setToolTip("save, train the masker on the labels, apply it to every face, "
                                     "show the new mattes")
        self.train_button.clicked.connect(self.train_apply)
        self.cancel_button = QtWidgets.QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel_job)
        self.cancel_button.setEnabled(False)
        self.train_button.setEnabled(False)  # until a faceset is open
        self.progress = QtWidgets.QProgressBar()
        self.progress.setRange(0, 100)
        self.progress.setValue(0)
        jobs = QtWidgets.QHBoxLayout()
        jobs.addWidget(QtWidgets.QLabel("Masker"))
        jobs.addWidget(self.masker_edit, 2)
        jobs.addWidget(browse)
        jobs.addWidget(self.train_button)
        jobs.addWidget(self.cancel_button)
        jobs.addWidget(self.progress, 1)

        right = QtWidgets.QWidget()
        lay = QtWidgets.QVBoxLayout(right)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addWidget(self.view, 1)
        lay.addWidget(self.info_label)
        lay.addLayout(jobs)
        split = QtWidgets.QSplitter()
        split.addWidget(left)
        split.addWidget(right)
        split.setStretchFactor(1, 1)
        self.setCentralWidget(split)
        self.statusBar()

    def _browse_faceset(self) -> None:
        start = self.faceset_edit.text().strip() or (str(self.fs.folder.parent) if self.fs is not None else "")
        path = QtWidgets.QFileDialog.getExistingDirectory(self, "Faceset folder", start)
        if path:
            self.faceset_edit.setText(path)
            self._open_from_field()

    def _open_from_field(self) -> bool:
        """Open the faceset the Faceset field names; a folder that is not one is said, not raised."""
        path = self.faceset_edit.text().strip()
        if not path:
            return False
        try:
            self.open_faceset(path)
        except (VfxSwapError, OSError) as exc:
            self.message(str(exc))
            return False
        self.view.setFocus()
        return True

    def _browse_masker(self) -> None:
        path = QtWidgets.QFileDialog.getExistingDirectory(self, "Masker model folder", self.masker_edit.text())
        if path:
            self.masker_edit.setText(path)

    def message(self, text: str) -> None:
        self.statusBar().showMessage(text, 8000)

    # --- the grid ---------------------------------------------------------------------------------

    def _shown(self, face: FaceRow, name: str) -> bool:
        if name == "labelled":
            return face.id in self.labels
        if name == "unlabelled":
            return face.id not in self.labels and not face.excluded
        if name == "excluded":
            return bool(face.excluded)
        return True

    def visible_ids(self) -> list[int]:
        """Face ids in the grid, in its order."""
        return [self.grid.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.grid.count())]

    def set_sort(self, by: str) -> None:
        self.sort_combo.setCurrentText(by)

    def set_filter(self, name: str) -> None:
        self.filter_combo.setCurrentText(name)

    def _fill_identities(self) -> None:
        """The identity combo's entries for the open faceset: every identity, a track each (for
        stills, an identity across them, as extraction groups them; for several shots, a track
        of one shot), then like the current face. Back on every identity."""
        faces = list(self.faces.values())
        frames: dict[str, set] = {}
        for f in faces:
            frames.setdefault(f.source, set()).add(f.frame)
        by_shot = len(frames) > 1 and not all(len(v) <= 1 for v in frames.values())  # track ids are per shot
        tracks: dict[tuple, int] = {}
        for f in faces:
            if f.track_id is not None:
                key = (f.source if by_shot else None, int(f.track_id))
                tracks[key] = tracks.get(key, 0) + 1
        keys = sorted(tracks, key=lambda key: (key[0] or "", key[1]))
        self._identities = [None] + [("track", *key) for key in keys] + [("like",)]  # the combo's entries
        combo = self.identity_combo
        combo.blockSignals(True)
        combo.clear()
        combo.addItem(EVERY_IDENTITY)
        for source, track in keys:
            name = f"track {track}" if source is None else f"{Path(source).name} track {track}"
            count = tracks[(source, track)]
            combo.addItem(f"{name} ({count} face{'' if count == 1 else 's'})")
        combo.addItem(LIKE_CURRENT)
        combo.setCurrentIndex(0)
        combo.blockSignals(False)
        self.like_id = None

    def identity_choices(self) -> list[str]:
        """The identity combo's entries, as shown."""
        return [self.identity_combo.itemText(i) for i in range(self.identity_combo.count())]

    def set_identity(self, choice: int | tuple | str | None) -> None:
        """Show one identity: None (every one), a track id, (source, track id) when the faceset
        holds several shots, or an entry's text (`LIKE_CURRENT`: faces like the current one)."""
        def matches(index: int) -> bool:
            entry = self._identities[index]
            if choice is None or isinstance(choice, str):
                return entry is None if choice is None else self.identity_combo.itemText(index) == choice
            if entry is None or entry[0] != "track":
                return False
            return choice == entry[1:] if isinstance(choice, tuple) else (entry[1] is None and choice == entry[2])

        index = next((i for i in range(len(self._identities)) if matches(i)), None)
        if index is None:
            raise ValueError(f"no identity {choice!r} here; the choices are {self.identity_choices()}")
        if index == self.identity_combo.currentIndex():
            self._on_identity(index)  # chosen again: "like" takes the face current now
        else:
            self.identity_combo.setCurrentIndex(index)

    def _identity(self) -> tuple | None:
        index = self.identity_combo.currentIndex()
        return self._identities[index] if 0 <= index < len(self._identities) else None

    def _on_identity(self, _index: int) -> None:
        like = self._identity() == ("like",)
        self.like_id = self.current_id if like else None
        if like and self.current_face is None:
            self.message("no current face to compare with")
        elif like and self.current_face.embedding is None:
            self.message(f"face {self.current_id} has no identity embedding: it is shown alone")
        self.refresh_grid()

    def identity_ids(self) -> set[int] | None:
        """Ids of the faces the identity combo keeps, or None when it keeps every face."""
        data = self._identity()
        if data is None:
            return None
        if data[0] == "track":
            _kind, source, track = data
            return {f.id for f in self.faces.values()
                    if f.track_id == track and (source is None or f.source == source)}
        reference = self.faces.get(self.like_id)
        if reference is None:
            return set()
        if reference.embedding is None:
            return {reference.id}
        ids = [f.id for f in self.faces.values() if f.embedding is not None]
        apart = np.atleast_1d(distance(np.stack([self.faces[i].embedding for i in ids]), reference.embedding))
        return {i for i, d in zip(ids, apart) if d < SAME_PERSON} | {reference.id}

    def refresh_grid(self) -> None:
        """Fill the grid from the sort, filter and identity combos (thumbnails load a few at a time)."""
        shown = self.filter_combo.currentText()
        person = self.identity_ids()
        faces = [f for f in order_faces(list(self.faces.values()), self.sort_combo.currentText())
                 if self._shown(f, shown) and (person is None or f.id in person)]
        one_source = len({f.source for f in self.faces.values()}) == 1  # else name each face's (stills)
        self.grid.blockSignals(True)
        self.grid.clear()
        self._items = {}
        for face in faces:
            text = str(face.frame) if one_source else Path(face.source).stem
            item = self._items[face.id] = QtWidgets.QListWidgetItem(text)
            item.setData(Qt.ItemDataRole.UserRole, face.id)
            item.setToolTip(f"face {face.id}: {face.source} frame {face.frame} #{face.face_index}")
            self.grid.addItem(item)
            self._mark(item, face)
            if face.id == self.current_id:
                self.grid.setCurrentItem(item)
        self.grid.blockSignals(False)
        self._count()
        self._update_yaw_chart()
        self._thumb_queue = [f.id for f in faces if f.id not in self._thumbs]
        self._thumb_timer.start(0)

    def _count(self) -> None:
        like = f" like face {self.like_id}" if self.like_id is not None else ""
        self.count_label.setText(f"{self.grid.count()} of {len(self.faces)} faces{like}, {len(self.labels)} labelled")

    def _update_yaw_chart(self) -> None:
        """The yaw coverage of the faces the grid shows, the current face's bin highlighted."""
        face = self.current_face
        self.yaw_chart.set_yaws([self.faces[i].yaw for i in self.visible_ids()],
                                current=face.yaw if face is not None else None)

    def _load_some_thumbnails(self, count: int = 8) -> None:
        while self._thumb_queue and count:
            face_id = self._thumb_queue.pop(0)
            if face_id not in self._thumbs and face_id in self.faces:
                image = self._image(face_id)
                self._thumbs[face_id] = QtGui.QPixmap.fromImage(image).scaled(
                    THUMB, THUMB, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation)
                self._refresh_marker(face_id)
                count -= 1
        if not self._thumb_queue:
            self._thumb_timer.stop()

    def load_thumbnails(self) -> None:
        """Load every thumbnail the grid still waits for, now."""
        self._load_some_thumbnails(len(self._thumb_queue))

    def _refresh_marker(self, face_id: int) -> None:
        item = self._items.get(face_id)
        if item is not None:
            self._mark(item, self.faces[face_id])

    def _mark(self, item: QtWidgets.QListWidgetItem, face: FaceRow) -> None:
        """The face's thumbnail with its state: a green corner when labelled, dimmed with a red
        cross when excluded, a blue bar when it has a predicted matte."""
        pixmap = QtGui.QPixmap(THUMB, THUMB)
        pixmap.fill(QtGui.QColor(50, 50, 50))
        painter = QtGui.QPainter(pixmap)
        thumb = self._thumbs.get(face.id)
        if thumb is not None:
            painter.drawPixmap(0, 0, thumb)
        painter.setRenderHint(QtGui.QPainter.RenderHint.Antialiasing, True)
        if face.seg:
            painter.fillRect(0, THUMB - 5, THUMB, 5, QtGui.QColor(*TINT))
        if face.id in self.labels:
            painter.setPen(QtGui.QPen(QtGui.QColor(0, 0, 0), 1.5))
            painter.setBrush(QtGui.QColor(*COLOURS["include"]))
            painter.drawPolygon(QtGui.QPolygonF([QtCore.QPointF(THUMB - 26, 0), QtCore.QPointF(THUMB, 0),
                                                 QtCore.QPointF(THUMB, 26)]))
        if face.excluded:
            painter.fillRect(0, 0, THUMB, THUMB, QtGui.QColor(0, 0, 0, 140))
            painter.setPen(QtGui.QPen(QtGui.QColor(*COLOURS["exclude"]), 4))
            painter.drawLine(12, 12, THUMB - 12, THUMB - 12)
            painter.drawLine(THUMB - 12, 12, 12, THUMB - 12)
        painter.end()
        icon = QtGui.QIcon(pixmap)
        icon.addPixmap(pixmap, QtGui.QIcon.Mode.Selected)  # not washed out by the selection colour
        item.setIcon(icon)

    def _on_grid_current(self, item, _previous) -> None:
        if item is not None:
            self.select_face(item.data(Qt.ItemDataRole.UserRole))

    # --- one face ---------------------------------------------------------------------------------

    @property
    def current_face(self) -> FaceRow | None:
        return self.faces.get(self.current_id)

    def _image(self, face_id: int) -> QtGui.QImage:
        """The face's display image, from a small cache."""
        if face_id in self._images:
            self._images.move_to_end(face_id)
            return self._images[face_id]
        try:
            rgb = face_display(self.fs.image_path(self.faces[face_id]))
            image = to_pixmap(rgb).toImage()
        except Exception as exc:  # a missing or damaged face file: say so, keep the editor usable
            self.message(f"face {face_id}: {exc}")
            image = QtGui.QImage(self.side, self.side, QtGui.QImage.Format.Format_RGB888)
            image.fill(QtGui.QColor(60, 0, 0))
        self._images[face_id] = image
        while len(self._images) > CACHE:
            self._images.popitem(last=False)
        return image

    def predicted_matte(self, face: FaceRow | None = None) -> np.ndarray | None:
        """The face's segmentation matte ((S, S) float32), or None when it has none."""
        face = face or self.current_face
        if face is None or not face.seg:
            return None
        try:
            return read_matte(self.fs.folder / face.seg, self.side)
        except Exception as exc:
            self.message(f"face {face.id}: its matte: {exc}")
            return None

    def label_matte(self) -> np.ndarray:
        """The current face's label as the masker will train on it ((S, S) float32)."""
        face = self.current_face
        saved = self.labels.get(self.current_id) or {}
        hull = (hull_mask(face.aligned_landmarks, (self.side, self.side), "extended")
                if face.aligned_landmarks is not None else None)
        return label_matte({"polygons": self.polygons, "matte": saved.get("matte")}, self.side,
                           folder=self.fs.folder, hull=hull)

    def select_face(self, face_id: int) -> None:
        """Show face `face_id`, saving the one being left (a polygon still being drawn is dropped)."""
        if face_id == self.current_id or face_id not in self.faces:
            return
        if self.current_id is not None:
            self.save()
        self.current_id = face_id
        label = self.labels.get(face_id)
        self.polygons = copy.deepcopy(label["polygons"]) if label else []
        self.draft, self._undo, self._redo = [], [], []
        matte = self.predicted_matte()
        self.view.set_face(self._image(face_id), self.side, None if matte is None else matte_image(matte))
        item = self._items.get(face_id)
        if item is not None and self.grid.currentItem() is not item:
            self.grid.blockSignals(True)
            self.grid.setCurrentItem(item)
            self.grid.blockSignals(False)
            self.grid.scrollToItem(item)
        self.excluded_action.blockSignals(True)
        self.excluded_action.setChecked(bool(self.current_face.excluded))
        self.excluded_action.blockSignals(False)
        self._update_yaw_chart()
        self._changed()

    def _changed(self) -> None:
        """After any edit: redraw, and say where the face stands."""
        face = self.current_face
        if face is None:
            self.info_label.setText("no faceset open: type its folder in the Faceset field, or press … beside it"
                                    if self.fs is None else "no face shown")
            self.view.update()
            return
        parts = [f"face {face.id}: {Path(face.source).name} frame {face.frame} #{face.face_index}"]
        if face.yaw is not None:
            parts.append(f"yaw {face.yaw:+.0f}°")
        if face.blur is not None:
            parts.append(f"blur {face.blur:.0f}")
        modes = [p["mode"] for p in self.polygons]
        parts.append(f"{modes.count('include')} include, {modes.count('exclude')} exclude"
                     + (" (unsaved)" if self.dirty else ""))
        parts.append("predicted matte" if face.seg else "no predicted matte")
        if face.excluded:
            parts.append("EXCLUDED")
        self.info_label.setText("   ·   ".join(parts))
        self.view.update()

    @property
    def dirty(self) -> bool:
        """The current face's polygons differ from its saved label."""
        saved = self.labels.get(self.current_id)
        return self.polygons != (saved["polygons"] if saved else [])

    # --- editing ----------------------------------------------------------------------------------

    def _record(self) -> None:
        """Keep the label's state before an edit, for undo."""
        self._undo.append((copy.deepcopy(self.polygons), list(self.draft)))
        del self._undo[:-UNDO_DEPTH]
        self._redo.clear()

    def set_mode(self, mode: str) -> None:
        """include or exclude: the kind of the polygons drawn next (and of the one being drawn)."""
        if mode not in COLOURS:
            raise ValueError(f"mode {mode!r}: include or exclude")
        self.mode = mode
        (self.include_action if mode == "include" else self.exclude_action).setChecked(True)
        self.view.update()

    def add_point(self, x: float, y: float) -> None:
        """Add a point (crop pixels) to the polygon being drawn, starting one if none is."""
        self._record()
        self.draft.append([round(float(x), 3), round(float(y), 3)])
        self._changed()

    def close_polygon(self) -> bool:
        """Finish the polygon being drawn (3 points at least) in the current mode."""
        if len(self.draft) < 3:
            return False
        self._record()
        self.polygons.append({"mode": self.mode, "points": [list(p) for p in self.draft]})
        self.draft = []
        self._changed()
        return True

    def cancel_polygon(self) -> None:
        if self.draft:
            self._record()
            self.draft = []
            self._changed()

    def move_point(self, polygon: int, index: int, x: float, y: float, *, record: bool = True) -> None:
        """Move one point of a finished polygon (a drag records once, at its start)."""
        if record:
            self._record()
        self.polygons[polygon]["points"][index] = [round(float(x), 3), round(float(y), 3)]
        self._changed()

    def polygon_at(self, x: float, y: float) -> int | None:
        """Index of the topmost polygon containing crop point (x, y)."""
        for i in reversed(range(len(self.polygons))):
            if _inside(self.polygons[i]["points"], x, y):
                return i
        return None

    def delete_polygon_at(self, x: float, y: float) -> bool:
        index = self.polygon_at(x, y)
        if index is None:
            return False
        self._record()
        del self.polygons[index]
        self._changed()
        return True

    def delete_under_cursor(self) -> bool:
        if self.view.hover is None:
            return False
        return self.delete_polygon_at(*self.view.hover)

    def undo(self) -> bool:
        if not self._undo:
            return False
        self._redo.append((copy.deepcopy(self.polygons), list(self.draft)))
        self.polygons, self.draft = self._undo.pop()
        self._changed()
        return True

    def redo(self) -> bool:
        if not self._redo:
            return False
        self._undo.append((copy.deepcopy(self.polygons), list(self.draft)))
        self.polygons, self.draft = self._redo.pop()
        self._changed()
        return True

    def save(self) -> bool:
        """Write the current face's label to the faceset when it changed (no polygon and no
        imported matte: the label is removed); True when something was written."""
        face_id = self.current_id
        if face_id is None or not self.dirty:
            return False
        saved = self.labels.get(face_id) or {}
        if not self.polygons and not saved.get("matte"):
            self.fs.set_labels({face_id: None})
            self.labels.pop(face_id, None)
        else:
            label = {"polygons": copy.deepcopy(self.polygons), "matte": saved.get("matte"), "origin": "editor"}
            self.fs.set_labels({face_id: label})
            self.labels[face_id] = dict(label, updated=time.time())
        self._refresh_marker(face_id)
        self._count()
        self._changed()
        self.message(f"face {face_id}: label saved")
        return True

    def set_excluded(self, excluded: bool = True) -> None:
        """Leave the current face out of training (or take it back), in the faceset at once."""
        face = self.current_face
        if face is None or bool(face.excluded) == bool(excluded):
            return
        face.excluded = int(bool(excluded))
        self.fs.update_faces([face], ["excluded"])
        self.excluded_action.blockSignals(True)
        self.excluded_action.setChecked(bool(excluded))
        self.excluded_action.blockSignals(False)
        self._refresh_marker(face.id)
        self._changed()

    def show_overlay(self, shown: bool = True) -> None:
        self.overlay_shown = bool(shown)
        if self.overlay_action.isChecked() != self.overlay_shown:
            self.overlay_action.setChecked(self.overlay_shown)
        self.view.update()

    # --- moving around ----------------------------------------------------------------------------

    def _step(self, step: int) -> bool:
        ids = self.visible_ids()
        if not ids:
            return False
        at = ids.index(self.current_id) + step if self.current_id in ids else 0
        if not 0 <= at < len(ids):
            return False
        self.select_face(ids[at])
        return True

    def next_face(self) -> bool:
        return self._step(1)

    def previous_face(self) -> bool:
        return self._step(-1)

    def next_unlabelled(self) -> bool:
        """The next face in the grid's order (wrapping) with no label that is not excluded."""
        ids = self.visible_ids()
        start = ids.index(self.current_id) + 1 if self.current_id in ids else 0
        for face_id in ids[start:] + ids[:start]:
            if face_id != self.current_id and face_id not in self.labels and not self.faces[face_id].excluded:
                self.select_face(face_id)
                return True
        self.message("every face shown is labelled or excluded")
        return False

    # --- Train / Apply ----------------------------------------------------------------------------

    def masker_jobs(self, faceset: str, masker: str) -> list[tuple[str, EngineJob]]:
        """What Train / Apply runs: the masker's training on the labels, then its mattes for every face."""
        from vfxswap.jobspec import MaskApplyOptions, MaskTrainOptions, flags

        train = flags(MaskTrainOptions, {"faceset": [faceset], "model": masker, "progress": "json"})
        apply = flags(MaskApplyOptions, {"faceset": faceset, "model": masker, "progress": "json"})
        return [("train", EngineJob(["masks", "train", *train], python=self.python)),
                ("apply", EngineJob(["masks", "apply", *apply], python=self.python))]

    @property
    def job_running(self) -> bool:
        return self.job_runs.running

    def train_apply(self) -> bool:
        """Save, then run the Train / Apply jobs on a worker thread; False when one is running."""
        if self.job_running:
            return False
        if self.fs is None:
            self.message("open a faceset first")
            return False
        self.save()
        masker = self.masker_edit.text().strip() or self._default_masker()
        jobs = list(self.jobs(str(self.fs.folder), masker))
        self.job_result = None
        self.progress.setValue(0)
        self.train_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.job_runs.start(jobs)
        return True

    def cancel_job(self) -> None:
        self.job_runs.cancel()

    def _on_step(self, name: str) -> None:
        self.progress.setValue(0)
        self.progress.setFormat(f"{name} %p%")
        self.message(f"{name}: starting")

    def _on_event(self, name: str, event: dict) -> None:
        kind = event.get("event")
        total, done = event.get("total") or 0, event.get("done") or 0
        if kind == "progress" and total:
            self.progress.setValue(int(round(100 * done / total)))
            extra = [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in event.items()
                     if k not in ("event", "done", "total") and isinstance(v, (int, float, str))][:3]
            self.message(f"{name} {done}/{total}" + ("  " + "  ".join(extra) if extra else ""))
        elif kind == "start":
            self.message(f"{name}: {total} to do" if total else f"{name}: started")
        elif kind == "done":
            self.progress.setValue(100)
            self.message(f"{name}: done")
        elif kind == "log":
            self.message(f"{name}: {event.get('text', '')}")

    def _on_finished(self, name: str, result: JobResult) -> None:
        self.job_result = result
        self.train_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        if result.cancelled:
            self.message(f"{name}: cancelled")
        elif result.ok:
            self.message("masker trained and applied: the mattes shown are its new ones")
        else:
            self.message(f"{name} failed: " + (result.error or f"the engine exited with code {result.returncode}"))
        if not self._closed:
            self.reload_mattes()
        self.jobFinished.emit(result)

    def reload_mattes(self) -> None:
        """Read the faces' predicted mattes again (after `masks apply`)."""
        if self.fs is None:
            return
        for face in self.fs.faces():
            if face.id in self.faces:
                self.faces[face.id].seg = face.seg
                self.faces[face.id].seg_model = face.seg_model
        for face_id in self.faces:
            self._refresh_marker(face_id)
        matte = self.predicted_matte()
        self.view.set_face(self.view.image, self.side, None if matte is None else matte_image(matte))
        self._changed()

    # --- closing ----------------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Save the face being edited, stop a running job, close the faceset (once)."""
        if self._closed:
            return
        self.save()
        self.cancel_job()
        self.job_runs.wait(10)
        self._thumb_timer.stop()
        self._closed = True
        if self.fs is not None:
            self.fs.close()

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        self.shutdown()
        super().closeEvent(event)


def main(argv=None) -> int:
    """`vfxswap faceset edit F`: the mask editor on faceset F, until its window is closed."""
    parser = argparse.ArgumentParser(prog="vfxswap faceset edit", description="label faces for the masker")
    parser.add_argument("faceset", help="faceset folder")
    parser.add_argument("--masker", help="masker model folder for Train / Apply (default: FACESET/masker)")
    args, qt_args = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([sys.argv[0]] + qt_args)
    # closing saves the face on view
    return run_window(app, MaskEditor(args.faceset, masker=args.masker), (1280, 800))


if __name__ == "__main__":
    sys.exit(main())
