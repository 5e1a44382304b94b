"""The one module that talks to Nuke: small functions over `nuke` (and `nukescripts`), imported lazily.

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


def _panels():
    import nukescripts.panels

    return nukescripts.panels


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


def node_name(node) -> str:
    """The node's name, with the groups it sits in ("Group1.VfxSwap1")."""
    return node.fullName()


# --- dockable panels -----------------------------------------------------------------------------
# What these rely on (checked against Foundry's documents, not a running Nuke):
# * nukescripts/panels.py (source: learn.foundry.com/nuke/developers/160/pythondevguide/_modules/
#   nukescripts/panels.html; registerWidgetAsPanel's body and WidgetKnob read in the Nuke 13-15 copy
#   of the same file): registerWidgetAsPanel(widget, name, id, create=False) takes `widget` as text
#   and pastes it into a PyCustom_Knob's command "__import__('nukescripts').panels.WidgetKnob(" +
#   widget + ")", which Nuke evaluates when it builds the panel; WidgetKnob.makeUI() then calls the
#   class with no arguments. It adds `name` to the Pane menu (nuke.menu('Pane').addCommand(name,
#   addPanel), addPanel = a new PythonPanel(name, id) holding that knob, .addToPane()) and calls
#   registerPanel(id, addPanel), which restorePanel(id) runs when a saved layout holds the panel.
#   With create=True it also returns such a panel, not docked.
# * PythonPanel.addToPane(pane=None) builds the panel's widgets and adds it to `pane`, else to
#   nuke.thisPane() when that is not None, else to no pane; PythonPanel.show() opens it floating.
# * nuke.getPaneFor(panelName) -> Dock: "the first pane that contains the named panel or None",
#   the name as in layout.xml ('Properties.1') or a panel id (Python Developer's Guide, nuke.getPaneFor).
#   The Guide ("Dockable PySide Widgets") docks a panel beside the Properties bin with
#   registerWidgetAsPanel(..., True).addToPane(nuke.getPaneFor('Properties.1')).


def register_panel(widget, name, panel_id) -> None:
    """Register the Qt widget class `widget` (an expression naming it) as the dockable panel
    `panel_id`, listed on the Pane menu as `name`."""
    _panels().registerWidgetAsPanel(widget, name, panel_id)


def dock_panel(widget, name, panel_id, beside="Properties.1"):
    """Open a new panel `panel_id` (as register_panel registered it) docked as a tab of the pane
    that holds `beside`, or floating when no pane does; returns the PythonPanel.

    It is the panel registerWidgetAsPanel builds (a PythonPanel(name, id) holding a PyCustom_Knob
    whose command is WidgetKnob(widget)), built here instead of through registerWidgetAsPanel(...,
    create=True) so that opening it does not register the Pane menu entry again, and docked in a
    pane named explicitly, not nuke.thisPane(), which a node's button or a toolbar command is not
    known to set."""
    nuke, panels = _nuke(), _panels()
    panel = panels.PythonPanel(name, panel_id)
    panel.addKnob(nuke.PyCustom_Knob(name, "", "__import__('nukescripts').panels.WidgetKnob(" + widget + ")"))
    pane = nuke.getPaneFor(beside)
    if pane is not None:
        panel.addToPane(pane)
    else:
        panel.show()
    return panel
