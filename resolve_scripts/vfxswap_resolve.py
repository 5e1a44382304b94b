"""vfxswap for DaVinci Resolve: swap the face in the current timeline clip and layer the result above it.

A Workspace > Scripts > Utility script. For the clip under the playhead on the current
timeline it:

1. finds the plate: the frames of the clip's own EXR/DPX image sequence that the (possibly
   trimmed) clip shows, or else renders the clip's range to an EXR (RGB half, ZIP) sequence
   through the Deliver render queue;
2. runs the vfxswap engine on it in its own process (`vfxswap.hosts.RenderJob`/`JobRunner`,
   the same job every host runs);
3. imports the face layers (the files the job names: `face.%04d.exr` for a 4-digit plate, the
   plate's own digits when it has more, `name=` when the options give one) for the frames the
   clip uses into a `vfxswap` bin, sets their Alpha mode to Premultiplied and copies the plate's
   Input Color Space onto them;
4. places the layer on the video track above the plate at the plate's record frame, with
   Composite Mode Normal, checking that Resolve really placed it (an overlapping append is
   dropped silently, so a fresh track is added and the append retried).

Install: copy this file into the Fusion `Scripts/Utility` folder, then pick it from
Workspace > Scripts in any page.

- macOS: `/Library/Application Support/Blackmagic Design/DaVinci Resolve/Fusion/Scripts/Utility`
  (all users) or `~/Library/Application Support/Blackmagic Design/DaVinci Resolve/Fusion/Scripts/Utility`
  (this user).
- Windows: `%PROGRAMDATA%\\Blackmagic Design\\DaVinci Resolve\\Fusion\\Scripts\\Utility` (all users)
  or `%APPDATA%\\Blackmagic Design\\DaVinci Resolve\\Support\\Fusion\\Scripts\\Utility` (this user).
- Linux: `/opt/resolve/Fusion/Scripts/Utility` (all users; ISO installs may use `/home/resolve`)
  or `$HOME/.local/share/DaVinciResolve/Fusion/Scripts/Utility` (this user).

Resolve's Python must be able to import `vfxswap` (install it into that interpreter, or put
its folder on PYTHONPATH); the engine itself runs in a subprocess with the interpreter given
by the VFXSWAP_PYTHON environment variable (default: the one running this script). Run from
outside Resolve (Studio only), set RESOLVE_SCRIPT_API / RESOLVE_SCRIPT_LIB / PYTHONPATH as
the Resolve scripting README says, so `import DaVinciResolveScript` works.

Status: this glue has been verified only against fake Resolve API objects
(tests/test_resolve_scripts.py), never against a real DaVinci Resolve. Unverified beliefs
include the "Alpha mode" value spelling "Premultiplied", the file names Resolve's EXR render
writes (found by scanning the target folder), AppendToTimeline's behaviour on a specific
Resolve version, and what GetSourceStartFrame/GetSourceEndFrame count in (see source_range).
"""

from __future__ import annotations

import os
import re
import sys
import time

SEQUENCE_EXTS = (".exr", ".dpx")
BIN_NAME = "vfxswap"
RENDER_TIMEOUT_S = 3600.0

# Resolve's display of a sequence: `/path/plate.[1001-1100].exr` (or `plate_[0001-0100].dpx`).
_BRACKET = re.compile(r"^(?P<head>.*)\[(?P<first>\d+)-(?P<last>\d+)\](?P<tail>\.[A-Za-z0-9]+)$")
_PRINTF = re.compile(r"%0?(\d*)d")


class ResolveGlueError(RuntimeError):
    """An error the dialog shows as is."""


# ---------------------------------------------------------------------------------------------
# Logic: plain functions over the scripting API objects (testable with fakes)
# ---------------------------------------------------------------------------------------------

def _int(value):
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


def plate_of(item):
    """(printf pattern, first, last) when the timeline item's media is an EXR/DPX image
    sequence, else None (movies, stills, generators)."""
    mpi = item.GetMediaPoolItem() if item is not None else None
    if mpi is None:
        return None
    path = mpi.GetClipProperty("File Path") or ""
    if not isinstance(path, str) or not path.lower().endswith(SEQUENCE_EXTS):
        return None
    start, end = _int(mpi.GetClipProperty("Start")), _int(mpi.GetClipProperty("End"))
    m = _BRACKET.match(path)
    if m:
        digits = m.group("first")
        pad = len(digits) if len(digits) == len(m.group("last")) or digits.startswith("0") else 0
        token = f"%0{pad}d" if pad > 1 else "%d"
        first, last = int(m.group("first")), int(m.group("last"))
        if start is not None and end is not None and first <= start <= end <= last:
            first, last = start, end
        return m.group("head") + token + m.group("tail"), first, last
    if _PRINTF.search(os.path.basename(path)):
        if start is None or end is None:
            return None
        return path, start, end
    return None


