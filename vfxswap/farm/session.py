"""A render engine kept alive for one farm session, so the model loads once, not once a chunk.

An OpenJD step environment's onEnter starts the engine (`vfxswap farm session start DIR --
render ARGS`): a detached process that imports torch, loads the model, the faceset's landmarks
for the whole range and the OCIO config, then listens on 127.0.0.1. Each chunk task (`vfxswap
farm session render DIR --frames 1001-1010`) sends its frames and prints the engine's progress
events as they come, so the task log reads as a plain render's. onExit stops it; it also stops by
itself when idle or when the session folder goes away (an agent that died without onExit).

The wire is newline-delimited JSON with a random token kept in a 0600 file in the session
folder: nothing is unpickled. A task whose engine is gone (crashed, killed) renders its chunk
in-process instead, with the same arguments, so a retry never depends on the engine.
A task cancelled mid-chunk closes its connection; the engine notices at the next frame event and
stops, leaving only whole frames (every write is atomic).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

from vfxswap.atomic import process_alive
from vfxswap.errors import VfxSwapError
from vfxswap.plates.frames import parse_frames

log = logging.getLogger("vfxswap")
STATE = "vfxswap-engine.json"
LOG = "vfxswap-engine.log"


class _ClientGone(Exception):
    """The task on the other end went away (cancelled): stop after the frame in hand."""


def start(session_dir: str | Path, render_argv: list[str], *, idle_timeout: float = 900.0,
          ready_timeout: float = 600.0) -> dict:
    """Start a detached engine for `vfxswap render <render_argv>` and wait until it listens."""
    folder = Path(session_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / STATE).unlink(missing_ok=True)
    with open(folder / LOG, "ab") as logfile:
        proc = subprocess.Popen([sys.executable, "-m", "vfxswap", "farm", "session", "serve",
                                 "--idle-timeout", str(idle_timeout), str(folder), "--", *render_argv],
                                stdin=subprocess.DEVNULL, stdout=logfile, stderr=logfile, start_new_session=True)
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        state = _read_state(folder)
        if state is not None and state["pid"] == proc.pid:
            return state
        if proc.poll() is not None:
            tail = (folder / LOG).read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
            raise VfxSwapError(f"render engine for {folder} stopped while loading: {tail[0]}")
        time.sleep(0.1)
    proc.kill()
    raise VfxSwapError(f"render engine for {folder} was not ready in {ready_timeout:.0f} s (see {folder / LOG})")


def serve(session_dir: str | Path, render_argv: list[str], *, idle_timeout: float = 900.0) -> int:
    """The engine's own loop (run by `start` in a detached process)."""
    from vfxswap.jobspec import RenderOptions, from_argv
    from vfxswap.render.render import Renderer

    folder = Path(session_dir)
    renderer = Renderer(from_argv(RenderOptions, render_argv))
    token = secrets.token_hex(16)
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(2.0)
    state = {"pid": os.getpid(), "port": server.getsockname()[1], "token": token, "render": render_argv}
    tmp = folder / f".{STATE}.{os.getpid()}"
    tmp.write_text(json.dumps(state))
    os.chmod(tmp, 0o600)
    os.replace(tmp, folder / STATE)
    log.info("engine ready on port %d for %s", state["port"], renderer.opt.out)
    idle_since = time.monotonic()
    while True:
        if not (folder / STATE).exists() or time.monotonic() - idle_since > idle_timeout:
            log.info("engine stopping: %s", "session folder gone" if not (folder / STATE).exists() else "idle")
            return 0
        try:
            conn, _ = server.accept()
        except socket.timeout:
            continue
        with conn:
            conn.settimeout(None)
            request = _read_line(conn)
            if not request or request.get("token") != token:
                continue
            if request.get("stop"):
                (folder / STATE).unlink(missing_ok=True)
                _send(conn, {"event": "stopped"})
                return 0
            _serve_chunk(conn, renderer, request.get("frames", ""))
        idle_since = time.monotonic()


def _serve_chunk(conn: socket.socket, renderer, frames_text: str) -> None:
    def emit(event: dict) -> None:
        try:
            _send(conn, event)
        except OSError as exc:
            raise _ClientGone() from exc

    try:
        report = renderer.run(on_event=emit, frames=parse_frames(frames_text))
        code = 1 if report.failed else 0
    except _ClientGone:
        log.info("chunk %s cancelled by its task", frames_text)
        return
    except VfxSwapError as exc:
        code = 1
        emit({"event": "error", "message": str(exc)})
    try:
        _send(conn, {"event": "exit", "code": code})
    except OSError:
        pass


def render_chunk(session_dir: str | Path, frames: str, *, out=None) -> int:
    """Render `frames` through the session's engine, printing its events; in-process when the
    engine is gone. Returns the exit code of the chunk."""
    folder = Path(session_dir)
    state = _read_state(folder)
    if state is None:
        raise VfxSwapError(f"{folder}: no render engine session here (did the step environment start?)")
    parse_frames(frames)
    try:
        conn = socket.create_connection(("127.0.0.1", state["port"]), timeout=10)
    except OSError:
        return _in_process(state, frames, "the engine is not answering", out)
    with conn:
        conn.settimeout(None)
        _send(conn, {"token": state["token"], "frames": frames})
        stream = conn.makefile("r", encoding="utf-8")
        for line in stream:
            event = json.loads(line)
            if event.get("event") == "exit":
                return int(event["code"])
            if event.get("event") == "error":
                raise VfxSwapError(event["message"])
            print(json.dumps(event), file=out or sys.stdout, flush=True)
    # the engine died mid-chunk: whatever it finished is whole; render the rest here
    return _in_process(state, frames, "the engine stopped mid-chunk", out)


def stop(session_dir: str | Path, *, wait: float = 30.0) -> bool:
    """Ask the engine to stop; True when one was running."""
    folder = Path(session_dir)
    state = _read_state(folder)
    if state is None:
        return False
    try:
        with socket.create_connection(("127.0.0.1", state["port"]), timeout=10) as conn:
            _send(conn, {"token": state["token"], "stop": True})
            conn.makefile("r").readline()
    except OSError:
        pass
    (folder / STATE).unlink(missing_ok=True)  # a hung engine sees this and leaves within seconds
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and process_alive(state["pid"]):
        time.sleep(0.1)
    return True


def _in_process(state: dict, frames: str, why: str, out=None) -> int:
    """The chunk rendered by this task itself, with the session's options and this chunk's frames,
    its events printed as the engine would have sent them."""
    from dataclasses import replace

    from vfxswap.jobspec import RenderOptions, from_argv
    from vfxswap.render.render import render

    print(f"vfxswap: {why}; rendering frames {frames} in this task", file=sys.stderr)
    options = replace(from_argv(RenderOptions, state["render"]), frames=frames)
    report = render(options, on_event=lambda event: print(json.dumps(event), file=out or sys.stdout, flush=True))
    return 1 if report.failed else 0


def _read_state(folder: Path) -> dict | None:
    try:
        return json.loads((folder / STATE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _send(conn: socket.socket, message: dict) -> None:
    conn.sendall((json.dumps(message) + "\n").encode("utf-8"))


def _read_line(conn: socket.socket) -> dict | None:
    data = b""
    while not data.endswith(b"\n") and len(data) < 65536:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    try:
        return json.loads(data)
    except json.JSONDecodeError:
        return None
