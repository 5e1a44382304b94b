"""resolve_scripts/vfxswap_resolve.py against fake Resolve API objects (no Resolve here), plus one
real passthrough engine run through its run_engine."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from vfxswap.hosts.jobs import JobResult
from vfxswap.plates import read_image
from conftest import make_astronaut_shot

SCRIPT = Path(__file__).resolve().parents[1] / "resolve_scripts" / "vfxswap_resolve.py"


@pytest.fixture(scope="module")
def rs():
    spec = importlib.util.spec_from_file_location("vfxswap_resolve", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# --- fakes: record calls, behave like the documented API -------------------------------------

class Recorder:
    def __init__(self, log):
        self.log = log

    def _rec(self, name, *args):
        self.log.append((name,) + args)


class FakeMediaPoolItem(Recorder):
    def __init__(self, log, props):
        super().__init__(log)
        self.props = dict(props)

    def GetClipProperty(self, key=None):
        return dict(self.props) if key is None else self.props.get(key, "")

    def SetClipProperty(self, key, value):
        self._rec("SetClipProperty", key, value)
        self.props[key] = value
        return True


class FakeTimelineItem(Recorder):
    def __init__(self, log, mpi, start, end, source_start=None):
        super().__init__(log)
        self.mpi, self.start, self.end, self.props = mpi, start, end, {}
        if source_start is None:  # untrimmed: from the media's first frame
            source_start = int((mpi.props.get("Start") if mpi is not None else None) or 0)
        self.source_start = source_start
        self.source_end = source_start + (end - start) - 1  # inclusive, one source frame per timeline frame

    def GetStart(self, subframe=False):
        return self.start

    def GetEnd(self, subframe=False):
        return self.end

    def GetSourceStartFrame(self):
        return self.source_start

    def GetSourceEndFrame(self):
        return self.source_end

    def GetMediaPoolItem(self):
        return self.mpi

    def SetProperty(self, key, value):
        self._rec("SetProperty", key, value)
        self.props[key] = value
        return True


class FakeFolder:
    def __init__(self, name):
        self.name, self.subs = name, []

    def GetName(self):
        return self.name

    def GetSubFolderList(self):
        return list(self.subs)


class FakeTimeline(Recorder):
    def __init__(self, log, tracks):
        super().__init__(log)
        self.tracks = tracks  # list of lists of FakeTimelineItem, track 1 first
        self.current = None

    def GetTrackCount(self, kind):
        return len(self.tracks) if kind == "video" else 0

    def AddTrack(self, kind, *args):
        self._rec("AddTrack", kind)
        self.tracks.append([])
        return True

    def GetItemListInTrack(self, kind, index):
        return list(self.tracks[index - 1])

    def GetCurrentVideoItem(self):
        return self.current


class FakeMediaPool(Recorder):
    def __init__(self, log, timeline, drop_first=0):
        super().__init__(log)
        self.root = FakeFolder("Master")
        self.current_folder = self.root
        self.timeline = timeline
        self.drop = drop_first  # appends to drop silently (as Resolve does on overlap)
        self.imported = []

    def GetRootFolder(self):
        return self.root

    def AddSubFolder(self, parent, name):
        self._rec("AddSubFolder", parent, name)
        folder = FakeFolder(name)
        parent.subs.append(folder)
        return folder

    def SetCurrentFolder(self, folder):
        self._rec("SetCurrentFolder", folder)
        self.current_folder = folder
        return True

    def ImportMedia(self, items):
        self._rec("ImportMedia", items)
        info = items[0]
        mpi = FakeMediaPoolItem(self.log, {"File Path": info["FilePath"], "Alpha mode": "None",
                                           "Frames": str(info["EndIndex"] - info["StartIndex"] + 1)})
        mpi.folder = self.current_folder
        self.imported.append(mpi)
        return [mpi]

    def AppendToTimeline(self, infos):
        self._rec("AppendToTimeline", infos)
        out = []
        for info in infos:
            if self.drop:
                self.drop -= 1
                out.append(FakeTimelineItem(self.log, info["mediaPoolItem"], 0, 0))  # returned, never placed
                continue
            item = FakeTimelineItem(self.log, info["mediaPoolItem"], info["recordFrame"],
                                    info["recordFrame"] + info["endFrame"] - info["startFrame"])
            self.timeline.tracks[info["trackIndex"] - 1].append(item)
            out.append(item)
        return out


class FakeProject(Recorder):
    def __init__(self, log, rendering_polls=3, timeline=None, media_pool=None):
        super().__init__(log)
        self.polls = rendering_polls
        self.settings = None
        self.on_render = None
        self.timeline, self.media_pool = timeline, media_pool

    def GetCurrentTimeline(self):
        return self.timeline

    def GetMediaPool(self):
        return self.media_pool

    def SetCurrentRenderFormatAndCodec(self, fmt, codec):
        self._rec("SetCurrentRenderFormatAndCodec", fmt, codec)
        return True

    def SetCurrentRenderMode(self, mode):
        self._rec("SetCurrentRenderMode", mode)
        return True

    def SetRenderSettings(self, settings):
        self._rec("SetRenderSettings", settings)
        self.settings = settings
        return True

    def AddRenderJob(self):
        self._rec("AddRenderJob")
        return "job-1"

    def StartRendering(self, jobs, interactive=False):
        self._rec("StartRendering", jobs)
        return True

    def IsRenderingInProgress(self):
        self._rec("IsRenderingInProgress")
        self.polls -= 1
        if self.polls < 0 and self.on_render:  # frames appear once the render is done
            self.on_render(self.settings)
            self.on_render = None
        return self.polls >= 0


def _shot(log, plate_track=1, tracks=1, start=86400, length=10):
    plate_mpi = FakeMediaPoolItem(log, {"File Path": "/shots/plate.[1001-1010].exr", "Start": "1001",
                                        "End": "1010", "Input Color Space": "ACEScg"})
    plate = FakeTimelineItem(log, plate_mpi, start, start + length)
    timeline = FakeTimeline(log, [[] for _ in range(tracks)])
    timeline.tracks[plate_track - 1].append(plate)
    return plate, timeline


class FakeResolve:
    """resolve -> GetProjectManager() -> GetCurrentProject()."""

    def __init__(self, project):
        self.project = project

    def GetProjectManager(self):
        return self

    def GetCurrentProject(self):
        return self.project


class ScriptedRunner:
    """Stands in for vfxswap.hosts.JobRunner (no engine): one `frame` event per frame of the job's
    range, with `statuses[frame]` ("written" by default; "skipped" as a skip-existing run reports a
    complete frame it kept)."""

    def __init__(self, statuses=None):
        self.statuses, self.jobs = dict(statuses or {}), []

    def __call__(self, job, env=None):
        self.jobs.append(job)
        return self

    def run(self, on_event=None):
        job = self.jobs[-1]
        first, last = (int(x) for x in job.frames.split("-"))
        written, skipped = [], []
        for done, frame in enumerate(range(first, last + 1), 1):
            status = self.statuses.get(frame, "written")
            (written if status == "written" else skipped).append(frame)
            if on_event:
                on_event({"event": "frame", "frame": frame, "status": status, "done": done,
                          "total": last - first + 1})
        return JobResult(0, written, {}, False, "", skipped)


@pytest.fixture
def scripted(monkeypatch):
    def install(statuses=None):
        runner = ScriptedRunner(statuses)
        monkeypatch.setattr("vfxswap.hosts.JobRunner", runner)
        return runner
    return install


def _swap(rs, item, out, options=None, project=None):
    """swap_current_item on a fake project whose current item is `item` (on video track 1)."""
    log = item.log
    timeline = FakeTimeline(log, [[item]])
    timeline.current = item
    pool = FakeMediaPool(log, timeline)
    project = project or FakeProject(log)
    project.timeline, project.media_pool = timeline, pool
    placed = rs.swap_current_item(FakeResolve(project), "passthrough", str(out), options)
    (imported,) = [c[1][0] for c in log if c[0] == "ImportMedia"]
    (appended,) = [c[1][0] for c in log if c[0] == "AppendToTimeline"]
    return placed, imported, appended


# --- plate_of ---------------------------------------------------------------------------------

@pytest.mark.parametrize("path,props,expected", [
    ("/shots/sh010/plate.[1001-1100].exr", {}, ("/shots/sh010/plate.%04d.exr", 1001, 1100)),
    ("/shots/sh010/plate.[1001-1100].exr", {"Start": "1010", "End": "1020"}, ("/shots/sh010/plate.%04d.exr", 1010, 1020)),
    ("/shots/sh010/plate_[0001-0100].dpx", {}, ("/shots/sh010/plate_%04d.dpx", 1, 100)),
    ("/shots/sh010/plate.%04d.exr", {"Start": "1001", "End": "1100"}, ("/shots/sh010/plate.%04d.exr", 1001, 1100)),
    ("/shots/sh010/plate.mov", {"Start": "0", "End": "99"}, None),
    ("/shots/sh010/still.exr", {}, None),
])
def test_plate_of_reads_both_sequence_spellings_and_rejects_movies(rs, path, props, expected):
    item = FakeTimelineItem([], FakeMediaPoolItem([], {"File Path": path, **props}), 0, 10)
    assert rs.plate_of(item) == expected


# --- import_layers ----------------------------------------------------------------------------

def test_import_layers_selects_the_bin_first_and_sets_alpha_and_colour_space(rs):
    log = []
    plate, timeline = _shot(log)
    pool = FakeMediaPool(log, timeline)
    layer = rs.import_layers(pool, pool.GetRootFolder(), "/out/face.%04d.exr", 1001, 1010, plate.GetMediaPoolItem())
    names = [c[0] for c in log]
    assert names.index("AddSubFolder") < names.index("SetCurrentFolder") < names.index("ImportMedia")
    (imp,) = [c for c in log if c[0] == "ImportMedia"]
    assert imp[1] == [{"FilePath": "/out/face.%04d.exr", "StartIndex": 1001, "EndIndex": 1010}]
    assert layer.folder.GetName() == "vfxswap"
    assert layer.GetClipProperty("Alpha mode") == "Premultiplied"
    assert layer.GetClipProperty("Input Color Space") == "ACEScg"
    # a second import reuses the bin
    rs.import_layers(pool, pool.GetRootFolder(), "/out/face.%04d.exr", 1001, 1010, plate.GetMediaPoolItem())
    assert [c[0] for c in log].count("AddSubFolder") == 1 and len(pool.GetRootFolder().subs) == 1


def test_import_layers_fails_clearly_when_a_property_does_not_stick(rs):
    log = []
    plate, timeline = _shot(log)
    pool = FakeMediaPool(log, timeline)
    orig = FakeMediaPoolItem.SetClipProperty
    try:
        FakeMediaPoolItem.SetClipProperty = lambda self, k, v: False
        with pytest.raises(rs.ResolveGlueError, match="Alpha mode"):
            rs.import_layers(pool, pool.GetRootFolder(), "/out/face.%04d.exr", 1001, 1010)
    finally:
        FakeMediaPoolItem.SetClipProperty = orig


# --- place_above ------------------------------------------------------------------------------

def _layer(log, frames=10):
    return FakeMediaPoolItem(log, {"File Path": "/out/face.[1001-1010].exr", "Frames": str(frames)})


def test_place_above_puts_the_layer_on_the_next_track_at_the_plate_start(rs):
    log = []
    plate, timeline = _shot(log, tracks=2)
    pool, layer = FakeMediaPool(log, timeline), _layer(log)
    placed = rs.place_above(timeline, plate, layer, media_pool=pool)
    (app,) = [c for c in log if c[0] == "AppendToTimeline"]
    assert app[1] == [{"mediaPoolItem": layer, "startFrame": 0, "endFrame": 10, "trackIndex": 2,
                       "recordFrame": 86400}]
    assert "AddTrack" not in [c[0] for c in log]
    assert placed in timeline.tracks[1] and placed.GetStart() == 86400 and placed.GetEnd() == 86410
    assert placed.props == {"CompositeMode": 0}


def test_place_above_adds_a_track_when_needed(rs):
    log = []
    plate, timeline = _shot(log, tracks=1)
    pool, layer = FakeMediaPool(log, timeline), _layer(log)
    rs.bind_media_pool(timeline, pool)  # the no-media_pool form
    placed = rs.place_above(timeline, plate, layer)
    assert [c for c in log if c[0] == "AddTrack"] == [("AddTrack", "video")]
    assert timeline.GetTrackCount("video") == 2 and placed in timeline.tracks[1]


def test_place_above_retries_on_a_new_track_when_the_append_is_silently_dropped(rs):
    log = []
    plate, timeline = _shot(log, tracks=2)
    pool, layer = FakeMediaPool(log, timeline, drop_first=1), _layer(log)
    placed = rs.place_above(timeline, plate, layer, media_pool=pool)
    appends = [c[1][0]["trackIndex"] for c in log if c[0] == "AppendToTimeline"]
    assert appends == [2, 3] and [c[0] for c in log].count("AddTrack") == 1
    assert placed in timeline.tracks[2] and placed.props == {"CompositeMode": 0}


def test_place_above_raises_after_the_retries(rs):
    log = []
    plate, timeline = _shot(log, tracks=2)
    pool, layer = FakeMediaPool(log, timeline, drop_first=99), _layer(log)
    with pytest.raises(rs.ResolveGlueError, match="did not place the face layer"):
        rs.place_above(timeline, plate, layer, retries=2, media_pool=pool)
    assert [c[0] for c in log].count("AppendToTimeline") == 3


# --- render_plate -----------------------------------------------------------------------------

def test_render_plate_renders_exr_half_zip_over_the_item_range_and_waits(rs, tmp_path):
    log = []
    plate, _ = _shot(log)
    project = FakeProject(log, rendering_polls=3)

    def write_frames(settings):
        for f in range(86400, 86410):
            (Path(settings["TargetDir"]) / f"{settings['CustomName']}{f:08d}.exr").write_bytes(b"")
    project.on_render = write_frames
    sleeps = []
    pattern = rs.render_plate(project, plate, tmp_path / "plate", sleep=sleeps.append)
    assert ("SetCurrentRenderFormatAndCodec", "exr", "RGBHalfZIP") in log
    assert ("SetCurrentRenderMode", 0) in log
    assert project.settings["MarkIn"] == 86400 and project.settings["MarkOut"] == 86409
    assert project.settings["TargetDir"] == str(tmp_path / "plate") and project.settings["CustomName"] == "plate"
    assert ("StartRendering", ["job-1"]) in log
    assert [c[0] for c in log].count("IsRenderingInProgress") == 4 and len(sleeps) == 3
    assert pattern == str(tmp_path / "plate" / "plate%08d.exr")
    assert rs._scan_sequence(str(tmp_path / "plate"), "plate") == (pattern, 86400, 86409)


def test_render_plate_times_out(rs, tmp_path):
    log = []
    plate, _ = _shot(log)
    project = FakeProject(log, rendering_polls=10**6)
    with pytest.raises(rs.ResolveGlueError, match="did not finish"):
        rs.render_plate(project, plate, tmp_path / "plate", timeout=2.0, poll=0.5, sleep=lambda s: None)


# --- swap_current_item: range, file names and placement ---------------------------------------

@pytest.mark.parametrize("options,name", [({}, "face"), ({"name": "hero"}, "hero")])
def test_swap_imports_the_files_the_engine_writes_for_an_8_digit_plate(rs, scripted, tmp_path, options, name):
    runner = scripted()
    log = []
    mpi = FakeMediaPoolItem(log, {"File Path": "/shots/plate.[00086400-00086402].exr", "Start": "86400",
                                  "End": "86402", "Input Color Space": "ACEScg"})
    placed, imported, appended = _swap(rs, FakeTimelineItem(log, mpi, 86400, 86403), tmp_path, options)
    assert runner.jobs[0].plates == "/shots/plate.%08d.exr"
    assert imported == {"FilePath": str(tmp_path / f"{name}.%08d.exr"), "StartIndex": 86400, "EndIndex": 86402}
    assert placed.GetStart() == 86400 and placed.GetEnd() == 86403


def test_swap_imports_8_digit_layers_of_a_plate_resolve_rendered(rs, scripted, tmp_path):
    runner = scripted()
    log = []
    item = FakeTimelineItem(log, FakeMediaPoolItem(log, {"File Path": "/shots/interview.mov", "Start": "0",
                                                         "End": "2"}), 86400, 86403)
    project = FakeProject(log, rendering_polls=0)

    def write_frames(settings):  # Resolve's EXR render names frames plate00086400.exr, ...
        for f in range(86400, 86403):
            (Path(settings["TargetDir"]) / f"{settings['CustomName']}{f:08d}.exr").write_bytes(b"")
    project.on_render = write_frames
    placed, imported, appended = _swap(rs, item, tmp_path, project=project)
    assert runner.jobs[0].plates == str(tmp_path / "plate" / "plate%08d.exr") and runner.jobs[0].frames == "86400-86402"
    assert imported == {"FilePath": str(tmp_path / "face.%08d.exr"), "StartIndex": 86400, "EndIndex": 86402}
    assert appended["startFrame"] == 0 and appended["recordFrame"] == 86400


def test_swap_renders_and_places_only_what_a_trimmed_clip_shows(rs, scripted, tmp_path):
    runner = scripted()
    log = []
    mpi = FakeMediaPoolItem(log, {"File Path": "/shots/plate.[1001-1008].exr", "Start": "1001", "End": "1008"})
    item = FakeTimelineItem(log, mpi, 86400, 86403, source_start=1004)  # shows source frames 1004-1006
    placed, imported, appended = _swap(rs, item, tmp_path)
    assert runner.jobs[0].frames == "1004-1006"
    assert (imported["StartIndex"], imported["EndIndex"]) == (1004, 1006)  # face.1004 is the layer's frame 0 ...
    assert (appended["startFrame"], appended["endFrame"], appended["recordFrame"]) == (0, 3, 86400)  # ... at 86400
    assert (placed.GetStart(), placed.GetEnd()) == (86400, 86403)


@pytest.mark.parametrize("source_start,source_end,match", [(1004, 1010, "retimed"), (3, 5, "not in its media")])
def test_swap_refuses_a_source_range_it_cannot_place(rs, scripted, tmp_path, source_start, source_end, match):
    runner = scripted()
    log = []
    mpi = FakeMediaPoolItem(log, {"File Path": "/shots/plate.[1001-1008].exr", "Start": "1001", "End": "1008"})
    item = FakeTimelineItem(log, mpi, 86400, 86403, source_start=source_start)
    item.source_end = source_end
    with pytest.raises(rs.ResolveGlueError, match=match):
        _swap(rs, item, tmp_path)
    assert runner.jobs == []


@pytest.mark.parametrize("skipped", [range(1001, 1005), range(1001, 1009)])
def test_swap_with_skip_existing_imports_the_whole_range(rs, scripted, tmp_path, skipped):
    runner = scripted({f: "skipped" for f in skipped})  # complete frames from an earlier run
    log = []
    mpi = FakeMediaPoolItem(log, {"File Path": "/shots/plate.[1001-1008].exr", "Start": "1001", "End": "1008"})
    placed, imported, appended = _swap(rs, FakeTimelineItem(log, mpi, 86400, 86408), tmp_path,
                                       rs._parse_options("color=none skip-existing"))
    assert runner.jobs[0].options["skip_existing"] is True  # as RenderJob keeps them: field names
    assert (imported["StartIndex"], imported["EndIndex"]) == (1001, 1008)
    assert (appended["startFrame"], appended["endFrame"], appended["recordFrame"]) == (0, 8, 86400)


# --- run_engine: a real passthrough render job ------------------------------------------------

@pytest.fixture(scope="module")
def shot(tmp_path_factory):
    return make_astronaut_shot(tmp_path_factory.mktemp("resolveshot"), frames=3)


def test_run_engine_runs_a_real_passthrough_job_and_the_layers_import(rs, shot, tmp_path):
    out = tmp_path / "out"
    events = []
    result = rs.run_engine(str(shot / "plates" / "plate.%04d.exr"), 1001, 1003, "passthrough", str(out),
                           {"faceset": str(shot / "faceset"), "color": "none"}, on_event=events.append)
    assert result.ok and result.written == [1001, 1002, 1003] and not result.error, result.error
    assert events[0]["event"] == "start" and events[-1]["event"] == "done"
    for f in result.written:
        assert read_image(out / f"face.{f}.exr").attribute("vfxswap:synthetic") == "true"
    # the written layers feed straight into import_layers
    log = []
    plate, timeline = _shot(log)
    pool = FakeMediaPool(log, timeline)
    layer = rs.import_layers(pool, pool.GetRootFolder(), str(out / "face.%04d.exr"), min(result.written),
                             max(result.written), plate.GetMediaPoolItem())
    assert layer.GetClipProperty("Frames") == "3"


def test_run_engine_surfaces_the_engine_error(rs, shot, tmp_path):
    result = rs.run_engine(str(shot / "plates" / "plate.%04d.exr"), 1001, 1001, str(tmp_path / "no-such-model"),
                           str(tmp_path / "out"), {"faceset": str(shot / "faceset")})
    assert not result.ok and "no-such-model" in result.error


def test_swap_with_skip_existing_on_a_real_engine_imports_the_kept_frames_too(rs, shot, tmp_path):
    out = tmp_path / "out"
    options = {"faceset": str(shot / "faceset"), "color": "none"}
    assert rs.run_engine(str(shot / "plates" / "plate.%04d.exr"), 1001, 1002, "passthrough", str(out), options).ok
    log = []
    mpi = FakeMediaPoolItem(log, {"File Path": str(shot / "plates" / "plate.[1001-1003].exr"), "Start": "1001",
                                  "End": "1003", "Input Color Space": "ACEScg"})
    events = []
    timeline = FakeTimeline(log, [[FakeTimelineItem(log, mpi, 86400, 86403)]])
    timeline.current = timeline.tracks[0][0]
    project = FakeProject(log, timeline=timeline, media_pool=FakeMediaPool(log, timeline))
    rs.swap_current_item(FakeResolve(project), "passthrough", str(out), {**options, "skip-existing": True},
                         on_event=events.append)
    assert [e["status"] for e in events if e["event"] == "frame"] == ["skipped", "skipped", "written"]
    (imported,) = [c[1][0] for c in log if c[0] == "ImportMedia"]
    assert imported == {"FilePath": str(out / "face.%04d.exr"), "StartIndex": 1001, "EndIndex": 1003}
