"""The `vfxswap` command: one entry point, a subcommand per job, library calls underneath.

User errors (`VfxSwapError`) print one line naming the file or frame and exit 1; argparse
usage errors exit 2; Ctrl-C exits 130. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading

from vfxswap import __version__
from vfxswap.errors import VfxSwapError


class _OneLine(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"vfxswap: {record.levelname.lower()}: {record.getMessage()}"


def _setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLine())
    logger = logging.getLogger("vfxswap")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False


def _add_colour_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ocio", help="OCIO config (path or ocio:// URI); default $OCIO, then the project's, then built-in")
    p.add_argument("--display", help="OCIO display for previews (default: the config's default)")
    p.add_argument("--view", help="OCIO view for previews (default: the display's default)")


def cmd_doctor(args) -> int:
    from vfxswap.doctor import collect, format_report

    data = collect(args.ocio)
    print(json.dumps(data, indent=2) if args.json else format_report(data))
    return 1 if "error" in data["ocio"] else 0  # nothing colour-managed can run: a script must see it


def cmd_plates_info(args) -> int:
    from vfxswap.plates.info import plate_info

    info = plate_info(args.plates, args.frames, stats=not args.headers_only, ocio=args.ocio)
    if not info.frames:
        raise VfxSwapError(f"{info.source}: no frames found" + (f" in {args.frames}" if args.frames else ""))
    if args.json:
        print(json.dumps(info.__dict__, indent=2, default=list))
    else:
        print("\n".join(info.lines()))
    return 1 if info.errors or info.missing else 0


def cmd_plates_convert(args) -> int:
    from vfxswap.plates.convert import convert
    from vfxswap.plates.frames import format_frames

    report = convert(args.src, args.dst, frames=args.frames, start=args.start, from_space=args.from_space,
                     to_space=args.to_space, display=args.display, view=args.view, dtype=args.dtype,
                     compression=args.compression, fps=args.fps, exact=args.exact, ocio=args.ocio)
    print(f"wrote {len(report.written)} frame(s) to {args.dst}")
    if report.nonfinite:
        print(f"sanitised non-finite values in frame(s) {format_frames(report.nonfinite)}")
    return _exit_for(report.failed)


def _exit_for(failed: dict) -> int:
    """Frames (or stills, by file name) that failed were each reported as they happened; end
    with one summary line."""
    from vfxswap.plates.frames import format_frames

    if not failed:
        return 0
    if all(isinstance(k, int) for k in failed):
        print(f"vfxswap: error: {len(failed)} frame(s) failed: {format_frames(failed)}", file=sys.stderr)
    else:
        print(f"vfxswap: error: {len(failed)} still(s) failed: {', '.join(map(str, failed))}", file=sys.stderr)
    return 1


def _extract_options(args):
    """ExtractOptions from whichever of its fields this subcommand's arguments carry."""
    from vfxswap.jobspec import ExtractOptions, from_namespace

    return from_namespace(ExtractOptions, args)


def _progress_to(kind: str) -> None:
    """`--progress json`: the stages' progress as JSON lines on stdout (a host reads them)."""
    if kind == "json":
        from vfxswap.progress import report_json

        report_json()


def cmd_extract(args) -> int:
    from vfxswap.faces.extract import extract

    options = _extract_options(args)
    _progress_to(options.progress)
    report = extract(args.plates, args.out, options)
    print(f"faceset {args.out}: {report.faces} face(s); detected {report.frames_detected} frame(s), "
          f"{report.frames_skipped} already done, aligned {report.frames_aligned}")
    if report.without_faces:
        print(f"without a face: {', '.join(report.without_faces)}")
    return _exit_for(report.failed)


def cmd_faceset(args) -> int:
    from vfxswap.faceset import Faceset
    from vfxswap.faceset import tools

    with Faceset(args.faceset) as fs:
        if args.faceset_command == "info":
            data = tools.info(fs)
            print(json.dumps(data, indent=2) if args.json else tools.format_info(data))
        elif args.faceset_command == "sort":
            for f in tools.sort(fs, args.by)[: args.limit]:
                value = {"yaw": f.yaw, "blur": f.blur, "size": f.face_size}.get(args.by)
                print(f"{f.rank:5d}  {f.image}" + (f"  {value:.4g}" if value is not None else ""))
        elif args.faceset_command == "edit":
            fs.close()
            from vfxswap.hosts.mask_editor import main as editor_main

            return editor_main([args.faceset])
        elif args.faceset_command == "filter":
            from vfxswap.faces.extract import reference_embeddings

            refs = reference_embeddings(args.like, _extract_options(args))
            kept, dropped = tools.filter_like(fs, refs, args.threshold, args.delete)
            print(f"kept {kept} face(s), {'deleted' if args.delete else 'excluded'} {dropped}")
    return 0


