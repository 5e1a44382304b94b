"""The Nuke plugin against a fake `nuke` module (no Nuke here): the gizmo text, init.py, the host
layer, a real passthrough render job driven through the gizmo's Render button code, and the vfxswap
window as a dockable panel (a fake `nukescripts.panels`, real Qt offscreen)."""

from __future__ import annotations

import os
import re
import runpy
import sys
import threading
import types
from pathlib import Path

import pytest

from vfxswap.hosts.jobs import JobResult
from conftest import make_astronaut_shot

PLUGIN = Path(__file__).resolve().parents[1] / "nuke_plugin"


# --- a small fake `nuke` ---------------------------------------------------------------------------

class FakeKnob:
    def __init__(self, value=None):
        self._value = value

    def value(self):
        return self._value

    def setValue(self, value):
        self._value = value


class FakeNode:
    def __init__(self, fake, cls, name=None, **knobs):
        self.fake, self.cls, self.name = fake, cls, name or cls
        self._knobs = {k: FakeKnob(v) for k, v in knobs.items()}
        self.inputs: dict[int, FakeNode] = {}
        self.children: dict[str, FakeNode] = {}

    def Class(self):
        return self.cls

    def knobs(self):
        return dict(self._knobs)

    def __getitem__(self, name):
        return self._knobs.setdefault(name, FakeKnob())

    def input(self, i):
        return self.inputs.get(i)

    def setInput(self, i, node):
        self.fake.set_inputs.append((self, i, node))
        self.inputs[i] = node
        return True

    def node(self, name):
        return self.children.get(name)

    def fullName(self):
        return self.name


class FakeProgressTask:
    def __init__(self, fake, title):
        self.title, self.progress, self.messages, self.cancelled = title, [], [], fake.cancel_tasks
        fake.tasks.append(self)

    def setProgress(self, value):
        self.progress.append(value)

    def setMessage(self, text):
        self.messages.append(text)

    def isCancelled(self):
        return self.cancelled


class FakeMenu:
    def __init__(self, fake, name):
        self.fake, self.name = fake, name

    def addMenu(self, name, **kwargs):
        self.fake.ui_calls.append(("addMenu", self.name, name))
        return FakeMenu(self.fake, name)

    def addCommand(self, name, command="", *args, **kwargs):
        self.fake.ui_calls.append(("addCommand", self.name, name, command))


class FakeCustomKnob:
    """nuke.PyCustom_Knob(name, label, command): Nuke evaluates `command` to an object whose makeUI()
    gives the widget."""

    def __init__(self, name, label, command):
        self.name, self.label, self.command = name, label, command


class FakePane:
    """A pane (nuke.Dock) as a Qt tab widget: add() puts a panel's widgets in as the current tab."""

    def __init__(self, name):
        self.name, self.panels, self.tabs = name, [], None

    def add(self, panel):
        from vfxswap.hosts.qt import QtWidgets

        if self.tabs is None:
            self.tabs = QtWidgets.QTabWidget()
            self.tabs.resize(1280, 800)
            self.tabs.show()
        self.panels.append(panel)
        for widget in panel.widgets:
            self.tabs.addTab(widget, panel.title)
            self.tabs.setCurrentWidget(widget)


def make_fake_nukescripts(fake):
    """`nukescripts` with `panels` as Nuke ships it (nukescripts/panels.py): PythonPanel, WidgetKnob,
    registerPanel/restorePanel and registerWidgetAsPanel, which adds the Pane menu command."""
    nukescripts = types.ModuleType("nukescripts")
    panels = types.ModuleType("nukescripts.panels")
    nukescripts.panels = panels
    fake.registered, fake.panels, fake.restorable = [], [], {}

    class PythonPanel:
        def __init__(self, title="", id="", scrollable=True):
            self.title, self.id, self.knobs, self.widgets, self.floating = title, id, [], None, False
            fake.panels.append(self)

        def addKnob(self, knob):
            self.knobs.append(knob)

        def create(self):  # Nuke builds each custom knob's widget: its command evaluated, then makeUI()
            if self.widgets is None:
                self.widgets = [eval(k.command, {}).makeUI() for k in self.knobs if isinstance(k, FakeCustomKnob)]

        def addToPane(self, pane=None):
            self.create()
            pane = pane if pane is not None else fake.thisPane()
            if pane is not None:
                pane.add(self)
            return self

        def show(self):
            self.create()
            self.floating = True
            for widget in self.widgets:
                widget.show()

    class WidgetKnob:
        def __init__(self, widget):
            self.widgetClass = widget

        def makeUI(self):
            self.widget = self.widgetClass()
            return self.widget

    def registerWidgetAsPanel(widget, name, id, create=False):
        fake.registered.append((widget, name, id))

        def make():
            panel = PythonPanel(name, id)
            panel.addKnob(fake.PyCustom_Knob(name, "", "__import__('nukescripts').panels.WidgetKnob(" + widget + ")"))
            return panel

        def addPanel():
            return make().addToPane()

        fake.menu("Pane").addCommand(name, addPanel)
        panels.registerPanel(id, addPanel)
        return make() if create else None

    panels.PythonPanel, panels.WidgetKnob, panels.registerWidgetAsPanel = PythonPanel, WidgetKnob, registerWidgetAsPanel
    panels.registerPanel = fake.restorable.__setitem__
    panels.restorePanel = lambda id: fake.restorable[id]()
    nukescripts.registerWidgetAsPanel = registerWidgetAsPanel
    return nukescripts


