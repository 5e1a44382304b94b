"""Job options, one home: what extract, train and render take, each option with its help text,
default and choices.

Everything that starts a job reads them here: the CLI builds its arguments from these dataclasses
(`add_arguments`, `from_namespace`); the farm, the session engine and the hosts' job runner turn
them into engine command lines and back (`to_argv`, `flags`, `from_argv`); the panel and the Nuke
gizmo take their choices, defaults and help from `spec`. Choices come from the registries the
stages own (detectors, landmarkers, maskers, colour matches, architectures), so a new
implementation shows up in every one of them at once.

Light on purpose: importing it imports no torch, Qt, OCIO or numpy.

Command lines are written one word an option (`--erode=-2`, `--frames=-3--2`): a value that
starts with "-" (a negative number, a pre-roll range) can never be taken for an option.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import math
import types
import typing
from dataclasses import MISSING, dataclass, field
from typing import Any

from vfxswap.errors import VfxSwapError
from vfxswap.faces import DETECTORS, FACE_TYPES, LANDMARKERS
from vfxswap.masks import MASKERS
from vfxswap.models import ARCHITECTURES, MORPHING_ARCHITECTURES, TRAIN_MORPH, TRAIN_MORPH_RANGE
from vfxswap.models.config import PRESETS, VARIANT_LETTERS, ModelConfig
from vfxswap.render import COLOR_MATCHES

MODEL_FIELDS = tuple(f.name for f in dataclasses.fields(ModelConfig))  # every one settable from train


def option(default: Any = MISSING, help: str = "", *, choices=None, flag: str | None = None,
           required: bool = False, cli: bool = True, factory=None, sep: str | None = None,
           negate: str | None = None, metavar: str | None = None, ui_range: tuple | None = None):
    """A dataclass field that is also a job option.

    flag: the command-line name when it is not the field's (`--model` for `model_dir`);
    required: the command line must give it (the dataclass may still default it);
    cli: False for fields a program sets but a command line does not (`quiet`);
    sep: a list given as one word split on `sep` (`--parts encoder,inter`);
    negate: a bool that defaults to True is turned off by this flag (`--no-warp`) and back on by its
    own (`--warp`: a resume may undo an earlier session's flag; given both, the last one counts);
    ui_range: (low, high) for sliders in the panel and the gizmo."""
    meta = {"help": help, "choices": choices, "flag": flag, "required": required, "cli": cli, "sep": sep,
            "negate": negate, "metavar": metavar, "ui_range": ui_range}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


# --- the options ------------------------------------------------------------------------------


@dataclass
class ExtractOptions:
    """`vfxswap extract PLATES --out FACESET`: how faces are found, landmarked, tracked and cut."""

    frames: str | None = option(None, "frames to extract, e.g. 1001-1100, 1001-1100x2, 1001,1005")
    start: int = option(1001, "frame number of a movie's first frame")
    detector: str = option("auto", "face detector: auto = mesh (MediaPipe BlazeFace, ships with vfxswap), else "
                                   "s3fd when face-alignment's weights are cached, else dlib (HOG); dlib-cnn is "
                                   "dlib's MMOD CNN", choices=("auto", *DETECTORS))
    landmarker: str = option("auto", "68-point landmarker: auto = mesh (MediaPipe Face Mesh + iris, 478 points kept, "
                                     "68 from them), else fan when face-alignment's weights are cached, else dlib",
                             choices=("auto", *LANDMARKERS))
    device: str = option("cpu", "torch device for the detector and landmarker networks (cpu, cuda)")
    face_type: str = option("whole_face", "aligned face type: how much of the head the crop holds",
                            choices=tuple(FACE_TYPES))
    size: int = option(256, "aligned crop size in pixels")
    max_faces: int | None = option(None, "keep at most this many faces per frame (most confident)")
    min_size: float | None = option(None, "smallest face wanted, plate pixels (default: what the detector finds "
                                          "at --detect-side: about 80 px there for dlib, 1/15 of it for mesh; "
                                          "smaller costs time)")
    min_score: float | None = option(None, "detector confidence to keep a face (default: the detector's own: "
                                           "dlib 0, dlib-cnn 0.3, mesh 0.5, s3fd 0.5)")
    smooth: float = option(1.0, "temporal smoothing strength (0 = off, 1 = default)")
    detect_side: int = option(960, "longest side of the detector's working image")
    detect_every: int = option(4, "full-frame detection at least every N frames; between them faces are followed "
                                  "by the mesh's own tracking, or searched near where they were, and faces that "
                                  "enter are looked for back to where they appear (1: every frame)")
    plate_space: str | None = option(None, "plate colour space (default: from the header, else scene_linear)")
    ocio: str | None = option(None, "OCIO config (path or ocio:// URI)")
    debug_dir: str | None = option(None, "write frames with boxes and landmarks drawn here")
    progress: str = option("bar", "json: one event a line on stdout (progress of each pass: done, total, rate) for hosts",
                           choices=("bar", "json"))

    def check(self) -> None:
        """Refuse impossible values up front: a new faceset records its size and face type, so a
        bad one must fail before anything is written, in one line, not as a traceback later."""
        check_choices(self)
        for name, least in (("size", 16), ("detect_side", 64), ("detect_every", 1), ("max_faces", 1),
                            ("min_size", 0), ("smooth", 0)):
            value = getattr(self, name)
            if value is not None and not value >= least:  # `not >=` also refuses NaN
                raise VfxSwapError(f"--{name.replace('_', '-')} {value}: must be at least {least}")


@dataclass
class TrainOptions:
    """`vfxswap train`: A = the source identity (the face to render), B = the plate's performer."""

    src: str = option(help="faceset of identity A, the face to render", required=True)
    dst: str = option("", "faceset of identity B, the performer in the plates", required=True)
    model_dir: str = option("", "model folder (created, or continued with --resume)", flag="model", required=True)
    release_ref: str | None = option(None, "the performers' release reference (consent paperwork id), recorded "
                                           "verbatim in the model and every rendered file; required for a new model")
    release_ref_src: str | None = option(None, "release reference for A when it differs from --release-ref")
    release_ref_dst: str | None = option(None, "release reference for B when it differs from --release-ref")
    name_src: str | None = option(None, "display name of identity A (default: the faceset folder name)")
    name_dst: str | None = option(None, "display name of identity B (default: the faceset folder name)")
    preset: str | None = option(None, "model preset: quick (96 px, minutes on a CPU; the default for a new model), "
                                      "sae-256, sae-512, sym-256, sym-512, sym-1024 (sym: no dense layer, for "
                                      "512-1024 px), amp-224 (DeepFaceLab's AMP defaults); --resume keeps the saved "
                                      "one", choices=tuple(PRESETS))
    # the model's shape (ModelConfig): each overrides the preset's value
    arch: str | None = option(None, "architecture: df (a decoder per identity) or liae (one shared decoder); "
                                    "amp (one shared decoder, an inter per identity: render --morph dials the swap "
                                    "from B's own face to A); sym (DF with a convolutional code, for 512-1024 px); "
                                    "default: the preset's", choices=tuple(ARCHITECTURES))
    resolution: int | None = option(None, "face crop side in pixels (a multiple of 16, x2 with variant d, x2 with "
                                          "t; 32 for sym); default: the preset's")
    ae_dims: int | None = option(None, "bottleneck width (code channels); default: the preset's")
    e_dims: int | None = option(None, "encoder base channels (doubled per level); default: the preset's")
    d_dims: int | None = option(None, "decoder base channels; default: the preset's")
    d_mask_dims: int | None = option(None, "mask decoder base channels; default: the preset's")
    variants: str | None = option(None, f"letters from {VARIANT_LETTERS!r}: u pixel-norm, d double resolution, "
                                        "t one level deeper ('' for none); default: the preset's")
    face_type: str | None = option(None, "face type the model is trained and rendered at; default: the preset's",
                                   choices=tuple(FACE_TYPES))
    max_dims: int | None = option(None, "sym only: the widest layer, channels double per level towards the code up "
                                        "to it (0: no cap); default: the preset's")
    morph: float | None = option(None, "amp models only: the share of A's code channels taken, at random each step, "
                                       "from A's own inter, the rest from B's (DeepFaceLab's morph factor, 0.1-0.5; "
                                       "lower keeps more of A's expressions, higher leaves less room to learn B); "
                                       "default 0.33 for a new model, the saved value on --resume")
    iters: int = option(1000, "train until this iteration")
    batch: int = option(8, "faces per identity per step (per process)")
    # 2e-4 by bench/quality.py on the quick preset (300 iterations): 5e-5 (DeepFaceLab's, for long runs of
    # big models) scored 0.85 dB lower, 5e-4 0.2 dB higher with less margin before a roll-back
    lr: float = option(2e-4, "learning rate")
    warmup: int = option(100, "iterations of learning-rate warm-up")
    weight_decay: float = option(0.0, "AdamW weight decay")
    lr_dropout: float = option(0.0, "probability of dropping a weight's update per step")
    clip: float = option(1.0, "gradient norm clip (0: no clipping)")
    gan_power: float = option(0.0, "weight of the patch-GAN loss (0: off)")
    eyes_mouth_weight: float = option(3.0, "loss weight inside eyes and mouth")
    mask: str = option("auto", "the mask the losses and the model's learned mask follow: seg (the segmentation "
                               "masker's mattes, `vfxswap masks apply`), hull (the landmark hull); auto: seg for a "
                               "faceset whose faces all have one", choices=("auto", "seg", "hull"))
    uniform_yaw: bool = option(False, "sample faces evenly over head yaw")
    flip_src: bool = option(False, "random horizontal flips of A too (off by default: a mirrored source loses its "
                                   "asymmetries, a parting or a scar, in the render)")
    flip_dst: bool = option(True, "no random horizontal flips of B", negate="no-flip-dst")
    warp: bool = option(True, "no random warp of the input at all (--warp, the default, warps until the --sharpen "
                              "share; either may change on --resume)", negate="no-warp")
    # DeepFaceLab's recipe in one run: the warp makes the shared encoder learn faces rather than
    # pixels, and a final phase without it sharpens. bench/quality.py (quick preset, 1500
    # iterations, seed 0) measured the share: see README's training section.
    sharpen: float = option(0.5, "share of --iters trained last without the random warp, DeepFaceLab's sharpening "
                                 "phase (0: warp throughout)")
    ct_mode: str = option("none", "training-time colour transfer, for A and B shot under different light: each A "
                                  "face (input and target alike) recoloured like a random B face of the step, inside "
                                  "the masks, in the model encoding, with the render's colour match of that name: rct "
                                  "mean/spread per channel; lct covariance; mkl least-change covariance; idt/sot "
                                  "distribution transfer (slower); none: off", choices=tuple(COLOR_MATCHES))
    workers: int | None = option(None, "data loader processes per identity (default: from the cores, at most 8)")
    device: str = option("auto", "torch device: auto (CUDA when present), cpu, cuda, cuda:N")
    gpus: int = option(1, "data-parallel processes on this node, one per GPU (runs itself under torchrun "
                          "--standalone; gloo processes with --device cpu). Several nodes: see README")
    bf16: str = option("auto", "bf16 autocast (auto: on GPUs with bf16 in hardware, and on CPUs with AMX-BF16 or "
                               "AVX512-BF16)", choices=("auto", "on", "off"))
    compile: bool = option(False, "torch.compile the model")
    save_every: int = option(250, "save every N iterations")
    save_minutes: float = option(10.0, "and at least every N minutes")
    keep_backups: int = option(3, "backups of earlier saves to keep", flag="keep")
    preview_every: int = option(100, "write a preview grid every N iterations")
    log_every: int = option(10, "log every N iterations")
    snapshot_every: int = option(50, "keep an in-memory good state every N iterations (roll-back after a "
                                     "non-finite step)")
    tensorboard: bool = option(False, "also write TensorBoard events")
    resume: bool = option(False, "continue the model in --model where it was saved")
    resume_if_saved: bool = option(False, "resume when --model already holds a save, else start a new model "
                                          "(retry-safe farm tasks)")
    init_from: str | None = option(None, "initialise parts from another model folder (transfer)")
    init_parts: list[str] | None = option(None, "parts copied by --init-from (default: the shared ones; DF "
                                                "encoder,inter, LIAE all)", flag="parts", sep=",")
    freeze: list[str] = option(help="parts not trained, e.g. encoder", factory=list, sep=",")
    seed: int = option(0, "random seed (weights, sampling, augmentation)")
    progress: str = option("bar", "json: one event a line on stdout (iterations done, rate, loss; losses and previews are in the model folder) for hosts",
                           choices=("bar", "json"))
    quiet: bool = option(False, cli=False)

    def release_refs(self) -> dict[str, str | None]:
        """identity -> release reference, as recorded in the model."""
        return {"A": self.release_ref_src or self.release_ref, "B": self.release_ref_dst or self.release_ref}

    def names(self) -> dict[str, str | None]:
        """identity -> display name (None: the faceset folder's name)."""
        return {"A": self.name_src, "B": self.name_dst}

    def bf16_mode(self) -> bool | None:
        """True or False when asked, None for the device's default (models.device.bf16_by_default)."""
        return {"auto": None, "on": True, "off": False}[self.bf16]

    def model_overrides(self) -> dict:
        """The ModelConfig fields asked for beyond the preset."""
        return {name: getattr(self, name) for name in MODEL_FIELDS if getattr(self, name) is not None}

    def asked_config(self) -> ModelConfig | None:
        """The ModelConfig that --preset and the model options ask for (validated, one line per bad
        value); None when none of them is given (a resumed model keeps its own)."""
        overrides = self.model_overrides()
        if self.preset is None and not overrides:
            return None
        config = dataclasses.replace(copy.deepcopy(PRESETS[self.preset or "quick"]), **overrides)
        config.validate()
        return config

    def check(self) -> None:
        """One line for a value the run cannot use, before anything starts: not a traceback
        mid-run, or a finished run lost at its save."""
        check_choices(self)
        for name in ("src", "dst", "model_dir"):
            if not getattr(self, name):
                raise VfxSwapError(f"--{flag_of(TrainOptions, name)} is required")
        for name, low in (("iters", 0), ("batch", 1), ("warmup", 0), ("save_every", 1), ("preview_every", 1),
                          ("log_every", 1), ("snapshot_every", 1), ("keep_backups", 0), ("workers", 0), ("gpus", 1)):
            value = getattr(self, name)
            if value is not None and value < low:
                raise VfxSwapError(f"--{flag_of(TrainOptions, name)} {value}: must be at least {low}")
        for name, ok, want in (("lr", self.lr > 0, "above 0"), ("save_minutes", self.save_minutes > 0, "above 0"),
                               ("clip", self.clip >= 0, "0 (no clipping) or more"),
                               ("weight_decay", self.weight_decay >= 0, "0 or more"),
                               ("gan_power", self.gan_power >= 0, "0 or more"),
                               ("eyes_mouth_weight", self.eyes_mouth_weight > 0, "above 0"),
                               ("lr_dropout", 0 <= self.lr_dropout < 1, "from 0 up to, not including, 1"),
                               ("sharpen", 0 <= self.sharpen <= 1, "from 0 to 1")):
            if not ok:  # also false for NaN
                raise VfxSwapError(f"--{flag_of(TrainOptions, name)} {getattr(self, name)}: must be {want}")
        config = self.asked_config()  # the model options, validated as the model validates them
        if self.morph is not None:
            low, high = TRAIN_MORPH_RANGE
            if not low <= self.morph <= high:  # also false for NaN
                raise VfxSwapError(f"--morph {self.morph}: must be from {low} to {high} (DeepFaceLab's range; "
                                   f"{TRAIN_MORPH} is typical)")
            # the model's arch where it is known before the run (a resume without model options: at load)
            arch = config.arch if config else None if self.resume or self.resume_if_saved else PRESETS["quick"].arch
            if arch is not None and arch not in MORPHING_ARCHITECTURES:
                raise VfxSwapError(f"--morph {self.morph}: only an amp model morphs, and this one would be {arch}; "
                                   f"add --arch amp, or drop --morph")


@dataclass
class RenderOptions:
    """`vfxswap render`: the source identity (A) over the destination performer's faces in the plates."""

    model: str = option(help="model folder (or `passthrough` to check the pipeline: the layer over the plate then "
                             "equals the plate)", required=True)
    plates: str = option(help="the plates the faceset was extracted from: a sequence pattern, or a movie "
                              "(decoded to scene-linear EXR in OUT/.plates)", required=True)
    out: str = option(help="output folder for face.####.exr", required=True)
    faceset: str | None = option(None, "the destination faceset (alignment of every face); without it faces are "
                                       "found live into OUT/.faceset")
    frames: str | None = option(None, "frames to render (default: all)")
    start: int = option(1001, "a movie plate's first frame number (as at extraction)")
    mask: str = option("product", "face matte: product (the model's learned mask inside the landmark hull), "
                                  "learned, hull, seg (the segmentation masker: occluders kept out), seg*learned",
                       choices=tuple(MASKERS))
    mask_model: str | None = option(None, "segmentation masker folder for --mask seg (default: the one `vfxswap masks "
                                          "apply` last ran on the faceset)")
    erode: float = option(0.0, "erode the mask by N plate pixels (negative dilates)", ui_range=(-20, 20))
    blur: float = option(0.0, "blur the mask edge (Gaussian sigma, plate pixels)", ui_range=(0, 50))
    color: str = option("rct", "colour match to the plate's face, inside the mask, in the model encoding: rct "
                               "mean/spread per channel; lct covariance; mkl least-change covariance; idt/sot "
                               "distribution transfer; none", choices=tuple(COLOR_MATCHES))
    color_smooth: float = option(2.0, "smooth the colour match along each face track: Gaussian sigma in frames "
                                      "(0: each frame matched alone)", ui_range=(0, 10))
    morph: float = option(1.0, "amp models: how far the swap goes from the performer's own face (0: B "
                               "reconstructed) to the source identity (1: the full swap); other models take 1 "
                               "only", ui_range=(0, 1))
    name: str = option("face", "output file name before the frame number")
    skip_existing: bool = option(False, "keep frames already complete on disk")
    compression: str = option("zip", "EXR compression (zip, piz, dwaa[:level])")
    track: int | None = option(None, "only the face of this track id")
    like: list[str] | None = option(None, "only faces like these reference images (or folders)")
    all_faces: bool = option(False, "replace every face in the plates (default: only the faces of the model's "
                                    "identity B, the performer it was trained on)")
    plate_space: str | None = option(None, "plate colour space (default: from the header)")
    ocio: str | None = option(None, "OCIO config (path or ocio:// URI)")
    device: str = option("auto", "torch device for the model: auto (CUDA when present), cpu, cuda, cuda:N")
    progress: str = option("bar", "json: one event a line on stdout (start, each frame, done) for hosts and farm "
                                  "logs", choices=("bar", "json"))
    face_type: str = option("whole_face", "face type for --model passthrough (a model brings its own)",
                            choices=tuple(FACE_TYPES))
    resolution: int = option(256, "aligned size for --model passthrough (a model brings its own)")
    layers: bool = option(False, "add raw (unmasked), matte and stmap layers to each file")
    comp: bool = option(False, "also write the face over the plate as comp.####.exr")
    preview: bool = option(False, "also write preview.mp4 of the comp through the OCIO view")

    def check(self) -> None:
        check_choices(self)
        for name in ("erode", "blur"):
            if not math.isfinite(getattr(self, name)):
                raise VfxSwapError(f"--{name} {getattr(self, name)}: must be a finite number")
        if self.blur < 0:
            raise VfxSwapError(f"--blur {self.blur}: must be 0 or more")
        if not 0 <= self.morph <= 1:  # also false for NaN
            raise VfxSwapError(f"--morph {self.morph}: must be from 0 (the performer's own face) to 1 (the full swap)")
        if self.resolution < 16:
            raise VfxSwapError(f"--resolution {self.resolution}: must be at least 16")


@dataclass
class MaskTrainOptions:
    """`vfxswap masks train`: a segmentation masker from the facesets' labels (and, where nobody
    labelled, their landmark hulls)."""

    faceset: list[str] = option(help="facesets to learn from (labelled faces, and the hulls of the others)",
                                factory=list, required=True)
    model: str = option("", "masker folder (written when training ends)", required=True)
    iters: int = option(1500, "training iterations")
    batch: int = option(8, "faces per step")
    resolution: int = option(128, "side of the masker's square (a multiple of 16); its mattes are resized to the "
                                  "faceset's")
    lr: float = option(1e-3, "peak learning rate (one-cycle schedule)")
    seed: int = option(0, "random seed (weights, sampling, augmentation)")
    device: str = option("auto", "torch device: auto (CUDA when present), cpu, cuda, cuda:N")
    progress: str = option("bar", "json: one event a line on stdout (start, progress, done) for hosts",
                           choices=("bar", "json"))

    def check(self) -> None:
        check_choices(self)
        if not self.faceset or not self.model:
            raise VfxSwapError("--faceset and --model are required")
        for name in ("iters", "batch"):
            if getattr(self, name) < 1:
                raise VfxSwapError(f"--{name} {getattr(self, name)}: must be at least 1")
        if not self.lr > 0:
            raise VfxSwapError(f"--lr {self.lr}: must be above 0")


@dataclass
class MaskApplyOptions:
    """`vfxswap masks apply`: the masker's matte stored for every face of a faceset (resumable)."""

    faceset: str = option("", "faceset whose faces get a segmentation matte", required=True)
    model: str = option("", "masker folder (vfxswap masks train)", required=True)
    redo: bool = option(False, "remake mattes this masker already made")
    device: str = option("auto", "torch device: auto (CUDA when present), cpu, cuda, cuda:N")
    progress: str = option("bar", "json: one event a line on stdout (start, progress, done) for hosts",
                           choices=("bar", "json"))

    def check(self) -> None:
        check_choices(self)
        if not self.faceset or not self.model:
            raise VfxSwapError("--faceset and --model are required")


# --- what a field is ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """One option as every front end needs it."""

    name: str  # the dataclass field
    flag: str  # command-line name without dashes
    kind: type  # str, int, float, bool or list
    default: Any  # MISSING when the field has none
    help: str
    choices: tuple | None
    required: bool
    cli: bool
    sep: str | None
    negate: str | None
    metavar: str | None
    ui_range: tuple | None


def _kind(annotation) -> type:
    """The value type under Optional: str, int, float, bool or list."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return _kind(args[0])
    origin = typing.get_origin(annotation)
    return list if origin is list else annotation


@functools.cache
def spec(cls) -> dict[str, Spec]:
    """field name -> Spec, in the dataclass's order."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        m = f.metadata
        default = f.default if f.default is not MISSING else (
            f.default_factory() if f.default_factory is not MISSING else MISSING)
        choices = m.get("choices")
        out[f.name] = Spec(f.name, m.get("flag") or f.name.replace("_", "-"), _kind(hints[f.name]), default,
                           m.get("help", ""), tuple(choices) if choices is not None else None,
                           bool(m.get("required")), m.get("cli", True), m.get("sep"), m.get("negate"),
                           m.get("metavar"), m.get("ui_range"))
    return out


def flag_of(cls, name: str) -> str:
    return spec(cls)[name].flag


def _check_choice(s: Spec, value) -> None:
    """An option with choices holds one of them; one line naming the option otherwise."""
    if s.choices is not None and value is not None and value not in s.choices:
        raise VfxSwapError(f"--{s.flag} {value}: choose from {', '.join(map(str, s.choices))}")


def check_choices(obj) -> None:
    """Each option with choices holds one of them (one line naming the option otherwise)."""
    for s in spec(type(obj)).values():
        _check_choice(s, getattr(obj, s.name))


# --- argparse (the CLI) -----------------------------------------------------------------------


def _comma_list(text: str) -> list[str]:
    return [part for part in text.split(",") if part]


def add_arguments(parser, cls, *, skip=(), only=None, rename: dict | None = None, prefix: str = "",
                  optional: bool = False) -> None:
    """Add `cls`'s options to an argparse parser (or group). `rename` gives other flags to some
    fields (a farm bundle's `--render-device`), `prefix` keeps their values apart in the namespace
    (`from_namespace(cls, args, prefix=...)`), `optional` makes required ones optional (a step
    that may be left out)."""
    rename = rename or {}
    for s in spec(cls).values():
        if not s.cli or s.name in skip or (only is not None and s.name not in only):
            continue
        dest = prefix + s.name
        flag = "--" + rename.get(s.name, s.flag)
        default = None if s.default is MISSING else s.default
        if s.kind is bool:
            if s.negate:
                off = "--" + rename.get(s.name, s.negate)
                if flag != off:  # a rename names the negation alone
                    parser.add_argument(flag, dest=dest, action="store_true", default=default,
                                        help=f"the default: the opposite of {off}")
                parser.add_argument(off, dest=dest, action="store_false", default=default, help=s.help)
            else:
                parser.add_argument(flag, dest=dest, action="store_true", default=default, help=s.help)
            continue
        kw: dict[str, Any] = {"dest": dest, "help": s.help, "default": default}
        if s.required and not optional:
            kw["required"] = True
        if s.metavar or s.choices is None:
            kw["metavar"] = s.metavar or rename.get(s.name, s.flag).upper().replace("-", "_")
        if s.kind is list and s.sep:
            kw.update(type=_comma_list, default=None if default is None else list(default))  # a copy per parse
        elif s.kind is list:
            kw.update(nargs="+", action="extend", default=None)
        else:
            kw["type"] = s.kind
            if s.choices is not None:
                kw["choices"] = s.choices
        parser.add_argument(flag, **kw)


def from_namespace(cls, args: argparse.Namespace, *, prefix: str = "", **given):
    """`cls` from parsed arguments: the fields the namespace holds, then `given`; a None left
    where the field takes no None gets the field's default."""
    specs = spec(cls)
    values = {name: getattr(args, prefix + name) for name in specs if hasattr(args, prefix + name)}
    values.update(given)
    return cls(**{k: v for k, v in values.items() if v is not None or specs[k].default is None})


class _Parser(argparse.ArgumentParser):
    """Errors as VfxSwapError: a command line read back (a farm session's) fails in one line."""

    def error(self, message):
        raise VfxSwapError(f"{self.prog}: {message}")


def from_argv(cls, argv: list[str]):
    """`cls` from a command line's option words (what `to_argv`/`flags` wrote)."""
    parser = _Parser(prog=cls.__name__, add_help=False)
    add_arguments(parser, cls)
    return from_namespace(cls, parser.parse_args(argv))


# --- command lines (farm, hosts) ----------------------------------------------------------------


def _word(s: Spec, value) -> list[str]:
    if s.kind is bool:
        if value:
            return [f"--{s.flag}"]  # with a negation too: said explicitly, it stays said (`--warp`)
        return [f"--{s.negate}"] if s.negate else []
    if value is None:
        return []
    if s.kind is list:
        items = [str(v) for v in value]
        return [f"--{s.flag}={s.sep.join(items)}"] if s.sep else [f"--{s.flag}={v}" for v in items]
    return [f"--{s.flag}={value}"]


def _is_variable(value) -> bool:
    """A farm template's variable (`"$VFXSWAP_ITERS"`): its value is filled in on the node."""
    return isinstance(value, str) and value.startswith('"$')


def _coerce(s: Spec, value):
    """A host's value (often text, `"2"` for --erode) as the option's type; one line if it is not."""
    if value is None or s.kind is list:
        return value
    if s.kind is bool:
        if isinstance(value, str):
            if value.lower() not in ("1", "true", "yes", "on", "0", "false", "no", "off", ""):
                raise VfxSwapError(f"--{s.flag} {value!r}: not a yes/no value")
            return value.lower() in ("1", "true", "yes", "on")
        return bool(value)
    if _is_variable(value):
        return value
    try:
        return s.kind(value)
    except (TypeError, ValueError):
        raise VfxSwapError(f"--{s.flag} {value!r}: not {'a whole number' if s.kind is int else 'a number'}") from None


def normalise(cls, options: dict) -> dict:
    """An options dict as hosts and farm jobs give it -> {field name: value of its type}. Keys
    are field names or flags (`skip_existing`, `skip-existing`, `--no-warp`), values native or
    text (`"2"` for --erode). An unknown key or a bad value is one line naming it."""
    specs = spec(cls)
    by_flag = {s.flag: s for s in specs.values()}
    negated = {s.negate: s for s in specs.values() if s.negate}
    out = {}
    for key, value in options.items():
        key = str(key).lstrip("-")
        s = specs.get(key.replace("-", "_")) or by_flag.get(key) or negated.get(key)
        if s is None or not s.cli:
            known = ", ".join(w for s in specs.values() if s.cli for w in (s.flag, s.negate) if w)
            raise VfxSwapError(f"unknown {_what(cls)} option {key!r} (options: {known})")
        value = _coerce(s, value)
        if key == s.negate:  # {"no-warp": True}
            value = not value
        if not _is_variable(value):  # a farm template's variable is filled in on the node
            _check_choice(s, value)
        out[s.name] = value
    return out


def flags(cls, options: dict) -> list[str]:
    """Command-line words for an options dict (see `normalise`): a bool is a bare flag, None
    and False are left out, 0 is a value (track 0 is a track), one word an option."""
    specs = spec(cls)
    return [word for name, value in normalise(cls, options).items() for word in _word(specs[name], value)]


def to_argv(obj, *, always=()) -> list[str]:
    """The option words of a dataclass of options: every value that differs from its default
    (and the fields in `always`), in the dataclass's order."""
    chosen = changed(obj)
    chosen.update({name: getattr(obj, name) for name in always})
    order = list(spec(type(obj)))
    return flags(type(obj), dict(sorted(chosen.items(), key=lambda kv: order.index(kv[0]))))


def changed(obj, *, skip=()) -> dict:
    """{field: value} of the command-line options that differ from their defaults (required
    ones always), in the dataclass's order."""
    return {s.name: getattr(obj, s.name) for s in spec(type(obj)).values()
            if s.cli and s.name not in skip and (s.default is MISSING or getattr(obj, s.name) != s.default)}


def _what(cls) -> str:
    return {ExtractOptions: "extract", TrainOptions: "train", RenderOptions: "render"}.get(cls, cls.__name__)
