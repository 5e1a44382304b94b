"""The training loop, top to bottom: two facesets in, a model folder out.

A = the source identity (the face to render), B = the destination (the plate's performer).
Each step reconstructs a batch of A through A's path and a batch of B through B's path; the
shared encoder learns one latent space for both, which is what lets a B face be decoded as A.

    setup -> model (new, resumed, or initialised from another) -> data -> loop:
        lr warm-up -> forward A and B -> losses -> backward -> clip -> step (skipped on the
        device when anything is not finite) -> read the previous step's figures: log it, or
        roll back after a bad one -> snapshot / preview / save on their schedules (these wait
        for the step); Ctrl-C saves and stops cleanly.

The host reads each step's figures one step late, so it never waits for the device in between:
while the GPU runs step k, Python fetches and queues step k + 1.

Runs on CPU (bf16 autocast where the CPU has bf16 in hardware), on CUDA (bf16 autocast,
channels_last, fused AdamW, optional torch.compile) and under torchrun (DDP; NCCL on GPUs, gloo
on CPU): rank 0 alone logs, previews and saves.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import random
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from vfxswap import __version__
from vfxswap.errors import VfxSwapError
from vfxswap.jobspec import TrainOptions
from vfxswap.models.device import bf16_by_default, pick_device

log = logging.getLogger("vfxswap")
STATS = ("loss", "loss_A", "loss_B", "grad_norm", "bad")  # what a step reports, in InFlight's order
# options the manifest's and the sessions' records leave out: consent paperwork and names have
# their own place in the manifest, the rest says nothing about how the model was trained
MANIFEST_SKIP = ("release_ref", "release_ref_src", "release_ref_dst", "name_src", "name_dst", "quiet", "progress")
SESSION_SKIP = MANIFEST_SKIP + ("resume", "resume_if_saved")


class Pair(nn.Module):
    """Both identities in one forward, so DDP sees every used parameter in a single call."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, a: torch.Tensor, b: torch.Tensor):
        return self.model(a, "A"), self.model(b, "B")


