"""Atomic file writes: a killed job never leaves a truncated file under the final name.

Everything vfxswap writes (frames, checkpoints, manifests) goes to a hidden temporary file in
the same folder and is renamed over the final name in one step, so a job killed at any moment
(the farm's usual way to stop a task) leaves either the old file or the new one, never a part.
`durable` also fsyncs before the rename, which guards against an OS crash or power cut too:
checkpoints and manifests use it; image frames do not by default (about 15-20 ms per 1080p
frame here, more on network storage), and a resumed render re-checks frames it skips.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import uuid
from pathlib import Path

TEMP_MARK = ".vfxswap-tmp"
_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"
_OWNER = re.compile(r"\.([A-Za-z0-9-]+)-(\d+)" + re.escape(TEMP_MARK))


def temp_path_for(final: str | os.PathLike) -> Path:
    """A hidden sibling of `final` that keeps its extension (writers pick formats by it) and
    names its writer (host and pid), so a later run can tell a dead writer's leftover from a
    file another process is still writing."""
    final = Path(final)
    return final.with_name(f".{final.stem}.{uuid.uuid4().hex[:12]}.{_HOST}-{os.getpid()}{TEMP_MARK}{final.suffix}")


def is_temp_path(path: str | os.PathLike) -> bool:
    return TEMP_MARK in Path(path).name


def temp_owner(path: str | os.PathLike) -> tuple[str, int] | None:
    """(host, pid) of the process that wrote a temporary file, when its name says so."""
    match = _OWNER.search(Path(path).name)
    return (match.group(1), int(match.group(2))) if match else None


def is_orphan_temp(path: str | os.PathLike) -> bool:
    """A temporary file whose writer was on this host and is gone (killed mid-write): safe to
    delete. Files of other hosts are never judged here, since their writer may be running."""
    owner = temp_owner(path)
    return owner is not None and owner[0] == _HOST and not process_alive(owner[1])


def process_alive(pid: int) -> bool:
    """Whether process `pid` on this host still runs (another user's counts; a zombie does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (OSError, IndexError):
        return True


def remove_orphan_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete the orphaned temporary files in `folder` (not below); returns what was removed."""
    removed = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(folder):
            if entry.is_file() and is_temp_path(entry.name) and is_orphan_temp(entry.path):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make renames in `path` durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike, *, durable: bool = True):
    """Yield a temporary path to write; on success it replaces `final`, on error it is removed.

    `durable` fsyncs the file before the rename so a power cut cannot publish an empty file.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(final)
    try:
        yield tmp
        if durable:
            fsync_file(tmp)
        os.replace(tmp, final)
        if durable:
            fsync_dir(final.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_bytes(final: str | os.PathLike, data: bytes) -> None:
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)


def write_text(final: str | os.PathLike, text: str) -> None:
    write_bytes(final, text.encode("utf-8"))
