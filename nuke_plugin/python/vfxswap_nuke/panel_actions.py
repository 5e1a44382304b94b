"""What the VfxSwap gizmo's buttons and the vfxswap menu do. Nuke is reached only through `host`."""

from __future__ import annotations

import glob
import os
import sys
import threading

from vfxswap.hosts import JobRunner, RenderJob

from vfxswap_nuke import host
from vfxswap_nuke.knobs import OPTIONS


def engine_python() -> str:
    """The interpreter that runs the engine: $VFXSWAP_PYTHON, else this Python when it is one
    (inside Nuke, sys.executable is the Nuke binary, not a Python)."""
    explicit = os.environ.get("VFXSWAP_PYTHON")
    if explicit:
        return explicit
    if "python" in os.path.basename(sys.executable).lower():
        return sys.executable
    return "python3"


def frame_range(values, plate):
    first, last = int(values.get("first_frame") or 0), int(values.get("last_frame") or 0)
    if first and last and last >= first:
        return first, last
    if plate:
        return plate[1], plate[2]
    return host.root_range()


def node_options(values) -> dict:
    """The node's render options (an option knob left empty takes the engine's default)."""
    return {name: values[name] for name in OPTIONS if values.get(name) not in (None, "")}


def build_job(values, plates, first, last) -> RenderJob:
    """The engine job for the node's knobs (an option knob left empty takes the engine's default)."""
    options = node_options(values)
    return RenderJob(model=str(values.get("model") or ""), plates=plates, out=str(values["out_dir"]),
                     faceset=values.get("faceset") or None, frames=f"{first}-{last}", options=options,
                     python=engine_python())


def prepare(node):
    """Main thread: knobs -> (job, first, last, (colorspace, raw)); writes the plate first when
    input 0 is not an EXR Read. The colour space is the plate's (its Read's, or the plate
    Write's), which the engine's layers are in too."""
    values = host.knob_values(node)
    if not values.get("model") or not values.get("out_dir"):
        raise ValueError("VfxSwap: set Model and Output first")
    plate = host.input_plate_path(node)
    first, last = frame_range(values, plate)
    if plate:
        plates, colour = plate[0], host.input_colorspace(node)
    else:
        plates, colour = host.write_plate(node, plate_folder(values["out_dir"]), first, last)
    return build_job(values, plates, first, last), first, last, colour


def plate_folder(out_dir) -> str:
    """Where Render writes the plate when input 0 is not an EXR Read (host.write_plate's folder)."""
    return os.path.join(str(out_dir), "plate")


# Output folders a render of this session is writing into. A second Render (of the same node, or
# of another node with the same Output) would start a second engine on the same files: refused.
_running: set = set()
_running_lock = threading.Lock()


def _out_key(out_dir) -> str:
    return os.path.normcase(os.path.abspath(str(out_dir)))


def render(node):
    """The Render button: start the engine in a worker thread; returns the thread (None on error,
    or when a render into the node's Output is still running)."""
    out_dir = host.knob_values(node).get("out_dir")
    key = _out_key(out_dir) if out_dir else None
    with _running_lock:
        busy = key in _running
        if key and not busy:
            _running.add(key)
    if busy:
        host.message(f"VfxSwap: a render into {out_dir} is still running; wait for it to finish "
                     "or cancel it on its progress bar")
        return None
    try:
        job, first, last, colour = prepare(node)
        host.set_status(node, f"rendering {first}-{last}")
        thread = threading.Thread(target=_work, args=(node, job, first, last, colour, key), name="vfxswap-render",
                                  daemon=True)
        thread.start()
    except Exception as exc:  # noqa: BLE001 - shown to the artist, not raised into Nuke's UI
        _release(key)
        host.message(str(exc))
        return None
    return thread


def _release(key) -> None:
    with _running_lock:
        _running.discard(key)


def _work(node, job, first, last, colour=(None, False), key=None) -> None:
    try:
        _run(node, job, first, last, colour)
    finally:
        _release(key)


