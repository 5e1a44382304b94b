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


def to_flags(options: dict) -> list[str]:
    """Command-line flags for an options dict ({"mask": "hull", "layers": True, "track": 0}): what
    hosts and farm jobs append to a `vfxswap render` line. True is a bare flag; None and False
    are left out; 0 is a value (track 0 is a track); lists give one argument an item."""
    flags = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            flags.append(flag)
        elif value is not None and value is not False:
            flags += [flag, *([str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)])]
    return flags


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
    import dataclasses

    from vfxswap.faces.extract import ExtractOptions

    names = {f.name for f in dataclasses.fields(ExtractOptions)}
    return ExtractOptions(**{k: v for k, v in vars(args).items() if k in names})


def cmd_extract(args) -> int:
    from vfxswap.faces.extract import extract

    report = extract(args.plates, args.out, _extract_options(args))
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
        elif args.faceset_command == "filter":
            from vfxswap.faces.extract import reference_embeddings

            refs = reference_embeddings(args.like, _extract_options(args))
            kept, dropped = tools.filter_like(fs, refs, args.threshold, args.delete)
            print(f"kept {kept} face(s), {'deleted' if args.delete else 'excluded'} {dropped}")
    return 0


def cmd_models_fetch(args) -> int:
    from pathlib import Path

    from vfxswap.faces.weights import fetch_fan

    for key, path in fetch_fan(Path(args.dir) if args.dir else None).items():
        print(f"{key}: {path}")
    return 0


def _under_torchrun(argv: list[str], gpus: int) -> int:
    """Run this same `vfxswap train` command as `gpus` DDP processes on this node (torchrun
    --standalone: NCCL on GPUs, gloo on CPU); returns torchrun's exit code."""
    import subprocess

    for i, arg in enumerate(argv):  # drop --gpus N / --gpus=N so the workers do not relaunch
        if arg == "--gpus":
            argv = argv[:i] + argv[i + 2:]
            break
        if arg.startswith("--gpus="):
            argv = argv[:i] + argv[i + 1:]
            break
    import signal

    from vfxswap.farm.bundle import TRAIN_GRACE_S

    # torchrun gives stopped ranks 30 s before it kills them; they may need longer to reach the
    # step they all stop at and save, so give them the farm's grace for training (torch releases
    # since spring 2026 read this, 2.13 does; older ones keep 30 s)
    env = dict(os.environ)
    env.setdefault("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", str(TRAIN_GRACE_S))
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone",
                             "--nproc-per-node", str(gpus), "-m", "vfxswap", *argv], env=env)
    # A farm's SIGTERM (a cancel, a pre-emption) comes to this process alone: pass it on, and
    # torchrun passes it to the ranks (each in a session of its own), which stop together and
    # save. A terminal's Ctrl-C reaches torchrun itself; a second signal from here would cut
    # its orderly shutdown short.
    previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, lambda *_: proc.send_signal(signal.SIGTERM)),
                signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN)}
    try:
        return proc.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def cmd_train(args) -> int:
    from vfxswap.train.trainer import TrainOptions, train

    if args.gpus > 1 and "LOCAL_RANK" not in os.environ:
        return _under_torchrun(args.argv, args.gpus)

    refs = {"A": args.release_ref_src or args.release_ref, "B": args.release_ref_dst or args.release_ref}
    options = TrainOptions(src=args.src, dst=args.dst, model_dir=args.model, release_ref=refs,
                           names={"A": args.name_src, "B": args.name_dst}, preset=args.preset, arch=args.arch,
                           iters=args.iters, batch=args.batch, lr=args.lr, warmup=args.warmup,
                           lr_dropout=args.lr_dropout, clip=args.clip, gan_power=args.gan_power,
                           eyes_mouth_weight=args.eyes_mouth_weight, uniform_yaw=args.uniform_yaw,
                           flip=not args.no_flip, workers=args.workers, device=args.device,
                           bf16={"auto": None, "on": True, "off": False}[args.bf16], compile=args.compile,
                           save_every=args.save_every, save_minutes=args.save_minutes, keep_backups=args.keep,
                           preview_every=args.preview_every, log_every=args.log_every,
                           tensorboard=args.tensorboard, resume=args.resume,
                           resume_if_saved=args.resume_if_saved, init_from=args.init_from,
                           init_parts=[p for p in (args.parts or "").split(",") if p] or None,
                           freeze=[p for p in (args.freeze or "").split(",") if p], seed=args.seed)
    reached = train(options)
    print(f"model {args.model}: iteration {reached}")
    return 0


