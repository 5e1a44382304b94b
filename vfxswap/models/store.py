"""The model folder: a JSON manifest plus safetensors files, saved so that a kill never loses a model.

    MODEL_DIR/
      manifest.json          the commit point of a save (written last, atomically, fsynced)
      weights.safetensors    model state dict (+ extra tensors such as the discriminator, "disc.*")
      optimizer.safetensors  optimizer state tensors "state.<idx>.<key>"; the rest as JSON metadata
      rng.safetensors        torch RNG states as uint8 tensors; numpy / python states as JSON metadata
      history.jsonl          training log, one JSON object per line (written by the trainer)
      previews/              preview PNGs (written by the trainer)
      backups/<iter:08d>/    earlier complete saves (manifest + its safetensors), the newest K kept

Why this shape: nothing is ever pickled (no torch.load, no pickle), so a model folder from
someone else cannot run code; the manifest records the sha256 and size of every file, so a
truncated or swapped file is refused by name instead of loading garbage.

The save sequence (`save_model`); at every instant at least one verified save exists once the
first save has committed:

  1. Write each new file under a unique hidden temporary name in the folder (atomic.temp_path_for),
     fsync it, hash it (streaming sha256). The previous save is untouched.
  2. If the folder's current save is complete (its manifest verifies), back it up: hard-link its
     manifest and files into a hidden staging folder backups/.<iter>.<uuid>.vfxswap-tmp (a copy
     where the file system has no hard links), fsync, rename the staging folder to
     backups/<iter:08d> in one step. The top-level save is still complete throughout, and from the
     rename on the backup is complete too. A current save that does not verify (a save killed in
     step 3) is not backed up: the newest backup is then the complete one.
  3. Rename the temporary files over weights/optimizer/rng.safetensors. The old inodes live on in
     the backup, so "moving the previous save into backups" never has a moment where it is in
     neither place. From the first rename until step 4 the top-level manifest no longer matches its
     files; loading falls back to the newest complete backup (the one made in step 2).
  4. Write manifest.json atomically (vfxswap.atomic.write_text, durable). This is the commit.
  5. Tidy up: remove top-level safetensors the new manifest does not name (still linked in the
     backup), then prune backups beyond `keep_backups`, newest iterations kept (each renamed to a
     hidden name before it is deleted, so a half-deleted folder is never taken for a backup).
  A killed save leaves hidden temporary files or folders; the next save removes them first. One
  writer per model folder (the trainer's rank 0).

Loading (`load_model`, `load_training_state`, `init_from`) verifies the size and sha256 of every
file the manifest names, refuses (VfxSwapError naming the file) a missing, truncated or corrupt one,
and only ever opens .json and .safetensors files; anything else in the folder (model.pt, a stray
pickle) is ignored. When the top-level save fails verification, loading falls back to the newest
backup that verifies and logs a warning saying what failed; `strict=True` turns the fallback off.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import logging
import os
import random
import shutil
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vfxswap import __version__
from vfxswap.atomic import TEMP_MARK, fsync_dir, fsync_file, is_temp_path, temp_path_for, write_text
from vfxswap.errors import VfxSwapError

log = logging.getLogger(__name__)

FORMAT = "vfxswap-model"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
HISTORY = "history.jsonl"
BACKUPS = "backups"
FILE_NAMES = {"weights": "weights.safetensors", "optimizer": "optimizer.safetensors", "rng": "rng.safetensors"}
_MANIFEST_ORDER = ("format", "format_version", "vfxswap", "model_id", "config", "identities", "colour", "iteration",
                   "history", "files", "train", "created", "updated")
_MAX_MANIFEST_BYTES = 16 << 20
_MAX_HEADER_BYTES = 100 << 20
_CHUNK = 1 << 20


class _BadSave(VfxSwapError):
    """One save (top level or a backup) is incomplete or corrupt; loading may try an older one."""


# ----------------------------------------------------------------------------------------------
# small file helpers


# sha256 of files this process has hashed or written, keyed by (dev, inode, size, mtime, ctime):
# any write to a file changes its ctime, so a hit means unchanged content. It saves re-hashing the
# previous save (gigabytes for a 512 px model) at every save.
_HASHES: OrderedDict[tuple, str] = OrderedDict()


def _stat_key(path: Path) -> tuple:
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _remember(path: Path, sha: str) -> None:
    _HASHES[_stat_key(path)] = sha
    while len(_HASHES) > 256:
        _HASHES.popitem(last=False)


def sha256_file(path: str | os.PathLike, *, cached: bool = True) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (constant memory). `cached` trusts an earlier hash
    of this process for an unchanged file; with False the file is always read (and the cache updated)."""
    path = Path(path)
    key = _stat_key(path)
    if cached and key in _HASHES:
        return _HASHES[key]
    h = hashlib.sha256()
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    with open(path, "rb") as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    sha = h.hexdigest()
    if _stat_key(path) == key:  # not changed while it was read
        _HASHES[key] = sha
        while len(_HASHES) > 256:
            _HASHES.popitem(last=False)
    return sha


