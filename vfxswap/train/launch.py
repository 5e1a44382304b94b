"""`vfxswap train --gpus N` on one node: the same command as N DDP processes under torchrun."""

from __future__ import annotations

import os
import signal
import subprocess
import sys


def under_torchrun(argv: list[str], gpus: int) -> int:
    """Run this same `vfxswap <argv>` command as `gpus` DDP processes on this node (torchrun
    --standalone: NCCL on GPUs, gloo on CPU); returns torchrun's exit code."""
    from vfxswap.farm.bundle import TRAIN_GRACE_S

    for i, arg in enumerate(argv):  # drop --gpus N / --gpus=N so the workers do not relaunch
        if arg == "--gpus":
            argv = argv[:i] + argv[i + 2:]
            break
        if arg.startswith("--gpus="):
            argv = argv[:i] + argv[i + 1:]
            break
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