def make_fake_nuke():
    fake = types.ModuleType("nuke")
    fake.created, fake.set_inputs, fake.executed, fake.deleted = [], [], [], []
    fake.plugin_paths, fake.ui_calls, fake.main_thread_calls, fake.messages, fake.tasks = [], [], [], [], []
    fake.cancel_tasks = False

    # knobs a new node has before anyone sets them (a Write's colour space: its file type's default)
    fake.knob_defaults = {"Write": {"colorspace": "scene_linear", "raw": False}}

    class _Nodes:
        def __getattr__(self, cls):
            def create(**knobs):
                node = FakeNode(fake, cls, **{**fake.knob_defaults.get(cls, {}), **knobs})
                fake.created.append(node)
                return node
            return create

    fake.nodes = _Nodes()
    fake.pluginAddPath = lambda path, addToSysPath=True: fake.plugin_paths.append(path)
    fake.execute = lambda node, first, last, incr=1: fake.executed.append((node, first, last))
    fake.delete = fake.deleted.append
    fake.message = fake.messages.append
    fake.ProgressTask = lambda title: FakeProgressTask(fake, title)
    fake.menu = lambda name: (fake.ui_calls.append(("menu", name)), FakeMenu(fake, name))[1]
    fake.createNode = lambda cls, *a, **k: fake.ui_calls.append(("createNode", cls))
    _root = FakeNode(fake, "Root", first_frame=1, last_frame=100)
    fake.root = lambda: _root

    def execute_in_main_thread(call, args=(), kwargs=None):
        fake.main_thread_calls.append(call)
        call(*args, **(kwargs or {}))

    fake.executeInMainThread = execute_in_main_thread

    fake.panes = {"Properties.1": FakePane("Properties.1")}
    fake.this_pane = None  # a node's button or a toolbar command runs in no pane
    fake.thisPane = lambda: fake.this_pane
    fake.getPaneFor = lambda name: fake.panes.get(name)
    fake.PyCustom_Knob = FakeCustomKnob
    fake.nukescripts = make_fake_nukescripts(fake)
    return fake


@pytest.fixture
def nuke(monkeypatch):
    fake = make_fake_nuke()
    monkeypatch.setitem(sys.modules, "nuke", fake)
    monkeypatch.setitem(sys.modules, "nukescripts", fake.nukescripts)
    monkeypatch.setitem(sys.modules, "nukescripts.panels", fake.nukescripts.panels)
    monkeypatch.syspath_prepend(str(PLUGIN / "python"))
    for name in [m for m in sys.modules if m == "vfxswap_nuke" or m.startswith("vfxswap_nuke.")]:
        monkeypatch.delitem(sys.modules, name)
    return fake


def make_gizmo_node(fake, **values):
    knobs = {"model": "", "faceset": "", "out_dir": "", "first_frame": 0, "last_frame": 0, "face_type": "whole_face",
             "color": "rct", "mask": "product", "erode": 0.0, "blur": 0.0, "layers": False, "status": "idle",
             "faces_file": "", "faces_first": 0, "faces_last": 0, "faces_colorspace": "default", "faces_raw": False}
    knobs.update(values)
    node = FakeNode(fake, "VfxSwap", "VfxSwap1", **knobs)
    node.children["Read_faces"] = FakeNode(fake, "Read", "Read_faces", file="", first=1, last=1, origfirst=1,
                                           origlast=1, colorspace="default", raw=False)
    return node


class ScriptedRunner:
    """Stands in for JobRunner (no engine): one `frame` event per frame of the job's range, with
    `statuses[frame]` (default "written"); each waits for `gate` when one is set."""

    instances: list = []
    statuses: dict = {}
    gate = None

    def __init__(self, job, env=None):
        self.job, self.cancelled, self.written, self.consumed = job, False, [], False
        ScriptedRunner.instances.append(self)

    def start(self):
        return self

    def events(self):
        first, last = (int(x) for x in self.job.frames.split("-"))
        for done, frame in enumerate(range(first, last + 1), 1):
            if self.gate is not None:
                self.gate.wait(30)
            status = self.statuses.get(frame, "written")
            if status == "written":
                self.written.append(frame)
            yield {"event": "frame", "frame": frame, "status": status, "done": done, "total": last - first + 1}
        self.consumed = True

    def cancel(self):
        self.cancelled = True

    def wait(self, timeout=None):
        if not self.consumed:
            for _ in self.events():
                pass
        return JobResult(0, list(self.written), {}, False, "")