def _scan_sequence(folder, prefix):
    """(printf pattern, first, last) of the image sequence named `prefix…<digits>.exr` in folder."""
    rx = re.compile(r"^(?P<head>" + re.escape(prefix) + r".*?)(?P<num>\d+)(?P<tail>\.exr)$", re.IGNORECASE)
    groups = {}
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        m = rx.match(name)
        if m:
            key = (m.group("head"), len(m.group("num")), m.group("tail"))
            groups.setdefault(key, []).append(int(m.group("num")))
    if not groups:
        raise ResolveGlueError(f"the plate render wrote no {prefix}*.exr frames into {folder}")
    (head, pad, tail), frames = max(groups.items(), key=lambda kv: len(kv[1]))
    return os.path.join(folder, f"{head}%0{pad}d{tail}"), min(frames), max(frames)


def render_plate(project, item, folder, timeout=RENDER_TIMEOUT_S, poll=0.5, sleep=time.sleep):
    """Render the item's timeline range to an EXR (RGB half, ZIP) sequence in `folder`; returns
    the printf pattern of what was written (use `_scan_sequence` for its range)."""
    os.makedirs(folder, exist_ok=True)
    if not project.SetCurrentRenderFormatAndCodec("exr", "RGBHalfZIP"):
        raise ResolveGlueError("Resolve refused the EXR render format (exr / RGBHalfZIP)")
    project.SetCurrentRenderMode(0)  # individual clips
    settings = {"SelectAllFrames": False, "MarkIn": item.GetStart(), "MarkOut": item.GetEnd() - 1,
                "TargetDir": str(folder), "CustomName": "plate", "ExportVideo": True, "ExportAudio": False}
    if not project.SetRenderSettings(settings):
        raise ResolveGlueError(f"Resolve refused the render settings {settings}")
    job = project.AddRenderJob()
    if not job:
        raise ResolveGlueError("Resolve did not add the plate render job")
    if not project.StartRendering([job]):
        raise ResolveGlueError("Resolve did not start rendering the plate")
    waited = 0.0
    while project.IsRenderingInProgress():
        if waited >= timeout:
            if hasattr(project, "StopRendering"):
                project.StopRendering()
            raise ResolveGlueError(f"the plate render did not finish within {timeout:.0f} s")
        sleep(poll)
        waited += poll
    return _scan_sequence(str(folder), "plate")[0]


def source_range(item, first, last):
    """(first, last): the frames of the plate sequence (numbered first..last) that the timeline
    item shows; a trimmed clip shows only part of its media.

    hosts.md lists TimelineItem.GetSourceStartFrame()/GetSourceEndFrame() --> int but not what
    they count in. Taken here (not verified on a real Resolve): the start is the media's own
    frame number (the file's number for an image sequence), and a clip shows one source frame
    per timeline frame. The count comes from the record range (GetEnd() - GetStart(), end
    exclusive, as render_plate uses it), so whether GetSourceEndFrame is inclusive does not
    matter; it is only checked, and a retimed clip (or another convention) stops with an error
    instead of a layer that slips."""
    count = item.GetEnd() - item.GetStart()
    start, end = _int(item.GetSourceStartFrame()), _int(item.GetSourceEndFrame())
    if start is None or end is None or count <= 0:
        raise ResolveGlueError("Resolve gave no source range for the clip")
    stop = start + count - 1
    if end not in (stop, stop + 1):
        raise ResolveGlueError(f"the clip shows source frames {start}-{end} over {count} timeline frames: "
                               "a retimed clip is not supported (render it to a plate first)")
    if not first <= start <= stop <= last:
        raise ResolveGlueError(f"the clip's source frames {start}-{stop} are not in its media's frames {first}-{last}")
    return start, stop


def engine_job(plate, first, last, model, out, options=None):
    """The RenderJob for frames first-last of `plate` (printf pattern). `options` are any
    `vfxswap render` options (e.g. {"mask": "product", "comp": True, "faceset": "/path"}), checked
    by RenderJob: an unknown one or a bad value is one line naming it."""
    from vfxswap.hosts import RenderJob

    return RenderJob(model=model, plates=str(plate), out=str(out), frames=f"{int(first)}-{int(last)}",
                     options=dict(options or {}),
                     python=os.environ.get("VFXSWAP_PYTHON") or sys.executable)


def layer_pattern(job):
    """The job's face layers as ImportMedia's printf pattern (`face.%08d.exr` for 8-digit plates)."""
    from vfxswap.plates.frames import FramePattern

    return FramePattern.parse(job.outputs()["layer"]).printf