def _write_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> tuple[str, int]:
    """Write, fsync and hash one safetensors file -> (sha256, bytes). The save sequence's writer."""
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata=metadata)
    fsync_file(path)
    return sha256_file(path), path.stat().st_size


def _read_safetensors(path: Path, *, device: str = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and str->str metadata of a (verified) safetensors file; parse errors name the file."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            meta = f.metadata() or {}
            return {k: f.get_tensor(k) for k in f.keys()}, meta
    except Exception as e:  # SafetensorError, OSError, ...: one line naming the file
        raise VfxSwapError(f"{path}: not a readable safetensors file ({type(e).__name__}: {e})") from None


def _read_header(path: Path) -> dict:
    """The JSON header of a safetensors file (names, dtypes, shapes) without reading the data."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise VfxSwapError(f"{path}: not a safetensors file (too short)")
        n = int.from_bytes(head, "little")
        if n > _MAX_HEADER_BYTES:
            raise VfxSwapError(f"{path}: not a safetensors file (header of {n} bytes)")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise VfxSwapError(f"{path}: not a safetensors file (unreadable header)") from None
    if not isinstance(header, dict):
        raise VfxSwapError(f"{path}: not a safetensors file (header is not an object)")
    return header


# ----------------------------------------------------------------------------------------------
# JSON-safe encoding of nested state (optimizer state dicts, RNG states)


def _encode(value: Any, name: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Nested value -> JSON-safe structure; tensors go to `tensors` under their dotted path name.

    Tuples, non-string dict keys and numpy arrays are tagged so `_decode` restores them exactly.
    """
    if torch.is_tensor(value):
        key, n = name, 1
        while key in tensors:
            key, n = f"{name}#{n}", n + 1
        tensors[key] = value.detach().cpu()
        return {"__tensor__": key}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.ndarray):
        return {"__ndarray__": value.tolist(), "dtype": str(value.dtype), "shape": list(value.shape)}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, f"{name}.{i}", tensors) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, f"{name}.{i}", tensors) for i, v in enumerate(value)]
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value) and not any(k.startswith("__") for k in value):
            return {k: _encode(v, f"{name}.{k}" if name else k, tensors) for k, v in value.items()}
        return {"__items__": [[_encode(k, "", {}), _encode(v, f"{name}.{k}" if name else str(k), tensors)]
                              for k, v in value.items()]}
    raise TypeError(f"cannot store {type(value).__name__} at {name!r} (tensors, numbers, strings, lists, dicts only)")


def _decode(value: Any, tensors: dict[str, torch.Tensor], where: str) -> Any:
    if isinstance(value, list):
        return [_decode(v, tensors, where) for v in value]
    if not isinstance(value, dict):
        return value
    if "__tensor__" in value:
        try:
            return tensors[value["__tensor__"]]
        except KeyError:
            raise VfxSwapError(f"{where}: tensor {value['__tensor__']!r} named in the metadata is missing") from None
    if "__tuple__" in value:
        return tuple(_decode(v, tensors, where) for v in value["__tuple__"])
    if "__ndarray__" in value:
        return np.array(value["__ndarray__"], dtype=value["dtype"]).reshape(value["shape"])
    if "__items__" in value:
        return {_decode(k, tensors, where): _decode(v, tensors, where) for k, v in value["__items__"]}
    return {k: _decode(v, tensors, where) for k, v in value.items()}