@pytest.fixture
def scripted(nuke, monkeypatch):
    from vfxswap_nuke import panel_actions

    monkeypatch.setattr(ScriptedRunner, "instances", [])
    monkeypatch.setattr(ScriptedRunner, "gate", None)
    monkeypatch.setattr(panel_actions, "JobRunner", ScriptedRunner)
    return ScriptedRunner


# --- the gizmo as text -------------------------------------------------------------------------------

def parse_gizmo(text):
    """A tiny reader for the gizmo's TCL: the Gizmo block's addUserKnob lines, the child node blocks
    (their knob lines), and the stack wiring (`set`, `push`, `inputs N`; top of stack = input 0)."""
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    user_knobs, nodes, stack, variables, i = {}, [], [], {}, 0
    ended = False
    while i < len(lines):
        line = lines[i]
        block = re.fullmatch(r"(\w+) \{", line)
        if block:
            body = []
            i += 1
            while lines[i] != "}":
                body.append(lines[i])
                i += 1
            if block.group(1) == "Gizmo":
                for knob_line in body:
                    m = re.fullmatch(r"addUserKnob \{(\d+) (\w+)(.*)\}", knob_line)
                    if m:
                        menu = re.search(r" M \{([^}]*)\}", m.group(3))
                        user_knobs[m.group(2)] = {"id": int(m.group(1)), "rest": m.group(3),
                                                  "menu": menu.group(1).split() if menu else None}
            else:
                knobs = dict(re.fullmatch(r"(\w+) ?(.*)", b).groups() for b in body)
                node = {"class": block.group(1), "name": knobs.get("name"), "knobs": knobs, "inputs": []}
                count = int(knobs.get("inputs", 1))
                node["inputs"] = [stack.pop() for _ in range(count)]  # popped[0] -> input 0
                stack.append(node)
                nodes.append(node)
        elif m := re.fullmatch(r"set (\w+) \[stack 0\]", line):
            variables[m.group(1)] = stack[-1]
        elif m := re.fullmatch(r"push \$(\w+)", line):
            stack.append(variables[m.group(1)])
        elif line == "end_group":
            ended = True
        i += 1
    return user_knobs, {n["name"]: n for n in nodes}, ended


def test_the_gizmo_declares_its_knobs_nodes_and_wiring():
    knobs, nodes, ended = parse_gizmo((PLUGIN / "gizmos" / "VfxSwap.gizmo").read_text())
    assert re.findall(r"^Gizmo \{$", (PLUGIN / "gizmos" / "VfxSwap.gizmo").read_text(), re.M) == ["Gizmo {"]
    assert ended
    expected = {"vfxswap": 20, "model": 2, "faceset": 2, "out_dir": 2, "first_frame": 3, "last_frame": 3,
                "face_type": 4, "color": 4, "color_smooth": 7, "mask": 4, "erode": 7, "blur": 7, "layers": 6,
                "all_faces": 6, "render": 22, "open_panel": 22,
                "status": 26}
    assert {name: knobs[name]["id"] for name in expected} == expected
    assert list(knobs)[0] == "vfxswap"  # the tab comes first
    assert knobs["face_type"]["menu"] == ["full", "whole_face", "head"]
    assert knobs["color"]["menu"] == ["rct", "lct", "mkl", "idt", "sot", "none"]
    assert knobs["mask"]["menu"] == ["product", "learned", "hull", "seg", "seg*learned"]  # the maskers registry
    assert "vfxswap_nuke.panel_actions" in knobs["render"]["rest"] and "nuke.thisNode()" in knobs["render"]["rest"]
    assert "a.open_in_panel(nuke.thisNode())" in knobs["open_panel"]["rest"]
    assert list(knobs).index("open_panel") == list(knobs).index("render") + 1  # beside Render, on its line
    assert "-STARTLINE" in knobs["open_panel"]["rest"]

    read, merge = nodes["Read_faces"], nodes["Merge_face"]
    assert read["class"] == "Read" and read["knobs"]["on_error"] == "black" and read["knobs"]["premultiplied"] == "true"
    # the layer is in the plate's colour space: Read_faces converts it (not raw), through knobs saved on the node
    assert read["knobs"].get("raw", "false") == "false"
    assert knobs["faces_colorspace"]["id"] == 41 and "T Read_faces.colorspace" in knobs["faces_colorspace"]["rest"]
    assert knobs["faces_raw"]["id"] == 41 and "T Read_faces.raw" in knobs["faces_raw"]["rest"]
    assert merge["class"] == "Merge2" and merge["knobs"]["operation"] == "over" and merge["knobs"]["bbox"] == "B"
    plate = nodes["plate"]
    assert plate["class"] == "Input" and plate["inputs"] == []
    assert merge["inputs"][0] is plate  # B = the plate (passes through when disabled)
    assert merge["inputs"][1] is read  # A = the face layer
    output = next(n for n in nodes.values() if n["class"] == "Output")
    assert output["inputs"] == [merge]


