"""`--init-from`: start a new model from parts of a saved one (transfer learning), optionally
frozen. A part is a state-dict prefix, so it works for every architecture's parts."""

from __future__ import annotations

import os

import torch
from torch import nn

from vfxswap.errors import VfxSwapError
from vfxswap.models.fileformat import extra_tensor_names, locate_save, read_safetensors
from vfxswap.models.store import unwrap_model


def init_from(model: nn.Module, source_folder: str | os.PathLike, parts: list[str] | tuple[str, ...], *,
              freeze: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Copy the named parts' weights from another model folder into `model`, then freeze `freeze`.

    A part is a state-dict prefix ("encoder" copies every "encoder.*" tensor). All checks run
    before anything is copied: a part absent on either side, a tensor only one side has, or a shape
    mismatch raises VfxSwapError naming it. Returns the names copied.
    """
    model = unwrap_model(model)
    where, manifest = locate_save(source_folder)
    path = where / manifest["files"]["weights"]["name"]
    source, meta = read_safetensors(path)
    extra = extra_tensor_names(meta, path)
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
