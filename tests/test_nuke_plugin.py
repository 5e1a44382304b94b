"""The Nuke plugin against a fake `nuke` module (no Nuke here): the gizmo text, init.py, the host
layer, and a real passthrough render job driven through the gizmo's Render button code."""

from __future__ import annotations

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
    return fake


@pytest.fixture
def nuke(monkeypatch):
    fake = make_fake_nuke()
    monkeypatch.setitem(sys.modules, "nuke", fake)
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
                "all_faces": 6, "render": 22,
                "status": 26}
    assert {name: knobs[name]["id"] for name in expected} == expected
    assert list(knobs)[0] == "vfxswap"  # the tab comes first
    assert knobs["face_type"]["menu"] == ["full", "whole_face", "head"]
    assert knobs["color"]["menu"] == ["rct", "lct", "mkl", "idt", "sot", "none"]
    assert knobs["mask"]["menu"] == ["product", "learned", "hull", "seg", "seg*learned"]  # the maskers registry
    assert "vfxswap_nuke.panel_actions" in knobs["render"]["rest"] and "nuke.thisNode()" in knobs["render"]["rest"]

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