def test_the_gizmo_offers_the_engine_s_own_render_options(monkeypatch, tmp_path):
    """The option knobs are the engine's render options (vfxswap.jobspec): the gizmo file holds
    exactly the lines knobs.py writes from them (so a new mask or colour match reaches the
    menus), each menu is the registry's choices and each default the engine's."""
    monkeypatch.syspath_prepend(str(PLUGIN / "python"))
    from vfxswap.jobspec import RenderOptions, spec
    from vfxswap_nuke import knobs as gizmo_knobs

    text = (PLUGIN / "gizmos" / "VfxSwap.gizmo").read_text()
    lines = gizmo_knobs.knob_lines()
    assert "\n".join(lines) in text, "the gizmo is out of date: run python nuke_plugin/python/vfxswap_nuke/knobs.py"
    declared, _, _ = parse_gizmo(text)
    options = spec(RenderOptions)
    for name in gizmo_knobs.OPTIONS:
        if options[name].choices:
            assert declared[name]["menu"] == list(options[name].choices)
            assert f" {name} {options[name].default}" in lines or options[name].choices[0] == options[name].default
    copy = tmp_path / "VfxSwap.gizmo"
    copy.write_text(text.replace(lines[0], " addUserKnob {4 face_type l Old M {full}}"))
    assert gizmo_knobs.write_gizmo(copy) and copy.read_text() == text  # the writer restores it
    assert not gizmo_knobs.write_gizmo(copy)


def test_init_only_adds_paths_and_menu_adds_the_node(nuke):
    runpy.run_path(str(PLUGIN / "init.py"))
    assert nuke.plugin_paths == [str(PLUGIN / "gizmos"), str(PLUGIN / "python")]
    assert nuke.ui_calls == [] and nuke.created == []
    runpy.run_path(str(PLUGIN / "menu.py"))
    assert ("menu", "Nodes") in nuke.ui_calls and ("addMenu", "Nodes", "vfxswap") in nuke.ui_calls
    command = next(c for c in nuke.ui_calls if c[0] == "addCommand")
    assert command[2] == "VfxSwap"
    exec(command[3], {"nuke": nuke})
    assert nuke.ui_calls[-1] == ("createNode", "VfxSwap")


def test_the_host_layer_imports_without_nuke(monkeypatch):
    monkeypatch.delitem(sys.modules, "nuke", raising=False)
    monkeypatch.syspath_prepend(str(PLUGIN / "python"))
    for name in [m for m in sys.modules if m.startswith("vfxswap_nuke")]:
        monkeypatch.delitem(sys.modules, name)
    import vfxswap_nuke.panel_actions  # noqa: F401

    assert "nuke" not in sys.modules


def test_write_plate_writes_half_zip_exr_over_the_range(nuke, tmp_path):
    from vfxswap_nuke import host

    source = FakeNode(nuke, "Grade")
    node = make_gizmo_node(nuke)
    node.inputs[0] = source
    pattern, colour = host.write_plate(node, str(tmp_path / "plate"), 1001, 1010)
    assert pattern == str(tmp_path / "plate" / "plate.####.exr")
    assert colour == ("scene_linear", False)  # the colour space the Write put the plate in
    (write,) = [n for n in nuke.created if n.cls == "Write"]
    assert write["file"].value() == pattern and write["file_type"].value() == "exr"
    assert write["datatype"].value() == "16 bit half" and "zip" in write["compression"].value().lower()
    assert (write, 0, source) in nuke.set_inputs
    assert nuke.executed == [(write, 1001, 1010)] and nuke.deleted == [write]
    assert (tmp_path / "plate").is_dir()


def test_input_plate_path_only_for_exr_sequence_reads(nuke):
    from vfxswap_nuke import host

    node = make_gizmo_node(nuke)
    assert host.input_plate_path(node) is None
    node.inputs[0] = FakeNode(nuke, "Read", file="/shots/plate.%04d.exr", first=1001, last=1050)
    assert host.input_plate_path(node) == ("/shots/plate.%04d.exr", 1001, 1050)
    node.inputs[0] = FakeNode(nuke, "Read", file="/shots/plate.mov", first=1, last=50)
    assert host.input_plate_path(node) is None
    node.inputs[0] = FakeNode(nuke, "Grade")
    assert host.input_plate_path(node) is None


# --- the Render button's glue, with a scripted engine -------------------------------------------------

def _render(panel_actions, node):
    thread = panel_actions.render(node)
    assert thread is not None
    thread.join(30)
    assert not thread.is_alive()


