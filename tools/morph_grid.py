"""A preview grid of an amp model's morph (`vfxswap render --morph`): one row per destination (B)
face, a column of B's input, then the swap at each morph (0: B's own face reconstructed ... 1: the
full swap), and A's faces last for reference. Faces are taken evenly through each faceset,
unaugmented, as the training previews take them; the grid is shown through the same display view.

    python tools/morph_grid.py MODEL OUT.png [--faceset B] [--src-faceset A] [--morphs 0,0.25,0.5,0.75,1] [--rows 4]

The facesets default to the ones the model's manifest records.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from vfxswap.errors import VfxSwapError
from vfxswap.models import MORPHING_ARCHITECTURES
from vfxswap.models.amp import check_morph
from vfxswap.models.store import load_model
from vfxswap.train.data import FaceSamples
from vfxswap.train.preview import preview_grid


def spread_faces(folder: str, config, count: int) -> torch.Tensor:
    """`count` faces evenly through a faceset, unaugmented, at the model's resolution and face type."""
    ds = FaceSamples(folder, config.resolution, face_type=config.face_type, augment=False, warp=False, flip=False)
    idx = np.linspace(0, len(ds) - 1, min(count, len(ds))).astype(int)
    return torch.stack([ds[int(i)]["target"] for i in idx])


def morph_grid(model_dir: str, out: str, *, faceset: str | None = None, src_faceset: str | None = None,
               morphs=(0.0, 0.25, 0.5, 0.75, 1.0), rows: int = 4) -> Path:
    model, manifest = load_model(model_dir)
    if model.config.arch not in MORPHING_ARCHITECTURES:
        raise VfxSwapError(f"{model_dir}: a {model.config.arch} model does not morph (train one with --arch amp)")
    model.eval()
    identities = manifest.get("identities", {})
    b = spread_faces(faceset or identities["B"]["faceset"], model.config, rows)
    columns = {"B": b}
    with torch.no_grad():
        for t in morphs:
            columns[f"{t:g}"] = model.swap(b, "A", morph=check_morph(t, "--morphs"))[0]  # headed by the morph
    a_folder = identities.get("A", {}).get("faceset") if src_faceset is None else src_faceset
    if a_folder:
        columns["A (ref)"] = spread_faces(a_folder, model.config, rows)
    return preview_grid({k: v.float() for k, v in columns.items()}, out, max_rows=rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="amp model folder")
    ap.add_argument("out", help="PNG to write")
    ap.add_argument("--faceset", help="destination (B) faces (default: B's faceset in the manifest)")
    ap.add_argument("--src-faceset", help="A faces for the reference column (default: A's in the manifest; '' none)")
    ap.add_argument("--morphs", default="0,0.25,0.5,0.75,1", help="comma-separated morphs, 0..1")
    ap.add_argument("--rows", type=int, default=4, help="B faces (rows)")
    args = ap.parse_args(argv)
    try:
        morphs = [float(m) for m in args.morphs.split(",") if m.strip()]
        path = morph_grid(args.model, args.out, faceset=args.faceset, src_faceset=args.src_faceset, morphs=morphs,
                          rows=max(1, args.rows))
    except (VfxSwapError, ValueError) as exc:
        print(f"morph_grid: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