def render_options(args):
    """RenderOptions from parsed `vfxswap render` arguments."""
    from vfxswap.render import RenderOptions

    return RenderOptions(model=args.model, plates=args.plates, out=args.out, faceset=args.faceset,
                         frames=args.frames, start=args.start, mask=args.mask, erode=args.erode, blur=args.blur,
                         color=args.color, name=args.name, skip_existing=args.skip_existing,
                         compression=args.compression, track=args.track, like=args.like,
                         plate_space=args.plate_space, ocio=args.ocio, device=args.device, layers=args.layers,
                         comp=args.comp, preview=args.preview, resolution=args.resolution,
                         face_type=args.face_type)


def render_options_from_argv(argv: list[str]):
    """RenderOptions from `vfxswap render` arguments (a farm session engine's command line)."""
    return render_options(build_parser().parse_args(["render", *argv]))


def cmd_render(args) -> int:
    from vfxswap.render import render

    emit = None
    if args.progress == "json":  # one JSON object a line on stdout: what hosts and farm logs read
        emit = lambda event: print(json.dumps(event), flush=True)
    report = render(render_options(args), on_event=emit)
    from vfxswap.plates.frames import format_frames

    if emit is None:
        print(f"{args.out}: wrote {len(report.written)} frame(s), skipped {len(report.skipped)} already complete"
              + (f"; no face in {format_frames(report.without_faces)}" if report.without_faces else ""))
    return _exit_for(report.failed)


def cmd_demo(args) -> int:
    from vfxswap.demo import run

    run(args.out, frames=args.frames, iters=args.iters, batch=args.batch)
    return 0


def cmd_panel(args) -> int:
    from vfxswap.hosts.panel import main as panel_main

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


def _default_engine() -> str:
    """This vfxswap, as shell words."""
    import shlex

    from vfxswap.farm.job import find_command

    return shlex.quote(find_command("vfxswap") or "vfxswap")


def _farm_bundle(args) -> int:
    from vfxswap.farm.job import FarmJob, TrainStep

    train = None
    if args.train_src:
        if not args.release_ref:
            raise VfxSwapError("--train-src needs --release-ref (the performers' release reference)")
        train = TrainStep(src=args.train_src, release_ref=args.release_ref, release_ref_dst=args.release_ref_dst,
                          preset=args.preset, iters=args.iters, batch=args.batch, gpus=args.train_gpus,
                          device=args.train_device)
    options = {k: v for k, v in (("mask", args.mask), ("color", args.color), ("layers", args.layers),
                                 ("comp", args.comp), ("device", args.render_device)) if v}
    job = FarmJob(plates=args.plates, model=args.model, faceset=args.faceset, out=args.render_out,
                  frames=args.frames, chunk=args.chunk, render_options=options,
                  engine=args.engine or _default_engine(), train=train)
    if args.format == "openjd":
        from vfxswap.farm.bundle import write_bundle

        folder = write_bundle(job, args.out)
        print(f"bundle {folder}: vfxswap farm run {folder}  (or: deadline bundle submit {folder})")
        return 0
    from vfxswap.farm import managers

    if args.format == "opencue":
        written = managers.write_opencue(job, args.out, show=args.show, shot=args.shot, user=args.user)
    else:
        written = managers.write_deadline10(job, args.out)
    print("\n".join(str(p) for p in written))
    return 0