@pytest.mark.parametrize("colorspace,raw", [("ACES - ACES2065-1", False), ("ACES - ACEScg", True)])
def test_render_reads_the_layer_in_the_plate_reads_colour_space(nuke, scripted, tmp_path, colorspace, raw):
    from vfxswap_nuke import panel_actions

    node = make_gizmo_node(nuke, model="passthrough", out_dir=str(tmp_path / "out"))
    node.inputs[0] = FakeNode(nuke, "Read", file="/shots/plate.####.exr", first=1001, last=1003,
                              colorspace=colorspace, raw=raw)
    _render(panel_actions, node)
    read = node.node("Read_faces")
    assert (read["colorspace"].value(), read["raw"].value()) == (colorspace, raw)
    assert (node["faces_colorspace"].value(), node["faces_raw"].value()) == (colorspace, raw)  # saved with the node
    assert nuke.messages == [] and node["status"].value().startswith("done")


def test_render_reads_the_layer_in_the_written_plates_colour_space(nuke, scripted, tmp_path):
    from vfxswap_nuke import panel_actions

    node = make_gizmo_node(nuke, model="passthrough", out_dir=str(tmp_path / "out"), first_frame=1, last_frame=2)
    node.inputs[0] = FakeNode(nuke, "Grade")  # not a Read: the plate is written to EXR first
    nuke.knob_defaults["Write"]["colorspace"] = "ACES - ACEScct"
    _render(panel_actions, node)
    (write,) = [n for n in nuke.created if n.cls == "Write"]
    assert scripted.instances[0].job.plates == write["file"].value()
    read = node.node("Read_faces")
    assert (read["colorspace"].value(), read["raw"].value()) == ("ACES - ACEScct", False)


def test_render_points_read_faces_at_the_files_the_engine_names(nuke, scripted, tmp_path):
    from vfxswap_nuke import panel_actions

    out = tmp_path / "out"
    node = make_gizmo_node(nuke, model="passthrough", out_dir=str(out))
    node.inputs[0] = FakeNode(nuke, "Read", file="/shots/plate.########.exr", first=86400, last=86402)
    _render(panel_actions, node)
    read = node.node("Read_faces")
    assert read["file"].value() == node["faces_file"].value() == str(out / "face.########.exr")
    assert [read[k].value() for k in ("first", "last")] == [86400, 86402]


def test_a_second_render_into_the_same_output_is_refused_while_the_first_runs(nuke, scripted, tmp_path):
    from vfxswap_nuke import panel_actions

    scripted.gate = threading.Event()  # the engine is busy until set
    node = make_gizmo_node(nuke, model="passthrough", out_dir=str(tmp_path / "out"))
    node.inputs[0] = FakeNode(nuke, "Read", file="/shots/plate.####.exr", first=1001, last=1003)
    other = make_gizmo_node(nuke, model="passthrough", out_dir=str(tmp_path / "out") + "/")
    other.inputs[0] = node.inputs[0]
    first = panel_actions.render(node)
    assert first is not None and first.is_alive()
    assert panel_actions.render(node) is None  # a second click on the same node
    assert panel_actions.render(other) is None  # another node writing the same files
    assert len(nuke.messages) == 2 and all("still running" in m for m in nuke.messages)
    assert len(scripted.instances) == 1 and len(nuke.tasks) == 1
    scripted.gate.set()
    first.join(30)
    assert node["status"].value().startswith("done")
    _render(panel_actions, node)  # done: it may render again
    assert len(scripted.instances) == 2


def test_a_render_that_cannot_start_does_not_block_the_next(nuke, scripted, tmp_path):
    from vfxswap_nuke import panel_actions

    node = make_gizmo_node(nuke, model="", out_dir=str(tmp_path / "out"))
    assert panel_actions.render(node) is None and "set Model" in nuke.messages[-1]
    node["model"].setValue("passthrough")
    node.inputs[0] = FakeNode(nuke, "Read", file="/shots/plate.####.exr", first=1001, last=1001)
    _render(panel_actions, node)
    assert len(nuke.messages) == 1


# --- a real engine job through the Render button's code ---------------------------------------------

@pytest.fixture(scope="module")
def shot(tmp_path_factory):
    return make_astronaut_shot(tmp_path_factory.mktemp("nukeshot"), frames=3)


