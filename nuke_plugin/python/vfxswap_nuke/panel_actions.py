"""What the VfxSwap gizmo's buttons do. Nuke is reached only through `host`."""

from __future__ import annotations

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


def build_job(values, plates, first, last) -> RenderJob:
    """The engine job for the node's knobs (an option knob left empty takes the engine's default)."""
    options = {name: values[name] for name in OPTIONS if values.get(name) not in (None, "")}
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
        plates, colour = host.write_plate(node, os.path.join(values["out_dir"], "plate"), first, last)
    return build_job(values, plates, first, last), first, last, colour


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
