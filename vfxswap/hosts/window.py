"""The artist's window (`vfxswap panel`): extract, review, train and render, a tab per stage.

The engine stays headless: each tab builds an engine command (`hosts.jobs`) and runs it as a
subprocess read on a worker thread, so neither torch nor the engine's work ever runs in the UI
thread; what a tab shows of a training (losses, previews, sessions) it reads from the model
folder the engine writes (`train.monitor`), which is also how it watches a training started
elsewhere. The same widget runs standalone and docked in Nuke (`nuke_plugin/menu.py` registers
it with `nukescripts.panels`, through a subclass that names the engine's Python).
"""

from __future__ import annotations

import argparse
import sys

from vfxswap.hosts.extract_tab import ExtractTab
from vfxswap.hosts.mask_editor import MaskEditor
from vfxswap.hosts.panel import SwapPanel
from vfxswap.hosts.qt import QtWidgets, run_window
from vfxswap.hosts.train_tab import TrainTab

TABS = ("extract", "faceset", "train", "render")


class VfxSwapWindow(QtWidgets.QWidget):
    """One window, a tab per stage: Extract, Faceset, Train, Render."""

    def __init__(self, parent=None, *, python: str | None = None, env: dict | None = None):
        super().__init__(parent)
        self.setWindowTitle("vfxswap")
        self.python = python or sys.executable  # the engine's interpreter (a host's own may differ)
        self.env = env
        self.tabs = QtWidgets.QTabWidget()
        self.extract = ExtractTab(python=self.python, env=env)
        self.faceset = MaskEditor(None, embedded=True, python=self.python, env=env)
        self.train = TrainTab(python=self.python, env=env)
        self.render = SwapPanel(python=self.python, env=env)
        for name in TABS:
            self.tabs.addTab(getattr(self, name), name.capitalize())
        self.extract.jobFinished.connect(self._extracted)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.tabs)

    def show_tab(self, name: str) -> QtWidgets.QWidget:
        """Bring the tab `name` (one of TABS) to the front; returns its widget."""
        widget = getattr(self, name)
        self.tabs.setCurrentWidget(widget)
        return widget

    def _extracted(self, result) -> None:
        """A finished extraction's faceset opens in the Faceset tab, for review."""
        out = self.extract.out_edit.text().strip()
        if result.ok and out:
            self.faceset.open_faceset(out)

    def open_render_job(self, *, model=None, plates=None, faceset=None, out=None, frames=None,
                        options: dict | None = None) -> SwapPanel:
        """Fill the Render tab with a job (a Nuke node's, say) and show it; the artist presses Run."""
        panel = self.show_tab("render")
        panel.set_fields(model=model, plates=plates, faceset=faceset, out=out, frames=frames)
        if options:
            panel.set_options(options)
        return panel

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        for name in TABS:  # a closing window stops what its tabs started (a training saves first)
            tab = getattr(self, name, None)
            if tab is not None:
                tab.close()
        super().closeEvent(event)


def main(argv=None) -> int:
    """Run the window standalone; the Render tab's fields can be prefilled from the command line."""
    parser = argparse.ArgumentParser(prog="vfxswap panel", description="extract, review, train and render in one window")
    for name in ("model", "plates", "faceset", "out", "frames"):
        parser.add_argument(f"--{name}")
    parser.add_argument("--tab", choices=TABS, help="the tab to open on")
    args, qt_args = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([sys.argv[0]] + qt_args)
    window = VfxSwapWindow()
    if any(getattr(args, n) for n in ("model", "plates", "faceset", "out", "frames")):
        window.open_render_job(model=args.model, plates=args.plates, faceset=args.faceset, out=args.out,
                               frames=args.frames)
    if args.tab:
        window.show_tab(args.tab)
    return run_window(app, window, (1280, 800))


if __name__ == "__main__":
    sys.exit(main())
