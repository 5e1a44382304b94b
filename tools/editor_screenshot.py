"""Make docs/mask_editor.png: the mask editor, offscreen, on a small real faceset.

Run:  QT_QPA_PLATFORM=offscreen python tools/editor_screenshot.py [--out docs/mask_editor.png]

The faces: scikit-image's astronaut portrait (public domain) as ACEScg stills, as it is, mirrored
and turned a little either way (stills, not a sequence: a track would smooth such jumps), extracted
into a temporary faceset (256 px whole faces). What the picture shows:
- the predicted matte (blue tint): a segmentation masker trained here on those four faces (the
  label below on one, the hulls of the others; `--iters`, 400 by default) and applied to all,
  as the editor's Train / Apply button runs it;
- the label on the face shown: one include polygon round the face and forehead (green) and one
  exclude polygon cutting that fringe out (red), drawn through the editor's own calls;
- in the grid: a labelled face (green corner), an excluded one (dimmed, red cross), and the
  blue bar of faces that have a predicted matte.
Not run by the tests.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MAX_BYTES = 300_000


def make_faceset(root: Path) -> Path:
    """Four astronaut stills (as is, mirrored, turned -8 and +8 degrees) and their faceset."""
    import skimage.data

    from vfxswap.color import ColorPipeline
    from vfxswap.faces.extract import extract
    from vfxswap.jobspec import ExtractOptions
    from vfxswap.plates import Image, write_image

    lin = ColorPipeline("sRGB Encoded Rec.709 (sRGB)").convert(
        skimage.data.astronaut().astype(np.float32) / 255.0, "sRGB Encoded Rec.709 (sRGB)", "ACEScg")
    turn = lambda deg: cv2.warpAffine(lin, cv2.getRotationMatrix2D((256, 200), deg, 1.0), (512, 512),
                                      borderMode=cv2.BORDER_REFLECT)
    for name, rgb in (("a_front", lin), ("b_mirror", lin[:, ::-1]), ("c_left", turn(-8)), ("d_right", turn(8))):
        image = Image.from_array(np.ascontiguousarray(rgb, np.float32))
        image.set_attribute("oiio:ColorSpace", "ACEScg")
        write_image(root / "stills" / f"astronaut_{name}.exr", image)
    extract(str(root / "stills"), str(root / "faceset"), ExtractOptions(size=256))
    return root / "faceset"


def hair(face) -> list[list[float]]:
    """The fringe over the left of her forehead (the image's left), in the crop."""
    pts = face.aligned_landmarks
    up = pts[17:27].mean(0) - pts[33]  # brows to nose base: about the forehead's height
    return [(pts[17] + 0.45 * up).tolist(), (pts[17] + 1.15 * up).tolist(), (pts[23] + 1.15 * up).tolist(),
            (pts[21] + 0.6 * up).tolist()]


def face_outline(face) -> list[list[float]]:
    """The jaw line and a forehead lifted above the brows: what an artist clicks round."""
    pts = face.aligned_landmarks
    up = pts[17:27].mean(0) - pts[33]
    forehead = [pts[i] + 1.05 * up for i in range(26, 16, -2)]
    return [p.tolist() for p in list(pts[0:17:2]) + [pts[16]] + forehead]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "mask_editor.png"))
    parser.add_argument("--iters", type=int, default=400, help="the masker's training iterations")
    args = parser.parse_args(argv)

    from vfxswap.hosts.mask_editor import MaskEditor
    from vfxswap.hosts.qt import QtGui, QtWidgets

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_faceset(Path(tmp))
        editor = MaskEditor(folder)
        editor.resize(1180, 760)
        editor.show()
        ids = editor.visible_ids()
        if len(ids) < 3:
            print(f"only {len(ids)} face(s) found; the picture needs 3", file=sys.stderr)
            return 1
        editor.select_face(ids[-1])
        editor.set_excluded(True)
        editor.select_face(ids[1])
        face = editor.current_face
        for mode, points in (("include", face_outline(face)), ("exclude", hair(face))):
            editor.set_mode(mode)
            for x, y in points:
                editor.add_point(x, y)
            editor.close_polygon()
        editor.save()
        from vfxswap.masks.seg import apply_masker, train_masker

        train_masker([folder], folder / "masker", iters=args.iters, device="cpu")
        apply_masker(folder, folder / "masker", device="cpu")
        editor.reload_mattes()
        editor.select_face(ids[0])
        editor.set_mode("include")
        editor.select_face(ids[1])
        editor.load_thumbnails()
        editor.message("face 2: label saved")
        app.processEvents()
        image = editor.grab().toImage()
        editor.close()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(str(out))
    if out.stat().st_size > MAX_BYTES:  # a palette keeps a screenshot legible at a fraction of the size
        image.convertToFormat(QtGui.QImage.Format.Format_Indexed8).save(str(out))
    print(f"{out}: {image.width()}x{image.height()}, {out.stat().st_size // 1024} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
