"""A form for a job's options, built from `jobspec` (their help is the tooltip, their choices the
combo's items, their defaults the placeholders), so the window offers every option the CLI has,
named as the CLI names it, and a new option shows up here with no UI code.
"""

from __future__ import annotations

from dataclasses import MISSING

from vfxswap.hosts.qt import QtCore, QtWidgets
from vfxswap.jobspec import normalise, spec


class OptionsForm(QtWidgets.QWidget):
    """Widgets for `cls`'s options in titled groups: `groups` is [(title, [field names])]; the
    options not named there (less `skip`) go to a last group, "more". `values()` gives the
    options set away from their defaults, checked and typed as the CLI would take them."""

    def __init__(self, cls, groups: list[tuple[str, list[str]]], *, skip=(), parent=None):
        super().__init__(parent)
        self.cls = cls
        self.specs = {name: s for name, s in spec(cls).items() if s.cli and name not in skip}
        named = [n for _, names in groups for n in names]
        rest = [n for n in self.specs if n not in named]
        self.widgets: dict[str, QtWidgets.QWidget] = {}
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        for title, names in [*groups, *([("more", rest)] if rest else [])]:
            box = QtWidgets.QGroupBox(title)
            form = QtWidgets.QFormLayout(box)
            form.setFieldGrowthPolicy(QtWidgets.QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
            for name in names:
                if name in self.specs:
                    widget = self._widget(self.specs[name])
                    self.widgets[name] = widget
                    label = QtWidgets.QLabel(self.specs[name].flag)
                    label.setToolTip(self.specs[name].help)
                    form.addRow(label, widget)
            layout.addWidget(box)
        layout.addStretch(1)

    @staticmethod
    def _widget(s) -> QtWidgets.QWidget:
        default = None if s.default is MISSING else s.default
        if s.choices is not None:
            widget = QtWidgets.QComboBox()
            items = [str(c) for c in s.choices]
            if default is None:  # "the preset's" / "from the header": left to the engine
                items.insert(0, "")
            widget.addItems(items)
            widget.setCurrentText("" if default is None else str(default))
        elif s.kind is bool:
            widget = QtWidgets.QCheckBox()
            widget.setChecked(bool(default))
        else:
            widget = QtWidgets.QLineEdit()
            if isinstance(default, list):
                default = (s.sep or " ").join(map(str, default))
            widget.setPlaceholderText("default" if default in (None, "") else str(default))
        widget.setToolTip(s.help)
        return widget

    def _text(self, name: str):
        w = self.widgets[name]
        if isinstance(w, QtWidgets.QCheckBox):
            return w.isChecked()
        text = (w.currentText() if isinstance(w, QtWidgets.QComboBox) else w.text()).strip()
        return text or None

    def values(self) -> dict:
        """{field: typed value} of the options set away from their defaults; VfxSwapError (one
        line naming the option) for a value the engine would refuse."""
        raw = {}
        for name, s in self.specs.items():
            value = self._text(name)
            default = None if s.default is MISSING else s.default
            if value is None or (s.kind is bool and value == bool(default)):
                continue
            if s.kind is list:
                value = [v for v in value.replace(",", " ").split() if v] if s.sep else value.split()
            raw[name] = value
        out = normalise(self.cls, raw)
        return {k: v for k, v in out.items() if v != self.specs[k].default}

    def set_values(self, values: dict) -> None:
        """Show these options (a session's, a job's); the others go back to their defaults."""
        values = normalise(self.cls, {k: v for k, v in values.items() if k in self.specs})
        for name, s in self.specs.items():
            w = self.widgets[name]
            value = values.get(name, None if s.default is MISSING else s.default)
            if isinstance(w, QtWidgets.QCheckBox):
                w.setChecked(bool(value))
            elif isinstance(w, QtWidgets.QComboBox):
                w.setCurrentText("" if value is None else str(value))
            else:
                if isinstance(value, list):
                    value = (s.sep or " ").join(map(str, value))
                is_default = value == (None if s.default is MISSING else s.default) and name not in values
                w.setText("" if value is None or is_default else str(value))

    def set_enabled(self, enabled: bool) -> None:
        for w in self.widgets.values():
            w.setEnabled(enabled)


def path_row(placeholder: str, *, folder: bool, parent=None) -> tuple[QtWidgets.QLineEdit, QtWidgets.QWidget]:
    """A path field with a browse button ("…"): a folder, or a file (whose sequence pattern,
    when it is one frame of a sequence, replaces it: plate.####.exr)."""
    edit = QtWidgets.QLineEdit()
    edit.setPlaceholderText(placeholder)
    button = QtWidgets.QToolButton()
    button.setText("…")
    button.clicked.connect(lambda: browse(edit, folder, parent))
    row = QtWidgets.QWidget()
    lay = QtWidgets.QHBoxLayout(row)
    lay.setContentsMargins(0, 0, 0, 0)
    lay.addWidget(edit)
    lay.addWidget(button)
    return edit, row


def browse(edit: QtWidgets.QLineEdit, folder: bool, parent=None) -> None:
    from pathlib import Path

    start = edit.text() or str(Path.cwd())
    if folder:
        path = QtWidgets.QFileDialog.getExistingDirectory(parent, "Choose a folder", start)
    else:
        path, _ = QtWidgets.QFileDialog.getOpenFileName(parent, "Choose a file", start)
        if path:  # one frame's file names the sequence; show it as a pattern
            from vfxswap.plates import find_sequence

            try:
                path = str(find_sequence(path).pattern.hashes)
            except Exception:  # a movie or a still: the file itself
                pass
    if path:
        edit.setText(path)


def scrolled(widget: QtWidgets.QWidget) -> QtWidgets.QScrollArea:
    area = QtWidgets.QScrollArea()
    area.setWidget(widget)
    area.setWidgetResizable(True)
    area.setFrameShape(QtWidgets.QFrame.Shape.NoFrame)
    area.setHorizontalScrollBarPolicy(QtCore.Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    return area