def test_render_runs_a_real_job_and_points_read_faces_at_it(nuke, shot, tmp_path):
    from vfxswap_nuke import panel_actions

    out = tmp_path / "out"
    node = make_gizmo_node(nuke, model="passthrough", faceset=str(shot / "faceset"), out_dir=str(out), color="none")
    node.inputs[0] = FakeNode(nuke, "Read", file=str(shot / "plates" / "plate.####.exr"), first=1001, last=1003)
    thread = panel_actions.render(node)
    assert thread is not None
    thread.join(60)
    assert not thread.is_alive()
    assert nuke.messages == []
    read = node.node("Read_faces")
    assert read["file"].value() == str(out / "face.####.exr")
    assert [read[k].value() for k in ("first", "last", "origfirst", "origlast")] == [1001, 1003, 1001, 1003]
    assert node["faces_file"].value() == str(out / "face.####.exr")
    assert sorted(p.name for p in out.glob("face.*.exr")) == [f"face.{f}.exr" for f in (1001, 1002, 1003)]
    (task,) = nuke.tasks
    assert task.progress[-1] == 100 and task.messages[-1] == "frame 1003"
    assert node["status"].value().startswith("done")
    assert nuke.executed == []  # the EXR Read was used as is: no plate written


def test_a_failing_job_shows_the_engine_error(nuke, shot, tmp_path):
    from vfxswap_nuke import panel_actions

    node = make_gizmo_node(nuke, model=str(tmp_path / "no-such-model"), faceset=str(shot / "faceset"),
                           out_dir=str(tmp_path / "out"))
    node.inputs[0] = FakeNode(nuke, "Read", file=str(shot / "plates" / "plate.####.exr"), first=1001, last=1003)
    thread = panel_actions.render(node)
    thread.join(60)
    assert len(nuke.messages) == 1 and "no-such-model" in nuke.messages[0] and "Traceback" not in nuke.messages[0]
    assert nuke.main_thread_calls  # the message went through executeInMainThread
    assert node.node("Read_faces")["file"].value() == "" and node["status"].value() == "failed"


def test_cancelling_the_progress_task_stops_the_job(nuke, shot, tmp_path):
    from vfxswap_nuke import panel_actions

    nuke.cancel_tasks = True  # the artist pressed Cancel on the progress bar
    node = make_gizmo_node(nuke, model="passthrough", faceset=str(shot / "faceset"), out_dir=str(tmp_path / "out"))
    node.inputs[0] = FakeNode(nuke, "Read", file=str(shot / "plates" / "plate.####.exr"), first=1001, last=1003)
    panel_actions.render(node).join(60)
    assert node["status"].value().startswith("cancelled") and nuke.messages == []
    assert node.node("Read_faces")["file"].value() == ""


def test_render_headless_runs_the_job_synchronously(nuke, shot, tmp_path, capsys):
    out = tmp_path / "out"
    node = make_gizmo_node(nuke, model="passthrough", faceset=str(shot / "faceset"), out_dir=str(out), color="none")
    node.inputs[0] = FakeNode(nuke, "Read", file=str(shot / "plates" / "plate.####.exr"), first=1001, last=1003)
    nuke.scriptOpen = lambda path: nuke.ui_calls.append(("scriptOpen", path))
    nuke.toNode = lambda name: node if name == "VfxSwap1" else None
    main = runpy.run_path(str(PLUGIN / "render_headless.py"))["main"]
    assert main(["shot.nk", "VfxSwap1", "1001", "1002"]) == 0
    assert sorted(p.name for p in out.glob("face.*.exr")) == ["face.1001.exr", "face.1002.exr"]
    assert '"event": "done"' in capsys.readouterr().out
    assert main(["shot.nk", "Nope"]) == 1
    node["model"].setValue(str(tmp_path / "no-such-model"))
    assert main(["shot.nk", "VfxSwap1"]) == 1
    assert "no-such-model" in capsys.readouterr().err


# --- the vfxswap window as a dockable panel ------------------------------------------------------------

ENGINE = "/opt/vfxswap/bin/python"  # VFXSWAP_PYTHON: the engine's own interpreter (nothing runs it here)


@pytest.fixture(scope="module")
def qt():
    """Qt offscreen, imported before any test puts its fake `nuke` in sys.modules (the binding is
    chosen at import, from the host when there is one)."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from vfxswap.hosts.qt import QtWidgets

    return QtWidgets.QApplication.instance() or QtWidgets.QApplication([])


@pytest.fixture
def docked(qt, nuke, monkeypatch):
    """The fake Nuke with the plugin's menus loaded, and every panel's window closed afterwards."""
    monkeypatch.setenv("VFXSWAP_PYTHON", ENGINE)
    runpy.run_path(str(PLUGIN / "init.py"))
    runpy.run_path(str(PLUGIN / "menu.py"))
    yield nuke
    for panel in nuke.panels:
        for widget in panel.widgets or []:
            try:
                widget.close()
                widget.deleteLater()
            except RuntimeError:  # deleted by the test already
                pass
    for pane in nuke.panes.values():
        if pane.tabs is not None:
            pane.tabs.close()
            pane.tabs.deleteLater()
    qt.processEvents()


def _gizmo_command(knob):
    knobs, _, _ = parse_gizmo((PLUGIN / "gizmos" / "VfxSwap.gizmo").read_text())
    return re.search(r' T "([^"]*)"', knobs[knob]["rest"]).group(1)


def _press(nuke, node, knob="open_panel"):
    """Press one of the node's buttons as Nuke does: its script run with nuke.thisNode() = node."""
    nuke.thisNode = lambda: node
    exec(_gizmo_command(knob), {"nuke": nuke})