def _unshare(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous CPU tensors, cloning any that share storage (safetensors refuses shared memory)."""
    out, seen = {}, set()
    for k, t in tensors.items():
        t = t.detach().cpu().contiguous()
        ptr = t.untyped_storage().data_ptr() if t.numel() else None
        if ptr is not None and ptr in seen:
            t = t.clone()
        elif ptr is not None:
            seen.add(ptr)
        out[k] = t
    return out


# ----------------------------------------------------------------------------------------------
# optimizer and RNG state


def optimizer_to_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """optimizer.state_dict() -> (tensors named "state.<idx>.<key>" (CPU), JSON-safe metadata).

    Non-tensor state values and param_groups (lr, betas as a tuple, flags...) go into the metadata;
    `tensors_to_optimizer` rebuilds the exact state dict (AdamW's `step` tensors included).
    """
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    meta = {"optimizer": type(optimizer).__name__,
            "state": _encode(sd["state"], "state", tensors),
            "param_groups": _encode(sd["param_groups"], "param_groups", tensors)}
    return _unshare(tensors), meta


def tensors_to_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict,
                         *, where: str = "optimizer state") -> None:
    """Inverse of `optimizer_to_tensors`: load the stored state into `optimizer` (same param layout)."""
    kind = meta.get("optimizer")
    if kind != type(optimizer).__name__:
        raise VfxSwapError(f"{where}: saved for optimizer {kind}, not {type(optimizer).__name__}")
    sd = {"state": _decode(meta["state"], tensors, where),
          "param_groups": _decode(meta["param_groups"], tensors, where)}
    try:
        optimizer.load_state_dict(sd)
    except (ValueError, KeyError, RuntimeError) as e:
        raise VfxSwapError(f"{where}: does not fit this optimizer ({e}); were parts frozen or unfrozen "
                           f"since it was saved?") from None
    _match_parameter_layouts(optimizer)


def _match_parameter_layouts(optimizer: torch.optim.Optimizer) -> None:
    """Give each per-parameter state tensor (Adam's moments) its parameter's memory layout.

    Saves are contiguous, but a model on CUDA trains channels_last: a moment left contiguous
    beside a channels_last parameter makes fused AdamW refuse the step on CUDA, and on CPU its
    fused kernel walks the two in different orders and silently mixes up elements."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            for key, value in optimizer.state.get(p, {}).items():
                if torch.is_tensor(value) and value.shape == p.shape and value.stride() != p.stride():
                    optimizer.state[p][key] = torch.empty_like(p, dtype=value.dtype).copy_(value)


def _numpy_legacy_state() -> dict:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"kind": str(kind), "keys": [int(k) for k in keys], "pos": int(pos), "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached)}


def rng_state(generators: dict[str, np.random.Generator | torch.Generator] | None = None) -> dict:
    """The global RNG states: torch CPU (uint8 tensor), torch CUDA per device (when CUDA is in use),
    numpy's legacy global state and Python's `random`, the last two as JSON-safe values.

    `generators` adds named numpy Generators (their bit_generator.state) or torch Generators.
    """
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "numpy": _numpy_legacy_state()}
    version, internal, gauss_next = random.getstate()
    state["python"] = [version, list(internal), gauss_next]
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["torch_cuda"] = list(torch.cuda.get_rng_state_all())
    if generators:
        gens = {}
        for name, gen in generators.items():
            if isinstance(gen, torch.Generator):
                gens[name] = {"kind": "torch", "state": gen.get_state()}
            elif isinstance(gen, np.random.Generator):
                gens[name] = {"kind": "numpy", "state": gen.bit_generator.state}
            else:
                raise TypeError(f"generator {name!r}: {type(gen).__name__} is not a numpy or torch Generator")
        state["generators"] = gens
    return state


def restore_rng(state: dict, generators: dict[str, np.random.Generator | torch.Generator] | None = None) -> None:
    """Set the global RNGs (and any named `generators`) back to a `rng_state()` result."""
    if "torch" in state:
        torch.set_rng_state(torch.as_tensor(state["torch"], dtype=torch.uint8).cpu())
    cuda = state.get("torch_cuda")
    if cuda and torch.cuda.is_available():
        count = torch.cuda.device_count()
        if len(cuda) != count:
            log.warning("RNG state saved with %d CUDA device(s), %d here: restoring the first %d",
                        len(cuda), count, min(len(cuda), count))
        for i, s in enumerate(cuda[:count]):
            torch.cuda.set_rng_state(torch.as_tensor(s, dtype=torch.uint8).cpu(), i)
    if "numpy" in state:
        n = state["numpy"]
        np.random.set_state((n["kind"], np.array(n["keys"], dtype=np.uint32), int(n["pos"]), int(n["has_gauss"]),
                             float(n["cached_gaussian"])))
    if "python" in state:
        version, internal, gauss_next = state["python"]
        random.setstate((int(version), tuple(int(v) for v in internal), gauss_next))
    for name, gen in (generators or {}).items():
        saved = state.get("generators", {}).get(name)
        if saved is None:
            log.warning("RNG state has no generator %r; it keeps its current state", name)
        elif isinstance(gen, torch.Generator):
            gen.set_state(torch.as_tensor(saved["state"], dtype=torch.uint8).cpu())
        else:
            gen.bit_generator.state = saved["state"]


# ----------------------------------------------------------------------------------------------
# manifests and verification


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).astimezone().isoformat(timespec="seconds")


def _read_manifest(path: Path) -> dict:
    """Parse and sanity-check a manifest. A missing/unreadable one is a _BadSave (an older save may
    do); a readable manifest of another format or a newer version is refused outright."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise _BadSave(f"{path}: missing") from None
    if size > _MAX_MANIFEST_BYTES:
        raise _BadSave(f"{path}: {size} bytes is too large for a model manifest")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _BadSave(f"{path}: unreadable ({type(e).__name__}: {e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise VfxSwapError(f"{path}: not a vfxswap model manifest (format {got!r}, expected {FORMAT!r})")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise VfxSwapError(f"{path}: model format_version {version!r} is newer than this vfxswap "
                           f"({__version__}) reads ({FORMAT_VERSION}); update vfxswap")
    files = manifest.get("files")
    if not isinstance(files, dict) or "weights" not in files:
        raise _BadSave(f"{path}: names no weights file")
    for label, entry in files.items():
        if not (isinstance(entry, dict) and isinstance(entry.get("name"), str) and isinstance(entry.get("sha256"), str)
                and isinstance(entry.get("bytes"), int)):
            raise _BadSave(f"{path}: files.{label} is malformed")
        name = entry["name"]
        if Path(name).name != name or name.startswith(".") or not name.endswith(".safetensors") or "\\" in name:
            raise _BadSave(f"{path}: files.{label} names {name!r}; only plain .safetensors names are opened")
    # the fields every reader relies on (a hand edit can break them): named here, not a traceback later
    iteration = manifest.get("iteration")
    if isinstance(iteration, bool) or not isinstance(iteration, int) or iteration < 0:
        raise _BadSave(f"{path}: iteration {iteration!r} is not a whole number of iterations")
    if not isinstance(manifest.get("config"), dict):
        raise _BadSave(f"{path}: config is not an object of model settings")
    identities = manifest.get("identities", {})
    if not (isinstance(identities, dict) and all(isinstance(v, dict) for v in identities.values())):
        raise _BadSave(f"{path}: identities is not an object of identity records")
    return manifest


def _verify(folder: Path, manifest: dict, *, cached: bool) -> None:
    """Every file the manifest names exists with its recorded size and sha256, else _BadSave naming it."""
    for entry in manifest["files"].values():
        path = folder / entry["name"]
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise _BadSave(f"{path}: missing (named in {folder / MANIFEST})") from None
        if size != entry["bytes"]:
            raise _BadSave(f"{path}: {size} bytes, the manifest says {entry['bytes']} (truncated or replaced)")
        if sha256_file(path, cached=cached) != entry["sha256"]:
            raise _BadSave(f"{path}: sha256 does not match the manifest (corrupt or replaced)")


def _backup_dirs(folder: Path) -> list[tuple[int, Path]]:
    """Backups as (iteration, path), newest first (hidden staging/trash folders excluded)."""
    root = folder / BACKUPS
    if not root.is_dir():
        return []
    found = [(int(p.name), p) for p in root.iterdir() if p.name.isascii() and p.name.isdigit() and p.is_dir()]
    return sorted(found, reverse=True)


def locate_save(folder: str | os.PathLike, *, strict: bool = False, cached: bool = False) -> tuple[Path, dict]:
    """(directory, manifest) of the save to load: the top level if it verifies, else (unless `strict`)
    the newest backup that does, with a warning naming what failed. VfxSwapError if none verifies."""
    folder = Path(folder)
    if not folder.is_dir():
        raise VfxSwapError(f"{folder}: model folder not found")
    try:
        manifest = _read_manifest(folder / MANIFEST)
        _verify(folder, manifest, cached=cached)
        return folder, manifest
    except _BadSave as e:
        problem = str(e)
    backups = _backup_dirs(folder)
    if not (folder / MANIFEST).exists() and not backups:
        raise VfxSwapError(f"{folder}: not a vfxswap model folder (no {MANIFEST})")
    if strict:
        raise VfxSwapError(problem)
    for iteration, path in backups:
        try:
            manifest = _read_manifest(path / MANIFEST)
            _verify(path, manifest, cached=cached)
        except VfxSwapError as e:
            log.warning("model backup %s is unusable too: %s", path, e)
            continue
        log.warning("%s; loading the newest complete backup instead: %s (iteration %d)", problem, path, iteration)
        return path, manifest
    raise VfxSwapError(f"{problem} (and no complete backup in {folder / BACKUPS})")


# ----------------------------------------------------------------------------------------------
# save


def _unwrap(model: nn.Module) -> nn.Module:
    """The plain module behind torch.compile / DataParallel / DDP wrappers (their keys are prefixed)."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        else:
            return model


def _remove_stale_temps(folder: Path) -> None:
    """Hidden leftovers of a killed save: its temporary files (only those named after the store's own
    files, so nobody else's temporaries are touched) and staging / trash folders in backups/."""
    own = tuple(f".{Path(name).stem}." for name in [MANIFEST, *FILE_NAMES.values()])
    for root in (folder, folder / BACKUPS):
        if not root.is_dir():
            continue
        for p in root.iterdir():
            if is_temp_path(p) and (root != folder or p.name.startswith(own)):
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        p.unlink()


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # no hard links here (some network / FAT file systems): a durable copy
        shutil.copyfile(src, dst)
        fsync_file(dst)


def _hidden_name(path: Path, tag: str = "") -> Path:
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}{TEMP_MARK}{tag}")