def _emitter(kind: str, desc: str):
    """Progress for the masks commands: JSON lines on stdout for hosts, else a terminal bar."""
    if kind == "json":
        return lambda event: print(json.dumps(event), flush=True), None
    from vfxswap.progress import progress

    bar = progress(total=0, desc=desc, unit="step")

    def emit(event: dict) -> None:
        if event.get("event") == "start":
            bar.reset(total=event.get("total") or 0)
        elif event.get("event") == "progress":
            bar.n = event["done"]
            bar.set_postfix_str(f"loss {event['loss']:.4f}" if "loss" in event else "")
            bar.refresh()
    return emit, bar


def cmd_masks(args) -> int:
    from vfxswap.jobspec import MaskApplyOptions, MaskTrainOptions, from_namespace

    what = args.masks_command
    if what == "train":
        from vfxswap.masks.seg import train_masker

        o = from_namespace(MaskTrainOptions, args)
        o.check()
        emit, bar = _emitter(o.progress, "masker")
        config = train_masker(o.faceset, o.model, iters=o.iters, batch=o.batch, resolution=o.resolution, lr=o.lr,
                              seed=o.seed, device=o.device, emit=emit)
        if bar is not None:
            bar.close()
            print(f"masker {o.model}: {config.iterations} iterations on {config.labelled} labelled face(s) and "
                  f"{config.hull_only} hull-only; id {config.id}")
    elif what == "apply":
        from vfxswap.masks.seg import apply_masker

        o = from_namespace(MaskApplyOptions, args)
        o.check()
        emit, bar = _emitter(o.progress, "mattes")
        done = apply_masker(o.faceset, o.model, device=o.device, redo=o.redo, emit=emit)
        if bar is not None:
            bar.close()
            print(f"faceset {o.faceset}: {done['applied']} matte(s) made, {done['skipped']} already made by "
                  f"masker {done['id']}")
    elif what == "info":
        from vfxswap.masks.seg import masker_info

        data = masker_info(args.model)
        print(json.dumps(data, indent=2) if args.json else "\n".join(f"{k:10s} {v}" for k, v in data.items()))
    elif what == "import":
        from vfxswap.masks.plate import import_mattes

        from vfxswap.plates.frames import format_frames

        report = import_mattes(args.faceset, args.mattes, channel=args.channel, source=args.source,
                               frames=args.frames)
        print(f"faceset {args.faceset}: {report.faces} face(s) labelled from {len(report.imported)} matte frame(s)"
              + (f", {report.kept_polygons} keeping their drawn polygons" if report.kept_polygons else "")
              + (f"; no matte for frame(s) {format_frames(report.without_matte)}" if report.without_matte else ""))
        return _exit_for(report.failed)
    elif what == "export":
        from vfxswap.masks.plate import export_mattes

        from vfxswap.plates.frames import format_frames

        report = export_mattes(args.faceset, args.out, kind=args.kind, source=args.source, frames=args.frames,
                               plates=args.plates)
        print(f"{report.output}: wrote {len(report.written)} frame(s)"
              + (f", empty: {format_frames(report.empty)}" if report.empty else "")
              + (f"; {len(report.without_matte)} face(s) without a {args.kind} matte" if report.without_matte else ""))
        return _exit_for(report.failed)
    return 0


def cmd_models_fetch(args) -> int:
    from pathlib import Path

    from vfxswap.faces.weights import fetch_fan

    for key, path in fetch_fan(Path(args.dir) if args.dir else None).items():
        print(f"{key}: {path}")
    return 0


def cmd_train(args) -> int:
    from vfxswap.jobspec import TrainOptions, from_namespace

    options = from_namespace(TrainOptions, args)
    _progress_to(options.progress)
    if options.gpus > 1 and "LOCAL_RANK" not in os.environ:
        from vfxswap.train.launch import under_torchrun

        return under_torchrun(args.argv, options.gpus)
    from vfxswap.train.trainer import train

    reached = train(options)
    print(f"model {options.model_dir}: iteration {reached}")
    return 0


