"""The one module that talks to Nuke: small functions over `nuke`, imported lazily.

Everything else in vfxswap_nuke (and all of vfxswap) stays importable without Nuke; tests put a
fake `nuke` module in `sys.modules` and exercise these same functions.
"""

from __future__ import annotations

import os
import re

from vfxswap_nuke.knobs import OPTIONS

KNOBS = ("model", "faceset", "out_dir", "first_frame", "last_frame", *OPTIONS)

_FRAME_TOKEN = re.compile(r"#+|%0?\d*d|\$F\d*|@+")


def _nuke():
    import nuke

    return nuke


def knob_values(node) -> dict:
    """The gizmo's user knobs as plain Python values (enumerations give their item text)."""
    knobs = node.knobs()
    return {name: knobs[name].value() for name in KNOBS if name in knobs}


def input_plate_path(node):
    """(pattern, first, last) when input 0 is a Read of an EXR sequence, else None."""
    read = node.input(0)
    if read is None or read.Class() != "Read":
        return None
    path = read["file"].value()
    if not path or not path.lower().endswith(".exr") or not _FRAME_TOKEN.search(os.path.basename(path)):
        return None
    return path, int(read["first"].value()), int(read["last"].value())


def colorspace_of(node) -> tuple:
    """(colorspace, raw) of a Read or Write: what its file is in, as its knobs say (`colorspace`,
    and `raw` true = no conversion: the knob names hosts.md 1.4 gives for the Read; that a Write
    names them the same is not verified there). colorspace is None when the knob is empty."""
    return node["colorspace"].value() or None, bool(node["raw"].value())


def input_colorspace(node) -> tuple:
    """(colorspace, raw) of the Read at input 0 (see colorspace_of)."""
    return colorspace_of(node.input(0))


def root_range() -> tuple[int, int]:
    root = _nuke().root()
    return int(root["first_frame"].value()), int(root["last_frame"].value())


def write_plate(node, folder, first, last) -> tuple:
    """Write input 0 to `folder/plate.####.exr` (16-bit half, zip) for frames first..last;
    returns (pattern, (colorspace, raw)): the colour space the Write put the plate in, which is
    the engine's layers' too."""
    nuke = _nuke()
    os.makedirs(folder, exist_ok=True)
    pattern = os.path.join(folder, "plate.####.exr").replace(os.sep, "/")
    write = nuke.nodes.Write(file=pattern, file_type="exr")
    try:
        write["datatype"].setValue("16 bit half")
        write["compression"].setValue("Zip (1 scanline)")
        write.setInput(0, node.input(0))
        nuke.execute(write, int(first), int(last))
        colour = colorspace_of(write)
    finally:
        nuke.delete(write)
    return pattern, colour


def set_read(node, pattern, first, last, colorspace=None, raw=False) -> None:
    """Point the gizmo's Read_faces at the engine's layers, read in the plate's colour space.

    The layers are in the plate's own colour space, so Read_faces converts them as the plate's
    Read (or the Write that made the plate) does: its `colorspace` and `raw` (None leaves the
    Read's default colour space). The top-level (saved) knobs faces_file/faces_first/faces_last
    are what Read_faces reads through expressions, and faces_colorspace/faces_raw are links to
    its knobs, so the result survives a gizmo reload; the inner Read is also set directly so the
    change shows at once."""
    first, last = int(first), int(last)
    node["faces_file"].setValue(pattern)
    node["faces_first"].setValue(first)
    node["faces_last"].setValue(last)
    node["faces_raw"].setValue(bool(raw))
    if colorspace:
        node["faces_colorspace"].setValue(colorspace)
    read = node.node("Read_faces")
    read["file"].setValue(pattern)
    for name, value in (("first", first), ("last", last), ("origfirst", first), ("origlast", last)):
        read[name].setValue(value)
    read["raw"].setValue(bool(raw))
    if colorspace:
        read["colorspace"].setValue(colorspace)


def set_status(node, text) -> None:
    node["status"].setValue(str(text))


def progress_task(title):
    return _nuke().ProgressTask(title)


def in_main_thread(fn, *args) -> None:
    """Run fn(*args) on Nuke's main thread (call only from a worker thread)."""
    _nuke().executeInMainThread(fn, args=args)


def message(text) -> None:
    _nuke().message(str(text))