def _discard_dir(path: Path) -> None:
    """Rename to a hidden name first (one step), then delete: never a half-deleted backup."""
    trash = _hidden_name(path, ".old")
    os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def _backup(folder: Path, manifest: dict) -> Path:
    """Step 2: hard-link the complete top-level save into backups/<iter:08d> (see module docstring)."""
    root = folder / BACKUPS
    root.mkdir(exist_ok=True)
    final = root / f"{int(manifest.get('iteration', 0)):08d}"
    staging = _hidden_name(final)
    staging.mkdir()
    for name in [MANIFEST] + [entry["name"] for entry in manifest["files"].values()]:
        _link_or_copy(folder / name, staging / name)
    fsync_dir(staging)
    if final.exists():  # a save at the same iteration was backed up before: this one replaces it
        trash = _hidden_name(final, ".old")
        os.replace(final, trash)
        os.replace(staging, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(staging, final)
    fsync_dir(root)
    return final


def save_model(folder: str | os.PathLike, model: nn.Module, manifest: dict, *,
               optimizer: torch.optim.Optimizer | None = None, rng: dict | None = None,
               extra_tensors: dict[str, torch.Tensor] | None = None, keep_backups: int = 3) -> Path:
    """Save model (+ optimizer, RNG, extra tensors) into `folder`; returns the manifest path.

    Kill-safe at any instant (sequence in the module docstring). `manifest` is filled in place with
    the fields the store owns (format, format_version, vfxswap, model_id and created when absent,
    config from `model.config` when absent, history, files, updated), so the caller's copy matches
    the file. `extra_tensors` (e.g. {"disc.<name>": ...}) are stored in weights.safetensors beside the
    model's tensors; read them back with `load_extra_tensors`.
    """
    folder = Path(folder)
    if keep_backups < 0:
        raise ValueError(f"keep_backups must be >= 0, got {keep_backups}")
    iteration = manifest.get("iteration", 0)
    if isinstance(iteration, bool) or not isinstance(iteration, int) or iteration < 0:
        raise ValueError(f"manifest iteration must be a non-negative int, got {iteration!r}")
    model = _unwrap(model)

    # everything in memory first: a bad argument fails before the folder is touched
    weights = dict(model.state_dict())
    extra = dict(extra_tensors or {})
    clash = sorted(set(weights) & set(extra))
    if clash:
        raise ValueError(f"extra tensor names clash with the model's: {', '.join(clash[:5])}")
    payloads = {"weights": (_unshare({**weights, **extra}),
                            {"format": "vfxswap-weights", "extra_tensors": json.dumps(sorted(extra))})}
    if optimizer is not None:
        tensors, meta = optimizer_to_tensors(optimizer)
        payloads["optimizer"] = (tensors, {"format": "vfxswap-optimizer", "meta": json.dumps(meta)})
    if rng is not None:
        tensors = {}
        meta = _encode(rng, "", tensors)
        payloads["rng"] = (_unshare(tensors), {"format": "vfxswap-rng", "meta": json.dumps(meta)})
    config = getattr(model, "config", None)
    if "config" not in manifest and hasattr(config, "to_dict"):
        manifest["config"] = config.to_dict()
    manifest.update({"format": FORMAT, "format_version": FORMAT_VERSION, "vfxswap": __version__,
                     "iteration": iteration, "history": manifest.get("history", HISTORY)})
    manifest.setdefault("model_id", uuid.uuid4().hex)
    manifest.setdefault("created", _now())
    try:
        json.dumps(manifest)
    except (TypeError, ValueError) as e:
        raise ValueError(f"manifest is not JSON-serialisable: {e}") from None

    folder.mkdir(parents=True, exist_ok=True)
    previous: dict | None = None
    if (folder / MANIFEST).exists():
        try:
            previous = _read_manifest(folder / MANIFEST)  # another format here: refused, nothing written
            _verify(folder, previous, cached=True)
        except _BadSave as e:
            log.info("the current save in %s is incomplete (%s); not backing it up", folder, e)
            previous = None
    _remove_stale_temps(folder)

    # 1. new files under unique temporary names, fsynced and hashed
    staged: dict[str, tuple[Path, Path]] = {}
    files: dict[str, dict] = {}
    try:
        for label, (tensors, meta) in payloads.items():
            final = folder / FILE_NAMES[label]
            tmp = temp_path_for(final)
            staged[label] = (tmp, final)
            try:
                sha, size = _write_safetensors(tmp, tensors, meta)
            except OSError as e:  # disk full, permissions: the user's to fix
                raise VfxSwapError(f"{final}: cannot write the model ({e.strerror or e})") from None
            files[label] = {"name": final.name, "sha256": sha, "bytes": size}
        fsync_dir(folder)

        # 2. the previous complete save into backups/<iter> (hard links; the top level stays complete)
        if previous is not None:
            _backup(folder, previous)

        # 3. new files into place (the old inodes live on in the backup)
        for tmp, final in staged.values():
            os.replace(tmp, final)
    except Exception:  # an error (not a kill): remove what is left of the temporaries now
        for tmp, _ in staged.values():
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        raise
    for label, (_, final) in staged.items():
        _remember(final, files[label]["sha256"])  # the rename changed ctime; the content is what we hashed
    fsync_dir(folder)

    # 4. commit
    manifest["files"] = files
    manifest["updated"] = _now()
    ordered = {k: manifest[k] for k in _MANIFEST_ORDER if k in manifest}
    ordered.update((k, v) for k, v in manifest.items() if k not in ordered)
    write_text(folder / MANIFEST, json.dumps(ordered, indent=2) + "\n")
    fsync_dir(folder)

    # 5. tidy: unnamed top-level files (kept in the backup), then backups beyond keep_backups
    named = {entry["name"] for entry in files.values()}
    for name in FILE_NAMES.values():
        if name not in named:
            with contextlib.suppress(FileNotFoundError):
                (folder / name).unlink()
    for _, path in _backup_dirs(folder)[keep_backups:]:
        _discard_dir(path)
    return folder / MANIFEST


# ----------------------------------------------------------------------------------------------
# load


def _build_model(config: dict, where: Path, state: dict[str, torch.Tensor], extra: set[str],
                 weights: Path) -> nn.Module:
    """FaceModel from a manifest's config, holding the saved `state`. The config's shapes are
    checked against the saved tensors on the meta device first, so a hand-edited config fails by
    name instead of allocating for dims it made up; the model is seeded so that loading does not
    advance the global RNG."""
    from vfxswap.models.nets import FaceModel, ModelConfig

    try:
        config = ModelConfig.from_dict(config)
        with torch.device("meta"):
            shapes = FaceModel(config).state_dict()
    except VfxSwapError as e:
        raise VfxSwapError(f"{where}: {e}") from None
    except (TypeError, ValueError, AttributeError) as e:
        raise VfxSwapError(f"{where}: unusable model config ({e})") from None
    _check_state(shapes, state, extra, weights)
    model = FaceModel(config, seed=0)
    model.load_state_dict({k: state[k] for k in shapes}, strict=True)
    return model


def _extra_names(meta: dict[str, str], where: Path) -> set[str]:
    try:
        names = json.loads(meta.get("extra_tensors", "[]"))
    except json.JSONDecodeError:
        raise VfxSwapError(f"{where}: unreadable extra_tensors metadata") from None
    return set(names)


def _check_state(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor], extra: set[str], where: Path) -> None:
    """`state` fits a model whose tensors are `own` exactly; a missing, unexpected or misshapen
    tensor is named."""
    missing = [k for k in own if k not in state]
    if missing:
        raise VfxSwapError(f"{where}: tensor {missing[0]!r} is missing ({len(missing)} missing in all); "
                           f"a different architecture?")
    unexpected = [k for k in state if k not in own and k not in extra]
    if unexpected:
        raise VfxSwapError(f"{where}: unexpected tensor {unexpected[0]!r}; a different architecture?")
    for k, t in own.items():
        if tuple(state[k].shape) != tuple(t.shape):
            raise VfxSwapError(f"{where}: tensor {k!r} has shape {tuple(state[k].shape)}, the model needs "
                               f"{tuple(t.shape)}")


