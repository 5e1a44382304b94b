"""Where face backends' model files are, and whether they are on this machine.

- `dlib`: the 68-point shape predictor, the MMOD CNN detector and the 128-d recognition
  model ship inside the `face-recognition-models` package: always offline. Its
  `__init__` imports `pkg_resources`, so we find the files through the import system instead.
- `fan`: face-alignment's S3FD detector and 2D-FAN landmark weights, looked up in
  `$VFXSWAP_MODELS` and then the torch hub cache (where face-alignment itself keeps them).
- `mesh`: MediaPipe's BlazeFace, Face Mesh and Iris, converted to vfxswap graphs that ship inside
  this package (`faces/mesh_models`, Apache-2.0): always offline; needs torch and safetensors.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

DLIB_FILES = {
    "landmarks68": "shape_predictor_68_face_landmarks.dat",
    "mmod_detector": "mmod_human_face_detector.dat",
    "recognition": "dlib_face_recognition_resnet_model_v1.dat",
}
MESH_FILES = {
    "detector": "blazeface_full.safetensors",
    "mesh": "face_mesh.safetensors",
    "iris": "iris.safetensors",
    "map68": "map68.json",
}
FAN_FILES = {
    "s3fd": "s3fd-619a316812.pth",
    "2dfan4": "2DFAN4-11f355bf06.pth.tar",
}


@dataclass
class BackendStatus:
    name: str
    available: bool
    detail: str
    files: dict[str, Path]


def dlib_models_dir() -> Path | None:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "models"


def fan_search_dirs() -> list[Path]:
    dirs = [Path(p) for p in os.environ.get("VFXSWAP_MODELS", "").split(os.pathsep) if p]
    try:
        import torch.hub

        dirs.append(Path(torch.hub.get_dir()) / "checkpoints")
    except ImportError:
        pass
    return dirs


def _find(names: dict[str, str], dirs: list[Path]) -> dict[str, Path]:
    found = {}
    for key, name in names.items():
        for folder in dirs:
            if (folder / name).is_file():
                found[key] = folder / name
                break
    return found


def _dlib_status() -> BackendStatus:
    folder = dlib_models_dir()
    has_dlib = importlib.util.find_spec("dlib") is not None
    files = _find(DLIB_FILES, [folder] if folder else [])
    missing = sorted(set(DLIB_FILES) - set(files))
    ok = has_dlib and not missing
    detail = (f"models in {folder}" if ok else "dlib is not installed (pip install dlib-bin)" if not has_dlib
              else f"missing {', '.join(DLIB_FILES[m] for m in missing)} (pip install face-recognition-models)")
    return BackendStatus("dlib", ok, detail, files)


def _fan_status() -> BackendStatus:
    dirs = fan_search_dirs()
    has_fa = importlib.util.find_spec("face_alignment") is not None
    files = _find(FAN_FILES, dirs)
    missing = sorted(set(FAN_FILES) - set(files))
    ok = has_fa and not missing
    detail = (f"weights in {files['2dfan4'].parent}" if ok else "face-alignment is not installed" if not has_fa
              else f"weights not cached ({', '.join(FAN_FILES[m] for m in missing)}; looked in "
                   f"{', '.join(map(str, dirs))}); run `vfxswap models fetch` where the internet is reachable, or copy them "
                   f"into a folder named by $VFXSWAP_MODELS")
    return BackendStatus("fan", ok, detail, files)


def mesh_models_dir() -> Path:
    return Path(__file__).with_name("mesh_models")


def _mesh_status() -> BackendStatus:
    folder = mesh_models_dir()
    files = _find(MESH_FILES, [folder])
    missing = sorted(set(MESH_FILES) - set(files))
    has_torch = importlib.util.find_spec("torch") is not None
    ok = has_torch and not missing
    detail = (f"models in {folder}" if ok else "torch is not installed" if not has_torch
              else f"missing {', '.join(MESH_FILES[m] for m in missing)} in {folder} (a broken install: reinstall vfxswap)")
    return BackendStatus("mesh", ok, detail, files)


_GROUPS = {"dlib": (_dlib_status, DLIB_FILES, "dlib"), "fan": (_fan_status, FAN_FILES, "face_alignment"),
           "mesh": (_mesh_status, MESH_FILES, "torch")}


def backend_status() -> list[BackendStatus]:
    """The state of each face backend, without importing or loading any model."""
    return [status() for status, _, _ in _GROUPS.values()]


def ready(group: str, *keys: str) -> tuple[bool, str, dict[str, Path]]:
    """Whether one detector or landmarker can load here: `group`'s package ("dlib": dlib,
    "fan": face-alignment, "mesh": torch) and the model files `keys` (of DLIB_FILES / FAN_FILES /
    MESH_FILES) are present.
    Returns (ready, one line saying where or what is missing, the files found). Loads nothing
    (the dlib group does not import torch either)."""
    status, names, package = _GROUPS[group]
    found = status()
    if importlib.util.find_spec(package) is None:
        return False, found.detail, found.files
    missing = [names[k] for k in keys if k not in found.files]
    if not missing:
        where = sorted({str(found.files[k].parent) for k in keys})
        return True, f"in {', '.join(where)}" if where else f"built into {package}", found.files
    if group == "mesh":
        return False, found.detail, found.files
    if group == "dlib":
        return False, f"missing {', '.join(missing)} (pip install face-recognition-models)", found.files
    return False, (f"weights not cached ({', '.join(missing)}; looked in {', '.join(map(str, fan_search_dirs()))}); "
                   f"run `vfxswap models fetch` where the internet is reachable, or copy them into a folder named "
                   f"by $VFXSWAP_MODELS"), found.files


FAN_URLS = {
    "s3fd": "https://www.adrianbulat.com/downloads/python-fan/s3fd-619a316812.pth",
    "2dfan4": "https://www.adrianbulat.com/downloads/python-fan/2DFAN4-11f355bf06.pth.tar",
}


def fetch_fan(folder: Path | None = None, timeout: float = 30.0) -> dict[str, Path]:
    """Download face-alignment's weights into `folder` (default: the torch hub cache).

    Each file lands atomically; a machine without internet gets one clear error within
    `timeout` seconds instead of a hang.
    """
    import urllib.error
    import urllib.request

    from vfxswap.atomic import atomic_path
    from vfxswap.errors import VfxSwapError

    if folder is None:
        import torch.hub

        folder = Path(torch.hub.get_dir()) / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    got = {}
    for key, url in FAN_URLS.items():
        final = folder / FAN_FILES[key]
        if final.is_file():
            got[key] = final
            continue
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, atomic_path(final) as tmp:
                with open(tmp, "wb") as out:
                    while chunk := response.read(1 << 20):
                        out.write(chunk)
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise VfxSwapError(f"cannot download {url}: {exc}; copy {FAN_FILES[key]} into {folder} "
                               f"(or a folder named by $VFXSWAP_MODELS) by hand") from None
        got[key] = final
    return got
