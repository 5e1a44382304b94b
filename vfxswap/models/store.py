"""Saving and loading a model folder (layout and verification: `vfxswap.models.fileformat`),
saved so that a kill never loses a model.

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

Loading (`load_model`, `load_extra_tensors`) reads the save `fileformat.locate_save` picks (the
top level, or the newest complete backup) and builds the model its manifest's config names. The
optimizer and RNG state are `vfxswap.models.checkpoint`'s; copying parts from another model is
`vfxswap.models.transfer`'s; the `vfxswap model info` summary is `vfxswap.models.info`'s.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import shutil
import uuid
from pathlib import Path

import torch
from torch import nn

from vfxswap import __version__
from vfxswap.atomic import TEMP_MARK, fsync_dir, fsync_file, is_temp_path, temp_path_for, write_text
from vfxswap.errors import VfxSwapError
from vfxswap.models import build_model
from vfxswap.models.checkpoint import encode_state, optimizer_to_tensors
from vfxswap.models.config import ModelConfig
from vfxswap.models.fileformat import (BACKUPS, FILE_NAMES, FORMAT, FORMAT_VERSION, HISTORY, MANIFEST, BadSave,
                                       backup_dirs, extra_tensor_names, locate_save, read_manifest,
                                       read_safetensors, remember_hash, unshare, verify_save, write_safetensors)

log = logging.getLogger(__name__)

_MANIFEST_ORDER = ("format", "format_version", "vfxswap", "model_id", "config", "identities", "colour", "iteration",
                   "history", "files", "train", "created", "updated")


# ----------------------------------------------------------------------------------------------
# save


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).astimezone().isoformat(timespec="seconds")


def unwrap_model(model: nn.Module) -> nn.Module:
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
    model = unwrap_model(model)

    # everything in memory first: a bad argument fails before the folder is touched
    weights = dict(model.state_dict())
    extra = dict(extra_tensors or {})
    clash = sorted(set(weights) & set(extra))
    if clash:
        raise ValueError(f"extra tensor names clash with the model's: {', '.join(clash[:5])}")
    payloads = {"weights": (unshare({**weights, **extra}),
                            {"format": "vfxswap-weights", "extra_tensors": json.dumps(sorted(extra))})}
    if optimizer is not None:
        tensors, meta = optimizer_to_tensors(optimizer)
        payloads["optimizer"] = (tensors, {"format": "vfxswap-optimizer", "meta": json.dumps(meta)})
    if rng is not None:
        tensors = {}
        meta = encode_state(rng, "", tensors)
        payloads["rng"] = (unshare(tensors), {"format": "vfxswap-rng", "meta": json.dumps(meta)})
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
            previous = read_manifest(folder / MANIFEST)  # another format here: refused, nothing written
            verify_save(folder, previous, cached=True)
        except BadSave as e:
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
                sha, size = write_safetensors(tmp, tensors, meta)
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
        remember_hash(final, files[label]["sha256"])  # the rename changed ctime; the content is what we hashed
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
    for _, path in backup_dirs(folder)[keep_backups:]:
        _discard_dir(path)
    return folder / MANIFEST


# ----------------------------------------------------------------------------------------------
# load


def _build_model(config: dict, where: Path, state: dict[str, torch.Tensor], extra: set[str],
                 weights: Path) -> nn.Module:
    """The model a manifest's config names (`build_model`), holding the saved `state`. The config's
    shapes are checked against the saved tensors on the meta device first, so a hand-edited config
    fails by name instead of allocating for dims it made up; the model is seeded so that loading
    does not advance the global RNG."""
    try:
        config = ModelConfig.from_dict(config)
        with torch.device("meta"):
            shapes = build_model(config).state_dict()
    except VfxSwapError as e:
        raise VfxSwapError(f"{where}: {e}") from None
    except (TypeError, ValueError, AttributeError) as e:
        raise VfxSwapError(f"{where}: unusable model config ({e})") from None
    _check_state(shapes, state, extra, weights)
    model = build_model(config, seed=0)
    model.load_state_dict({k: state[k] for k in shapes}, strict=True)
    return model


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
    """(The model, with the saved weights on `device`; its manifest) from a verified save.

    Every file the manifest names is checked (size, sha256) first. If the top-level save fails,
    the newest complete backup is loaded with a warning, unless `strict`.
    """
    where, manifest = locate_save(folder, strict=strict)
    path = where / manifest["files"]["weights"]["name"]
    state, meta = read_safetensors(path)
    model = _build_model(manifest.get("config"), where / MANIFEST, state, extra_tensor_names(meta, path), path)
    return model.to(device), manifest


def load_extra_tensors(folder: str | os.PathLike, prefix: str = "", *, device: str | torch.device = "cpu",
                       strict: bool = False) -> dict[str, torch.Tensor]:
    """The `extra_tensors` of the save `load_model` would load whose names start with `prefix`."""
    where, manifest = locate_save(folder, strict=strict, cached=True)
    path = where / manifest["files"]["weights"]["name"]
    state, meta = read_safetensors(path, device=str(device))
    extra = extra_tensor_names(meta, path)
    return {k: v for k, v in state.items() if k in extra and k.startswith(prefix)}
