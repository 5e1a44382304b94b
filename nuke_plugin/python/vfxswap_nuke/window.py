"""The vfxswap window as a Nuke panel: the same `vfxswap.hosts.window.VfxSwapWindow` that
`vfxswap panel` opens, docked in Nuke.

Nuke builds a registered panel's widget by calling its class with no arguments
(`nukescripts.panels.WidgetKnob.makeUI`), so `NukeVfxSwapWindow` gives the window the engine's
Python itself (`engine_python()`: $VFXSWAP_PYTHON; the engine runs as its own process). One
window serves the session: `show` brings the open one to the front, or docks a new one beside the
Properties bin, and fills its Render tab with a node's job when given one. Qt is imported here (the binding Nuke
dictates, through vfxswap.hosts.qt); Nuke only through `host`.
"""

from __future__ import annotations

from vfxswap.hosts.qt import QtWidgets
from vfxswap.hosts.window import VfxSwapWindow

from vfxswap_nuke import host
from vfxswap_nuke.panel_actions import PANEL_ID, PANEL_NAME, PANEL_WIDGET, engine_python

_windows: list = []  # the windows Nuke built this session, oldest first (some may be gone since)
_panels: list = []  # the PythonPanels docked from here, kept referenced (as Nuke's examples keep theirs)
_pending: list = []  # the job for the window being docked, in case Nuke builds it after dock_panel returns


class NukeVfxSwapWindow(VfxSwapWindow):
    """`VfxSwapWindow` as Nuke builds it (no arguments), running the engine in `engine_python()`."""

    def __init__(self, parent=None):
        super().__init__(parent, python=engine_python())
        _windows.append(self)
        if _pending:
            fill(self, _pending.pop())


def _alive(window) -> bool:
    try:
        window.objectName()
    except RuntimeError:  # Qt deleted it: its panel was closed
        return False
    return True


def raise_window(window) -> None:
    """Make `window` the current tab of every tab stack it sits in (a docked panel shares its pane
    with others) and bring its top-level window to the front."""
    child, parent = window, window.parentWidget()
    while parent is not None:
        if isinstance(parent, QtWidgets.QStackedWidget):
            tabs = parent.parentWidget()
            if isinstance(tabs, QtWidgets.QTabWidget):  # its tab bar follows only its own call
                tabs.setCurrentWidget(child)
            else:
                parent.setCurrentWidget(child)
        child, parent = parent, parent.parentWidget()
    top = window.window()
    top.raise_()
    top.activateWindow()


def find():
    """The open window, brought to the front; None when there is none (closed, or never opened)."""
    for window in reversed(list(_windows)):
        if not _alive(window):
            _windows.remove(window)
            continue
        raise_window(window)
        if window.window().isVisible():
            return window
        _windows.remove(window)  # alive but on no screen: its panel was closed; not the artist's any more
    return None


def fill(window, job: dict):
    """Fill the window's Render tab with a node's job (`panel_actions.panel_job`) and show that tab."""
    panel = window.open_render_job(options=job.get("options"), **job["fields"])
    for note in job.get("notes", ()):
        panel.log(note)
    return panel


def show(job: dict | None = None):
    """The open window (or a new one docked beside the Properties bin), with `job` in its Render
    tab when given; None when Nuke builds the new one later (it takes the job then)."""
    window = find()
    if window is None:
        _pending[:] = [job] if job is not None else []
        try:
            _panels.append(host.dock_panel(PANEL_WIDGET, PANEL_NAME, PANEL_ID))
        except Exception:
            _pending.clear()
            raise
        return find()
    if job is not None:
        fill(window, job)
    return window