def _run(node, job, first, last, colour) -> None:
    task = host.progress_task("vfxswap")
    runner = JobRunner(job)
    finished = threading.Event()

    def watch_cancel(task=task):  # its own reference: `del task` below must not break it
        while not finished.wait(0.2):
            if task.isCancelled():
                runner.cancel()
                return

    try:
        runner.start()
        threading.Thread(target=watch_cancel, daemon=True).start()
        for event in runner.events():
            if event.get("event") == "frame":
                total = max(int(event.get("total") or 1), 1)
                task.setProgress(int(event.get("done", 0)) * 100 // total)
                task.setMessage(f"frame {event.get('frame')}")
        result = runner.wait()
    except Exception as exc:  # noqa: BLE001
        finished.set()
        host.in_main_thread(_failed, node, f"vfxswap: {exc}")
        return
    finally:
        finished.set()
    if result.ok:
        host.in_main_thread(_apply, node, job.outputs()["layer"], first, last, len(result.written), colour)
    elif result.cancelled:
        host.in_main_thread(host.set_status, node, f"cancelled ({len(result.written)} frame(s) written)")
    else:
        host.in_main_thread(_failed, node, result.error or f"vfxswap render failed (exit {result.returncode})")
    del task  # closes Nuke's progress bar


def _apply(node, pattern, first, last, written, colour=(None, False)) -> None:
    host.set_read(node, pattern, first, last, *colour)
    host.set_status(node, f"done: {written} frame(s) {first}-{last}")


def _failed(node, text) -> None:
    host.set_status(node, "failed")
    host.message(text)


# --- the vfxswap window as a Nuke panel ------------------------------------------------------------
# menu.py registers it (Pane > vfxswap); vfxswap > vfxswap panel and the node's "Open in panel"
# button open it, or find it when it is open already (vfxswap_nuke.window, which imports Qt).

PANEL_ID = "uk.vfxswap.panel"
PANEL_NAME = "vfxswap"
# Nuke evaluates this text as the argument of `nukescripts.panels.WidgetKnob(...)` (a Python
# expression, in Nuke's own namespace) and calls the result with no arguments to build the widget:
# an expression that imports its module itself does not depend on what that namespace holds. The
# class is `vfxswap.hosts.window.VfxSwapWindow` given the engine's Python (engine_python()).
PANEL_WIDGET = "__import__('vfxswap_nuke.window', fromlist=['NukeVfxSwapWindow']).NukeVfxSwapWindow"


def register_panel() -> None:
    """menu.py: the window as a dockable panel, on Nuke's Pane menu and restorable with a layout."""
    host.register_panel(PANEL_WIDGET, PANEL_NAME, PANEL_ID)


def open_panel():
    """vfxswap > vfxswap panel: the open panel brought to the front, or a new one docked beside
    the Properties bin; returns the window (None when Nuke builds it later)."""
    from vfxswap_nuke import window

    try:
        return window.show()
    except Exception as exc:  # noqa: BLE001 - shown to the artist, not raised into Nuke's UI
        host.message(f"vfxswap panel: {exc}")
        return None


def panel_job(node) -> dict:
    """The node's job as the panel's Render tab takes it, writing nothing: {"fields": model,
    plates, faceset, out, frames (text, "" where the node has none); "options": the node's render
    options; "notes": what the artist should know, for the tab's log}.

    The plates are input 0's EXR sequence, as Render takes them. When input 0 is not an EXR Read,
    Render writes the plate first (prepare); opening the panel does not: it takes the plate an
    earlier Render wrote when there is one on disk, else leaves Plates empty, and says which."""
    values = host.knob_values(node)
    plate = host.input_plate_path(node)
    first, last = frame_range(values, plate)
    out = str(values.get("out_dir") or "")
    notes = [f"job of {host.node_name(node)}: check it, then press Run"]
    plates = plate[0] if plate else ""
    if not plate:
        folder = plate_folder(out) if out else None
        written = os.path.join(folder, "plate.####.exr").replace(os.sep, "/") if folder else None
        if folder and glob.glob(os.path.join(glob.escape(folder), "plate.*.exr")):
            plates = written
            notes.append(f"Plates: the input is not an EXR Read; this is the plate an earlier Render wrote from "
                         f"it ({written}); the node's Render button rewrites it from the input as it is now")
        else:
            notes.append("Plates left empty: the input is not an EXR Read, and opening the panel writes nothing; "
                         "the node's Render button writes it to EXR first"
                         + (f" ({written})" if written else " (into its Output folder)")
                         + ", or point Plates at an EXR sequence of it")
    fields = {"model": str(values.get("model") or ""), "plates": plates,
              "faceset": str(values.get("faceset") or ""), "out": out, "frames": f"{first}-{last}"}
    return {"fields": fields, "options": node_options(values), "notes": notes}


def open_in_panel(node):
    """The node's "Open in panel" button: the panel (found, or docked) with its Render tab filled
    from the node's job; the artist presses Run there. Returns the window (None on error, or when
    Nuke builds it later, which then fills it)."""
    try:
        job = panel_job(node)
        from vfxswap_nuke import window

        return window.show(job)
    except Exception as exc:  # noqa: BLE001 - shown to the artist, not raised into Nuke's UI
        host.message(f"VfxSwap: {exc}")
        return None
