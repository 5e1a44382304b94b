"""Training state beside the weights: the optimizer's state and the RNG states, as safetensors
tensors plus JSON metadata (never pickled), and loading them back from a save.

`store.save_model(..., optimizer=, rng=rng_state())` writes them in the same kill-safe save as the
weights (optimizer.safetensors, rng.safetensors); `load_training_state` reads them from the save
`store.load_model` loads, and `restore_rng` puts the RNGs back, so a resumed run continues as the
unbroken one would have.

The RNG state also carries the trainer's progress under `PROGRESS` (the learning-rate factor of
its roll-backs, each data stream's position): the rest of what a resume needs to continue exactly,
saved in the same commit as the weights and, like the RNGs, of no use to anything but a resume.
"""

from __future__ import annotations

import json
import logging
import os
import random
from typing import Any

import numpy as np
import torch
from torch import nn

from vfxswap.errors import VfxSwapError
from vfxswap.models.fileformat import MANIFEST, locate_save, read_safetensors, unshare

log = logging.getLogger(__name__)

PROGRESS = "progress"  # key of the trainer's progress in the saved RNG state (restore_rng ignores it)


# ----------------------------------------------------------------------------------------------
# JSON-safe encoding of nested state (optimizer state dicts, RNG states)


def encode_state(value: Any, name: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Nested value -> JSON-safe structure; tensors go to `tensors` under their dotted path name.

    Tuples, non-string dict keys and numpy arrays are tagged so `decode_state` restores them exactly.
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
        return {"__tuple__": [encode_state(v, f"{name}.{i}", tensors) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [encode_state(v, f"{name}.{i}", tensors) for i, v in enumerate(value)]
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value) and not any(k.startswith("__") for k in value):
            return {k: encode_state(v, f"{name}.{k}" if name else k, tensors) for k, v in value.items()}
        return {"__items__": [[encode_state(k, "", {}), encode_state(v, f"{name}.{k}" if name else str(k), tensors)]
                              for k, v in value.items()]}
    raise TypeError(f"cannot store {type(value).__name__} at {name!r} (tensors, numbers, strings, lists, dicts only)")


def decode_state(value: Any, tensors: dict[str, torch.Tensor], where: str) -> Any:
    if isinstance(value, list):
        return [decode_state(v, tensors, where) for v in value]
    if not isinstance(value, dict):
        return value
    if "__tensor__" in value:
        try:
            return tensors[value["__tensor__"]]
        except KeyError:
            raise VfxSwapError(f"{where}: tensor {value['__tensor__']!r} named in the metadata is missing") from None
    if "__tuple__" in value:
        return tuple(decode_state(v, tensors, where) for v in value["__tuple__"])
    if "__ndarray__" in value:
        return np.array(value["__ndarray__"], dtype=value["dtype"]).reshape(value["shape"])
    if "__items__" in value:
        return {decode_state(k, tensors, where): decode_state(v, tensors, where) for k, v in value["__items__"]}
    return {k: decode_state(v, tensors, where) for k, v in value.items()}


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
            "state": encode_state(sd["state"], "state", tensors),
            "param_groups": encode_state(sd["param_groups"], "param_groups", tensors)}
    return unshare(tensors), meta


def tensors_to_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict,
                         *, where: str = "optimizer state") -> None:
    """Inverse of `optimizer_to_tensors`: load the stored state into `optimizer` (same param layout)."""
    kind = meta.get("optimizer")
    if kind != type(optimizer).__name__:
        raise VfxSwapError(f"{where}: saved for optimizer {kind}, not {type(optimizer).__name__}")
    sd = {"state": decode_state(meta["state"], tensors, where),
          "param_groups": decode_state(meta["param_groups"], tensors, where)}
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
# load


def load_training_state(folder: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer | None, *,
                        device: str | torch.device | None = None, strict: bool = False) -> dict:
    """Load the optimizer state of the save `load_model` loads into `optimizer`; return its RNG state
    dict (empty when none was saved) for `restore_rng`, with the trainer's progress under `PROGRESS`
    when it saved one. `model` is unused beyond the signature's symmetry; the optimizer must hold
    that model's parameters in the saved order."""
    del model, device  # optimizer.load_state_dict puts the state on its parameters' devices
    where, manifest = locate_save(folder, strict=strict, cached=True)
    files = manifest["files"]
    if optimizer is not None:
        if "optimizer" not in files:
            raise VfxSwapError(f"{where / MANIFEST}: this save has no optimizer state")
        path = where / files["optimizer"]["name"]
        tensors, meta = read_safetensors(path)
        try:
            decoded = json.loads(meta["meta"])
        except (KeyError, json.JSONDecodeError):
            raise VfxSwapError(f"{path}: no optimizer metadata") from None
        tensors_to_optimizer(optimizer, tensors, decoded, where=str(path))
    if "rng" not in files:
        return {}
    path = where / files["rng"]["name"]
    tensors, meta = read_safetensors(path)
    try:
        return decode_state(json.loads(meta["meta"]), tensors, str(path))
    except (KeyError, json.JSONDecodeError):
        raise VfxSwapError(f"{path}: no RNG metadata") from None
