"""One place that picks the Qt binding, so the panel runs in Nuke 14-17 and standalone.

The choice is explicit, never a bare `try PySide2 / except ImportError` guess that could pick
up a stray system install:

* Inside Nuke (`import nuke` works), the Nuke version decides: Nuke 16 and later ship PySide6
  only, Nuke 14 and 15 ship PySide2 (Qt 5.15). The host's own binding is the only one that
  can share its QApplication.
* Anywhere else, PySide6 is the binding (it is what `pip install vfxswap[panel]` brings); we
  fall back to PySide2 only when PySide6 is not installed at all.

Exports `QtCore`, `QtGui`, `QtWidgets`, `Signal`, `BINDING` ("PySide6" or "PySide2") and
`exec_(obj)`, which runs an application's or a dialog's event loop under either name
(`exec()` in PySide6, `exec_()` in PySide2).
"""

from __future__ import annotations

import importlib.util


def _host_binding() -> str | None:
    """The binding the running host dictates, or None outside a host we know."""
    if importlib.util.find_spec("nuke") is None:
        return None
    try:
        import nuke  # noqa: PLC0415 - only inside Nuke
    except ImportError:
        return None
    major = getattr(nuke, "NUKE_VERSION_MAJOR", None)
    if major is None:
        return None
    return "PySide6" if int(major) >= 16 else "PySide2"


def _choose() -> str:
    wanted = _host_binding()
    if wanted:
        return wanted
    if importlib.util.find_spec("PySide6") is not None:
        return "PySide6"
    if importlib.util.find_spec("PySide2") is not None:
        return "PySide2"
    raise ImportError("vfxswap panel: no Qt binding; install PySide6 (pip install PySide6-Essentials)")


BINDING = _choose()

if BINDING == "PySide6":
    from PySide6 import QtCore, QtGui, QtWidgets  # noqa: E402
else:
    from PySide2 import QtCore, QtGui, QtWidgets  # noqa: E402

Signal = QtCore.Signal


def exec_(obj) -> int:
    """Run `obj`'s event loop (a QApplication, QDialog or QEventLoop) under either binding."""
    run = getattr(obj, "exec", None) or getattr(obj, "exec_")
    return run()


def run_window(app, window, size: tuple[int, int]) -> int:
    """Show a standalone window and run `app`'s loop until it closes. SIGTERM (a session logout,
    `timeout`, a wrapper) closes it like its close box, which runs its own clean-up; Qt's loop
    lets Python run the handler only when a timer wakes it."""
    import signal

    window.resize(*size)
    window.show()
    signal.signal(signal.SIGTERM, lambda *_: window.close())
    wake = QtCore.QTimer()
    wake.timeout.connect(lambda: None)
    wake.start(250)
    return exec_(app)


__all__ = ["BINDING", "QtCore", "QtGui", "QtWidgets", "Signal", "exec_", "run_window"]
