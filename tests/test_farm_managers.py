"""OpenCue and Deadline 10 exports: what is written is parsed back and checked field by field.

OpenCue: the spec XML is read with xml.etree and checked against cjsl-1.13's content models
(transcribed below) and cuebot's naming rules; the outline script is run against a fake
`outline` package that records what it is asked to build, and, where opencue-pyoutline is
installed, through PyOutline's own serializer. Deadline: the key=value files are parsed, and
each task's command is expanded the way the CommandLine plugin does it.
"""

from __future__ import annotations

import ast
import os
import re
import runpy
import shlex
import subprocess
import sys
import types
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import pytest

from vfxswap.errors import VfxSwapError
from vfxswap.farm import managers
from vfxswap.farm.job import FarmJob
from vfxswap.jobspec import TrainOptions
from vfxswap.plates.frames import parse_frames, range_text

CUE_TOKEN = "#FRAMESPEC#"
DL_TOKEN = "<STARTFRAME>-<ENDFRAME>"


def make_job(tmp_path: Path, *, faceset_exists=False, train_gpus=None, **kw) -> FarmJob:
    """A job whose every path has a space in it, so quoting is exercised everywhere."""
    faceset = tmp_path / "face set"
    if faceset_exists:
        faceset.mkdir()
        (faceset / "faceset.db").write_bytes(b"")
    train = TrainOptions(src=str(tmp_path / "src faces"), release_ref="REL-1", gpus=train_gpus) if train_gpus else None
    values = dict(plates=str(tmp_path / "plates dir" / "plate.####.exr"), model=str(tmp_path / "my model"),
                  faceset=str(faceset), out=str(tmp_path / "sh010 layers"), frames="1001-1010,1020-1030",
                  chunk=4, render_options={"mask": "hull", "comp": True},
                  engine=shlex.quote("/opt/vfx tools/bin/vfxswap"),  # FarmJob.engine is a shell word list
                  train=train)
    values.update(kw)
    return FarmJob(**values)


def assert_spaces_survive(args: list[str]) -> None:
    assert any(" " in a for a in args), "the test job should have paths with spaces"


# --- frame ranges ------------------------------------------------------------------------------

@pytest.mark.parametrize("frames, text", [
    ("1001-1100", "1001-1100"),
    ("1001-1100x2", "1001-1099x2"),
    ("1001-1100:3", "1001-1100x3"),
    ("1001-1010,1020-1030", "1001-1010,1020-1030"),
    ("1001,1005,1010-1020", "1001,1005,1010-1020"),
    ("7", "7"),
    ("1-2", "1-2"),
    ("5,7,9,20", "5-9x2,20"),
])
def test_range_text_is_exact(frames, text):
    assert range_text(frames) == text
    assert parse_frames(text) == parse_frames(frames)


def test_render_reads_the_frame_specs_cuebot_writes():
    """#FRAMESPEC# becomes FileSeq-style text (examples from cuebot's FrameSet tests)."""
    assert parse_frames("11-91x20") == [11, 31, 51, 71, 91]
    assert parse_frames("5-11x2,31") == [5, 7, 9, 11, 31]
    assert parse_frames("91,103,104") == [91, 103, 104]


# --- OpenCue: job spec XML ---------------------------------------------------------------------