def _only_window(nuke):
    (panel,) = nuke.panels
    (window,) = panel.widgets
    return window


def _fields(panel):
    return {name: getattr(panel, f"{name}_edit").text() for name in ("model", "plates", "faceset", "out", "frames")}


def test_menu_registers_the_window_as_a_dockable_panel(nuke):
    from vfxswap_nuke import panel_actions

    runpy.run_path(str(PLUGIN / "init.py"))
    runpy.run_path(str(PLUGIN / "menu.py"))
    assert nuke.registered == [(panel_actions.PANEL_WIDGET, "vfxswap", "uk.vfxswap.panel")]
    assert "vfxswap_nuke.window" in panel_actions.PANEL_WIDGET and "NukeVfxSwapWindow" in panel_actions.PANEL_WIDGET
    pane_entries = [c for c in nuke.ui_calls if c[:2] == ("addCommand", "Pane")]
    assert [c[2] for c in pane_entries] == ["vfxswap"] and callable(pane_entries[0][3])  # Pane > vfxswap
    assert "uk.vfxswap.panel" in nuke.restorable  # a saved layout holding the panel restores it
    entries = {c[2]: c[3] for c in nuke.ui_calls if c[:2] == ("addCommand", "vfxswap")}
    assert list(entries) == ["VfxSwap", "vfxswap panel"]
    assert entries["vfxswap panel"] == "import vfxswap_nuke.panel_actions as a; a.open_panel()"
    assert nuke.panels == []  # registering builds no window


def test_the_registered_class_builds_the_window_with_the_engine_python(docked):
    from vfxswap.hosts.window import VfxSwapWindow
    from vfxswap_nuke import panel_actions, window as nuke_window

    ((widget, _, panel_id),) = docked.registered
    assert eval(widget, {}) is nuke_window.NukeVfxSwapWindow  # in a namespace that imported nothing
    pane = docked.panes["Properties.1"]
    docked.this_pane = pane  # Pane > vfxswap, chosen in that pane's content menu
    (command,) = [c[3] for c in docked.ui_calls if c[:2] == ("addCommand", "Pane")]
    command()
    window = _only_window(docked)
    assert isinstance(window, VfxSwapWindow) and type(window) is nuke_window.NukeVfxSwapWindow
    assert window.python == ENGINE and window.render.python == ENGINE
    assert pane.tabs.currentWidget() is window
    docked.this_pane = None
    assert panel_actions.open_panel() is window and len(docked.panels) == 1  # vfxswap panel finds it
    docked.restorable[panel_id]()  # a saved layout's panel: built the same way
    assert docked.panels[-1].widgets[0].python == ENGINE


def test_the_node_button_opens_the_panel_on_the_node_job(docked, tmp_path):
    from vfxswap.hosts.qt import QtWidgets

    out = tmp_path / "out"
    node = make_gizmo_node(docked, model="/models/a_on_b", faceset="/facesets/b", out_dir=str(out), face_type="head",
                           color="mkl", color_smooth=3.0, mask="hull", erode=2.0, blur=1.5, layers=True,
                           all_faces=True)
    node.inputs[0] = FakeNode(docked, "Read", file="/shots/plate.####.exr", first=1001, last=1003)
    _press(docked, node)
    window = _only_window(docked)
    pane = docked.panes["Properties.1"]
    assert pane.panels == docked.panels and pane.tabs.currentWidget() is window  # docked beside Properties
    assert window.python == ENGINE and window.tabs.currentWidget() is window.render
    panel = window.render
    assert _fields(panel) == {"model": "/models/a_on_b", "plates": "/shots/plate.####.exr", "faceset": "/facesets/b",
                              "out": str(out), "frames": "1001-1003"}
    assert (panel.mask_combo.currentText(), panel.color_combo.currentText()) == ("hull", "mkl")
    assert (panel.erode_spin.value(), panel.blur_spin.value(), panel.color_smooth_spin.value()) == (2.0, 1.5, 3.0)
    assert panel.layers_check.isChecked() and panel.all_faces_check.isChecked()
    job = panel.build_job()  # what Run would start: the node's job, face_type (no widget here) included
    assert job.options["face_type"] == "head" and job.options["mask"] == "hull" and job.python == ENGINE
    assert "job of VfxSwap1" in panel.log_view.toPlainText()
    assert docked.messages == [] and docked.executed == []

    # a second press (another node, its input no EXR Read) reuses the open panel, brought to the front
    pane.tabs.addTab(QtWidgets.QLabel("Properties"), "Properties")
    pane.tabs.setCurrentIndex(pane.tabs.count() - 1)
    window.tabs.setCurrentIndex(0)  # the artist went on to another of the window's tabs
    other = make_gizmo_node(docked, model="passthrough", out_dir=str(tmp_path / "out2"), first_frame=1, last_frame=5,
                            mask="product", layers=False, all_faces=False)
    other.name = "VfxSwap2"
    other.inputs[0] = FakeNode(docked, "Grade")
    _press(docked, other)
    assert _only_window(docked) is window and pane.tabs.currentWidget() is window
    assert window.tabs.currentWidget() is panel
    assert _fields(panel) == {"model": "passthrough", "plates": "", "faceset": "", "out": str(tmp_path / "out2"),
                              "frames": "1-5"}
    assert panel.mask_combo.currentText() == "product" and not panel.layers_check.isChecked()
    log = panel.log_view.toPlainText()
    assert "job of VfxSwap2" in log and "Plates left empty" in log and "out2/plate/plate.####.exr" in log
    assert docked.executed == [] and not [n for n in docked.created if n.cls == "Write"]  # no plate written
    assert docked.messages == []


