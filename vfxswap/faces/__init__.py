"""Faces: detection and 68-point landmarks, alignment, tracking and identity.

This file is the stage's registry and nothing heavier: the face detectors and the landmarkers (two
separate, composable choices: any detector's boxes go to any landmarker) and the face types (how
a face sits in its aligned square). `weights` knows where each backend's model files are, so
`vfxswap doctor` and the `auto` choices can say what is usable offline without loading anything.
"""

from __future__ import annotations

from dataclasses import dataclass

from vfxswap.registry import Registry

# name -> "module:class"; `auto` (not an entry) picks fan's when its weights are cached, else dlib's
DETECTORS = Registry("face detector", {
    "dlib": "vfxswap.faces.dlib_backend:HogDetector",  # HOG + linear SVM; offline, the default here
    "dlib-cnn": "vfxswap.faces.dlib_backend:MmodDetector",  # dlib's MMOD CNN; offline, slower
    "mesh": "vfxswap.faces.mesh_backend:MeshDetector",  # MediaPipe BlazeFace full range, in torch; ships with vfxswap
    "s3fd": "vfxswap.faces.fan_backend:S3fdDetector",  # face-alignment's S3FD; needs its weights cached
})
LANDMARKERS = Registry("landmarker", {
    "dlib": "vfxswap.faces.dlib_backend:ShapePredictor",  # iBUG 68-point regression trees; offline
    "mesh": "vfxswap.faces.mesh_backend:MeshLandmarker",  # MediaPipe Face Mesh + Iris (478 points), in torch
    "fan": "vfxswap.faces.fan_backend:FanLandmarker",  # face-alignment's 2D-FAN-4; needs its weights cached
})


@dataclass(frozen=True)
class FaceType:
    """How the mean face is placed in the square crop, so every face covers the same area.

    `span`: the fraction of the crop side that the mean face's 68-point bounding box (brow
    tops to chin, jaw corner to jaw corner; about square) covers. `offset`: how far that box's
    centre sits below the crop centre, as a fraction of the crop side (positive: the face sits
    lower, leaving room above for forehead or hair; the crop centre moves up the head).

    | type         | span | offset | brows at | chin at | what the crop holds                         |
    |--------------|------|--------|----------|---------|---------------------------------------------|
    | `full`       | 0.80 | 0      | 10%      | 90%     | brows to chin, cheek to cheek, 10% margin   |
    | `whole_face` | 0.55 | 0.12   | 35%      | 90%     | adds the forehead (hairline near 7%)        |
    | `head`       | 0.40 | 0.12   | 42%      | 82%     | whole head with hair, ears, top of the neck |

    (brows/chin: height from the crop top. The forehead is taken as about half the brow-to-chin
    height and the crown as about three quarters, so `head` leaves some 12% above the skull
    for hair volume.)
    """

    span: float
    offset: float
    description: str


FACE_TYPES = {
    "full": FaceType(0.80, 0.0, "brows to chin, cheek to cheek"),
    "whole_face": FaceType(0.55, 0.12, "forehead to chin, cheek to cheek"),
    "head": FaceType(0.40, 0.12, "whole head with hair, ears and some neck"),
}