# Content models of cuebot's cjsl-1.13.dtd, as regexes over the child tags (each followed by a space).
CJSL_1_13 = {
    "spec": r"(facility )?(dept )?show shot user (email )?(uid )?(job )*(depends )*",
    "job": r"(paused )?(priority )?(maxretries )?(maxcores )?(maxgpus )?(autoeat )?(localbook )?(os )?"
           r"(env )*(layers )?",
    "layers": r"(layer )+",
    "layer": r"cmd range chunk (cores )?(threadable )?(memory )?(gpus )?(gpu )?(gpu_memory )?(timeout )?"
             r"(timeout_llu )?(tags )?(limits )?(env )*(services )?",
    "env": r"(key )*",
    "services": r"(service )+",
    "limits": r"(limit )+",
    "depends": r"(depend )*",
    "depend": r"depjob (deplayer )?(depframe )?onjob (onlayer )?(onframe )?",
}
CJSL_TEXT = {"facility", "dept", "show", "shot", "user", "email", "uid", "paused", "priority", "maxretries",
             "maxcores", "maxgpus", "autoeat", "os", "localbook", "cmd", "range", "chunk", "cores", "threadable",
             "memory", "gpus", "gpu", "gpu_memory", "timeout", "timeout_llu", "tags", "service", "limit", "key",
             "depjob", "onjob", "deplayer", "onlayer", "depframe", "onframe"}
DEPEND_TYPES = {"LAYER_ON_SIM_FRAME", "PREVIOUS_FRAME", "JOB_ON_JOB", "JOB_ON_LAYER", "JOB_ON_FRAME",
                "LAYER_ON_JOB", "LAYER_ON_FRAME", "LAYER_ON_LAYER", "FRAME_ON_JOB", "FRAME_ON_LAYER",
                "FRAME_ON_FRAME", "FRAME_BY_FRAME"}
NMTOKEN = re.compile(r"^[\w.:-]+$")
CUEBOT_NAME = re.compile(r"^[A-Za-z0-9_.]{3,}$")  # cuebot's conformName: shot and layer names


def check_cjsl(element: ET.Element) -> None:
    """Raise AssertionError where `element` breaks cjsl-1.13 (content models and attributes)."""
    children = [child.tag for child in element]
    if element.tag in CJSL_1_13:
        assert re.fullmatch(CJSL_1_13[element.tag], "".join(f"{tag} " for tag in children)), \
            f"<{element.tag}> children {children} do not fit cjsl-1.13"
        assert not (element.text or "").strip(), f"<{element.tag}> holds text"
    else:
        assert element.tag in CJSL_TEXT, f"<{element.tag}> is not in cjsl-1.13"
        assert not children, f"<{element.tag}> must hold text only"
    if element.tag in ("job", "layer", "key"):
        assert NMTOKEN.match(element.get("name", "")), f"<{element.tag}> needs an NMTOKEN name"
    if element.tag == "layer":
        assert element.get("type") in ("Render", "Util", "Post")
    if element.tag == "depend":
        assert element.get("type") in DEPEND_TYPES
    for child in element:
        check_cjsl(child)


def read_spec(path: Path) -> ET.Element:
    text = path.read_text()
    assert text.startswith('<?xml version="1.0"?>\n')
    # cuebot validates against the DTD it maps from this URL, so the DOCTYPE must name it exactly
    assert '<!DOCTYPE spec PUBLIC "SPI Cue  Specification Language" ' \
           '"http://localhost:8080/spcue/dtd/cjsl-1.13.dtd">' in text
    root = ET.fromstring(text.split("\n", 2)[2])
    check_cjsl(root)
    return root


def spec_layers(root: ET.Element) -> list[dict]:
    out = []
    for layer in root.find("job/layers"):
        out.append({"name": layer.get("name"), "cmd": layer.findtext("cmd"), "range": layer.findtext("range"),
                    "chunk": int(layer.findtext("chunk")), "gpus": layer.findtext("gpus"),
                    "gpu_memory": layer.findtext("gpu_memory"),
                    "env": {key.get("name"): key.text for key in layer.find("env")},
                    "services": [s.text for s in layer.find("services")]})
    return out


def spec_depends(root: ET.Element) -> list[tuple]:
    return [(d.get("type"), d.get("anyframe"), d.findtext("depjob"), d.findtext("deplayer"), d.findtext("onjob"),
             d.findtext("onlayer")) for d in root.find("depends")]


