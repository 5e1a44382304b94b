"""The segmentation masker: a small U-Net that says which pixels of an aligned face are the face
itself (skin, brows, eyes, nose, lips) and not hair, glasses, a hand or a microphone in front of it.

In the spirit of DeepFaceLab's XSeg: trained per project, in minutes, on the faces of its own
facesets, from three kinds of labels (`masks.labels`): polygons drawn in the editor, mattes
imported from the compositor, and, for every face nobody labelled, its landmark hull as a weak
prior that keeps the face's shape. Three things make a few labels go a long way:

- the hull is also an input channel, so the network learns to correct a shape it is given (cut
  the glasses out, reach the jaw line) rather than find the face from nothing;
- each face is seen relative to its own skin (its cheeks' mean colour taken away, divided by
  their spread), with its skin likelihood beside it (a Gaussian of the cheeks' colour), so what
  is learned of skin against hair, glasses or a hand carries over to other complexions and light;
- occluders are pasted over training faces (random bars, blobs and hand-like polygons painted
  with scenery or a flat colour), and their pixels are "not face" with full weight even on faces
  labelled only by their hull: what is in front of the face is learned without drawing it.

    MASKDIR/masker.safetensors   weights (float32), metadata: the JSON below
    MASKDIR/masker.json          resolution, widths, face type, what it was trained on, its id

Input and output (`Segmenter.predict`): (N, S, S, 3) faces in the model encoding, as the faceset
stores them and render cuts them, and their (N, 68, 2) landmarks in the same square -> (N, S, S)
float32 mattes in 0..1.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vfxswap import __version__
from vfxswap.errors import VfxSwapError

log = logging.getLogger("vfxswap")

WEIGHTS, CONFIG = "masker.safetensors", "masker.json"
FORMAT = "vfxswap-masker/1"
# Where each face's skin colour is sampled: the two cheeks between the jaw and the nose, above the
# mouth (iBUG, 0-based). Skin on nearly every face; lips, eyes and brows stay out of the sample.
SKIN_PATCHES = ((1, 2, 3, 31, 30, 29), (15, 14, 13, 35, 30, 29))
IN_CHANNELS = 5  # RGB (model encoding), hull, skin likelihood
REACH = 0.08  # how far beyond the extended hull a matte may reach, as a fraction of the square (`reach`)
HULL_WEIGHT = 0.1  # loss weight of a hull-only face's pixels (a prior, not a truth); occluders pasted over it weigh 1


@dataclass
class MaskerConfig:
    """The masker's shape and how it was trained; stored as masker.json."""

    resolution: int = 128  # side of the square it works at
    widths: tuple = (16, 32, 48, 64, 96)  # channels per level (each level halves the side)
    face_type: str = "whole_face"  # of the faces it was trained on (render cuts its crop at this type)
    iterations: int = 0
    labelled: int = 0  # labelled faces it learned from
    hull_only: int = 0  # faces it saw with their hull as the only label
    facesets: list = field(default_factory=list)
    seed: int = 0
    id: str = ""  # sha256 of the weights, first 16 hex digits: which masker made a matte
    format: str = FORMAT
    version: str = __version__


class _Block(nn.Sequential):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__(nn.Conv2d(cin, cout, 3, stride, 1), nn.GroupNorm(4, cout), nn.SiLU(),
                         nn.Conv2d(cout, cout, 3, 1, 1), nn.GroupNorm(4, cout), nn.SiLU())


class SegNet(nn.Module):
    """U-Net: (N, 5, S, S) face (model encoding), hull, skin likelihood -> (N, 1, S, S) logits. S
    divisible by 2 ** (len(widths) - 1)."""

    def __init__(self, widths=MaskerConfig.widths):
        super().__init__()
        w = list(widths)
        self.down = nn.ModuleList([_Block(IN_CHANNELS, w[0])] + [_Block(a, b, 2) for a, b in zip(w, w[1:])])
        self.up = nn.ModuleList([_Block(b + a, a) for a, b in zip(w[:-1], w[1:])])
        self.head = nn.Conv2d(w[0], 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
        skips.pop()
        for block in reversed(self.up):
            skip = skips.pop()
            x = block(torch.cat([F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False),
                                 skip], 1))
        return self.head(x)