def cmd_render(args) -> int:
    from vfxswap.jobspec import RenderOptions, from_namespace
    from vfxswap.plates.frames import format_frames
    from vfxswap.render.render import render

    options = from_namespace(RenderOptions, args)
    emit = None
    if options.progress == "json":  # one JSON object a line on stdout: what hosts and farm logs read
        emit = lambda event: print(json.dumps(event), flush=True)
    report = render(options, on_event=emit)
    if emit is None:
        print(f"{options.out}: wrote {len(report.written)} frame(s), skipped {len(report.skipped)} already complete"
              + (f"; no face in {format_frames(report.without_faces)}" if report.without_faces else ""))
    return _exit_for(report.failed)


def cmd_demo(args) -> int:
    from vfxswap.demo import run

    run(args.out, frames=args.frames, iters=args.iters, batch=args.batch)
    return 0


def cmd_panel(args) -> int:
    from vfxswap.hosts.window import main as panel_main

    return panel_main(args.panel_args)


def cmd_farm(args) -> int:
    if args.farm_command == "bundle":
        return _farm_bundle(args)
    if args.farm_command == "status":
        from vfxswap.farm.status import farm_status

        status = farm_status(args.target, frames=args.frames)
        print(json.dumps(status.as_dict(), indent=2) if args.json else status.summary())
        return 0 if status.complete else 1
    if args.farm_command == "session":
        from vfxswap.farm import session

        render_argv = [a for a in getattr(args, "render_args", None) or [] if a != "--"]
        if args.session_command == "start":
            state = session.start(args.dir, render_argv, idle_timeout=args.idle_timeout)
            print(f"render engine {state['pid']} ready for session {args.dir}")
            return 0
        if args.session_command == "serve":
            return session.serve(args.dir, render_argv, idle_timeout=args.idle_timeout)
        if args.session_command == "render":
            return session.render_chunk(args.dir, args.frames)
        print(f"render engine for {args.dir}: " + ("stopped" if session.stop(args.dir) else "none was running"))
        return 0
    from vfxswap.farm.bundle import run_bundle

    done = run_bundle(args.bundle)
    sys.stdout.write(done.stdout[-4000:])
    if done.returncode:
        print(f"vfxswap: error: openjd run failed (exit {done.returncode}): {done.stderr.strip()[-500:]}", file=sys.stderr)
    return 1 if done.returncode else 0


def _farm_bundle(args) -> int:
    from vfxswap.farm import FORMATS
    from vfxswap.farm.job import FarmJob, default_engine
    from vfxswap.jobspec import RenderOptions, TrainOptions, changed, from_namespace

    paths = dict(model=args.model, plates=args.plates, out=args.render_out, faceset=args.faceset)
    render = changed(from_namespace(RenderOptions, args, prefix="render_", **paths), skip=paths)
    train = from_namespace(TrainOptions, args, prefix="train_", dst=args.faceset, model_dir=args.model) \
        if args.train_src else None
    job = FarmJob(**paths, frames=args.frames, chunk=args.chunk, render_options=render, train=train,
                  engine=args.engine or default_engine(), show=args.show, shot=args.shot, user=args.user)
    for path in FORMATS.get(args.format)(job, args.out):
        print(path)
    return 0


