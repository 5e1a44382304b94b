"""Make docs/panel_<tab>.png: the artist's window (`vfxswap panel`), offscreen, after a real run
of each tab on the shared GRID footage (CC BY 4.0, ../shared/data).

Run:  QT_QPA_PLATFORM=offscreen python tools/panel_screenshots.py [--data ../shared/data]
                                  [--iters 240] [--work DIR] [--docs docs]

What each picture shows, each after the tab's own job ran through the window's own calls:
- extract: 24 frames of videos/grid/brbk7n.mpg extracted into a faceset (the default backend),
  the landmark overlay of the last frame, the frames/s;
- faceset: that faceset in the face browser and mask editor, sorted by yaw, with its yaw coverage;
- train: the quick preset trained on speaker s1's stills (A) against that faceset (B), paused
  half-way and resumed: the loss graph, the latest preview grid, the two sessions;
- render: the model rendered over 8 frames of the clip, the last frame shown over its plate.
About 6 minutes on 2 CPU cores. Not run by the tests.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

ROOT = Path(__file__).resolve().parents[1]
SIZE = (1440, 900)
RELEASE = "GRID corpus speakers, CC BY 4.0 (Cooke et al. 2006); screenshots only"


def wait(app, done, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise SystemExit(f"panel_screenshots: {what} did not finish in {timeout:.0f} s")
        app.processEvents()
        time.sleep(0.05)
    for _ in range(5):  # let the last signals and repaints land
        app.processEvents()
        time.sleep(0.05)


def grab(app, window, name: str, docs: Path) -> Path:
    app.processEvents()
    path = docs / f"panel_{name}.png"
    if not window.grab().save(str(path)):
        raise SystemExit(f"panel_screenshots: could not write {path}")
    print(f"{path}: {path.stat().st_size // 1024} KiB")
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--iters", type=int, default=240)
    parser.add_argument("--work", help="work folder (default: a temporary one)")
    parser.add_argument("--docs", default=str(ROOT / "docs"))
    args = parser.parse_args()
    data, docs = Path(args.data), Path(args.docs)
    work = Path(args.work or tempfile.mkdtemp(prefix="vfxswap-panel-"))
    work.mkdir(parents=True, exist_ok=True)
    movie = data / "videos" / "grid" / "brbk7n.mpg"
    stills = data / "identities" / "A_grid_s1"
    if not movie.exists() or not stills.is_dir():
        raise SystemExit(f"panel_screenshots: the shared GRID data is not under {data}")

    # identity A's faceset, made as a user would on the command line (not pictured)
    done = subprocess.run([sys.executable, "-m", "vfxswap", "extract", str(stills), "--out", str(work / "A")],
                          capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"panel_screenshots: extracting A failed: {done.stderr[-1000:]}")

    from vfxswap.hosts.qt import QtWidgets
    from vfxswap.hosts.window import VfxSwapWindow

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    window = VfxSwapWindow()
    window.resize(*SIZE)
    window.show()

    # Extract
    tab = window.show_tab("extract")
    tab.source_edit.setText(str(movie))
    tab.out_edit.setText(str(work / "B"))
    tab.options.widgets["frames"].setText("1001-1024")
    assert tab.run(), tab.log_view.toPlainText()
    wait(app, lambda: tab.result is not None, 600, "the extraction")
    if not tab.result.ok:
        raise SystemExit("panel_screenshots: extraction failed:\n" + tab.log_view.toPlainText())
    grab(app, window, "extract", docs)

    # Faceset (opened by the window when the extraction finished)
    editor = window.show_tab("faceset")
    editor.set_sort("yaw")
    app.processEvents()
    editor.load_thumbnails()
    grab(app, window, "faceset", docs)

    # Train: start, pause half-way, resume to the end
    train = window.show_tab("train")
    train.set_fields(src=work / "A", dst=work / "B", model=work / "model")
    for name, value in (("release_ref", RELEASE), ("iters", str(args.iters)), ("batch", "8"),
                        ("preview_every", "40"), ("log_every", "5")):
        train.options.widgets[name].setText(value)
    assert train.start(), train.log_view.toPlainText()
    wait(app, lambda: train.live is not None and train.live.iteration >= args.iters // 2, 1200, "half the training")
    train.pause()
    wait(app, lambda: train.state == "paused", 300, "the pause")
    assert train.resume(), train.log_view.toPlainText()
    wait(app, lambda: train.state == "idle", 1200, "the training")
    if not train.result.ok:
        raise SystemExit("panel_screenshots: training failed:\n" + train.log_view.toPlainText())
    train.refresh()
    grab(app, window, "train", docs)

    # Render
    render = window.open_render_job(model=work / "model", plates=movie, faceset=work / "B", out=work / "render",
                                    frames="1017-1024")
    assert render.run(), render.log_view.toPlainText()
    wait(app, lambda: render.result is not None, 900, "the render")
    if not render.result.ok:
        raise SystemExit("panel_screenshots: render failed:\n" + render.log_view.toPlainText())
    grab(app, window, "render", docs)
    window.close()
    print(f"work folder: {work}", flush=True)
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)  # PySide6 6.x can crash in its own teardown at interpreter exit (none_dealloc); all is written