def test_check_cjsl_rejects_what_cuebot_would():
    good = ET.fromstring("<spec><show>s</show><shot>sho</shot><user>u</user><job name='j'><layers>"
                         "<layer name='lay' type='Render'><cmd>c</cmd><range>1</range><chunk>1</chunk></layer>"
                         "</layers></job></spec>")
    check_cjsl(good)
    swapped = ET.fromstring(ET.tostring(good).replace(b"<range>1</range><chunk>1</chunk>",
                                                      b"<chunk>1</chunk><range>1</range>"))
    with pytest.raises(AssertionError):
        check_cjsl(swapped)
    with pytest.raises(AssertionError):
        check_cjsl(ET.fromstring(ET.tostring(good).replace(b"<cmd>c</cmd>", b"<cmd>c</cmd><outputs/>")))


def test_opencue_spec_has_the_steps_in_order(tmp_path):
    job = make_job(tmp_path, train_gpus=2)
    paths = managers.write_opencue(replace(job, show="vfx", shot="sh010", user="td"), tmp_path / "cue")
    assert [p.name for p in paths] == ["vfxswap_outline.py", "vfxswap_job.xml"]
    root = read_spec(tmp_path / "cue" / "vfxswap_job.xml")
    assert [root.findtext(t) for t in ("show", "shot", "user")] == ["vfx", "sh010", "td"]
    name = root.find("job").get("name")
    assert name == "vfxswap_sh010_layers"
    assert root.findtext("job/paused") == "False"

    layers = spec_layers(root)
    assert [layer["name"] for layer in layers] == ["extract", "train", "render"]
    assert all(CUEBOT_NAME.match(layer["name"]) for layer in layers)
    assert [(layer["range"], layer["chunk"]) for layer in layers] == [("1", 1), ("1", 1), ("1001-1010,1020-1030", 4)]
    assert all(layer["services"] == ["shell"] for layer in layers)
    assert all(layer["env"] == {"PYTHONUNBUFFERED": "1"} for layer in layers)

    ab = job.absolute()
    extract, train, render = (shlex.split(layer["cmd"]) for layer in layers)
    assert extract == ab.extract_args()
    assert train == ab.train_args()
    assert render == ab.render_args(CUE_TOKEN)
    assert_spaces_survive(render)
    assert render[:2] == ["/opt/vfx tools/bin/vfxswap", "render"]
    assert f"--frames={CUE_TOKEN}" in render  # one word: a negative frame is not taken for an option
    assert f"--frames={CUE_TOKEN} " in layers[2]["cmd"]  # the token goes in bare, for cuebot to replace
    for flag, value in (("--model", str(tmp_path / "my model")),
                        ("--plates", str(tmp_path / "plates dir/plate.####.exr")),
                        ("--out", str(tmp_path / "sh010 layers")), ("--faceset", str(tmp_path / "face set"))):
        assert f"{flag}={value}" in render
    assert "--skip-existing" in render and render[-2:] == ["--mask=hull", "--comp"]

    # train asks for its GPUs; the others ask for none
    assert (layers[1]["gpus"], layers[1]["gpu_memory"]) == ("2", "1g")
    assert layers[0]["gpus"] is None and layers[2]["gpus"] is None
    assert "--gpus=2" in train

    assert spec_depends(root) == [("LAYER_ON_LAYER", "False", name, "train", name, "extract"),
                                  ("LAYER_ON_LAYER", "False", name, "render", name, "train")]


def test_opencue_render_only_when_the_faceset_exists(tmp_path):
    job = make_job(tmp_path, faceset_exists=True, frames="1001-1100x2", chunk=10)
    assert job.extract is False
    managers.write_opencue(replace(job, user="td"), tmp_path / "cue")
    root = read_spec(tmp_path / "cue" / "vfxswap_job.xml")
    layers = spec_layers(root)
    assert [(layer["name"], layer["range"], layer["chunk"]) for layer in layers] == [("render", "1001-1099x2", 10)]
    assert spec_depends(root) == []
    assert root.findtext("show") == "testing" and root.findtext("shot") == "sh010_layers"