# --- what the landmarks say -------------------------------------------------------------------------


def priors(points: np.ndarray, side: int) -> np.ndarray:
    """(2, S, S) float32 from a face's (68, 2) landmarks in its S-pixel square: the extended hull,
    and where its skin colour is sampled (the cheeks, `SKIN_PATCHES`)."""
    from vfxswap.masks.hull import hull_mask

    pts = np.asarray(points, np.float64)
    sample = np.zeros((side, side), np.uint8)
    for patch in SKIN_PATCHES:
        ring = cv2.convexHull(pts[list(patch)].astype(np.float32))[:, 0]
        cv2.fillConvexPoly(sample, np.round(ring * 16).astype(np.int32), 1, lineType=cv2.LINE_8, shift=4)
    return np.stack([hull_mask(pts, (side, side), "extended"), sample.astype(np.float32)])


def reach(points: np.ndarray, side: int) -> np.ndarray:
    """(S, S) float32: how far from its landmarks a face's matte may go: the extended hull grown by
    `REACH` of the square and feathered. A matte beyond it is the network guessing at background
    (a faint haze over the whole square would float over the plate)."""
    from vfxswap.masks.hull import hull_mask

    grow = max(1, round(REACH * side))
    hull = (hull_mask(points, (side, side), "extended") > 0.5).astype(np.uint8)
    near = cv2.dilate(hull, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1)))
    return cv2.GaussianBlur(near.astype(np.float32), (0, 0), grow / 3)