def run_engine(plate, first, last, model, out, options=None, on_event=None):
    """Run the vfxswap engine on frames first-last of `plate` (printf pattern); returns JobResult."""
    from vfxswap.hosts import JobRunner

    return JobRunner(engine_job(plate, first, last, model, out, options)).run(on_event)


def _find_bin(root_folder, name=BIN_NAME):
    for sub in root_folder.GetSubFolderList() or []:
        if sub.GetName() == name:
            return sub
    return None


def import_layers(media_pool, root_folder, pattern_printf, first, last, plate_mpi=None):
    """Import the face-layer sequence into the `vfxswap` bin with Alpha mode Premultiplied and
    the plate's Input Color Space; returns its MediaPoolItem."""
    bin_ = _find_bin(root_folder) or media_pool.AddSubFolder(root_folder, BIN_NAME)
    if bin_ is None:
        raise ResolveGlueError(f"could not create the '{BIN_NAME}' bin in the media pool")
    if not media_pool.SetCurrentFolder(bin_):  # ImportMedia lands in the current folder
        raise ResolveGlueError(f"could not select the '{BIN_NAME}' bin")
    items = media_pool.ImportMedia([{"FilePath": pattern_printf, "StartIndex": int(first), "EndIndex": int(last)}])
    if not items:
        raise ResolveGlueError(f"Resolve imported nothing from {pattern_printf} ({first}-{last})")
    layer = items[0]
    wanted = {"Alpha mode": "Premultiplied"}
    if plate_mpi is not None:
        space = plate_mpi.GetClipProperty("Input Color Space")
        if space:
            wanted["Input Color Space"] = space
    for key, value in wanted.items():
        layer.SetClipProperty(key, value)
        if layer.GetClipProperty(key) != value:
            raise ResolveGlueError(f"could not set '{key}' to '{value}' on the face layer "
                                   f"(Resolve reports '{layer.GetClipProperty(key)}')")
    return layer


def _same(a, b):
    """API proxies may not compare equal for one object; fall back to the unique ids."""
    if a is None or b is None:
        return False
    if a == b:
        return True
    try:
        ida, idb = a.GetUniqueId(), b.GetUniqueId()
    except AttributeError:
        return False
    return bool(ida) and ida == idb


def _track_of(timeline, item):
    for index in range(1, timeline.GetTrackCount("video") + 1):
        for other in timeline.GetItemListInTrack("video", index) or []:
            if _same(other, item) or (other.GetStart() == item.GetStart() and other.GetEnd() == item.GetEnd()
                                      and _same(other.GetMediaPoolItem(), item.GetMediaPoolItem())):
                return index
    raise ResolveGlueError("the plate clip is not on any video track of the current timeline")


def _placed(timeline, track, record, layer_item):
    for it in timeline.GetItemListInTrack("video", track) or []:
        if it.GetStart() == record and _same(it.GetMediaPoolItem(), layer_item):
            return it
    return None


def place_above(timeline, plate_item, layer_item, retries=2, media_pool=None):
    """Put the layer on the track above the plate at the plate's record frame (Normal composite).
    Re-reads the track after each append: an overlapping append is dropped silently, so a new
    track is added above and the append retried, up to `retries` times. AppendToTimeline is a
    MediaPool method acting on the current timeline: pass `media_pool`, or bind_media_pool()."""
    media_pool = media_pool or _media_pool_for(timeline)
    count = _int(layer_item.GetClipProperty("Frames")) or (plate_item.GetEnd() - plate_item.GetStart())
    record = plate_item.GetStart()
    track = _track_of(timeline, plate_item) + 1
    for attempt in range(retries + 1):
        while timeline.GetTrackCount("video") < track:
            if not timeline.AddTrack("video"):
                raise ResolveGlueError("Resolve refused to add a video track")
        media_pool.AppendToTimeline([{"mediaPoolItem": layer_item, "startFrame": 0, "endFrame": count,
                                      "trackIndex": track, "recordFrame": record}])
        placed = _placed(timeline, track, record, layer_item)
        if placed is not None:
            placed.SetProperty("CompositeMode", 0)  # Normal: with the clip's alpha it is an over
            return placed
        track = timeline.GetTrackCount("video") + 1  # dropped (overlap): a fresh track above all
    raise ResolveGlueError(f"Resolve did not place the face layer above the plate after {retries + 1} "
                           f"attempts (something overlaps at frame {record}); place it by hand")


_MEDIA_POOLS = {}


def _media_pool_for(timeline):
    """AppendToTimeline is a MediaPool method acting on the current timeline."""
    pool = _MEDIA_POOLS.get(id(timeline))
    if pool is None:
        raise ResolveGlueError("no media pool known for this timeline (call bind_media_pool first)")
    return pool