def cmd_model_info(args) -> int:
    from vfxswap.models.info import format_info, model_info

    data = model_info(args.model)
    print(json.dumps(data, indent=2, default=str) if args.json else format_info(data))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from vfxswap.farm import FORMATS
    from vfxswap.jobspec import (ExtractOptions, MaskApplyOptions, MaskTrainOptions, RenderOptions, TrainOptions,
                                  add_arguments)

    parser = argparse.ArgumentParser(prog="vfxswap", description=(
        "Face replacement for VFX: plates in, a premultiplied RGBA EXR face layer out, in the "
        "plate's scene-linear colour space, floating over the untouched plate."))
    parser.add_argument("--version", action="version", version=f"vfxswap {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="more log output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("doctor", help="versions, GPU, ffmpeg, face backends and the OCIO config in use")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--ocio", help="OCIO config to check instead of the default choice")
    p.set_defaults(func=cmd_doctor)

    plates = sub.add_parser("plates", help="inspect and convert plate sequences and movies")
    psub = plates.add_subparsers(dest="plates_command", metavar="ACTION")
    p = psub.add_parser("info", help="frames, gaps, size, channels, colour space and value range")
    p.add_argument("plates", help="a pattern (plate.####.exr, plate.%%04d.exr, plate.$F4.exr), one frame's file, or a movie")
    p.add_argument("--frames", help="frames to check, e.g. 1001-1100, 1001-1100x2, 1001,1005")
    p.add_argument("--headers-only", action="store_true", help="read headers only (no value ranges or NaN scan)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--ocio", help="OCIO config used to name the colour space")
    p.set_defaults(func=cmd_plates_info)

    p = psub.add_parser("convert", help="movie -> EXR sequence, sequence -> preview mp4, format and colour conversion",
                        description="Convert plates. To a movie (.mp4/.mov) frames go through the OCIO view "
                                    "transform. To a sequence, colour is converted only when --from-space, "
                                    "--to-space or --view is given; otherwise pixels are copied untouched.")
    p.add_argument("src", help="source: a sequence pattern, one frame's file, or a movie")
    p.add_argument("dst", help="destination: a sequence pattern (out.####.exr), a movie (.mp4, .mov), or one image "
                               "file (from one image, or one frame picked with --frames)")
    p.add_argument("--frames", help="frames to convert (plate numbering; movies start at --start)")
    p.add_argument("--start", type=int, default=1001, help="frame number of a movie's first frame, and of a single "
                                                           "image without one written to a pattern (default 1001)")
    p.add_argument("--from-space", help="source colour space (default: from the header; movies: sRGB Encoded Rec.709)")
    p.add_argument("--to-space", help="destination colour space (movie sources default to scene_linear)")
    p.add_argument("--dtype", help="pixel type: half, float, uint8, uint16, uint10 (default per format)")
    p.add_argument("--compression", help="EXR: zip (default), piz, dwaa[:level], ...; TIFF: zip, lzw")
    p.add_argument("--fps", type=float, help="movie frame rate (default: from the plates, else 24)")
    p.add_argument("--exact", action="store_true", help="movie previews: the view transform through OCIO itself "
                                                         "instead of the baked LUT (sequences always use OCIO itself)")
    _add_colour_options(p)
    p.set_defaults(func=cmd_plates_convert)
    plates.set_defaults(func=lambda args: plates.print_help() or 2)

    p = sub.add_parser("extract", help="plates, a movie or stills -> a faceset (detect, landmarks, track, align)",
                       description="Find every face, landmark it, track and smooth it over the shot, and store "
                                   "aligned float crops in the model encoding. Resumable: frames already in the "
                                   "faceset are skipped.")
    p.add_argument("plates", help="a sequence pattern, one frame's file, a movie, or a folder of stills")
    p.add_argument("--out", required=True, help="faceset folder (created if needed)")
    add_arguments(p, ExtractOptions)
    p.set_defaults(func=cmd_extract)

    fset = sub.add_parser("faceset", help="inspect and curate a faceset")
    fsub = fset.add_subparsers(dest="faceset_command", metavar="ACTION")
    p = fsub.add_parser("info", help="counts, tracks and pose coverage")
    p.add_argument("faceset")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_faceset)
    p = fsub.add_parser("sort", help="rank faces for review by yaw, blur, identity or size")
    p.add_argument("faceset")
    p.add_argument("--by", required=True, choices=("yaw", "blur", "identity", "size"))
    p.add_argument("--limit", type=int, help="print only the first N")
    p.set_defaults(func=cmd_faceset)
    p = fsub.add_parser("filter", help="keep one identity: faces like the reference images")
    p.add_argument("faceset")
    p.add_argument("--like", nargs="+", required=True, help="reference images or folders of the identity to keep")
    p.add_argument("--threshold", type=float, default=0.6, help="embedding distance for the same person (dlib: 0.6)")
    p.add_argument("--delete", action="store_true", help="delete the other faces instead of excluding them")
    add_arguments(p, ExtractOptions, only=("detector", "landmarker", "device"))
    p.set_defaults(func=cmd_faceset)
    p = fsub.add_parser("edit", help="the mask editor: label faces with include / exclude polygons, train and "
                                     "apply the segmentation masker")
    p.add_argument("faceset")
    p.set_defaults(func=cmd_faceset)
    fset.set_defaults(func=lambda args: fset.print_help() or 2)

    masks = sub.add_parser("masks", help="segmentation mattes that keep occluders out: train, apply, import, export")
    ksub = masks.add_subparsers(dest="masks_command", metavar="ACTION")
    p = ksub.add_parser("train", help="train a segmentation masker on facesets' labels (and their hulls)")
    add_arguments(p, MaskTrainOptions)
    p.set_defaults(func=cmd_masks)
    p = ksub.add_parser("apply", help="store the masker's matte for every face of a faceset (resumable)")
    add_arguments(p, MaskApplyOptions)
    p.set_defaults(func=cmd_masks)
    p = ksub.add_parser("info", help="a masker's resolution, training and id")
    p.add_argument("model")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_masks)
    p = ksub.add_parser("import", help="a compositor's matte sequence (plate space) -> labels of the faces in it")
    p.add_argument("mattes", help="matte sequence, e.g. roto.####.exr (data windows honoured)")
    p.add_argument("--faceset", required=True)
    p.add_argument("--channel", default="A", help="the matte's channel (default A)")
    p.add_argument("--source", help="the faceset's source these mattes belong to (when it holds several)")
    p.add_argument("--frames", help="frames to import (default: all the sequence has)")
    p.set_defaults(func=cmd_masks)
    p = ksub.add_parser("export", help="the faces' mattes back in plate space, one EXR per frame (alpha)")
    p.add_argument("out", help="output sequence, e.g. mattes/seg.####.exr")
    p.add_argument("--faceset", required=True)
    p.add_argument("--kind", default="seg", choices=("seg", "label", "hull"), help="which matte (default seg)")
    p.add_argument("--source", help="the faceset's source to export (when it holds several)")
    p.add_argument("--plates", help="the plates, for their size, when the faceset did not record it")
    p.add_argument("--frames", help="frames to export (default: all)")
    p.set_defaults(func=cmd_masks)
    masks.set_defaults(func=lambda args: masks.print_help() or 2)

    p = sub.add_parser("train", help="train a face model on two facesets (A = source identity, B = destination)",
                       description="Learn identities A (--src, the face to render) and B (--dst, the plate's "
                                   "performer) in one latent space. Saves atomically, resumes exactly, previews as it goes.")
    add_arguments(p, TrainOptions)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("demo", help="the whole job on built-in material: plate, facesets, model, layers, comp, preview",
                       description="Builds an HDR ACEScg plate from scikit-image's public-domain astronaut portrait, "
                                   "extracts, trains a quick model briefly, and renders face layers, a comp and a "
                                   "preview (a self-swap: the only face that ships with the packages is hers).")
    p.add_argument("--out", default="vfxswap-demo", help="where everything goes (default ./vfxswap-demo)")
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--iters", type=int, default=600, help="training iterations (more looks better, takes longer)")
    p.add_argument("--batch", type=int, default=4)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("render", help="a model over plates -> premultiplied RGBA EXR face layers",
                       description="Render the source identity (A) over the destination performer's faces in "
                                   "the plates: one face.####.exr per plate frame, scene-linear in the plate's "
                                   "colour space, premultiplied, data window = the face's box.")
    add_arguments(p, RenderOptions)
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("panel", help="the artist's window: extract, review faces and masks, train and render, "
                                     "a tab each (also docked in Nuke)", add_help=False)
    p.add_argument("panel_args", nargs=argparse.REMAINDER, help="--model, --plates, --faceset, --out, --frames, --tab")
    p.set_defaults(func=cmd_panel)

    farm = sub.add_parser("farm", help="render farm jobs: OpenJD bundles (Deadline Cloud), OpenCue, Deadline 10")
    fsub2 = farm.add_subparsers(dest="farm_command", metavar="ACTION")
    p = fsub2.add_parser("bundle", help="write a farm job: extract if needed, optionally train, then chunked render",
                         description="Writes an Open Job Description bundle (openjd run, deadline bundle submit), "
                                     "an OpenCue outline + job spec, or Deadline 10 job/plugin info files.")
    p.add_argument("--plates", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--faceset", required=True, help="destination faceset (extracted by the job when absent)")
    p.add_argument("--render-out", required=True, help="where the face layers go")
    p.add_argument("--frames", required=True, help="e.g. 1001-1100")
    p.add_argument("--chunk", type=int, default=10, help="frames per task")
    p.add_argument("--out", required=True, help="the bundle folder")
    p.add_argument("--format", choices=FORMATS.names(), default="openjd",
                   help="openjd: template.yaml + parameter_values.yaml (default)")
    p.add_argument("--engine", help="the vfxswap command on the farm nodes, as shell words (default: this one)")
    # every render option reaches the farm's render (checked here: a bad one would fail only on the farm)
    add_arguments(p.add_argument_group("render options (as vfxswap render)"), RenderOptions, prefix="render_",
                  skip=("model", "plates", "out", "faceset", "frames", "skip_existing", "progress"),
                  rename={"device": "render-device", "morph": "render-morph"})
    c = p.add_argument_group("OpenCue")
    c.add_argument("--show", default="testing", help="the show on the cuebot")
    c.add_argument("--shot", help="default: the layers folder's name")
    c.add_argument("--user", help="job owner (default: you; cuebot refuses root)")
    t = p.add_argument_group("training step (one task on one node; runs before the render; options as "
                             "vfxswap train)")
    add_arguments(t, TrainOptions, prefix="train_", optional=True,
                  skip=("dst", "model_dir", "resume", "resume_if_saved", "progress"),
                  rename={"src": "train-src", "device": "train-device", "gpus": "train-gpus",
                          "resolution": "train-resolution", "face_type": "train-face-type", "mask": "train-mask",
                          "morph": "train-morph"})
    p.set_defaults(func=cmd_farm)
    p = fsub2.add_parser("run", help="run a bundle on this machine through `openjd run`")
    p.add_argument("bundle")
    p.set_defaults(func=cmd_farm)
    p = fsub2.add_parser("status", help="frames done, missing and failed for a bundle or a layers folder",
                         description="Exit 0 when every frame of the range is on disk and whole, else 1.")
    p.add_argument("target", help="a bundle folder or the layers folder")
    p.add_argument("--frames", help="the range to check (default: the bundle's, or the manifests')")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_farm)
    p = fsub2.add_parser("session", help="a render engine kept alive for a farm session (bundles call this)")
    ssub = p.add_subparsers(dest="session_command", metavar="ACTION", required=True)
    for name, text in (("start", "start the engine: DIR -- <vfxswap render arguments>"),
                       ("serve", "the engine itself (started by `start`)"),
                       ("render", "render a chunk through the session's engine"),
                       ("stop", "stop the session's engine")):
        q = ssub.add_parser(name, help=text)
        q.add_argument("dir", help="the session's working folder")
        if name in ("start", "serve"):
            q.add_argument("--idle-timeout", type=float, default=900.0, help="seconds idle before it stops itself")
            q.add_argument("render_args", nargs=argparse.REMAINDER)
        if name == "render":
            q.add_argument("--frames", required=True)
        q.set_defaults(func=cmd_farm)
    farm.set_defaults(func=lambda args: farm.print_help() or 2)

    model = sub.add_parser("model", help="inspect a model folder")
    msub2 = model.add_subparsers(dest="model_command", metavar="ACTION")
    p = msub2.add_parser("info", help="architecture, identities and release references, iteration, losses")
    p.add_argument("model")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_model_info)
    model.set_defaults(func=lambda args: model.print_help() or 2)

    models = sub.add_parser("models", help="face backend weights")
    msub = models.add_subparsers(dest="models_command", metavar="ACTION")
    p = msub.add_parser("fetch", help="download face-alignment (fan) weights where the internet is reachable")
    p.add_argument("--dir", help="where to put them (default: the torch hub cache; or point $VFXSWAP_MODELS here)")
    p.set_defaults(func=cmd_models_fetch)
    models.set_defaults(func=lambda args: models.print_help() or 2)
    return parser


def _terminate(signum, frame):
    """SIGTERM (a host's Cancel, a farm's kill) unwinds like Ctrl-C, so temporary files are
    removed and every file on disk stays whole."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    import signal

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["panel"]:  # its own parser (and Qt's options): argparse's REMAINDER drops leading options
        from vfxswap.hosts.window import main as panel_main

        return panel_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = argv
    _setup_logging(args.verbose)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except VfxSwapError as exc:
        print(f"vfxswap: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("vfxswap: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and closed early: not an error
        sys.stderr.close()
        return 0
    except OSError as exc:  # a path that is missing, not a folder, not writable: one line naming it
        logging.getLogger("vfxswap").debug("", exc_info=True)
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"vfxswap: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