def test_cpu_training_asks_for_no_gpu(tmp_path):
    job = make_job(tmp_path, train_gpus=2)
    job.train.device = "cpu"
    managers.write_opencue(replace(job, user="td"), tmp_path / "cue")
    layers = spec_layers(read_spec(tmp_path / "cue" / "vfxswap_job.xml"))
    assert layers[1]["name"] == "train" and layers[1]["gpus"] is None


# --- OpenCue: outline script -------------------------------------------------------------------

class FakeOutline:
    def __init__(self, name, show=None, shot=None, user=None):
        self.name, self.show, self.shot, self.user, self.layers = name, show, shot, user, []

    def add_layer(self, layer):
        self.layers.append(layer)


class FakeShell:
    def __init__(self, name, **args):
        self.name, self.args, self.depends = name, args, []

    def depend_on(self, on_layer, depend_type="FRAME_BY_FRAME"):  # PyOutline's default type
        self.depends.append((on_layer.name, depend_type))


class FakeJob:
    def __init__(self, name):
        self._name = name

    def name(self):
        return self._name


@pytest.fixture
def fake_outline(monkeypatch):
    """A stand-in `outline` package that records what the script builds and launches."""
    launched = []

    def launch(ol, use_pycuerun=True, **args):
        launched.append((ol, use_pycuerun, args))
        return [FakeJob(f"testing-sh010-td_{ol.name}")]

    modules = {
        "outline": types.ModuleType("outline"),
        "outline.depend": types.ModuleType("outline.depend"),
        "outline.modules": types.ModuleType("outline.modules"),
        "outline.modules.shell": types.ModuleType("outline.modules.shell"),
        "outline.cuerun": types.ModuleType("outline.cuerun"),
    }
    modules["outline"].Outline = FakeOutline
    modules["outline.depend"].DependType = types.SimpleNamespace(LayerOnLayer="LAYER_ON_LAYER",
                                                                 FrameByFrame="FRAME_BY_FRAME")
    modules["outline.modules.shell"].Shell = FakeShell
    modules["outline.cuerun"].launch = launch
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    modules["outline"].launched = launched
    return modules["outline"]


def test_outline_script_builds_the_spec_layers(tmp_path, fake_outline):
    job = make_job(tmp_path, train_gpus=3)
    script, spec = managers.write_opencue(replace(job, user="td"), tmp_path / "cue")
    tree = ast.parse(script.read_text())  # plain Python, importable without vfxswap
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module.startswith("vfxswap")]
    ol = runpy.run_path(str(script), run_name="vfxswap_outline")["build"]()
    assert fake_outline.launched == []  # building does not submit

    root = read_spec(spec)
    assert (ol.name, ol.show, ol.shot, ol.user) == (root.find("job").get("name"), "testing", "sh010_layers", "td")
    layers = spec_layers(root)
    assert [s.name for s in ol.layers] == [layer["name"] for layer in layers] == ["extract", "train", "render"]
    for shell, layer in zip(ol.layers, layers):
        assert shell.args["command"] == layer["cmd"]
        assert (shell.args["range"], shell.args["chunk"]) == (layer["range"], layer["chunk"])
        assert shell.args["env"] == layer["env"]
        if layer["gpus"]:
            assert (str(shell.args["gpus"]), shell.args["gpu_memory"]) == (layer["gpus"], layer["gpu_memory"])
        else:
            assert "gpus" not in shell.args
    assert ol.layers[1].args["gpus"] == 3 and ol.layers[1].args["gpu_memory"] == "1g"
    assert shlex.split(ol.layers[2].args["command"]) == job.absolute().render_args(CUE_TOKEN)
    assert [s.depends for s in ol.layers] == [[], [("extract", "LAYER_ON_LAYER")], [("train", "LAYER_ON_LAYER")]]


