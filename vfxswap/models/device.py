"""Which torch device and number format to run a model in: one home for training and rendering."""

from __future__ import annotations

import platform
from functools import lru_cache

import torch

from vfxswap.errors import VfxSwapError


def pick_device(name: str | torch.device) -> torch.device:
    """A torch device from a user's word: "auto" is CUDA when this machine has it, else the CPU;
    asking for CUDA where there is none is one clear error, not a CUDA stack trace later."""
    name = str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise VfxSwapError(f"--device {name}: CUDA is not available on this machine")
    try:
        return torch.device(name)
    except RuntimeError:
        raise VfxSwapError(f"--device {name}: not a device (auto, cpu, cuda or cuda:N)") from None


def bf16_by_default(device: torch.device) -> bool:
    """Train under bf16 autocast unless asked otherwise? Only where bf16 arithmetic is in
    hardware: GPUs from Ampere on, CPUs with AMX-BF16 or AVX512-BF16 (about twice as fast there).
    Elsewhere bf16 is emulated and slower than fp32, so fp32 it is."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.get_device_capability(device) >= (8, 0)
    return device.type == "cpu" and bool(cpu_bf16_flags())


@lru_cache(maxsize=1)
def cpu_bf16_flags() -> tuple[str, ...]:
    """The CPU's native bf16 features as /proc/cpuinfo names them (Linux x86); () when none or unknown."""
    if platform.system() != "Linux":
        return ()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return tuple(sorted({"amx_bf16", "avx512_bf16"} & set(line.split(":", 1)[1].split())))
    except OSError:
        pass
    return ()