def load_model(folder: str | os.PathLike, *, device: str | torch.device = "cpu",
               strict: bool = False) -> tuple[nn.Module, dict]:
    """(FaceModel with the saved weights on `device`, manifest) from a verified save.

    Every file the manifest names is checked (size, sha256) first. If the top-level save fails,
    the newest complete backup is loaded with a warning, unless `strict`.
    """
    where, manifest = locate_save(folder, strict=strict)
    path = where / manifest["files"]["weights"]["name"]
    state, meta = _read_safetensors(path)
    model = _build_model(manifest.get("config"), where / MANIFEST, state, _extra_names(meta, path), path)
    return model.to(device), manifest


def load_extra_tensors(folder: str | os.PathLike, prefix: str = "", *, device: str | torch.device = "cpu",
                       strict: bool = False) -> dict[str, torch.Tensor]:
    """The `extra_tensors` of the save `load_model` would load whose names start with `prefix`."""
    where, manifest = locate_save(folder, strict=strict, cached=True)
    path = where / manifest["files"]["weights"]["name"]
    state, meta = _read_safetensors(path, device=str(device))
    extra = _extra_names(meta, path)
    return {k: v for k, v in state.items() if k in extra and k.startswith(prefix)}


def load_training_state(folder: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer | None, *,
                        device: str | torch.device | None = None, strict: bool = False) -> dict:
    """Load the optimizer state of the save `load_model` loads into `optimizer`; return its RNG state
    dict (empty when none was saved) for `restore_rng`. `model` is unused beyond the signature's
    symmetry; the optimizer must hold that model's parameters in the saved order."""
    del model, device  # optimizer.load_state_dict puts the state on its parameters' devices
    where, manifest = locate_save(folder, strict=strict, cached=True)
    files = manifest["files"]
    if optimizer is not None:
        if "optimizer" not in files:
            raise VfxSwapError(f"{where / MANIFEST}: this save has no optimizer state")
        path = where / files["optimizer"]["name"]
        tensors, meta = _read_safetensors(path)
        try:
            decoded = json.loads(meta["meta"])
        except (KeyError, json.JSONDecodeError):
            raise VfxSwapError(f"{path}: no optimizer metadata") from None
        tensors_to_optimizer(optimizer, tensors, decoded, where=str(path))
    if "rng" not in files:
        return {}
    path = where / files["rng"]["name"]
    tensors, meta = _read_safetensors(path)
    try:
        return _decode(json.loads(meta["meta"]), tensors, str(path))
    except (KeyError, json.JSONDecodeError):
        raise VfxSwapError(f"{path}: no RNG metadata") from None


