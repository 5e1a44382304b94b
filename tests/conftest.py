"""Shared fixtures: the real test data beside the project, and small synthetic images.

Real data lives in `../shared/data` (see its SOURCES.md), or wherever `VFXSWAP_SHARED_DATA`
points. It is not part of the product: a fresh clone has no `../shared`, so every test that
needs it skips cleanly when it is absent, unless `VFXSWAP_REQUIRE_DATA=1` is set (CI sets it):
then a missing folder or file fails the test instead, so data that went missing cannot turn
into a quietly green run. Every such skip goes through `need_shared`. Nothing from there is
ever copied into the repository.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

SHARED_DATA = Path(os.environ.get("VFXSWAP_SHARED_DATA")
                   or Path(__file__).resolve().parents[1].parent / "shared" / "data")
REQUIRE_DATA = os.environ.get("VFXSWAP_REQUIRE_DATA", "").strip().lower() not in ("", "0", "false", "no")


def need_shared(reason: str):
    """The one way a test gives up for want of shared data: a skip, or with
    VFXSWAP_REQUIRE_DATA=1 a failure naming what is missing. Never returns."""
    if REQUIRE_DATA:
        pytest.fail(f"{reason} (VFXSWAP_REQUIRE_DATA=1: shared data is required here; "
                    f"shared data folder: {SHARED_DATA})", pytrace=False)
    skip = pytest.skip.Exception(reason)
    skip._use_item_location = True  # `-ra` names the test, not this line (as for a skip in a fixture)
    raise skip


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared real-data folder; the test is skipped (or failed, see `need_shared`) when it is absent."""
    if not SHARED_DATA.is_dir():
        need_shared(f"shared test data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def shared_file(shared_data):
    """`shared_file("exr/marcie/x.exr")` -> its path; the test is skipped (or failed, see
    `need_shared`) when that file is absent."""

    def get(relative: str) -> Path:
        path = shared_data / relative
        if not path.exists():
            need_shared(f"shared test file {relative} not found under {shared_data}")
        return path

    return get


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def smooth_rgb() -> np.ndarray:
    """A smooth (48, 64, 3) float32 gradient in 0-1: friendly to lossy codecs and quantisers."""
    y, x = np.mgrid[0:48, 0:64].astype(np.float32)
    r = 0.05 + 0.9 * x / 63
    g = 0.1 + 0.8 * y / 47
    b = 0.5 + 0.4 * np.sin(x / 9.0) * np.cos(y / 7.0)
    return np.ascontiguousarray(np.stack([r, g, b], -1), dtype=np.float32)


# --- a synthetic faceset, written through the store API (no shared data needed) -------------

SIZE = 64
YAWS = [-42.0, -3.0, -1.0, 2.0, 4.0, 5.0, 6.0, 8.0, 12.0, 15.0, 33.0, None]


def write_faceset(folder, yaws=YAWS, size=SIZE, face_type="whole_face", seed=7):
    """A faceset of len(yaws) synthetic faces: textured HDR-ish pixels, jittered template landmarks."""
    from vfxswap.faces.align import template_points
    from vfxswap.faceset import Faceset, FaceRow
    from vfxswap.masks.hull import hull_mask
    from vfxswap.plates import Image, write_image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    with Faceset(folder, create=True) as fs:
        fs.check_settings(face_type=face_type, size=size, encoding="acescct-norm")
        for i, yaw in enumerate(yaws):
            pts = (template_points(size, face_type) + rng.normal(0, 0.6, (68, 2))).astype(np.float32)
            f = rng.uniform(3, 9, 3)
            rgb = np.stack([0.45 + 0.3 * np.sin(f[c] * x + 2 * c) * np.cos(f[(c + 1) % 3] * y) for c in range(3)], -1)
            rgb += rng.normal(0, 0.05, rgb.shape)  # texture, so warps are visible
            rgb[size // 3, size // 3] = 1.6  # a highlight above 1 (model encoding is not clipped)
            masks = [hull_mask(pts, (size, size), k) for k in ("components", "extended")]
            px = np.concatenate([rgb, masks[0][..., None], masks[1][..., None]], 2).astype(np.float32)
            rel = f"faces/syn_{i:06d}_0.exr"
            write_image(fs.folder / rel, Image.from_array(px, ("R", "G", "B", "components.Y", "extended.Y")))
            row = FaceRow(source="syn", frame=i, face_index=0, box=np.array([0, 0, size, size], np.float32),
                          landmarks_raw=pts, landmarks=pts, aligned_landmarks=pts, matrix=np.eye(2, 3),
                          face_type=face_type, size=size, image=rel, yaw=yaw, track_id=0)
            fs.record_detections("syn", i, [row])
    return folder




def write_seg_mattes(folder) -> None:
    """Give every face of a faceset a segmentation matte, as `vfxswap masks apply` stores them: its
    extended hull less a bar across the mouth (an occluder the hull would keep)."""
    from vfxswap.faceset import Faceset
    from vfxswap.masks.hull import hull_mask
    from vfxswap.masks.labels import write_matte

    with Faceset(folder) as fs:
        rows = fs.faces()
        for row in rows:
            matte = hull_mask(row.aligned_landmarks, (row.size, row.size), "extended")
            y = int(row.aligned_landmarks[62, 1])
            matte[y - row.size // 16:y + row.size // 16] = 0
            row.seg, row.seg_model = fs.matte_path(row, "seg"), "test"
            write_matte(fs.folder / row.seg, matte)
        fs.update_faces(rows, ["seg", "seg_model"])


# --- a tiny real shot: the astronaut (public domain) as ACEScg EXR frames, with its faceset ----

def make_astronaut_shot(root, frames: int = 3):
    """`frames` half-EXR plates (1001 on, drifting a pixel a frame) and a dlib faceset of them."""
    import skimage.data

    from vfxswap.color import ColorPipeline
    from vfxswap.faces.extract import extract
    from vfxswap.jobspec import ExtractOptions
    from vfxswap.plates import Image, write_image

    lin = ColorPipeline("sRGB Encoded Rec.709 (sRGB)").convert(
        skimage.data.astronaut().astype(np.float32) / 255.0, "sRGB Encoded Rec.709 (sRGB)", "ACEScg")
    for i in range(frames):
        img = Image.from_array(np.concatenate([np.roll(lin, i, axis=1), np.ones((512, 512, 1), np.float32)], 2))
        img.set_attribute("oiio:ColorSpace", "ACEScg")
        write_image(root / "plates" / f"plate.{1001 + i}.exr", img)
    extract(str(root / "plates" / "plate.####.exr"), str(root / "faceset"), ExtractOptions(detector="dlib", landmarker="dlib", size=96))
    return root


@pytest.fixture(scope="module")
def astronaut_shot(tmp_path_factory):
    return make_astronaut_shot(tmp_path_factory.mktemp("shot"))


def hooked_flops(model, x, ident: str) -> int:
    """FLOPs of one forward of `model` on `x` as `ident`, counted from the conv and linear layers
    that actually ran (2 per multiply-add): what `flops_per_sample` must agree with."""
    import torch
    import torch.nn as nn

    total = 0

    def hook(m, inputs, out):
        nonlocal total
        if isinstance(m, nn.Conv2d):
            total += 2 * out.numel() // out.shape[0] * m.in_channels * m.kernel_size[0] * m.kernel_size[1]
        else:
            total += 2 * m.in_features * m.out_features
    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(x, ident)
    for h in hooks:
        h.remove()
    return total