def forward_losses(step_fn, a: dict, b: dict, bf16: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Both identities through `step_fn` (a `Pair`), bf16 autocast if asked -> (loss_A, loss_B,
    A's reconstruction); each loss is reconstruction + mask, in float32."""
    from vfxswap.train.losses import mask_loss, reconstruction_loss

    with torch.autocast(a["input"].device.type, dtype=torch.bfloat16, enabled=bf16):
        (rgb_a, mask_a), (rgb_b, mask_b) = step_fn(a["input"], b["input"])
    rgb_a, mask_a, rgb_b, mask_b = (t.float() for t in (rgb_a, mask_a, rgb_b, mask_b))
    loss_a = reconstruction_loss(rgb_a, a["target"], a["mask"], a["weights"]) + mask_loss(mask_a, a["mask"])
    loss_b = reconstruction_loss(rgb_b, b["target"], b["mask"], b["weights"]) + mask_loss(mask_b, b["mask"])
    return loss_a, loss_b, rgb_a


def guarded_update(optimizer: torch.optim.Optimizer, params: list[torch.Tensor], loss: torch.Tensor, clip: float,
                   *, distributed: bool = False, average_grads: bool = False,
                   also_skip: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """backward, clip the gradient norm, step; the step is skipped when the loss or the gradients
    are not finite -> (grad_norm, bad), 0-dim float32 tensors on the device, bad 1.0 when skipped.
    `average_grads` (under DDP, for a module DDP does not wrap, such as the discriminator): the
    gradients are averaged over ranks before the clip, so every rank takes the same step.

    Why this shape: the verdict stays on the device. A fused optimiser takes it as `found_inf`
    (as GradScaler does) and skips inside its kernel, so the host never waits for the device
    mid-step and can queue the next step's work while this one runs. Under DDP the verdict is
    the max over ranks, so every rank skips, and later rolls back, together (a rank that skipped
    its backward alone would leave the others waiting in the gradient all-reduce). An unfused
    optimiser has no on-device skip: it reads the verdict, which waits for the device.
    """
    optimizer.zero_grad(set_to_none=True)
    clip = clip if clip > 0 else float("inf")  # 0: no clipping; the norm is still measured, for the check
    loss.backward()
    if distributed and average_grads:
        _average_over_ranks([p.grad for p in params if p.grad is not None])
    grad_norm = nn.utils.clip_grad_norm_(params, clip)
    bad = (~(torch.isfinite(loss) & torch.isfinite(grad_norm))).float()
    if also_skip is not None:
        bad = torch.maximum(bad, also_skip)
    if distributed:
        torch.distributed.all_reduce(bad, op=torch.distributed.ReduceOp.MAX)
    if optimizer.defaults.get("fused"):
        optimizer.found_inf = bad
        optimizer.step()
    elif not bad.item():
        optimizer.step()
    return grad_norm.detach(), bad


def _average_over_ranks(tensors: list[torch.Tensor]) -> None:
    """Replace each tensor, in place, by its mean over the DDP ranks: one all-reduce for all."""
    from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

    if not tensors:
        return
    flat = _flatten_dense_tensors(tensors)
    torch.distributed.all_reduce(flat)
    flat /= torch.distributed.get_world_size()
    for t, mean in zip(tensors, _unflatten_dense_tensors(flat, tensors)):
        t.copy_(mean)


class InFlight:
    """One step's figures (STATS, in order) on their way from the device to the host. `send` queues
    the copy without waiting; `read` waits for it, by then usually long done."""

    def __init__(self, values: torch.Tensor, event, iteration: int, lr: float):
        self.values, self.event, self.iteration, self.lr = values, event, iteration, lr

    @classmethod
    def send(cls, values: torch.Tensor, iteration: int, lr: float) -> "InFlight":
        event = None
        if values.device.type == "cuda":
            stream = torch.cuda.current_stream(values.device)  # the stream that queued the step and the copy
            values = values.to("cpu", non_blocking=True)  # into pinned memory, asynchronously
            event = torch.cuda.Event()
            event.record(stream)
        return cls(values, event, iteration, lr)

    def read(self) -> dict:
        if self.event is not None:
            self.event.synchronize()
        stats = dict(zip(STATS, self.values.tolist()))
        stats["bad"] = stats["bad"] > 0
        return {**stats, "lr": self.lr}


def _distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) when alone."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def _die_with_launcher() -> None:
    """Under torchrun: end this rank when its launcher dies (Linux). torchrun starts each rank in a
    session of its own, so a farm's kill -9 of the task's process group misses the ranks; left
    running they would hold the GPUs and write into the model folder beside the task's retry."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    launcher = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(1, signal.SIGKILL, 0, 0, 0) != 0:  # 1: PR_SET_PDEATHSIG
        log.warning("could not tie this rank to its launcher (prctl errno %d)", ctypes.get_errno())
    elif os.getppid() != launcher:  # it died before the line above: nothing will signal us now
        os._exit(1)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    """One training run. `run()` trains to `options.iters` and returns the final iteration."""

    def __init__(self, options: TrainOptions):
        from vfxswap.models import build_model, checkpoint, store, transfer
        from vfxswap.models.config import PRESETS

        self.opt = o = options
        o.check()
        self.rank, self.world, local = _distributed()
        self.main = self.rank == 0
        if self.world > 1 and "TORCHELASTIC_RUN_ID" in os.environ:
            _die_with_launcher()
        self.device = pick_device(o.device if self.world == 1 or o.device == "cpu" else f"cuda:{local}"
                                  if torch.cuda.is_available() else "cpu")
        if self.device.type == "cuda":
            # this process's GPU is the current one: NCCL's collectives, barrier() and the
            # events that say a step's figures have landed all use the current device
            torch.cuda.set_device(self.device)
        if self.world > 1 and not torch.distributed.is_initialized():
            torch.distributed.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        asked = o.bf16_mode()
        self.bf16 = bf16_by_default(self.device) if asked is None else asked
        self.folder = Path(o.model_dir)
        _seed_everything(o.seed)

        # --- the model: resumed, or new (optionally initialised from another) -------------
        self.manifest: dict
        self.resuming = o.resume or (o.resume_if_saved and (self.folder / "manifest.json").exists())
        if self.resuming:
            self.model, self.manifest = store.load_model(self.folder, device="cpu")
            self.iteration = int(self.manifest["iteration"])
            self._same_model_asked(self.manifest)
        else:
            if (self.folder / "manifest.json").exists():
                raise VfxSwapError(f"{self.folder}: a model is already there; use --resume to continue it")
            config = o.asked_config() or copy.deepcopy(PRESETS["quick"])
            o.preset = o.preset or "quick"
            self.model = build_model(config)
            if o.init_from:
                o.init_parts = o.init_parts or self.model.shared_part_names()
                transfer.init_from(self.model, o.init_from, o.init_parts)
            self.iteration = 0
            self.manifest = self._new_manifest(config)
        for part in o.freeze:
            try:
                frozen = self.model.get_submodule(part)
            except AttributeError:
                raise VfxSwapError(f"--freeze {part}: no such part (parts: {', '.join(self.model.part_names())})") from None
            frozen.requires_grad_(False)
        from vfxswap.models.amp import train_morph

        # --morph: an amp model's mix of A's code in training (a resume keeps the saved one); others refuse it
        o.morph = train_morph(self.model, o.morph, (self.manifest.get("train") or {}).get("morph"))
        self.config = self.model.config
        self.model.to(self.device)
        if self.device.type == "cuda":
            self.model.to(memory_format=torch.channels_last)
            torch.backends.cudnn.benchmark = True  # every shape is static: time the conv algorithms once

        # --- optimiser, optional discriminator, and a resume's training state ----------------
        # fused on every device: one kernel for all parameters (on CPU 3x the foreach update), and
        # the only kind that can skip a non-finite step without the host waiting (guarded_update)
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]  # --freeze leaves some out
        if not self.trainable:
            raise VfxSwapError(f"--freeze {','.join(o.freeze)}: leaves nothing to train")
        self.optimizer = torch.optim.AdamW(self.trainable, lr=o.lr, betas=(0.5, 0.999), weight_decay=o.weight_decay,
                                           fused=True)
        self.disc = self.disc_opt = None
        if o.gan_power > 0:
            from vfxswap.models.nets import PatchDiscriminator

            self.disc = PatchDiscriminator().to(self.device)
            self.disc_opt = torch.optim.AdamW(self.disc.parameters(), lr=o.lr, betas=(0.5, 0.999), fused=True)
        self.lr_scale = 1.0  # halved by each roll-back (see lr_at)
        progress = {}
        if self.resuming:
            rng = checkpoint.load_training_state(self.folder, self.model, self.optimizer, device=self.device)
            if self.disc is not None:
                disc = store.load_extra_tensors(self.folder, "disc.", device=self.device)
                if disc:
                    self.disc.load_state_dict({k[len("disc."):]: v for k, v in disc.items()})
            progress = rng.pop(checkpoint.PROGRESS, {})
            self.lr_scale = float(progress.get("lr_scale", 1.0))
            if rng:
                checkpoint.restore_rng(rng)

        # --- data ----------------------------------------------------------------------------
        from vfxswap.train.data import default_workers

        if o.workers is None:
            o.workers = default_workers(int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
        res = self.config.resolution
        self.data = {}
        self._open_data(progress.get("data", {}))
        self.preview_batch = {ident: self._fixed_faces(folder, res) for ident, folder in (("A", o.src), ("B", o.dst))}

        # --- DDP, compile ------------------------------------------------------------------------
        self.pair: nn.Module = Pair(self.model)
        if self.world > 1 and self.disc is not None:
            # DDP wraps the generator only (the discriminator runs three times a step, which DDP's
            # one-forward-one-backward reducer does not allow): start every rank's discriminator
            # from rank 0's, and guarded_update averages its gradients, so the ranks stay equal.
            for t in self.disc.state_dict().values():
                torch.distributed.broadcast(t, src=0)
        if self.world > 1:
            self.pair = nn.parallel.DistributedDataParallel(
                self.pair, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.step_fn = torch.compile(self.pair) if o.compile else self.pair
        self._snapshot = None
        self.stopped_by: str | None = None  # the signal that asked the run to stop early, by name
        self._last_save = time.time()
        self.record = None  # monitor.RunRecord of this run (rank 0): what the panel and others follow

    # --- helpers -----------------------------------------------------------------------------

    @property
    def warp_until(self) -> int:
        """The iteration the random warp stops at: --iters less the --sharpen share (0: --no-warp)."""
        return round(self.opt.iters * (1 - self.opt.sharpen)) if self.opt.warp else 0

    def _open_data(self, position: dict) -> None:
        """The two sample streams, warped or not as the current iteration asks. Each stream's seed
        does not depend on the iteration: a resume, or the switch to sharpening, continues it at its
        position (a save from before positions were kept starts it over)."""
        from vfxswap.train.data import FaceSamples, make_loader, mask_kind_for

        o = self.opt
        self.warping = self.iteration < self.warp_until
        shard = (self.rank, self.world) if self.world > 1 else None
        for ident, folder, flip in (("A", o.src, o.flip_src), ("B", o.dst, o.flip_dst)):
            if ident in self.data:
                self.data[ident].close()
            kind = mask_kind_for(folder, o.mask)
            if ident not in self.data:
                log.info("%s (%s): losses and learned mask follow the %s", folder, ident,
                         "segmentation mattes" if kind == "seg" else "landmark hull")
            ds = FaceSamples(folder, self.config.resolution, face_type=self.config.face_type, flip=flip,
                             warp=self.warping, seed=o.seed, eyes_mouth_weight=o.eyes_mouth_weight, mask_kind=kind)
            self.data[ident] = make_loader(ds, o.batch, workers=o.workers, uniform_yaw=o.uniform_yaw,
                                           seed=o.seed * 1_000_003 + (ident == "B"),
                                           pin_memory=self.device.type == "cuda", distributed=shard,
                                           start=tuple(position.get(ident, (0, 0))))

    def _follow_warp_schedule(self) -> None:
        """Reopen the sample streams, at their positions, when the iteration has crossed
        `warp_until`: forward into the sharpening phase, or back out of it after a roll-back to a
        good state from before it."""
        if self.warping == (self.iteration < self.warp_until):
            return
        self._open_data({k: v.position for k, v in self.data.items()})
        if self.main and not self.opt.quiet:
            log.info("iteration %d: %s", self.iteration, self._warp_phase())

    def _warp_phase(self) -> str:
        """What the run does with the random warp from the current iteration on, in words: logged
        as a run starts (a --resume with --warp past the --sharpen share's start does not warp, and
        says why) and at each switch."""
        o = self.opt
        if not o.warp:
            return f"no random warp (--no-warp) to {o.iters}"
        if self.warping:
            then = f", then sharpening without it to {o.iters}" if self.warp_until < o.iters else ""
            return f"the random warp until {self.warp_until}{then}"
        return (f"sharpening without the random warp to {o.iters} (--sharpen {o.sharpen:g} of --iters {o.iters}: "
                f"the warp ends at {self.warp_until})")

    def _same_model_asked(self, manifest: dict) -> None:
        """--resume continues the saved model: a --preset or a model option (--arch, --ae-dims ...)
        asking for another one is refused (it would be silently ignored, and the manifest would
        record it beside the real config). Without them, the saved preset is the one recorded."""
        saved, overrides = manifest["config"], self.opt.model_overrides()
        if self.opt.preset is not None:  # the whole preset, with the options over it
            differs = json.loads(json.dumps(self.opt.asked_config().to_dict())) != saved  # as the manifest holds it
        else:
            differs = any(saved.get(k) != v for k, v in overrides.items())
        if differs:
            what = " ".join([f"--preset {self.opt.preset}"] * bool(self.opt.preset) + [
                f"--{k.replace('_', '-')} {v}" for k, v in overrides.items()])
            raise VfxSwapError(f"{self.folder}: {what} asks for another model than the saved one "
                               f"({saved.get('arch')}, {saved.get('resolution')} px); drop it to resume, "
                               f"or train a new model in another folder")
        if self.opt.preset is None:
            self.opt.preset = (manifest.get("train") or {}).get("preset")

    def _new_manifest(self, config) -> dict:
        import uuid

        from vfxswap.color import ENCODING_NAME, resolve_config

        refs, names = self.opt.release_refs(), self.opt.names()
        if not all(refs.get(k) for k in ("A", "B")):
            raise VfxSwapError("--release-ref is required: the performers' release reference is recorded verbatim "
                               "in the model and in every file it renders")
        with_name = lambda k, f: {"name": names.get(k) or Path(f).name, "faceset": str(Path(f).resolve()),
                                   "release_ref": refs[k], **_faceset_record(f)}
        now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        return {"format": "vfxswap-model", "format_version": 1, "vfxswap": __version__, "model_id": uuid.uuid4().hex,
                "config": config.to_dict(), "identities": {"A": with_name("A", self.opt.src),
                                                           "B": with_name("B", self.opt.dst)},
                "colour": {"encoding": ENCODING_NAME, "ocio_config": resolve_config().name},
                "iteration": 0, "history": "history.jsonl", "created": now, "updated": now, "train": {}}

    def _fixed_faces(self, folder: str, res: int, count: int = 4) -> torch.Tensor:
        """The same few faces every preview, unaugmented, so previews compare across time."""
        from vfxswap.train.data import FaceSamples

        ds = FaceSamples(folder, res, face_type=self.config.face_type, augment=False, warp=False, flip=False)
        idx = np.linspace(0, len(ds) - 1, min(count, len(ds))).astype(int)
        return torch.stack([ds[int(i)]["target"] for i in idx])

    def lr_at(self, it: int) -> float:
        """Step `it`'s learning rate: --lr times the roll-backs' factor (`lr_scale`), warmed up. The
        factor is saved with the training state, so a resume keeps it, and a --lr given on resume is
        scaled by it too: a rate lowered because the model diverged stays lowered."""
        return self.opt.lr * self.lr_scale * min(1.0, (it + 1) / max(1, self.opt.warmup))

    def _to(self, batch: dict) -> dict:
        """A loader batch on the device, widened to float32 there (it travels as float16);
        images channels_last on CUDA, as the model is."""
        fmt = torch.channels_last if self.device.type == "cuda" else torch.contiguous_format
        out = {}
        for k, v in batch.items():
            if torch.is_tensor(v):
                v = v.to(self.device, non_blocking=True)
                out[k] = v.to(torch.float32, memory_format=fmt if k in ("input", "target") else torch.contiguous_format)
        return out

    def _trained(self) -> list[tuple[nn.Module, torch.optim.Optimizer]]:
        """What a roll-back restores: the model and its optimiser, and with the GAN on the
        discriminator and its own (so the pair stays matched, as a resume would find it)."""
        return [(self.model, self.optimizer)] + ([(self.disc, self.disc_opt)] if self.disc is not None else [])

    def _take_snapshot(self) -> None:
        self._snapshot = ([(copy.deepcopy(m.state_dict()), copy.deepcopy(o.state_dict())) for m, o in self._trained()],
                          self.iteration)

    def _roll_back(self, why: str) -> None:
        """Non-finite loss: restore the last good state and halve the learning rate."""
        if self._snapshot is None:
            raise VfxSwapError(f"iteration {self.iteration}: {why} before any good state was recorded; "
                               f"lower --lr")
        states, it = self._snapshot
        for (module, optimizer), (weights, opt_state) in zip(self._trained(), states):
            module.load_state_dict(weights)
            # a copy: load_state_dict adopts the tensors it is given, and training would then
            # change the snapshot that a second roll-back returns to
            optimizer.load_state_dict(copy.deepcopy(opt_state))
        self.lr_scale *= 0.5
        lr = self.opt.lr * self.lr_scale
        log.warning("iteration %d: %s; rolled back to iteration %d and lowered lr to %.3g", self.iteration, why, it, lr)
        self.iteration = it
        self._history({"event": "rollback", "reason": why, "lr": lr})

    # --- one step ------------------------------------------------------------------------------

    def _match_colours(self, a: dict, b: dict) -> dict:
        """--ct-mode: A's input and target recoloured like B faces of this step, inside the masks
        (`train.ct`, which says why it is done here, on the device where the two batches meet,
        rather than in the data pipeline). The pairing and any random numbers come from (--seed,
        iteration, rank) alone, so a resume or a roll-back repeats them exactly."""
        if self.opt.ct_mode == "none":
            return a
        from vfxswap.train.ct import transfer_batch

        return transfer_batch(self.opt.ct_mode, a, b, seed=self.opt.seed, iteration=self.iteration, rank=self.rank)

    def step(self, a: dict, b: dict) -> InFlight:
        """Queue one update on the device and return its figures, still on their way back (read
        them with `InFlight.read()`; the loop does so one step later, so it never waits)."""
        from vfxswap.train.losses import gan_loss_d, gan_loss_g

        lr = self.lr_at(self.iteration)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        a = self._match_colours(a, b)
        loss_a, loss_b, rgb_a = forward_losses(self.step_fn, a, b, self.bf16)
        loss = loss_a + loss_b
        if self.disc is not None:
            loss = loss + self.opt.gan_power * gan_loss_g(self.disc(rgb_a * a["mask"]))
        trainable = self.trainable
        before = [p.detach().clone() for p in trainable] if self.opt.lr_dropout > 0 else None
        grad_norm, bad = guarded_update(self.optimizer, trainable, loss, self.opt.clip, distributed=self.world > 1)
        if before is not None:
            # lr dropout: each weight's update is dropped with this probability (its optimiser
            # moments still advance), a regulariser late in training.
            with torch.no_grad():
                for p, old in zip(trainable, before):
                    p.copy_(torch.where(torch.rand_like(p) < self.opt.lr_dropout, old, p))
        if self.disc is not None:
            d_loss = gan_loss_d(self.disc(a["target"] * a["mask"]), self.disc((rgb_a * a["mask"]).detach()))
            guarded_update(self.disc_opt, list(self.disc.parameters()), d_loss, self.opt.clip,
                           distributed=self.world > 1, average_grads=True, also_skip=bad)
        return InFlight.send(torch.stack([loss, loss_a, loss_b, grad_norm, bad]).detach(), self.iteration + 1, lr)

    # --- the loop --------------------------------------------------------------------------------

    def run(self) -> int:
        """Train to --iters (or to a stop signal), save, and record the session (`train.monitor`):
        how it ended, even when it failed."""
        from vfxswap.jobspec import changed
        from vfxswap.train.monitor import RunRecord

        if self.main:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._trim_history()
            shown = changed(self.opt, skip=SESSION_SKIP)
            self.record = RunRecord(self.folder, iteration=self.iteration, iters=self.opt.iters, options=shown)
        try:
            reached = self._run()
        except BaseException as exc:
            if self.record is not None:
                why = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"error: {type(exc).__name__}: {exc}"
                self.record.end(int(self.manifest.get("iteration", 0)), why)  # a resume continues from the last save
            raise
        if self.record is not None:
            self.record.end(reached, "finished" if reached >= self.opt.iters else f"stopped by {self.stopped_by}")
        return reached

    def _run(self) -> int:
        from vfxswap.progress import progress

        o = self.opt
        previous = self._catch_stop_signals()
        writer = self._tensorboard()
        bar = progress(total=o.iters, desc="train", unit="it") if self.main and not o.quiet else None
        if bar is not None:
            bar.update(self.iteration)
        self._samples, self._t0 = 0, time.time()
        started = self.iteration
        if self.main and not o.quiet and self.iteration < o.iters:
            log.info("iteration %d: %s", self.iteration, self._warp_phase())
        in_flight = None  # the last step queued; the loop reads its figures after queuing the next
        try:
            self._take_snapshot()
            while self.iteration < o.iters:
                self._follow_warp_schedule()
                a, b = self._to(next(self.data["A"])), self._to(next(self.data["B"]))
                queued = self.step(a, b)
                self.iteration += 1
                if in_flight is not None and not self._settle(in_flight, bar, writer):
                    in_flight = None  # rolled back: the step just queued is undone with the rest
                    continue
                in_flight = queued
                # Snapshots, previews and saves need this step's result, so the loop waits for it
                # on their iterations. The choice depends on the iteration alone, so under DDP
                # every rank waits, and rolls back, at the same step; the --save-minutes clock is
                # therefore consulted on snapshot iterations, and the ranks agree on a stop signal
                # at these waits (alone, a stop is taken at once).
                it = self.iteration
                snapshot = it % o.snapshot_every == 0
                save = it % o.save_every == 0 or (snapshot and time.time() - self._last_save > o.save_minutes * 60)
                preview = it % o.preview_every == 0
                stop = self.world == 1 and self.stopped_by is not None
                if not (snapshot or save or preview or it >= o.iters or stop):
                    continue
                if self.world > 1:
                    stop = self._ranks_stop()
                settled, in_flight = self._settle(in_flight, bar, writer, last=stop or it >= o.iters), None
                if not settled:
                    continue
                if snapshot:
                    self._take_snapshot()
                if preview and it < o.iters and not stop:  # the last ones come after the loop
                    self.preview()
                if save and it < o.iters and not stop:
                    self.save()
                if stop:
                    break
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            if bar is not None:
                bar.close()
            for loader in self.data.values():  # worker processes end now, not at garbage collection
                loader.close()
        if self.world > 1:
            self.ranks_identical = self._ranks_agree()
        # a resumed model already at --iters is left as it is: rewritten, its bytes and manifest
        # hash would change, and with them the header of every layer rendered with it after
        if self.main and (self.iteration != started or not self.resuming):
            self.save()
            self.preview()
        if self.world > 1:
            torch.distributed.barrier()
        return self.iteration

    def _settle(self, queued: InFlight, bar, writer, last: bool = False) -> bool:
        """Read a queued step's figures: log a good step (on --log-every and the `last` one, so the
        loss curve ends where the model does); roll back after a bad one (the device skipped its
        update; every rank sees the same verdict). True when it was good."""
        o = self.opt
        stats = queued.read()
        if stats.pop("bad"):
            self._roll_back("loss or gradients not finite")
            return False
        self._samples += 2 * o.batch * self.world
        if not self.main:
            return True
        rate = self._samples / max(1e-9, time.time() - self._t0)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{stats['loss']:.4f}", sps=f"{rate:.1f}")
        if queued.iteration % o.log_every == 0 or last:
            stats.update(iter=queued.iteration, time=round(time.time(), 3), samples_per_s=rate)
            self._history(stats)
            if self.record is not None:
                self.record.update(queued.iteration, loss_A=stats["loss_A"], loss_B=stats["loss_B"],
                                   samples_per_s=round(rate, 3))
            if writer is not None:
                for k in ("loss", "loss_A", "loss_B", "lr"):
                    writer.add_scalar(k, stats[k], queued.iteration)
        return True

    def _ranks_agree(self) -> bool:
        """DDP keeps replicas in step; check it (a digest of every weight, the discriminator's too,
        on every rank), so a diverged rank is reported instead of silently saving one rank's view."""
        import hashlib

        digest = hashlib.sha256()
        for module in (self.model, self.disc):
            for p in module.state_dict().values() if module is not None else ():
                digest.update(p.detach().cpu().contiguous().numpy().tobytes())
        digests = [None] * self.world
        torch.distributed.all_gather_object(digests, digest.hexdigest())
        agree = len(set(digests)) == 1
        if not agree:
            log.error("DDP ranks hold different weights at iteration %d: %s", self.iteration, digests)
        return agree

    def _catch_stop_signals(self) -> dict:
        """Ctrl-C (SIGINT) and a farm's cancel or pre-emption (SIGTERM, with a grace period before
        SIGKILL) both stop the run cleanly: finish the step, save, stop. Every rank listens, so
        torchrun's forwarded signals are handled alike. Returns the handlers to put back."""
        import threading

        if threading.current_thread() is not threading.main_thread():
            return {}
        return {s: signal.signal(s, self._on_stop_signal) for s in (signal.SIGINT, signal.SIGTERM)}

    def _on_stop_signal(self, signum, frame) -> None:
        if self.stopped_by is not None:  # asked twice: go now, without saving
            raise KeyboardInterrupt
        self.stopped_by = signal.Signals(signum).name
        if self.record is not None:
            self.record.stopping(self.stopped_by)
        if self.main:
            log.warning("interrupted (%s): saving at the end of this step%s; %s again aborts without saving",
                        self.stopped_by, f" (under DDP: at the next snapshot, within {self.opt.snapshot_every} iterations)"
                        if self.world > 1 else "", "Ctrl-C" if signum == signal.SIGINT else "the signal")

    def _ranks_stop(self) -> bool:
        """Under DDP: whether any rank was asked to stop, and by which signal (SIGTERM wins). All
        ranks decide together: a rank that left the loop alone would leave the others waiting in
        the next all-reduce."""
        signum = signal.Signals[self.stopped_by].value if self.stopped_by else 0
        flag = torch.tensor([float(signum)], device=self.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        signum = int(flag.item())
        if signum:
            self.stopped_by = signal.Signals(signum).name
        return bool(signum)

    # --- outputs -------------------------------------------------------------------------------------

    def save(self) -> None:
        from vfxswap.models import checkpoint, store

        if not self.main:
            return
        self.manifest["iteration"] = self.iteration
        self.manifest["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        train = {k: v for k, v in asdict(self.opt).items()
                 if k not in MANIFEST_SKIP}
        self.manifest["train"] = {**train, "lr_scale": self.lr_scale, "world_size": self.world,
                                  "device": str(self.device), "bf16": self.bf16}
        if getattr(self, "ranks_identical", None) is not None:
            self.manifest["train"]["ranks_identical"] = self.ranks_identical
        extra = {f"disc.{k}": v for k, v in self.disc.state_dict().items()} if self.disc is not None else None
        # what else an exact resume needs; the ranks step together, so rank 0's positions are every rank's
        progress = {"lr_scale": self.lr_scale, "data": {k: list(v.position) for k, v in self.data.items()}}
        store.save_model(self.folder, self.model, self.manifest, optimizer=self.optimizer,
                         rng={**checkpoint.rng_state(), checkpoint.PROGRESS: progress},
                         extra_tensors=extra, keep_backups=self.opt.keep_backups)
        self._last_save = time.time()

    def preview(self) -> None:
        from vfxswap.train.preview import loss_curve, preview_grid

        if not self.main:
            return
        self.model.eval()
        with torch.no_grad():
            a = self.preview_batch["A"].to(self.device)
            b = self.preview_batch["B"].to(self.device)
            columns = {"A": a, "A->A": self.model(a, "A")[0], "B": b, "B->B": self.model(b, "B")[0],
                       "B->A": self.model.swap(b, "A")[0]}
        self.model.train()
        folder = self.folder / "previews"
        preview_grid({k: v.float().cpu() for k, v in columns.items()}, folder / f"preview_{self.iteration:08d}.png")
        history = self.folder / "history.jsonl"
        if history.exists():
            loss_curve(history, folder / "loss.png")

    def _history(self, record: dict) -> None:
        if not self.main:
            return
        record = {"iter": self.iteration, **record}
        with open(self.folder / "history.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()

    def _trim_history(self) -> None:
        """After a resume, forget log lines past the saved iteration (and a line cut short by a
        kill), so the loss curve continues without a seam or a duplicate."""
        path = self.folder / "history.jsonl"
        if not path.exists():
            return
        kept = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if record.get("iter", 0) <= self.iteration:
                kept.append(json.dumps(record))
        from vfxswap.atomic import write_text

        write_text(path, "".join(k + "\n" for k in kept))

    def _tensorboard(self):
        if not (self.opt.tensorboard and self.main):
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            log.warning("--tensorboard: the tensorboard package is not installed; logging to history.jsonl only")
            return None
        return SummaryWriter(str(self.folder / "tensorboard"))


def _faceset_record(folder: str) -> dict:
    """What a render needs to know of an identity's faceset without it at hand (on a farm node):
    the size its faces were cut at (the render cuts its input the same way) and the identity's
    mean embedding (the faces a render replaces by default are those near B's)."""
    from vfxswap.faces.identity import mean_embedding
    from vfxswap.faceset.store import Faceset

    try:
        with Faceset(folder) as fs:
            rows = fs.faces(include_excluded=False)
    except VfxSwapError:
        return {}  # no faceset there: the data loader says so, in its own words
    sizes = [int(r.size) for r in rows if r.size]
    embeddings = [r.embedding for r in rows if r.embedding is not None]
    record = {"faceset_size": max(set(sizes), key=sizes.count) if sizes else None}
    if embeddings:
        record["embedding"] = [round(float(v), 6) for v in mean_embedding(embeddings)]
    return record


def train(options: TrainOptions) -> int:
    """Train (or resume) a model; returns the iteration reached. Stopped early by SIGTERM (a farm's
    cancel or pre-emption) it saves, then raises, so the task does not count as finished."""
    trainer = Trainer(options)
    try:
        reached = trainer.run()
    finally:
        if trainer.world > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    if trainer.main and trainer.stopped_by not in (None, "SIGINT") and reached < options.iters:  # one report
        raise VfxSwapError(f"{options.model_dir}: stopped by {trainer.stopped_by} at iteration {reached} of "
                           f"{options.iters}; saved there, and the same command with --resume continues it")
    return reached