def init_from(model: nn.Module, source_folder: str | os.PathLike, parts: list[str] | tuple[str, ...], *,
              freeze: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Copy the named parts' weights from another model folder into `model`, then freeze `freeze`.

    A part is a state-dict prefix ("encoder" copies every "encoder.*" tensor). All checks run
    before anything is copied: a part absent on either side, a tensor only one side has, or a shape
    mismatch raises VfxSwapError naming it. Returns the names copied.
    """
    model = _unwrap(model)
    where, manifest = locate_save(source_folder)
    path = where / manifest["files"]["weights"]["name"]
    source, meta = _read_safetensors(path)
    extra = _extra_names(meta, path)
    own = model.state_dict()
    pairs = []
    for part in parts:
        prefix = f"{part}."
        theirs = sorted(k for k in source if k.startswith(prefix) and k not in extra)
        mine = sorted(k for k in own if k.startswith(prefix))
        if not theirs:
            have = sorted({k.split(".", 1)[0] for k in source if k not in extra})
            raise VfxSwapError(f"{path}: no part {part!r} to initialise from (parts there: {', '.join(have)})")
        if not mine:
            have = sorted({k.split(".", 1)[0] for k in own})
            raise VfxSwapError(f"init from {source_folder}: this model has no part {part!r} (parts: {', '.join(have)})")
        for k in sorted(set(theirs) ^ set(mine)):
            side = "this model" if k in source else str(path)
            raise VfxSwapError(f"init from {path}: tensor {k!r} is missing from {side}; a different architecture?")
        for k in mine:
            if tuple(source[k].shape) != tuple(own[k].shape):
                raise VfxSwapError(f"init from {path}: tensor {k!r} has shape {tuple(source[k].shape)}, this model's "
                                   f"is {tuple(own[k].shape)}")
            pairs.append(k)
    with torch.no_grad():
        for k in pairs:
            own[k].copy_(source[k])
    for part in freeze:
        try:
            module = model.get_submodule(part)
        except AttributeError:
            raise VfxSwapError(f"freeze {part!r}: the model has no such part") from None
        module.requires_grad_(False)
    return pairs


# ----------------------------------------------------------------------------------------------
# info


def release_refs(manifest: dict) -> dict[str, str]:
    """What render outputs record about the model: its id and iteration, and for each identity its
    name and the performer release reference (verbatim), all as strings ("" when unknown)."""
    refs = {"model_id": str(manifest.get("model_id", "")), "model_iteration": str(manifest.get("iteration", ""))}
    identities = manifest.get("identities") or {}
    for ident in ("A", "B"):
        entry = identities.get(ident) or {}
        refs[f"{ident}_name"] = str(entry.get("name", "") or "")
        refs[f"{ident}_release_ref"] = str(entry.get("release_ref", "") or "")
    return refs


def _history_name(manifest: dict) -> str:
    name = manifest.get("history")
    ok = isinstance(name, str) and Path(name).name == name and name.endswith(".jsonl") and "\\" not in name
    return name if ok else HISTORY


def _last_history(path: Path) -> dict | None:
    """The last complete JSON record of history.jsonl with an "iter" (reads only its tail)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - (256 << 10)))
            tail = f.read().decode("utf-8", "replace")
    except OSError:
        return None
    for line in reversed(tail.splitlines()):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "iter" in record and any(k.startswith("loss") for k in record):
            return record
    return None