def test_the_panel_takes_the_plate_an_earlier_render_wrote(docked, tmp_path):
    out = tmp_path / "out"
    (out / "plate").mkdir(parents=True)
    (out / "plate" / "plate.0001.exr").write_bytes(b"")
    node = make_gizmo_node(docked, model="passthrough", out_dir=str(out), first_frame=1, last_frame=1)
    node.inputs[0] = FakeNode(docked, "Grade")
    _press(docked, node)
    panel = _only_window(docked).render
    assert panel.plates_edit.text() == (out / "plate" / "plate.####.exr").as_posix()
    assert "an earlier Render wrote" in panel.log_view.toPlainText() and docked.executed == []


def test_the_vfxswap_menu_opens_one_panel_and_a_closed_one_is_docked_anew(docked):
    import shiboken6

    entries = {c[2]: c[3] for c in docked.ui_calls if c[:2] == ("addCommand", "vfxswap")}
    exec(entries["vfxswap panel"], {"nuke": docked})
    window = _only_window(docked)
    assert window.python == ENGINE
    exec(entries["vfxswap panel"], {"nuke": docked})
    assert _only_window(docked) is window  # found, not a second panel

    tabs = docked.panes["Properties.1"].tabs
    tabs.removeTab(tabs.indexOf(window))  # the artist closed the panel: Qt deletes its widget
    shiboken6.delete(window)
    node = make_gizmo_node(docked, model="passthrough", out_dir="/out")
    node.inputs[0] = FakeNode(docked, "Read", file="/shots/plate.####.exr", first=1001, last=1001)
    _press(docked, node)
    assert len(docked.panels) == 2
    window = docked.panels[-1].widgets[0]
    assert tabs.currentWidget() is window and window.render.model_edit.text() == "passthrough"


def test_without_a_properties_pane_the_panel_floats(docked):
    from vfxswap_nuke import panel_actions

    docked.panes.clear()
    window = panel_actions.open_panel()
    assert window is _only_window(docked) and docked.panels[0].floating and window.isVisible()
    assert panel_actions.open_panel() is window


def test_the_render_tab_takes_a_node_s_options_as_hosts_give_them(qt):
    """set_options: option names or flags, text values (as a host's knobs may give them), None for
    the engine's default; a render option with no widget is passed on to the job; the rest is logged."""
    from vfxswap.hosts.panel import SwapPanel

    panel = SwapPanel(python=ENGINE)
    try:
        panel.set_fields(model="passthrough", plates="/shots/plate.####.exr", out="/out")
        panel.set_options({"mask": "seg", "color-smooth": "4", "erode": 2, "all_faces": "yes", "comp": True,
                           "face_type": "head", "plate_space": "ACEScg", "frames": "1001-1002", "bogus": 1,
                           "color": "purple", "blur": 9999.0})
        assert panel.mask_combo.currentText() == "seg" and panel.color_smooth_spin.value() == 4.0
        assert panel.erode_spin.value() == 2.0 and panel.all_faces_check.isChecked() and panel.comp_check.isChecked()
        assert panel.color_combo.currentText() == "rct"  # a colour match the engine lacks: left out
        assert panel.blur_spin.value() == panel.blur_spin.maximum()
        assert panel.frames_edit.text() == "1001-1002"
        log = panel.log_view.toPlainText()
        assert "'bogus'" in log and "'color'" in log and "blur 9999" in log
        job = panel.build_job()
        assert job.options["face_type"] == "head" and job.options["plate_space"] == "ACEScg"
        assert job.options["mask"] == "seg" and job.frames == "1001-1002"
        panel.set_options({"mask": None, "plate_space": None})
        assert panel.mask_combo.currentText() == "product" and "plate_space" not in panel.build_job().options
    finally:
        panel.close()
        panel.deleteLater()
