"""`vfxswap doctor`: what this machine can do, in one place a TD can paste into a ticket."""

from __future__ import annotations

import importlib.metadata
import platform
import shutil
import subprocess

from vfxswap import __version__


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _gpu() -> dict:
    try:
        import torch
    except ImportError:
        return {"torch": "not installed", "cuda": False, "devices": []}
    info = {"torch": torch.__version__, "cuda": torch.cuda.is_available(), "devices": []}
    if info["cuda"]:
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            info["devices"].append(f"cuda:{i} {props.name} {props.total_memory / 2**30:.0f} GiB "
                                   f"(bf16 {'yes' if torch.cuda.is_bf16_supported() else 'no'})")
    elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        info["devices"].append("mps")
    return info


def _ffmpeg() -> dict:
    from vfxswap.errors import VfxSwapError
    from vfxswap.plates.video import ffmpeg_exe

    try:
        exe = ffmpeg_exe()
    except VfxSwapError as exc:
        return {"path": None, "version": str(exc)}
    try:
        first = subprocess.run([exe, "-version"], capture_output=True, text=True, timeout=20).stdout.splitlines()
        version = first[0] if first else "unknown"
    except (OSError, subprocess.SubprocessError) as exc:
        version = f"does not run: {exc}"
    source = "system" if shutil.which("ffmpeg") == exe else "imageio-ffmpeg"
    return {"path": exe, "version": version, "source": source}


def collect(ocio: str | None = None) -> dict:
    """Everything doctor reports, as plain data (the CLI prints it; `--json` dumps it)."""
    import cv2
    import OpenImageIO as oiio
    import PyOpenColorIO as OCIO

    from vfxswap.color import resolve_config
    from vfxswap.errors import VfxSwapError
    from vfxswap.faces.weights import backend_status

    try:
        choice = resolve_config(ocio)
        cfg = choice.config
        display = cfg.getDefaultDisplay()
        colour = {"config": choice.name, "uri": choice.uri, "source": choice.source,
                  "scene_linear": cfg.getColorSpace("scene_linear").getName() if cfg.getColorSpace("scene_linear") else None,
                  "display": display, "view": cfg.getDefaultView(display)}
    except VfxSwapError as exc:
        colour = {"error": str(exc)}
    return {
        "vfxswap": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "libraries": {
            "OpenImageIO": oiio.__version__,
            "OpenEXR (in OIIO)": _oiio_openexr(oiio),
            "OpenEXR (python)": _version("OpenEXR"),
            "OpenColorIO": OCIO.__version__,
            "opencv": cv2.__version__,
            "numpy": _version("numpy"),
            "numba": _version("numba"),
            "face-alignment": _version("face-alignment"),
            "dlib": _version("dlib-bin") if _version("dlib-bin") != "not installed" else _version("dlib"),
            "PySide6": _version("PySide6-Essentials") if _version("PySide6-Essentials") != "not installed" else _version("PySide6"),
        },
        "gpu": _gpu(),
        "ffmpeg": _ffmpeg(),
        "face_backends": [{"name": b.name, "available": b.available, "detail": b.detail} for b in backend_status()],
        **{f"face_{kind}s": _face_choices(kind) for kind in ("detector", "landmarker")},
        "ocio": colour,
    }


def _face_choices(kind: str) -> dict:
    """The registered detectors or landmarkers: which can load here (offline), and what `auto` picks."""
    from vfxswap.faces import backends

    auto, why = backends.auto_choice(kind)
    return {"choices": [{"name": name, "available": ok, "detail": detail}
                        for name, (ok, detail) in backends.status(kind).items()],
            "auto": auto, "auto_detail": why}


def _oiio_openexr(oiio) -> str:
    for item in oiio.get_string_attribute("library_list").split(";"):
        if item.startswith("openexr:"):
            return item.split(":", 1)[1].strip()
    return "unknown"


def format_report(data: dict) -> str:
    lines = [f"vfxswap {data['vfxswap']} on Python {data['python']} ({data['platform']})", "", "libraries:"]
    lines += [f"  {k:<20} {v}" for k, v in data["libraries"].items()]
    gpu = data["gpu"]
    lines += ["", f"torch {gpu['torch']}: " + (", ".join(gpu["devices"]) if gpu["devices"] else "no GPU, running on CPU")]
    ff = data["ffmpeg"]
    lines += [f"ffmpeg: {ff['path'] or 'not found'}" + (f" ({ff.get('source')}; {ff['version']})" if ff["path"] else f" ({ff['version']})")]
    lines += ["", "face model files:"]
    for b in data["face_backends"]:
        lines.append(f"  {b['name']:<8} {'ready' if b['available'] else 'unavailable':<12} {b['detail']}")
    for kind in ("detector", "landmarker"):
        face = data[f"face_{kind}s"]
        lines += ["", f"face {kind}s (--{kind}):"]
        for c in face["choices"]:
            lines.append(f"  {c['name']:<8} {'ready' if c['available'] else 'unavailable':<12} {c['detail']}")
        lines.append(f"  auto   -> {face['auto'] or 'none available'}")
    oc = data["ocio"]
    lines += ["", "OCIO:"]
    if "error" in oc:
        lines.append(f"  error: {oc['error']}")
    else:
        lines += [f"  config       {oc['config']} ({oc['source']}: {oc['uri']})",
                  f"  scene_linear {oc['scene_linear']}", f"  view         {oc['display']} / {oc['view']}"]
    return "\n".join(lines)
