"""The `vfxswap` command: one entry point, a subcommand per job, library calls underneath.

User errors (`VfxSwapError`) print one line naming the file or frame and exit 1; argparse
usage errors exit 2; Ctrl-C exits 130. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

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
    return 0


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
    if report.failed:
        print(f"vfxswap: error: {len(report.failed)} frame(s) failed: {format_frames(report.failed)}", file=sys.stderr)
        return 1
    return 0


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
    p.add_argument("--exact", action="store_true", help="view transform through OCIO itself instead of the baked LUT")
    _add_colour_options(p)
    p.set_defaults(func=cmd_plates_convert)
    plates.set_defaults(func=lambda args: plates.print_help() or 2)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())