def bind_media_pool(timeline, media_pool):
    """Tell place_above which media pool appends to `timeline` (the project's, whose current
    timeline it must be)."""
    _MEDIA_POOLS[id(timeline)] = media_pool


def swap_current_item(resolve, model, out, options=None, on_event=None):
    """The whole flow for the clip under the playhead; returns the placed TimelineItem."""
    project = resolve.GetProjectManager().GetCurrentProject()
    if project is None:
        raise ResolveGlueError("no project is open")
    timeline = project.GetCurrentTimeline()
    if timeline is None:
        raise ResolveGlueError("no timeline is open")
    item = timeline.GetCurrentVideoItem()
    if item is None:
        raise ResolveGlueError("no video clip under the playhead")
    media_pool = project.GetMediaPool()
    plate = plate_of(item)
    if plate is None:  # rendered over the clip's record range: all of it is the used range
        pattern = render_plate(project, item, os.path.join(out, "plate"))
        pattern, first, last = _scan_sequence(os.path.dirname(pattern), "plate")
    else:  # only the frames a trimmed clip shows, so face.<first> lands on its record start
        pattern, first, last = plate
        first, last = source_range(item, first, last)
    result = run_engine(pattern, first, last, model, out, options, on_event)
    if not result.ok:
        raise ResolveGlueError(result.error or f"the engine stopped (exit code {result.returncode})")
    if not result.written and not result.skipped:  # kept frames (skip-existing) are done too
        raise ResolveGlueError("the engine wrote no frames")
    # the whole requested range, so the layer's first frame is `first`, placed at the record start
    layer = import_layers(media_pool, media_pool.GetRootFolder(),
                          layer_pattern(engine_job(pattern, first, last, model, out, options)),
                          first, last, item.GetMediaPoolItem())
    return place_above(timeline, item, layer, media_pool=media_pool)


# ---------------------------------------------------------------------------------------------
# UI: a small UIManager dialog over swap_current_item
# ---------------------------------------------------------------------------------------------

def _get_resolve():
    g = globals()
    if g.get("resolve") is not None:
        return g["resolve"]
    try:
        import DaVinciResolveScript as dvr_script
    except ImportError:
        raise ResolveGlueError("DaVinciResolveScript is not importable; run from Resolve's Scripts menu or "
                               "set RESOLVE_SCRIPT_API / RESOLVE_SCRIPT_LIB / PYTHONPATH")
    app = dvr_script.scriptapp("Resolve")
    if app is None:
        raise ResolveGlueError("could not connect to Resolve (external scripting needs Resolve Studio)")
    return app


def _parse_options(text):
    """`mask=product erode=2 comp` -> {"mask": "product", "erode": "2", "comp": True}."""
    options = {}
    for token in (text or "").split():
        key, sep, value = token.partition("=")
        options[key.strip("-")] = value if sep else True
    return options


def main():
    app = _get_resolve()
    g = globals()
    fu = g.get("fusion") or app.Fusion()
    bmd_ = g.get("bmd")
    if bmd_ is None:
        import DaVinciResolveScript as bmd_
    ui = fu.UIManager
    disp = bmd_.UIDispatcher(ui)
    win = disp.AddWindow({"ID": "VfxSwap", "WindowTitle": "vfxswap", "Geometry": [100, 100, 520, 260]}, [
        ui.VGroup([
            ui.Label({"Text": "Model (folder or name)"}), ui.LineEdit({"ID": "Model"}),
            ui.Label({"Text": "Output folder"}), ui.LineEdit({"ID": "Out"}),
            ui.Label({"Text": "Options (e.g. mask=product erode=2 faceset=/path)"}), ui.LineEdit({"ID": "Options"}),
            ui.Button({"ID": "Run", "Text": "Swap face"}),
            ui.TextEdit({"ID": "Status", "ReadOnly": True}),
        ])])
    items = win.GetItems()

    def on_run(ev):
        model, out = items["Model"].Text.strip(), items["Out"].Text.strip()
        if not model or not out:
            items["Status"].PlainText = "Set a model and an output folder."
            return
        items["Status"].PlainText = "Running..."
        try:
            placed = swap_current_item(app, model, out, _parse_options(items["Options"].Text))
            items["Status"].PlainText = f"Done: face layer placed at frame {placed.GetStart()}."
        except Exception as exc:  # shown in the dialog, the engine's own words included
            items["Status"].PlainText = f"Error: {exc}"

    win.On.VfxSwap.Close = lambda ev: disp.ExitLoop()
    win.On.Run.Clicked = on_run
    win.Show()
    disp.RunLoop()
    win.Hide()


if __name__ == "__main__":
    main()
