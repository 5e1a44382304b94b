"""`vfxswap model info`: a summary of a model folder from its manifest, the safetensors headers
and the tail of its history, and what render outputs record about the model (`release_refs`).
Reads no tensor data and imports no torch."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from vfxswap.errors import VfxSwapError
from vfxswap.models.fileformat import (HISTORY, MANIFEST, BadSave, backup_dirs, locate_save, read_header,
                                       read_manifest)


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
        where, manifest = folder, read_manifest(folder / MANIFEST)
    except BadSave:
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
                header = read_header(path)
            except VfxSwapError:
                continue
            extra = set(json.loads((header.get("__metadata__") or {}).get("extra_tensors", "[]")))
            counts = {k: int(math.prod(v["shape"])) for k, v in header.items() if k != "__metadata__"}
            params = sum(n for k, n in counts.items() if k not in extra)
            extra_params = sum(n for k, n in counts.items() if k in extra)
    info = {"folder": str(folder), "loaded_from": str(where), "model_id": manifest.get("model_id"),
            "vfxswap": manifest.get("vfxswap"), "format_version": manifest.get("format_version"),
            "arch": config.get("arch"), "variants": config.get("variants", ""), "resolution": config.get("resolution"),
            "face_type": config.get("face_type"),
            "dims": {k: config.get(k) for k in ("ae_dims", "e_dims", "d_dims", "d_mask_dims", "max_dims")},
            "identities": manifest.get("identities", {}), "release_refs": release_refs(manifest),
            "colour": manifest.get("colour", {}), "iteration": manifest.get("iteration"),
            "params": params, "extra_params": extra_params, "files": files,
            "backups": [it for it, _ in backup_dirs(folder)], "created": manifest.get("created"),
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
             f"mask {dims.get('d_mask_dims')}" + (f"  max {dims['max_dims']}" if dims.get("max_dims") else ""),
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