def test_outline_script_submits_without_the_pycuerun_wrapper(tmp_path, fake_outline, capsys):
    script, _ = managers.write_opencue(replace(make_job(tmp_path), user="td"), tmp_path / "cue")
    runpy.run_path(str(script), run_name="__main__")
    ((ol, use_pycuerun, _args),) = fake_outline.launched
    assert use_pycuerun is False  # commands run as written: nodes need vfxswap, not pyoutline
    assert [s.name for s in ol.layers] == ["extract", "render"]
    assert capsys.readouterr().out.strip() == "testing-sh010-td_vfxswap_sh010_layers"


def test_outline_serializes_to_the_same_spec_with_pyoutline(tmp_path, monkeypatch):
    """PyOutline's own serializer (offline, no cuebot) must say what our XML says."""
    import outline
    from outline import cuerun

    job = make_job(tmp_path, train_gpus=2)
    script, spec = managers.write_opencue(replace(job, user="td"), tmp_path / "cue")
    saved = {key: outline.config.get("outline", key) for key in ("spec_version", "session_dir")}
    monkeypatch.setenv("SHOT", "sh010_layers")  # the launcher sets it; monkeypatch puts it back
    try:
        outline.config.set("outline", "spec_version", managers.CUE_SPEC_VERSION)
        outline.config.set("outline", "session_dir", str(tmp_path / "sessions"))
        ol = runpy.run_path(str(script), run_name="vfxswap_outline")["build"]()
        theirs = cuerun.OutlineLauncher(ol, nomail=True).serialize(use_pycuerun=False)
    finally:
        for key, value in saved.items():
            outline.config.set("outline", key, value)
    assert "cjsl-1.13.dtd" in theirs
    theirs_root = ET.fromstring(theirs[theirs.index("<spec>"):])
    check_cjsl(theirs_root)
    ours = read_spec(spec)
    assert spec_layers(theirs_root) == spec_layers(ours)
    assert spec_depends(theirs_root) == spec_depends(ours)
    for tag in ("show", "shot", "user"):
        assert theirs_root.findtext(tag) == ours.findtext(tag)
    assert theirs_root.find("job").get("name") == ours.find("job").get("name")


# --- Deadline 10 -------------------------------------------------------------------------------

def parse_kv(path: Path) -> dict:
    """Deadline's job files: one key=value a line, split at the first '='."""
    out = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        assert sep and key and key == key.strip(), f"{path.name}: bad line {line!r}"
        assert key not in out, f"{path.name}: {key} twice"
        out[key] = value
    return out


def _frames_value(argv: list[str]) -> str:
    (value,) = [a.split("=", 1)[1] for a in argv if a.startswith("--frames=")]
    return value


def deadline_tasks(frames: str, chunk: int) -> list[list[int]]:
    """Deadline's tasks: ChunkSize consecutive frames of the job's frame list."""
    frames = parse_frames(frames)
    return [frames[i:i + chunk] for i in range(0, len(frames), chunk)]


def expand(arguments: str, task: list[int]) -> list[str]:
    """What the CommandLine plugin then the shell make of Arguments for one task."""
    line = arguments.replace("<STARTFRAME>", str(task[0])).replace("<ENDFRAME>", str(task[-1]))
    return shlex.split(line)


