"""The model folder's file format: what a save is, how it is read and how it is verified.

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

A save is a manifest plus the files it names, at the top level or in a backup. Writing one is
`vfxswap.models.store.save_model` (the kill-safe sequence is described there). Every loader
(`store.load_model`, `checkpoint.load_training_state`, `transfer.init_from`) starts with
`locate_save`, which verifies the size and sha256 of every file the manifest names, refuses
(VfxSwapError naming the file) a missing, truncated or corrupt one, and only ever opens .json and
.safetensors files; anything else in the folder (model.pt, a stray pickle) is ignored. When the
top-level save fails verification, loading falls back to the newest backup that verifies and logs
a warning saying what failed; `strict=True` turns the fallback off.

Imports no torch: `vfxswap model info` reads manifests and safetensors headers through it alone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

from vfxswap import __version__
from vfxswap.atomic import fsync_file
from vfxswap.errors import VfxSwapError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

FORMAT = "vfxswap-model"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
HISTORY = "history.jsonl"
BACKUPS = "backups"
FILE_NAMES = {"weights": "weights.safetensors", "optimizer": "optimizer.safetensors", "rng": "rng.safetensors"}
_MAX_MANIFEST_BYTES = 16 << 20
_MAX_HEADER_BYTES = 100 << 20
_CHUNK = 1 << 20


class BadSave(VfxSwapError):
    """One save (top level or a backup) is incomplete or corrupt; loading may try an older one."""


# ----------------------------------------------------------------------------------------------
# hashing


# sha256 of files this process has hashed or written, keyed by (dev, inode, size, mtime, ctime):
# any write to a file changes its ctime, so a hit means unchanged content. It saves re-hashing the
# previous save (gigabytes for a 512 px model) at every save.
_HASHES: OrderedDict[tuple, str] = OrderedDict()


def _stat_key(path: Path) -> tuple:
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def remember_hash(path: Path, sha: str) -> None:
    """Record `sha` as the content hash of `path` as it is now (after a rename changed its ctime)."""
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


# ----------------------------------------------------------------------------------------------
# safetensors files


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> tuple[str, int]:
    """Write, fsync and hash one safetensors file -> (sha256, bytes). The save sequence's writer."""
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata=metadata)
    fsync_file(path)
    return sha256_file(path), path.stat().st_size


def read_safetensors(path: Path, *, device: str = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and str->str metadata of a (verified) safetensors file; parse errors name the file."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            meta = f.metadata() or {}
            return {k: f.get_tensor(k) for k in f.keys()}, meta
    except Exception as e:  # SafetensorError, OSError, ...: one line naming the file
        raise VfxSwapError(f"{path}: not a readable safetensors file ({type(e).__name__}: {e})") from None


def read_header(path: Path) -> dict:
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


def unshare(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
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


def extra_tensor_names(meta: dict[str, str], where: Path) -> set[str]:
    """The names a weights file's metadata lists as extra tensors (not the model's, e.g. "disc.*")."""
    try:
        names = json.loads(meta.get("extra_tensors", "[]"))
    except json.JSONDecodeError:
        raise VfxSwapError(f"{where}: unreadable extra_tensors metadata") from None
    return set(names)


# ----------------------------------------------------------------------------------------------
# manifests and verification


def read_manifest(path: Path) -> dict:
    """Parse and sanity-check a manifest. A missing/unreadable one is a BadSave (an older save may
    do); a readable manifest of another format or a newer version is refused outright."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise BadSave(f"{path}: missing") from None
    if size > _MAX_MANIFEST_BYTES:
        raise BadSave(f"{path}: {size} bytes is too large for a model manifest")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadSave(f"{path}: unreadable ({type(e).__name__}: {e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise VfxSwapError(f"{path}: not a vfxswap model manifest (format {got!r}, expected {FORMAT!r})")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise VfxSwapError(f"{path}: model format_version {version!r} is newer than this vfxswap "
                           f"({__version__}) reads ({FORMAT_VERSION}); update vfxswap")
    files = manifest.get("files")
    if not isinstance(files, dict) or "weights" not in files:
        raise BadSave(f"{path}: names no weights file")
    for label, entry in files.items():
        if not (isinstance(entry, dict) and isinstance(entry.get("name"), str) and isinstance(entry.get("sha256"), str)
                and isinstance(entry.get("bytes"), int)):
            raise BadSave(f"{path}: files.{label} is malformed")
        name = entry["name"]
        if Path(name).name != name or name.startswith(".") or not name.endswith(".safetensors") or "\\" in name:
            raise BadSave(f"{path}: files.{label} names {name!r}; only plain .safetensors names are opened")
    # the fields every reader relies on (a hand edit can break them): named here, not a traceback later
    iteration = manifest.get("iteration")
    if isinstance(iteration, bool) or not isinstance(iteration, int) or iteration < 0:
        raise BadSave(f"{path}: iteration {iteration!r} is not a whole number of iterations")
    if not isinstance(manifest.get("config"), dict):
        raise BadSave(f"{path}: config is not an object of model settings")
    identities = manifest.get("identities", {})
    if not (isinstance(identities, dict) and all(isinstance(v, dict) for v in identities.values())):
        raise BadSave(f"{path}: identities is not an object of identity records")
    return manifest


def verify_save(folder: Path, manifest: dict, *, cached: bool) -> None:
    """Every file the manifest names exists with its recorded size and sha256, else BadSave naming it."""
    for entry in manifest["files"].values():
        path = folder / entry["name"]
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise BadSave(f"{path}: missing (named in {folder / MANIFEST})") from None
        if size != entry["bytes"]:
            raise BadSave(f"{path}: {size} bytes, the manifest says {entry['bytes']} (truncated or replaced)")
        if sha256_file(path, cached=cached) != entry["sha256"]:
            raise BadSave(f"{path}: sha256 does not match the manifest (corrupt or replaced)")


def backup_dirs(folder: Path) -> list[tuple[int, Path]]:
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
        manifest = read_manifest(folder / MANIFEST)
        verify_save(folder, manifest, cached=cached)
        return folder, manifest
    except BadSave as e:
        problem = str(e)
    backups = backup_dirs(folder)
    if not (folder / MANIFEST).exists() and not backups:
        raise VfxSwapError(f"{folder}: not a vfxswap model folder (no {MANIFEST})")
    if strict:
        raise VfxSwapError(problem)
    for iteration, path in backups:
        try:
            manifest = read_manifest(path / MANIFEST)
            verify_save(path, manifest, cached=cached)
        except VfxSwapError as e:
            log.warning("model backup %s is unusable too: %s", path, e)
            continue
        log.warning("%s; loading the newest complete backup instead: %s (iteration %d)", problem, path, iteration)
        return path, manifest
    raise VfxSwapError(f"{problem} (and no complete backup in {folder / BACKUPS})")
