"""`vfxswap demo`: the whole job on material that ships with the installed packages.

The only photographic face that ships with them is scikit-image's public-domain portrait of
astronaut Eileen Collins, so the demo is a *self-swap*: the model learns her from stills
(identity A) and from the plate (identity B) and renders B's frames as A. It exercises every
stage a real swap uses (an HDR ACEScg plate, extraction, training, render, comp, preview) and
the comp should look like the plate; with two consenting performers' facesets, the same
commands make a real swap.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import cv2
import numpy as np

from vfxswap.errors import VfxSwapError

log = logging.getLogger("vfxswap")
SHARPEN = 0.7  # share of the iterations without the random warp (measured: 0.4 scored 25.5 dB, 0.7 26.0)
RELEASE_REF = "public domain: NASA portrait of Eileen Collins (scikit-image astronaut); demo only"


def _astronaut_linear() -> np.ndarray:
    import skimage.data

    from vfxswap.color import ColorPipeline

    srgb = skimage.data.astronaut().astype(np.float32) / 255.0
    pipe = ColorPipeline("sRGB Encoded Rec.709 (sRGB)")
    return np.clip(pipe.convert(srgb, "sRGB Encoded Rec.709 (sRGB)", "ACEScg"), 0.0, None)


def make_plates(folder: Path, frames: int, first: int = 1001) -> str:
    """A short HDR shot: the portrait drifting and breathing in exposure on a 640x360 ACEScg
    plate, with a practical light well above display white in frame."""
    from vfxswap.plates import Image, write_image

    face = cv2.resize(_astronaut_linear(), (360, 360), interpolation=cv2.INTER_AREA)
    for i in range(frames):
        canvas = np.full((360, 640, 3), 0.04, np.float32)
        x = 120 + 3 * i
        canvas[:, x:x + 360] = face * 2.0 ** (0.4 * np.sin(i / 4.0))
        cv2.circle(canvas, (600, 40), 18, (16.0, 14.0, 11.0), -1)  # a lamp: HDR values
        img = Image.from_array(np.concatenate([canvas, np.ones((360, 640, 1), np.float32)], 2))
        img.set_attribute("oiio:ColorSpace", "ACEScg")
        img.set_attribute("framesPerSecond", (24, 1), "rational")
        img.set_attribute("smpte:TimeCode", (0x01000000 + ((i // 10) << 4 | i % 10), 0), "timecode")
        write_image(folder / f"plate.{first + i}.exr", img)
    return str(folder / "plate.####.exr")


def make_stills(folder: Path, count: int = 16) -> str:
    """Identity A: varied stills of the same portrait (scale, rotation, exposure, mirror)."""
    from vfxswap.plates import Image, write_image

    base = _astronaut_linear()
    rng = np.random.default_rng(7)
    for i in range(count):
        angle, scale = rng.uniform(-12, 12), rng.uniform(0.9, 1.15)
        m = cv2.getRotationMatrix2D((256, 256), angle, scale)
        img = cv2.warpAffine(base, m, (512, 512), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
        img = img * 2.0 ** rng.uniform(-0.5, 0.5)
        if i % 2:
            img = img[:, ::-1]
        still = Image.from_array(np.ascontiguousarray(img))
        still.set_attribute("oiio:ColorSpace", "ACEScg")
        write_image(folder / f"still_{i:02d}.exr", still)
    return str(folder)


def run(out: str = "vfxswap-demo", frames: int = 24, iters: int = 600, batch: int = 4) -> dict:
    """Plates, facesets, a quick model, face layers, comp and preview under `out`."""
    from vfxswap.faces.extract import extract
    from vfxswap.jobspec import ExtractOptions, RenderOptions, TrainOptions
    from vfxswap.render.render import render
    from vfxswap.train.trainer import train

    for name, value, least in (("--frames", frames, 2), ("--iters", iters, 1), ("--batch", batch, 1)):
        if value < least:  # before anything is made, not after a minute of extraction
            raise VfxSwapError(f"{name} {value}: must be at least {least}")
    root = Path(out)
    started = time.time()
    step = lambda what: print(f"[{time.time() - started:6.1f} s] {what}", flush=True)
    step("making an HDR ACEScg plate and identity stills")
    plates = make_plates(root / "plates", frames)
    stills = make_stills(root / "stills")
    step("extracting faces (identity A from stills, identity B from the plate)")
    extract(stills, str(root / "facesets" / "A"), ExtractOptions(size=128))  # the default backend (mesh)
    extract(plates, str(root / "facesets" / "B"), ExtractOptions(size=128))
    # DeepFaceLab's recipe, shortened: the random warp first (the shared encoder learns faces, not
    # pixels), then a long sharpening phase without it (--sharpen); batches of 4, so twice the
    # updates of 8 for the same pixels. Measured on the comp against the plate (display PSNR in the
    # alpha): 250 x 8 with warp throughout 23.7 dB, a blurred blob; 600 x 4, 70% sharpening, 26.0 dB,
    # eyes and mouth in place.
    step(f"training a quick model for {iters} iterations on {'the GPU' if _cuda() else 'the CPU'} "
         f"(the last {SHARPEN:.0%} sharpening without the random warp)")
    train(TrainOptions(src=str(root / "facesets" / "A"), dst=str(root / "facesets" / "B"),
                       model_dir=str(root / "model"), release_ref=RELEASE_REF,
                       name_src="Eileen Collins (stills)", name_dst="Eileen Collins (plate)",
                       preset="quick", iters=iters, batch=batch, lr=3e-4, warmup=20, workers=0, sharpen=SHARPEN,
                       preview_every=max(1, iters // 2), save_every=max(1, iters), log_every=10,
                       resume=(root / "model" / "manifest.json").exists()))
    step("rendering face layers, comp and preview")
    report = render(RenderOptions(model=str(root / "model"), plates=plates, faceset=str(root / "facesets" / "B"),
                                  out=str(root / "render"), layers=True, comp=True, preview=True, skip_existing=False))
    step("done")
    where = {"plates": plates, "face layers": str(root / "render" / "face.####.exr"),
             "comp": str(root / "render" / "comp.####.exr"), "preview": str(root / "render" / "preview.mp4"),
             "training previews": str(root / "model" / "previews"), "model": str(root / "model")}
    print("\nwhere to look:")
    for k, v in where.items():
        print(f"  {k:<18} {v}")
    print(f"\nrendered {len(report.written)} frame(s); every file is marked as synthetic imagery in its header")
    return where


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()