def cmd_model_info(args) -> int:
    from vfxswap.models.store import format_info, model_info

    data = model_info(args.model)
    print(json.dumps(data, indent=2, default=str) if args.json else format_info(data))
    return 0


def _add_backend_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", default="auto", choices=("auto", "dlib", "dlib-cnn", "fan"),
                   help="face backend: auto = fan when its weights are cached, else dlib")
    p.add_argument("--device", default="cpu", help="torch device for the fan backend (cpu, cuda)")


# render's choices, for `render` and for the render step of `farm bundle` (which must refuse a
# bad value here, not fail on the farm); render.render checks the same names at run time
MASK_CHOICES = ("product", "learned", "hull")
COLOR_CHOICES = ("rct", "lct", "mkl", "idt", "sot", "none")


def build_parser() -> argparse.ArgumentParser:
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
    p.add_argument("dst", help="destination: a sequence pattern (out.####.exr) or a movie (.mp4, .mov)")
    p.add_argument("--frames", help="frames to convert (plate numbering; movies start at --start)")
    p.add_argument("--start", type=int, default=1001, help="frame number of a movie's first frame (default 1001)")
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
    p.add_argument("--frames", help="frames to extract, e.g. 1001-1100")
    p.add_argument("--start", type=int, default=1001, help="frame number of a movie's first frame")
    _add_backend_options(p)
    p.add_argument("--face-type", default="whole_face", choices=("full", "whole_face", "head"))
    p.add_argument("--size", type=int, default=256, help="aligned crop size in pixels (default 256)")
    p.add_argument("--max-faces", type=int, help="keep at most this many faces per frame (most confident)")
    p.add_argument("--min-size", type=float, help="smallest face wanted, plate pixels (default: what the "
                   "detector finds at --detect-side, about 80 px there; smaller costs time)")
    p.add_argument("--min-score", type=float, help="detector confidence to keep a face (dlib HOG 0, dlib-cnn 0.3, fan 0.5)")
    p.add_argument("--smooth", type=float, default=1.0, help="temporal smoothing strength (0 = off, 1 = default)")
    p.add_argument("--detect-side", type=int, default=960, help="longest side of the detector's working image")
    p.add_argument("--detect-every", type=int, default=4,
                   help="full-frame detection at least every N frames; between them faces are searched near "
                        "where they were, and faces that enter are looked for back to where they appear (1: every frame)")
    p.add_argument("--plate-space", help="plate colour space (default: from the header, else scene_linear)")
    p.add_argument("--ocio", help="OCIO config (path or ocio:// URI)")
    p.add_argument("--debug-dir", help="write frames with boxes and landmarks drawn here")
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
    _add_backend_options(p)
    p.set_defaults(func=cmd_faceset)
    fset.set_defaults(func=lambda args: fset.print_help() or 2)

    p = sub.add_parser("train", help="train a face model on two facesets (A = source identity, B = destination)",
                       description="Learn identities A (--src, the face to render) and B (--dst, the plate's "
                                   "performer) in one latent space. Saves atomically, resumes exactly, previews as it goes.")
    p.add_argument("--src", required=True, help="faceset of identity A, the face to render")
    p.add_argument("--dst", required=True, help="faceset of identity B, the performer in the plates")
    p.add_argument("--model", required=True, help="model folder (created, or continued with --resume)")
    p.add_argument("--release-ref", help="the performers' release reference (consent paperwork id), recorded "
                                         "verbatim in the model and every rendered file; required for a new model")
    p.add_argument("--release-ref-src", help="release reference for A when it differs from --release-ref")
    p.add_argument("--release-ref-dst", help="release reference for B when it differs from --release-ref")
    p.add_argument("--name-src", help="display name of identity A (default: the faceset folder name)")
    p.add_argument("--name-dst", help="display name of identity B")
    p.add_argument("--preset", help="quick (96 px, minutes; the default), sae-256, sae-512; --resume keeps the saved one")
    p.add_argument("--arch", choices=("df", "liae"), help="override the preset's architecture")
    p.add_argument("--iters", type=int, default=1000, help="train until this iteration")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--warmup", type=int, default=100, help="iterations of learning-rate warm-up")
    p.add_argument("--lr-dropout", type=float, default=0.0, help="probability of dropping a weight's update per step")
    p.add_argument("--clip", type=float, default=1.0, help="gradient norm clip (0: no clipping)")
    p.add_argument("--gan-power", type=float, default=0.0, help="weight of the patch-GAN loss (0: off)")
    p.add_argument("--eyes-mouth-weight", type=float, default=3.0, help="loss weight inside eyes and mouth")
    p.add_argument("--uniform-yaw", action="store_true", help="sample faces evenly over head yaw")
    p.add_argument("--no-flip", action="store_true", help="no random horizontal flips")
    p.add_argument("--workers", type=int, help="data loader processes per identity (default: from the cores, "
                                                "at most 8)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--gpus", type=int, default=1,
                   help="data-parallel processes on this node, one per GPU (runs itself under torchrun "
                        "--standalone; gloo processes with --device cpu). Several nodes: see README")
    p.add_argument("--bf16", choices=("auto", "on", "off"), default="auto",
                   help="bf16 autocast (auto: on CUDA, and on CPUs with bf16 in hardware: AMX-BF16, AVX512-BF16)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--save-every", type=int, default=250, help="save every N iterations")
    p.add_argument("--save-minutes", type=float, default=10.0, help="and at least every N minutes")
    p.add_argument("--keep", type=int, default=3, help="backups of earlier saves to keep")
    p.add_argument("--preview-every", type=int, default=100)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--tensorboard", action="store_true")
    p.add_argument("--resume", action="store_true", help="continue the model in --model where it was saved")
    p.add_argument("--resume-if-saved", action="store_true",
                   help="resume when --model already holds a save, else start a new model (retry-safe farm tasks)")
    p.add_argument("--init-from", help="initialise parts from another model folder (transfer)")
    p.add_argument("--parts", help="parts copied by --init-from (default: the shared ones; DF encoder,inter, "
                                   "LIAE all)")
    p.add_argument("--freeze", help="parts not trained, e.g. encoder")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("demo", help="the whole job on built-in material: plate, facesets, model, layers, comp, preview",
                       description="Builds an HDR ACEScg plate from scikit-image's public-domain astronaut portrait, "
                                   "extracts, trains a quick model briefly, and renders face layers, a comp and a "
                                   "preview (a self-swap: the only face that ships with the packages is hers).")
    p.add_argument("--out", default="vfxswap-demo", help="where everything goes (default ./vfxswap-demo)")
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--iters", type=int, default=250, help="training iterations (more looks better, takes longer)")
    p.add_argument("--batch", type=int, default=8)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("render", help="a model over plates -> premultiplied RGBA EXR face layers",
                       description="Render the source identity (A) over the destination performer's faces in "
                                   "the plates: one face.####.exr per plate frame, scene-linear in the plate's "
                                   "colour space, premultiplied, data window = the face's box.")
    p.add_argument("--model", required=True, help="model folder (or `passthrough` to check the pipeline: the "
                                                  "layer over the plate then equals the plate)")
    p.add_argument("--plates", required=True, help="the plates the faceset was extracted from: a sequence pattern, "
                                                  "or a movie (decoded to scene-linear EXR in OUT/.plates)")
    p.add_argument("--faceset", help="the destination faceset (alignment of every face); without it faces "
                                     "are found live into OUT/.faceset")
    p.add_argument("--out", required=True, help="output folder for face.####.exr")
    p.add_argument("--frames", help="frames to render (default: all)")
    p.add_argument("--start", type=int, default=1001, help="a movie plate's first frame number (as at extraction)")
    p.add_argument("--mask", default="product", choices=MASK_CHOICES)
    p.add_argument("--erode", type=float, default=0.0, help="erode the mask by N plate pixels (negative dilates)")
    p.add_argument("--blur", type=float, default=0.0, help="blur the mask edge (Gaussian sigma, plate pixels)")
    p.add_argument("--color", default="rct", choices=COLOR_CHOICES,
                   help="colour match to the plate's face, inside the mask, in the model encoding: rct mean/spread "
                        "per channel; lct covariance; mkl least-change covariance; idt/sot distribution transfer")
    p.add_argument("--name", default="face", help="output file name before the frame number")
    p.add_argument("--skip-existing", action="store_true", help="keep frames already complete on disk")
    p.add_argument("--compression", default="zip", help="EXR compression (zip, piz, dwaa[:level])")
    p.add_argument("--track", type=int, help="only the face of this track id")
    p.add_argument("--like", nargs="+", help="only faces like these reference images (or folders)")
    p.add_argument("--plate-space", help="plate colour space (default: from the header)")
    p.add_argument("--ocio", help="OCIO config")
    p.add_argument("--device", default="auto", help="torch device for the model: auto (CUDA when present), cpu, "
                                                   "cuda, cuda:N")
    p.add_argument("--layers", action="store_true", help="add raw (unmasked), matte and stmap layers to each file")
    p.add_argument("--progress", choices=("bar", "json"), default="bar",
                   help="json: one event a line on stdout (start, each frame, done) for hosts and farm logs")
    p.add_argument("--resolution", type=int, default=256, help="aligned size for --model passthrough")
    p.add_argument("--face-type", default="whole_face", choices=("full", "whole_face", "head"),
                   help="face type for --model passthrough (a model brings its own)")
    p.add_argument("--comp", action="store_true", help="also write the face over the plate as comp.####.exr")
    p.add_argument("--preview", action="store_true", help="also write preview.mp4 of the comp through the OCIO view")
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("panel", help="a small Qt window to set up, run and watch render jobs (the hosts' panel)",
                       add_help=False)
    p.add_argument("panel_args", nargs=argparse.REMAINDER, help="--model, --plates, --faceset, --out, --frames")
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
    p.add_argument("--format", choices=("openjd", "opencue", "deadline10"), default="openjd",
                   help="openjd: template.yaml + parameter_values.yaml (default)")
    p.add_argument("--mask", choices=MASK_CHOICES)  # checked here: a bad one would fail only on the farm
    p.add_argument("--color", choices=COLOR_CHOICES)
    p.add_argument("--layers", action="store_true")
    p.add_argument("--comp", action="store_true")
    p.add_argument("--render-device", help="torch device for rendering (cpu, cuda)")
    p.add_argument("--engine", help="the vfxswap command on the farm nodes, as shell words (default: this one)")
    c = p.add_argument_group("OpenCue")
    c.add_argument("--show", default="testing", help="the show on the cuebot")
    c.add_argument("--shot", help="default: the layers folder's name")
    c.add_argument("--user", help="job owner (default: you; cuebot refuses root)")
    t = p.add_argument_group("training step (one task on one node; runs before the render)")
    t.add_argument("--train-src", help="faceset of identity A: adds a Train step writing --model")
    t.add_argument("--release-ref", help="the performers' release reference (A's, and B's unless --release-ref-dst)")
    t.add_argument("--release-ref-dst", help="B's release reference when it differs")
    t.add_argument("--preset", default="quick")
    t.add_argument("--iters", type=int, default=1000)
    t.add_argument("--batch", type=int)
    t.add_argument("--train-gpus", type=int, default=1, help="GPUs (DDP processes) for the training task")
    t.add_argument("--train-device", default="auto", help="auto, cuda or cpu (cpu asks for no GPU)")
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
        from vfxswap.hosts.panel import main as panel_main

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