def skin_likelihood(rgb: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
    """(N, 3, S, S) faces and (N, 1, S, S) skin sample masks -> (N, 1, S, S) in 0..1: a Gaussian of
    each face's sampled colour (mean, covariance, regularised so a flat patch is not a needle),
    exp(-d^2 / 8) of the Mahalanobis distance: 0.5 at about 2.4 standard deviations."""
    n = rgb.shape[0]
    w = sample / sample.sum((2, 3), keepdim=True).clamp_min(1.0)
    mean = (rgb * w).sum((2, 3), keepdim=True)  # (N, 3, 1, 1)
    d = (rgb - mean).flatten(2)  # (N, 3, P)
    cov = torch.einsum("nip,njp->nij", d * w.flatten(2), d) + torch.eye(3) * 4e-4
    sol = torch.linalg.solve(cov, d)  # (N, 3, P)
    d2 = (d * sol).sum(1).view(n, 1, *rgb.shape[2:])
    return torch.exp(-d2 / 8)


def net_input(rgb: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
    """The network's (N, 5, S, S) input from faces (N, 3, S, S) and `priors` (N, 2, S, S): the face
    relative to its own skin (the cheeks' mean colour taken away, divided by their spread), so
    what the network learns of skin against hair or glasses carries over to other complexions
    and other light; the hull; the skin likelihood."""
    w = prior[:, 1:2] / prior[:, 1:2].sum((2, 3), keepdim=True).clamp_min(1.0)
    mean = (rgb * w).sum((2, 3), keepdim=True)
    spread = (((rgb - mean) ** 2 * w).sum((1, 2, 3), keepdim=True) / 3).sqrt().clamp_min(0.02)
    return torch.cat([(rgb - mean) / (4 * spread), prior[:, :1], skin_likelihood(rgb, prior[:, 1:2])], 1)


# --- training data ----------------------------------------------------------------------------


@dataclass
class _Faces:
    """Every usable face of the facesets at the masker's side S."""

    images: np.ndarray  # (n, S, S, 3) float32, model encoding
    priors: np.ndarray  # (n, 2, S, S) float32: hull and skin sample (`priors`)
    targets: np.ndarray  # (n, S, S) float32: the label's matte, or the hull
    weights: np.ndarray  # (n, S, S) float32: the loss weight of each target pixel
    labelled: np.ndarray  # (n,) bool
    face_type: str


def _resize(a: np.ndarray, side: int) -> np.ndarray:
    if a.shape[0] == side:
        return np.ascontiguousarray(a, np.float32)
    interp = cv2.INTER_AREA if a.shape[0] > side else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(a, np.float32), (side, side), interpolation=interp)


def face_and_points(fs, row, side: int) -> tuple[np.ndarray, np.ndarray]:
    """A stored face's RGB (model encoding) at `side` and its landmarks in that square."""
    from vfxswap.plates.image import read_image

    path = fs.image_path(row)
    image = read_image(path)
    if not {"R", "G", "B"} <= set(image.channels):
        raise VfxSwapError(f"{path}: not a faceset face (channels {', '.join(image.channels)})")
    px = np.asarray(image.pixels, np.float32)
    rgb = px[:, :, [image.channels.index(c) for c in "RGB"]]
    points = (np.asarray(row.aligned_landmarks, np.float64) + 0.5) * (side / px.shape[0]) - 0.5
    return _resize(rgb, side), points


def load_faces(facesets: list[str], side: int) -> _Faces:
    """The facesets' faces (excluded ones left out) with their labels as mattes at `side`."""
    from vfxswap.faceset.store import Faceset
    from vfxswap.masks.hull import hull_mask
    from vfxswap.masks.labels import label_matte

    images, prior, targets, weights, labelled, types = [], [], [], [], [], set()
    for folder in facesets:
        with Faceset(folder) as fs:
            labels = fs.labels()
            for row in fs.faces(include_excluded=False):
                if row.image is None or not row.size or row.aligned_landmarks is None:
                    continue
                rgb, points = face_and_points(fs, row, side)
                pri = priors(points, side)
                label = labels.get(row.id)
                if label is not None:
                    full_hull = hull_mask(row.aligned_landmarks, (row.size, row.size), "extended")
                    target = _resize(label_matte(label, row.size, folder=fs.folder, hull=full_hull), side)
                    weight = np.ones_like(target)
                else:  # the hull, as a weak prior: it keeps the face's shape where nobody drew
                    target, weight = pri[0], np.full_like(pri[0], HULL_WEIGHT)
                images.append(rgb)
                prior.append(pri)
                targets.append(np.clip(target, 0, 1))
                weights.append(weight)
                labelled.append(label is not None)
                types.add(row.face_type)
    if not images:
        raise VfxSwapError(f"{', '.join(facesets)}: no aligned faces to train the masker on")
    if len(types) > 1:
        raise VfxSwapError(f"the facesets mix face types ({', '.join(sorted(map(str, types)))}): "
                           f"train one masker per face type")
    return _Faces(np.stack(images), np.stack(prior), np.stack(targets), np.stack(weights), np.array(labelled),
                  types.pop())



# --- augmentation (batched, torch) -----------------------------------------------------------------


def _occluders(n: int, side: int, rng: np.random.Generator, p: float) -> np.ndarray:
    """(n, S, S) float32 soft occluder shapes (zeros for the samples that get none): a bar across
    the face, an ellipse or a hand-like blob of a palm and fingers, from a random side."""
    out = np.zeros((n, side, side), np.float32)
    s = side
    for i in range(n):
        if rng.random() >= p:
            continue
        m = np.zeros((s * 2, s * 2), np.uint8)  # 2x supersampled, for soft edges
        kind = rng.integers(3)
        c = rng.uniform(0.2, 0.8, 2) * 2 * s
        if kind == 0:  # a bar (microphone, cigarette, stick)
            angle = rng.uniform(0, np.pi)
            half = rng.uniform(0.03, 0.1) * 2 * s
            d = np.array([np.cos(angle), np.sin(angle)]) * 4 * s
            nrm = np.array([-d[1], d[0]]) / np.hypot(*d) * half
            poly = np.array([c - d - nrm, c + d - nrm, c + d + nrm, c - d + nrm])
            cv2.fillPoly(m, [np.round(poly).astype(np.int32)], 255)
        elif kind == 1:  # a blob (glasses lens, a cup, a shoulder); never as small as an eye, which is face
            axes = (int(rng.uniform(0.12, 0.3) * 2 * s), int(rng.uniform(0.1, 0.2) * 2 * s))
            cv2.ellipse(m, (int(c[0]), int(c[1])), axes, rng.uniform(0, 180), 0, 360, 255, -1)
        else:  # a hand: a palm coming in from an edge and four fingers
            edge = rng.integers(4)
            base = np.array([rng.uniform(0.2, 0.8), 1.15]) * 2 * s
            toward = np.array([0.0, -1.0])
            rot = [np.eye(2), np.array([[0, -1], [1, 0]]), -np.eye(2), np.array([[0, 1], [-1, 0]])][edge]
            centre = np.array([s, s], float)
            base, toward = rot @ (base - centre) + centre, rot @ toward
            side_dir = np.array([-toward[1], toward[0]])
            reach = rng.uniform(0.35, 0.8) * 2 * s
            width = rng.uniform(0.18, 0.3) * 2 * s
            palm = base + toward * reach * 0.6
            poly = np.array([base - side_dir * width / 2, base + side_dir * width / 2,
                             palm + side_dir * width / 2, palm - side_dir * width / 2])
            cv2.fillPoly(m, [np.round(poly).astype(np.int32)], 255)
            for k in range(4):
                root = palm + side_dir * width * (k - 1.5) / 4
                tip = root + (toward + side_dir * rng.uniform(-0.25, 0.25)) * reach * rng.uniform(0.25, 0.45)
                cv2.line(m, tuple(np.round(root).astype(int)), tuple(np.round(tip).astype(int)), 255,
                         max(2, int(width / 5)))
        out[i] = cv2.resize(m, (s, s), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    return out


def augment(x: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, rng: np.random.Generator,
            occlude: float = 0.5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A new view of a batch: x (N, 5, S, S) face + `priors`, target and weight (N, 1, S, S) -> the
    network's input (`net_input`), target and weight.

    Geometry (rotation +-20 degrees, scale 0.85-1.15, shift +-8%, mirror) moves everything alike;
    colour (gain, offset, contrast per sample, in the model encoding) and blur or noise touch the
    face only; pasted occluders (see `_occluders`) are painted with scenery or a flat colour, and
    the target under them is 0 with full weight."""
    n, _, s, _ = x.shape
    ang = torch.from_numpy(rng.uniform(-20, 20, n)).float() * math.pi / 180
    scale = torch.from_numpy(rng.uniform(0.85, 1.15, n)).float()
    flip = torch.from_numpy(np.where(rng.random(n) < 0.5, -1.0, 1.0)).float()
    shift = torch.from_numpy(rng.uniform(-0.08, 0.08, (n, 2)) * 2).float()
    cos, sin = torch.cos(ang) / scale, torch.sin(ang) / scale
    theta = torch.stack([torch.stack([cos * flip, -sin, shift[:, 0]], 1),
                         torch.stack([sin * flip, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, (n, 1, s, s), align_corners=False)
    stack = F.grid_sample(torch.cat([x, target, weight], 1), grid, mode="bilinear", padding_mode="reflection",
                          align_corners=False)
    x, target, weight = stack[:, :5], stack[:, 5:6], stack[:, 6:7]
    rgb, prior = x[:, :3], x[:, 3:5]
    gain = torch.from_numpy(rng.uniform(0.8, 1.2, (n, 3, 1, 1))).float()
    offset = torch.from_numpy(rng.uniform(-0.08, 0.08, (n, 3, 1, 1))).float()
    mean = rgb.mean((1, 2, 3), keepdim=True)
    contrast = torch.from_numpy(rng.uniform(0.7, 1.3, (n, 1, 1, 1))).float()
    rgb = (rgb - mean) * contrast + mean
    rgb = rgb * gain + offset
    blur = rng.random(n) < 0.2
    if blur.any():
        idx = torch.from_numpy(np.flatnonzero(blur))
        rgb[idx] = F.avg_pool2d(F.pad(rgb[idx], (1, 1, 1, 1), mode="replicate"), 3, 1)
    rgb = rgb + torch.from_numpy(rng.normal(0, 1, (n, 1, 1, 1)) * 0.02).float().abs() * torch.randn_like(rgb)
    occ = torch.from_numpy(_occluders(n, s, rng, occlude))[:, None]
    if occ.any():
        # Textures of things that are not skin: another face's crop turned half a square (its
        # background, hair and clothes come to the middle), tinted; or a flat colour with a
        # gradient. Skin pasted as an occluder would teach the net to doubt skin it has not seen.
        donor = torch.roll(torch.roll(rgb, 1, 0), (s // 2, s // 2), (2, 3)).flip(-1)
        tint = torch.from_numpy(rng.uniform(0.5, 1.3, (n, 3, 1, 1))).float()
        ramp = torch.linspace(-1, 1, s).view(1, 1, 1, s) * torch.from_numpy(rng.uniform(-0.15, 0.15, (n, 1, 1, 1))).float()
        flat = torch.from_numpy(rng.uniform(0.05, 0.8, (n, 3, 1, 1))).float() + ramp
        use_flat = torch.from_numpy(rng.random((n, 1, 1, 1)) < 0.3)
        paint = torch.where(use_flat, flat.expand_as(rgb), donor * tint)
        rgb = rgb * (1 - occ) + paint * occ
        target = target * (1 - occ)
        weight = torch.maximum(weight, occ)
    return net_input(rgb, prior), target.clamp(0, 1), weight


# --- train, save, load ----------------------------------------------------------------------------------


def _loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Weighted binary cross-entropy plus a soft Dice term over the batch (Dice keeps thin parts,
    brows and lips, from being given up to the background)."""
    bce = (F.binary_cross_entropy_with_logits(logits, target, reduction="none") * weight).sum() / weight.sum()
    p = torch.sigmoid(logits) * (weight > 0.5)
    t = target * (weight > 0.5)
    dice = 1 - (2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1)
    return bce + dice


def train_masker(facesets: list[str], model_dir: str | Path, *, iters: int = 1500, batch: int = 8,
                 resolution: int = 128, lr: float = 1e-3, seed: int = 0, device: str = "auto",
                 emit=None) -> MaskerConfig:
    """Train a masker on the facesets' labelled faces (and the hulls of the others) and save it in
    `model_dir` (written last, atomically: an interrupted run leaves any earlier masker there).
    `emit`: called with progress events ({"event": "start" | "progress" | "done", ...})."""
    from vfxswap.models.device import pick_device

    emit = emit or (lambda event: None)
    levels = len(MaskerConfig.widths) - 1
    if resolution < 2 ** (levels + 2) or resolution % 2 ** levels:
        raise VfxSwapError(f"--resolution {resolution}: must be a multiple of {2 ** levels}, at least {2 ** (levels + 2)}")
    if iters < 1 or batch < 1:
        raise VfxSwapError("--iters and --batch must be at least 1")
    faces = load_faces([str(f) for f in facesets], resolution)
    n_lab = int(faces.labelled.sum())
    if n_lab == 0:
        log.warning("no face of %s is labelled: the masker learns the landmark hull and pasted occluders only",
                    ", ".join(map(str, facesets)))
    log.info("masker: %d labelled face(s), %d with their hull only, %d px, %d iterations", n_lab,
             len(faces.labelled) - n_lab, resolution, iters)
    dev = pick_device(device)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = SegNet().to(dev)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=iters, pct_start=0.1)
    images = torch.from_numpy(faces.images).permute(0, 3, 1, 2)
    prior = torch.from_numpy(faces.priors)
    targets = torch.from_numpy(faces.targets)[:, None]
    weights = torch.from_numpy(faces.weights)[:, None]
    # labelled faces are drawn as often as all the hull-only ones together, however few they are
    prob = np.where(faces.labelled, 0.5 / max(n_lab, 1), 0.5 / max(len(faces.labelled) - n_lab, 1))
    prob = prob / prob.sum()
    emit({"event": "start", "total": iters, "labelled": n_lab, "faces": len(faces.labelled)})
    start, loss_avg = time.time(), None
    net.train()
    for it in range(1, iters + 1):
        idx = torch.from_numpy(rng.choice(len(prob), batch, p=prob))
        x, t, w = augment(torch.cat([images[idx], prior[idx]], 1), targets[idx], weights[idx], rng)
        loss = _loss(net(x.to(dev)), t.to(dev), w.to(dev))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        value = float(loss.detach())
        loss_avg = value if loss_avg is None else 0.95 * loss_avg + 0.05 * value
        if it % 10 == 0 or it == iters:
            emit({"event": "progress", "done": it, "total": iters, "loss": round(loss_avg, 5),
                  "seconds": round(time.time() - start, 1)})
    config = MaskerConfig(resolution=resolution, face_type=faces.face_type, iterations=iters, labelled=n_lab,
                          hull_only=int(len(faces.labelled) - n_lab),
                          facesets=[str(Path(f).resolve()) for f in facesets], seed=seed)
    save_masker(net, config, model_dir)
    emit({"event": "done", "id": config.id, "seconds": round(time.time() - start, 1)})
    return config


def save_masker(net: SegNet, config: MaskerConfig, model_dir: str | Path) -> None:
    """Weights, then the JSON that names them (the JSON is the commit point), both atomic."""
    from safetensors.torch import save

    from vfxswap import atomic

    folder = Path(model_dir)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().cpu().contiguous() for k, v in net.state_dict().items()}
    import hashlib

    blob = save(state, metadata={"format": FORMAT})
    config.id = hashlib.sha256(blob).hexdigest()[:16]
    atomic.write_bytes(folder / WEIGHTS, blob)
    atomic.write_text(folder / CONFIG, json.dumps(asdict(config), indent=1) + "\n")


def read_config(model_dir: str | Path) -> MaskerConfig:
    path = Path(model_dir) / CONFIG
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise VfxSwapError(f"{model_dir}: not a masker folder (no {CONFIG}; train one with vfxswap masks train)") from None
    except (OSError, ValueError) as exc:
        raise VfxSwapError(f"{path}: unreadable ({exc})") from None
    if data.get("format") != FORMAT:
        raise VfxSwapError(f"{path}: not a vfxswap masker (format {data.get('format')!r})")
    known = MaskerConfig.__dataclass_fields__
    config = MaskerConfig(**{k: v for k, v in data.items() if k in known})
    config.widths = tuple(config.widths)
    return config


class Segmenter:
    """A trained masker, loaded (safetensors only: nothing pickled), ready to predict."""

    def __init__(self, model_dir: str | Path, device: str = "auto"):
        import hashlib

        from safetensors.torch import load

        from vfxswap.models.device import pick_device

        self.config = read_config(model_dir)
        path = Path(model_dir) / WEIGHTS
        try:
            blob = path.read_bytes()
        except OSError as exc:
            raise VfxSwapError(f"{path}: cannot read the masker's weights ({exc})") from None
        if hashlib.sha256(blob).hexdigest()[:16] != self.config.id:
            raise VfxSwapError(f"{path}: does not match {CONFIG} (id {self.config.id}); a partial copy?")
        self.device = pick_device(device)
        self.net = SegNet(self.config.widths)
        try:
            self.net.load_state_dict(load(blob))
        except Exception as exc:  # a bad file or another shape: one line naming it
            raise VfxSwapError(f"{path}: not this masker's weights ({type(exc).__name__})") from None
        self.net.to(self.device).eval()
        self.folder = Path(model_dir)

    @property
    def resolution(self) -> int:
        return self.config.resolution

    @torch.inference_mode()
    def predict(self, faces: np.ndarray, points: np.ndarray, batch: int = 16) -> np.ndarray:
        """(N, S, S, 3) model-encoded faces and their (N, 68, 2) landmarks in that square, S the
        masker's resolution -> (N, S, S) mattes."""
        out, side = [], self.resolution
        for i in range(0, len(faces), batch):
            rgb = torch.from_numpy(np.ascontiguousarray(faces[i:i + batch], np.float32)).permute(0, 3, 1, 2)
            prior = torch.from_numpy(np.stack([priors(p, side) for p in points[i:i + batch]]))
            x = net_input(rgb, prior).to(self.device)
            # and its mirror image, mirrored back: a face's matte should not depend on its side
            logits = 0.5 * (self.net(x) + self.net(x.flip(-1)).flip(-1))
            matte = torch.sigmoid(logits).float().cpu().numpy()[:, 0]
            out.append(matte * np.stack([reach(p, side) for p in points[i:i + batch]]))
        return np.concatenate(out) if out else np.zeros((0, side, side), np.float32)


def apply_masker(faceset: str | Path, model_dir: str | Path, *, device: str = "auto", batch: int = 16,
                 redo: bool = False, emit=None) -> dict:
    """Store the masker's matte of every face of `faceset` (masks/...seg.exr at the faceset's size).
    Resumable: faces whose matte this masker (same id) already made are skipped unless `redo`;
    each batch's mattes are written, then their rows updated in one transaction."""
    from vfxswap.faceset.store import Faceset
    from vfxswap.masks.labels import write_matte

    emit = emit or (lambda event: None)
    seg = Segmenter(model_dir, device)
    side = seg.resolution
    with Faceset(faceset) as fs:
        rows = [r for r in fs.faces() if r.image is not None and r.size and r.aligned_landmarks is not None]
        todo = [r for r in rows if redo or r.seg is None or r.seg_model != seg.config.id]
        kinds = {r.face_type for r in todo} - {seg.config.face_type}
        if kinds:
            raise VfxSwapError(f"{faceset}: faces of type {', '.join(sorted(map(str, kinds)))}, the masker "
                               f"{model_dir} was trained on {seg.config.face_type}")
        emit({"event": "start", "total": len(todo), "skipped": len(rows) - len(todo)})
        done = 0
        for i in range(0, len(todo), batch):
            chunk = todo[i:i + batch]
            pairs = [face_and_points(fs, r, side) for r in chunk]
            mattes = seg.predict(np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]))
            for row, matte in zip(chunk, mattes):
                rel = fs.matte_path(row, "seg")
                write_matte(fs.folder / rel, _resize(matte, row.size), masker=seg.config.id)
                row.seg, row.seg_model = rel, seg.config.id
            fs.update_faces(chunk, ["seg", "seg_model"])
            done += len(chunk)
            emit({"event": "progress", "done": done, "total": len(todo)})
        fs.set_meta("masker", {"folder": str(Path(model_dir).resolve()), "id": seg.config.id})
        fs.db.commit()
    emit({"event": "done", "applied": len(todo), "skipped": len(rows) - len(todo)})
    return {"applied": len(todo), "skipped": len(rows) - len(todo), "id": seg.config.id}


def masker_info(model_dir: str | Path) -> dict:
    """What `vfxswap masks info` prints: the masker's config and its size on disk."""
    config = read_config(model_dir)
    data = asdict(config)
    data["bytes"] = (Path(model_dir) / WEIGHTS).stat().st_size if (Path(model_dir) / WEIGHTS).exists() else None
    return data