def model_info(folder: str | os.PathLike, *, verify: bool = False) -> dict:
    """A summary of a model folder (no tensor data read; `verify` also hashes every file)."""
    folder = Path(folder)
    try:
        where, manifest = folder, _read_manifest(folder / MANIFEST)
    except _BadSave:
        where, manifest = locate_save(folder)  # no readable top-level manifest: the newest complete backup
    config = manifest.get("config") or {}
    files, params, extra_params = {}, None, None
    for label, entry in manifest["files"].items():
        path = where / entry["name"]
        size = path.stat().st_size if path.exists() else None
        files[label] = {"name": entry["name"], "bytes": entry["bytes"], "present": size is not None,
                        "size_ok": size == entry["bytes"]}
        if label == "weights" and size == entry["bytes"]:
            try:
                header = _read_header(path)
            except VfxSwapError:
                continue
            extra = set(json.loads((header.get("__metadata__") or {}).get("extra_tensors", "[]")))
            counts = {k: int(np.prod(v["shape"], dtype=np.int64)) for k, v in header.items() if k != "__metadata__"}
            params = sum(n for k, n in counts.items() if k not in extra)
            extra_params = sum(n for k, n in counts.items() if k in extra)
    info = {"folder": str(folder), "loaded_from": str(where), "model_id": manifest.get("model_id"),
            "vfxswap": manifest.get("vfxswap"), "format_version": manifest.get("format_version"),
            "arch": config.get("arch"), "variants": config.get("variants", ""), "resolution": config.get("resolution"),
            "face_type": config.get("face_type"),
            "dims": {k: config.get(k) for k in ("ae_dims", "e_dims", "d_dims", "d_mask_dims")},
            "identities": manifest.get("identities", {}), "release_refs": release_refs(manifest),
            "colour": manifest.get("colour", {}), "iteration": manifest.get("iteration"),
            "params": params, "extra_params": extra_params, "files": files,
            "backups": [it for it, _ in _backup_dirs(folder)], "created": manifest.get("created"),
            "updated": manifest.get("updated"),
            "last": _last_history(folder / _history_name(manifest))}
    if verify:
        try:
            locate_save(folder, strict=True)
            info["verified"], info["problem"] = True, None
        except VfxSwapError as e:
            info["verified"], info["problem"] = False, str(e)
    return info