def test_deadline_files_one_job_per_step_and_run(tmp_path):
    job = make_job(tmp_path, train_gpus=3, frames="1001-1010,1020-1030,1041-1059x2")
    paths = managers.write_deadline10(job, tmp_path / "dl")
    stems = ["01_extract", "02_train", "03_render", "04_render", "05_render"]
    expected = [f"{s}_{kind}_info.job" for s in stems for kind in ("job", "plugin")]
    assert [p.name for p in paths] == [*expected, "submit.sh"]
    info = {s: parse_kv(tmp_path / "dl" / f"{s}_job_info.job") for s in stems}
    plugin = {s: parse_kv(tmp_path / "dl" / f"{s}_plugin_info.job") for s in stems}
    ab = job.absolute()

    assert {i["Plugin"] for i in info.values()} == {"CommandLine"}
    assert {i["BatchName"] for i in info.values()} == {"vfxswap sh010_layers"}
    assert all(i["EnvironmentKeyValue0"] == "PYTHONUNBUFFERED=1" for i in info.values())
    assert all(p["ShellExecute"] == "True" and p["Shell"] == "default" for p in plugin.values())
    for single in ("01_extract", "02_train"):  # one task each, the command holds its own frames
        assert (info[single]["Frames"], info[single]["ChunkSize"]) == ("0", "1")
        assert "OutputDirectory0" not in info[single]
    assert shlex.split(plugin["01_extract"]["Arguments"]) == ab.extract_args()
    train = shlex.split(plugin["02_train"]["Arguments"])
    assert train == ab.train_args()
    assert "--gpus=3" in train
    assert "3 GPU" in info["02_train"]["Comment"]
    assert "Comment" not in info["01_extract"]

    runs = {"03_render": ("1001-1010", DL_TOKEN), "04_render": ("1020-1030", DL_TOKEN),
            "05_render": ("1041-1059x2", DL_TOKEN + "x2")}
    covered = []
    for stem, (frames, token) in runs.items():
        assert info[stem]["Frames"] == frames and info[stem]["ChunkSize"] == "4"
        assert info[stem]["Name"] == f"vfxswap sh010_layers render {frames}"
        assert info[stem]["OutputDirectory0"] == str(tmp_path / "sh010 layers")
        assert info[stem]["OutputFilename0"] == "face.####.exr"
        arguments = plugin[stem]["Arguments"]
        assert f"--frames={token} " in arguments  # bare, for the plugin to replace
        args = shlex.split(arguments)
        assert args == ab.render_args(token)
        assert_spaces_survive(args)
        assert "--skip-existing" in args
        for task in deadline_tasks(frames, 4):  # each task renders exactly its own frames
            expanded = expand(arguments, task)
            assert parse_frames(_frames_value(expanded)) == task
            covered += task
    assert covered == parse_frames(job.frames)


def test_deadline_render_only_keeps_the_step_in_one_job(tmp_path):
    job = make_job(tmp_path, faceset_exists=True, frames="1001-1100x2", chunk=10,
                   plates=str(tmp_path / "plates" / "plate.%06d.exr"))
    paths = managers.write_deadline10(job, tmp_path / "dl")
    assert [p.name for p in paths] == ["01_render_job_info.job", "01_render_plugin_info.job", "submit.sh"]
    info = parse_kv(paths[0])
    assert (info["Frames"], info["ChunkSize"], info["OutputFilename0"]) == ("1001-1099x2", "10", "face.######.exr")
    arguments = parse_kv(paths[1])["Arguments"]
    tasks = deadline_tasks(info["Frames"], 10)
    assert len(tasks) == 5 and tasks[0] == list(range(1001, 1020, 2))
    for task in tasks:
        expanded = expand(arguments, task)
        assert parse_frames(_frames_value(expanded)) == task
    assert "GPU" not in (tmp_path / "dl" / "submit.sh").read_text()


def test_negative_frames_reach_the_engine_as_frames(tmp_path):
    """Pre-roll frames below zero: a chunk such as `-3--2` after a bare `--frames` reads as an
    option to an argument parser, so every export writes `--frames=VALUE`, one word. Each task's
    command line, as the farm expands it, parses to exactly that task's frames."""
    from vfxswap.jobspec import RenderOptions, from_argv

    job = make_job(tmp_path, faceset_exists=True, frames="-3-2", chunk=2, render_options={})
    engine_words = len(shlex.split(job.engine))

    def frames_of(argv):
        assert argv[engine_words] == "render"
        return parse_frames(from_argv(RenderOptions, argv[engine_words + 1:]).frames)

    spec = read_spec(next(p for p in managers.write_opencue(job, tmp_path / "cue") if p.suffix == ".xml"))
    cmd = spec_layers(spec)[-1]["cmd"]
    for task in (["-3--2"], ["-1-0"], ["1-2"]):
        assert frames_of(shlex.split(cmd.replace(CUE_TOKEN, task[0]))) == parse_frames(task[0])
    arguments = parse_kv(managers.write_deadline10(job, tmp_path / "dl")[1])["Arguments"]
    assert [frames_of(expand(arguments, task)) for task in deadline_tasks("-3-2", 2)] == [[-3, -2], [-1, 0], [1, 2]]