def _mb(n: int | None) -> str:
    return "?" if n is None else f"{n / 1e6:.1f} MB"


def format_info(info: dict) -> str:
    """`model_info` as aligned text lines for the CLI."""
    arch = f"{info.get('arch')}{'-' + info['variants'] if info.get('variants') else ''}".upper()
    dims = info.get("dims") or {}
    lines = [f"model       {info['folder']}",
             f"id          {info.get('model_id')}  (vfxswap {info.get('vfxswap')}, "
             f"format {info.get('format_version')})",
             f"arch        {arch}  resolution {info.get('resolution')}  face type {info.get('face_type')}",
             f"dims        ae {dims.get('ae_dims')}  e {dims.get('e_dims')}  d {dims.get('d_dims')}  "
             f"mask {dims.get('d_mask_dims')}",
             f"iteration   {info.get('iteration')}"]
    if info.get("params") is not None:
        params = f"params      {info['params'] / 1e6:.2f} M"
        if info.get("extra_params"):
            params += f"  (+ {info['extra_params'] / 1e6:.2f} M extra, e.g. discriminator)"
        lines.append(params)
    for ident in ("A", "B"):
        entry = (info.get("identities") or {}).get(ident) or {}
        lines.append(f"{ident}           {entry.get('name', '?')}  release ref: {entry.get('release_ref') or '(none)'}"
                     f"  faceset: {entry.get('faceset', '?')}")
    for label, f in (info.get("files") or {}).items():
        state = "" if f["size_ok"] else ("  MISSING" if not f["present"] else "  WRONG SIZE")
        lines.append(f"{label:<12}{f['name']}  {_mb(f['bytes'])}{state}")
    if info.get("loaded_from") and info["loaded_from"] != info["folder"]:
        lines.append(f"note        no manifest at the top level; described from {info['loaded_from']}")
    backups = info.get("backups") or []
    lines.append(f"backups     {', '.join(str(b) for b in backups) if backups else '(none)'}")
    last = info.get("last")
    if last:
        losses = "  ".join(f"{k} {v:.4g}" if isinstance(v, (int, float)) else f"{k} {v}"
                           for k, v in last.items() if k.startswith("loss"))
        lines.append(f"last        iter {last.get('iter')}: {losses}")
    lines.append(f"updated     {info.get('updated')}  (created {info.get('created')})")
    if "verified" in info:
        lines.append("verified    yes" if info["verified"] else f"verified    NO: {info['problem']}")
    return "\n".join(lines)