def test_submit_sh_chains_the_jobs_in_order(tmp_path):
    paths = managers.write_deadline10(make_job(tmp_path, train_gpus=2), tmp_path / "out dir")
    submit = paths[-1]
    text = submit.read_text()
    assert text.startswith("#!/bin/sh\n") and os.access(submit, os.X_OK)
    assert "2 GPU(s)" in text
    command = shlex.split(text[text.index("exec "):].replace("\\\n", " "))
    assert command[1:4] == ["${DEADLINE_COMMAND:-deadlinecommand}", "-SubmitMultipleJobs", "-dependent"]
    jobs = [p.name for p in paths[:-1]]
    assert command[4:] == [w for i in range(0, len(jobs), 2) for w in ("-job", jobs[i], jobs[i + 1])]
    assert [name.split("_")[1] for name in jobs[::2]] == ["extract", "train", "render", "render"]

    if not Path("/bin/sh").exists():
        pytest.skip("no /bin/sh to run submit.sh with")  # the OS (Windows), not the project
    fake = tmp_path / "deadlinecommand"
    fake.write_text('#!/bin/sh\nfor a in "$@"; do echo "$a"; done\npwd\n')
    fake.chmod(0o755)
    done = subprocess.run(["/bin/sh", str(submit)], env={**os.environ, "DEADLINE_COMMAND": str(fake)},
                          capture_output=True, text=True, cwd=tmp_path, check=True)
    *argv, cwd = done.stdout.splitlines()
    assert argv == command[2:] and Path(cwd) == submit.parent  # runs beside its files, wherever called from
    assert all((submit.parent / name).is_file() for name in argv if name.endswith(".job"))


# --- input checks ------------------------------------------------------------------------------

def test_relative_paths_are_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    job = FarmJob(plates="plates/plate.####.exr", model="model", faceset="faces", out="layers", frames="1-5")
    managers.write_deadline10(job, "dl")
    args = shlex.split(parse_kv(tmp_path / "dl" / "02_render_plugin_info.job")["Arguments"])
    assert f"--model={tmp_path / 'model'}" in args and f"--plates={tmp_path / 'plates/plate.####.exr'}" in args
    managers.write_opencue(replace(job, user="td"), "cue")
    render = spec_layers(read_spec(tmp_path / "cue" / "vfxswap_job.xml"))[-1]
    assert f"--out={tmp_path / 'layers'}" in shlex.split(render["cmd"])


def test_bad_input_is_one_clear_error(tmp_path):
    job = make_job(tmp_path)
    with pytest.raises(VfxSwapError, match="shot"):
        managers.write_opencue(replace(job, shot="x!", user="td"), tmp_path / "cue")
    with pytest.raises(VfxSwapError, match="user"):
        managers.write_opencue(replace(job, user="t d"), tmp_path / "cue")
    (tmp_path / "a file").write_text("")
    with pytest.raises(VfxSwapError, match="not a folder"):
        managers.write_deadline10(job, tmp_path / "a file")
    broken = make_job(tmp_path, out=str(tmp_path / "line\nbreak"))
    with pytest.raises(VfxSwapError, match="line breaks"):
        managers.write_deadline10(broken, tmp_path / "dl")
    assert not (tmp_path / "dl").exists() or not any((tmp_path / "dl").iterdir())
