"""Training end to end: a quick model learns the GRID identities, survives kill -9 and resumes
exactly where it saved, rolls back on a non-finite loss, and trains under torchrun (gloo, CPU)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import need_shared, write_faceset, write_seg_mattes
from vfxswap.errors import VfxSwapError
from vfxswap.faces.extract import extract
from vfxswap.jobspec import ExtractOptions, TrainOptions, from_argv, to_argv
from vfxswap.models.store import load_model
from vfxswap.train.data import FaceSamples
from vfxswap.train.losses import masked_mse
from vfxswap.train.trainer import Trainer, train

REF = {"A": "REL-2026-0042 (test)", "B": "REL-2026-0043 (test)"}
REFS = {"release_ref_src": REF["A"], "release_ref_dst": REF["B"]}  # as TrainOptions takes them


def _cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "vfxswap", *map(str, args)], capture_output=True, text=True,
                          timeout=600, **kw)


@pytest.fixture(scope="module", params=["hull", "seg"])
def synthetic(request, tmp_path_factory):
    """Two synthetic facesets; with "seg", every face also has a segmentation matte, so training
    follows the mattes (`--mask auto`) and every test here runs on that path too."""
    root = tmp_path_factory.mktemp("syn")
    folders = write_faceset(root / "A", seed=1), write_faceset(root / "B", seed=2)
    if request.param == "seg":
        for folder in folders:
            write_seg_mattes(folder)
    return folders


def _options(a, b, model, **kw) -> TrainOptions:
    base = dict(src=str(a), dst=str(b), model_dir=str(model), **REFS, iters=4, batch=4, workers=0,
                preview_every=1000, save_every=1000, log_every=1, quiet=True, lr=2e-4, warmup=1)
    base.update(kw)
    return TrainOptions(**base)


def test_release_ref_is_required_and_recorded(synthetic, tmp_path):
    a, b = synthetic
    with pytest.raises(VfxSwapError, match="release-ref"):
        Trainer(_options(a, b, tmp_path / "m", release_ref_src=None, release_ref_dst=None))
    assert train(_options(a, b, tmp_path / "m", iters=2)) == 2
    _, manifest = load_model(tmp_path / "m")
    assert manifest["identities"]["A"]["release_ref"] == REF["A"]
    assert manifest["identities"]["B"]["release_ref"] == REF["B"]
    out = _cli("model", "info", tmp_path / "m")
    assert out.returncode == 0 and REF["A"] in out.stdout
    again = _cli("train", "--src", a, "--dst", b, "--model", tmp_path / "m", "--release-ref", "X", "--iters", "3")
    assert again.returncode == 1 and "--resume" in again.stderr and "Traceback" not in again.stderr


def test_every_model_dimension_is_set_from_the_command_line(tmp_path):
    """`vfxswap train` takes each ModelConfig field over the preset; the manifest (and so the
    model `vfxswap render` builds) records them. Bad values are one line before anything runs;
    a resume asking for other dimensions is refused, one asking for the saved ones is not."""
    a, b = (write_faceset(tmp_path / name, face_type="full", seed=seed) for name, seed in (("A", 1), ("B", 2)))
    base = ["train", "--src", a, "--dst", b, "--release-ref", "REL-9", "--batch", "2", "--workers", "0",
            "--preview-every", "1000", "--save-every", "1000"]
    out = _cli(*base, "--model", tmp_path / "m", "--iters", "2", "--ae-dims", "64", "--e-dims", "16", "--d-dims", "8",
               "--d-mask-dims", "8", "--arch", "liae", "--variants", "u", "--resolution", "32", "--face-type", "full")
    assert out.returncode == 0, out.stderr
    config = json.loads((tmp_path / "m" / "manifest.json").read_text())["config"]
    assert config == {"arch": "liae", "resolution": 32, "ae_dims": 64, "e_dims": 16, "d_dims": 8, "d_mask_dims": 8,
                      "variants": "u", "face_type": "full", "max_dims": 0}
    model, _ = load_model(tmp_path / "m")
    assert model.config.to_dict() == config and sorted(model.parts) == ["decoder", "encoder", "inter_AB", "inter_B"]
    same = _cli(*base, "--model", tmp_path / "m", "--iters", "3", "--resume", "--ae-dims", "64")
    assert same.returncode == 0, same.stderr
    other = _cli(*base, "--model", tmp_path / "m", "--iters", "4", "--resume", "--ae-dims", "128")
    assert other.returncode == 1 and "--ae-dims 128 asks for another model" in other.stderr
    for bad, message in ((["--resolution", "40"], "resolution: 40 must be a multiple of 32 for variants 'ud'"),
                         (["--e-dims", "0"], "e_dims: 0 must be a positive integer"),
                         (["--variants", "x"], "variants: 'x' must be distinct letters")):
        out = _cli(*base, "--model", tmp_path / "bad", *bad)
        assert out.returncode == 1 and message in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert not (tmp_path / "bad").exists()


def _nan_on_calls(trainer, monkeypatch, calls: set[int]) -> None:
    """Make the forward's A reconstruction NaN on these calls (1-based): a bad step as a diverging
    model would produce it, through the real loss, backward and optimiser."""
    real, n = trainer.step_fn, [0]

    def flaky(x, y):
        n[0] += 1
        (rgb_a, mask_a), rest = real(x, y)
        return (rgb_a * float("nan") if n[0] in calls else rgb_a, mask_a), rest

    monkeypatch.setattr(trainer, "step_fn", flaky)


def _history(model_dir) -> list[dict]:
    return [json.loads(line) for line in (model_dir / "history.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("option, value, message", [
    ("save_every", 0, "--save-every 0: must be at least 1"), ("log_every", 0, "--log-every 0: must be at least 1"),
    ("keep_backups", -1, "--keep -1: must be at least 0"), ("lr", -1e-4, "--lr -0.0001: must be above 0"),
    ("lr", float("nan"), "--lr nan: must be above 0"), ("lr_dropout", 1.0, "--lr-dropout 1.0: must be from 0"),
    ("freeze", ["encoder", "inter", "decoder_A", "decoder_B"], "leaves nothing to train")])
def test_a_training_option_the_run_cannot_use_is_one_line_before_it_starts(synthetic, tmp_path, option, value,
                                                                            message):
    """Not a ZeroDivisionError mid-run, nor a finished run thrown away at its first save."""
    a, b = synthetic
    with pytest.raises(VfxSwapError, match=re.escape(message)):
        Trainer(_options(a, b, tmp_path / "m", **{option: value}))
    assert not (tmp_path / "m").exists()


def test_clip_0_trains_without_clipping(synthetic, tmp_path):
    """--clip 0 reads as "no clipping" (it scaled every gradient to zero: the model never moved)."""
    a, b = synthetic
    trainer = Trainer(_options(a, b, tmp_path / "m", clip=0.0))
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    stats = trainer.step(trainer._to(next(trainer.data["A"])), trainer._to(next(trainer.data["B"]))).read()
    assert stats["bad"] is False and stats["grad_norm"] > 1.0  # measured, and above the default clip
    assert not all(torch.equal(v, before[k]) for k, v in trainer.model.state_dict().items())
    for loader in trainer.data.values():
        loader.close()


def test_resume_refuses_a_preset_that_asks_for_another_model(synthetic, tmp_path):
    """--resume continues the saved model; a --preset or --arch for another one was silently
    ignored and then recorded in the manifest beside the real config."""
    a, b = synthetic
    train(_options(a, b, tmp_path / "m", iters=1))
    with pytest.raises(VfxSwapError, match="--arch liae asks for another model"):
        Trainer(_options(a, b, tmp_path / "m", resume=True, arch="liae"))
    assert train(_options(a, b, tmp_path / "m", resume=True, preset="quick", iters=2)) == 2  # the same one: fine
    assert load_model(tmp_path / "m")[1]["train"]["preset"] == "quick"


def test_resuming_a_finished_model_leaves_its_files_as_they_are(synthetic, tmp_path):
    """`--resume --iters N` on a model already at N (a second `vfxswap demo`, a farm retry of a
    finished task) rewrote every file: a new backup, a new manifest hash, and so other bytes in
    the header of every layer rendered after."""
    a, b = synthetic
    train(_options(a, b, tmp_path / "m", iters=2))
    before = {p.name: p.read_bytes() for p in (tmp_path / "m").iterdir() if p.is_file()}
    assert train(_options(a, b, tmp_path / "m", iters=2, resume=True)) == 2
    assert {p.name: p.read_bytes() for p in (tmp_path / "m").iterdir() if p.is_file()} == before


def _close(trainer) -> None:
    for loader in trainer.data.values():
        loader.close()


def test_flips_are_per_identity_and_the_source_is_not_flipped_by_default(synthetic, tmp_path):
    """Mirroring A, the face we render, erases its asymmetries (a parting, a scar): A is flipped
    only on request (--flip-src); B is flipped unless --no-flip-dst."""
    a, b = synthetic
    for kw, want in (({}, (False, True)), ({"flip_src": True, "flip_dst": False}, (True, False))):
        trainer = Trainer(_options(a, b, tmp_path / "m", **kw))
        assert (trainer.data["A"].dataset.flip, trainer.data["B"].dataset.flip) == want
        _close(trainer)
    required = ["--src=a", "--dst=b", "--model=m"]
    defaults = from_argv(TrainOptions, required)
    assert (defaults.flip_src, defaults.flip_dst) == (False, True)
    asked = from_argv(TrainOptions, [*required, "--flip-src", "--no-flip-dst"])
    assert (asked.flip_src, asked.flip_dst) == (True, False)
    assert {"--flip-src", "--no-flip-dst"} <= set(to_argv(asked))


def test_a_resume_with_no_warp_trains_on_without_the_warp_and_with_warp_warps_again(synthetic, tmp_path):
    """The final sharpening phase: `--resume --no-warp` continues the model with the input no
    longer warped; the value given now applies, and the manifest's train record says so. A
    later `--resume --warp` turns it back on, until the --sharpen share of --iters begins."""
    a, b = synthetic
    train(_options(a, b, tmp_path / "m", iters=2))
    assert load_model(tmp_path / "m")[1]["train"]["warp"] is True
    options = from_argv(TrainOptions, to_argv(_options(a, b, tmp_path / "m", iters=3, resume=True)) + ["--no-warp"])
    options.quiet = True
    trainer = Trainer(options)
    assert not trainer.data["A"].dataset.warp and not trainer.data["B"].dataset.warp
    assert trainer.run() == 3
    assert load_model(tmp_path / "m")[1]["train"]["warp"] is False
    options = from_argv(TrainOptions, to_argv(_options(a, b, tmp_path / "m", iters=8, resume=True)) + ["--warp"])
    options.quiet = True
    trainer = Trainer(options)
    assert trainer.warp_until == 4 and trainer.warping
    assert trainer.data["A"].dataset.warp and trainer.data["B"].dataset.warp
    assert trainer._warp_phase() == "the random warp until 4, then sharpening without it to 8"
    assert trainer.run() == 8 and not trainer.data["A"].dataset.warp  # sharpened from 4 on
    assert load_model(tmp_path / "m")[1]["train"]["warp"] is True


def test_sharpen_turns_the_warp_off_for_the_last_share_as_a_resume_with_no_warp_would(synthetic, tmp_path):
    """DeepFaceLab's recipe in one run: --sharpen 0.5 to 8 iterations trains 4 with the random
    warp and 4 without it, the very same work as 4 warped and then `--resume --no-warp` to 8."""
    a, b = synthetic
    kw = dict(seed=5, workers=1)  # a worker process: the switch reopens the loaders mid-stream
    one = Trainer(_options(a, b, tmp_path / "one", iters=8, sharpen=0.5, **kw))
    assert one.warp_until == 4 and one.data["A"].dataset.warp
    assert one.run() == 8 and not one.data["A"].dataset.warp and not one.data["B"].dataset.warp
    assert train(_options(a, b, tmp_path / "two", iters=4, sharpen=0.0, **kw)) == 4
    assert train(_options(a, b, tmp_path / "two", iters=8, warp=False, resume=True, **kw)) == 8
    weights = lambda m: load_model(m)[0].state_dict()
    two = weights(tmp_path / "two")
    assert all(torch.equal(v, two[k]) for k, v in weights(tmp_path / "one").items())
    warped = Trainer(_options(a, b, tmp_path / "warped", iters=8, sharpen=0.0, **kw))
    assert warped.run() == 8
    assert not all(torch.equal(v, two[k]) for k, v in weights(tmp_path / "warped").items())  # the switch did something
    # a roll-back to a good state from before the switch warps again until the switch
    one.iteration = 3
    one._follow_warp_schedule()
    assert one.warping and one.data["A"].dataset.warp and one.data["B"].dataset.warp
    one.iteration = 4
    one._follow_warp_schedule()
    assert not one.warping and not one.data["A"].dataset.warp
    for loader in one.data.values():
        loader.close()
    with pytest.raises(VfxSwapError, match="--sharpen 1.5"):
        _options(a, b, tmp_path / "bad", sharpen=1.5).check()


def test_resume_continues_exactly_as_an_unbroken_run(synthetic, tmp_path, monkeypatch):
    """K iterations straight, or K/2 then --resume to K (stopping mid-epoch: 12 faces are 3
    batches of 4): the same batches in the same order, the same weights and the same losses.
    lr dropout draws from the global torch RNG, so its saved state is exercised too, and
    --ct-mode rct's pairing of A with B faces, drawn from the seed and the iteration, too."""
    import vfxswap.train.ct as ct

    a, b = synthetic
    transferred, real = [], ct.transfer_batch  # each step's colour transfer: its iteration and its result

    def spy(mode, batch_a, batch_b, **kw):
        out = real(mode, batch_a, batch_b, **kw)
        transferred.append((kw["iteration"], out["target"].sum().item(), out["input"].sum().item()))
        assert not torch.equal(out["target"], batch_a["target"])
        return out

    monkeypatch.setattr(ct, "transfer_batch", spy)
    kw = dict(iters=8, lr_dropout=0.2, seed=3, sharpen=0.0, ct_mode="rct")  # the sharpening share is of --iters
    assert train(_options(a, b, tmp_path / "straight", **kw)) == 8
    straight_transfers, transferred[:] = transferred[:], []
    assert [t[0] for t in straight_transfers] == list(range(8))
    assert train(_options(a, b, tmp_path / "split", **{**kw, "iters": 4})) == 4
    assert train(_options(a, b, tmp_path / "split", **kw, resume=True)) == 8
    assert transferred == straight_transfers
    assert load_model(tmp_path / "split")[1]["train"]["ct_mode"] == "rct"
    straight, _ = load_model(tmp_path / "straight")
    split, _ = load_model(tmp_path / "split")
    other = split.state_dict()
    assert all(torch.equal(v, other[k]) for k, v in straight.state_dict().items())  # bitwise: the same CPU work
    figures = lambda m: [(e["iter"], e["loss"], e["loss_A"], e["loss_B"], e["lr"]) for e in _history(m)]
    assert figures(tmp_path / "split") == figures(tmp_path / "straight")
    assert [e[0] for e in figures(tmp_path / "straight")] == list(range(1, 9))


def test_a_learning_rate_lowered_by_a_roll_back_survives_a_resume(synthetic, tmp_path, monkeypatch):
    """A roll-back halves the learning rate; a resume keeps the factor (the CLI's lr came back),
    and a --lr given on resume is scaled by it too."""
    a, b = synthetic
    trainer = Trainer(_options(a, b, tmp_path / "m", iters=7, snapshot_every=3))
    _nan_on_calls(trainer, monkeypatch, {5})
    lr0 = trainer.lr_at(10**6)
    assert trainer.run() == 7
    resumed = Trainer(_options(a, b, tmp_path / "m", iters=9, resume=True))
    assert resumed.lr_at(10**6) == pytest.approx(lr0 / 2)
    assert resumed.run() == 9
    assert [e["lr"] for e in _history(tmp_path / "m") if e["iter"] > 7] == pytest.approx([lr0 / 2] * 2)
    given = Trainer(_options(a, b, tmp_path / "m", iters=9, resume=True, lr=1e-3))
    assert given.lr_at(10**6) == pytest.approx(5e-4)
    _close(given)


def test_face_files_deleted_by_hand_are_left_out(synthetic, tmp_path):
    """Pruning bad faces by deleting their files (DeepFaceLab's habit) must not kill a loader
    worker mid-run: those faces are left out, with a warning."""
    a, _ = synthetic
    pruned = tmp_path / "pruned"
    shutil.copytree(a, pruned)
    full = FaceSamples(pruned, 32)
    Path(full.paths[1]).unlink()
    kept = FaceSamples(pruned, 32)
    assert len(kept) == len(full) - 1 and full.paths[1] not in kept.paths
    assert kept.landmarks.shape[0] == len(kept) == len(kept.sizes)
    assert torch.isfinite(kept[len(kept) - 1]["target"]).all()


def test_a_non_finite_step_is_skipped_on_the_device(synthetic, tmp_path, monkeypatch):
    """The bad step's verdict stays a tensor and the fused optimiser skips the update itself:
    weights, moments and step count are untouched, with nothing read back to decide it."""
    a, b = synthetic
    trainer = Trainer(_options(a, b, tmp_path / "m"))
    batch = lambda: (trainer._to(next(trainer.data["A"])), trainer._to(next(trainer.data["B"])))
    assert trainer.step(*batch()).read()["bad"] is False
    weights = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    moments = {id(p): {k: v.clone() for k, v in s.items()} for p, s in trainer.optimizer.state.items()}
    _nan_on_calls(trainer, monkeypatch, {1})
    queued = trainer.step(*batch())
    assert torch.is_tensor(queued.values) and queued.values.shape == (5,)
    stats = queued.read()
    assert stats["bad"] is True and not np.isfinite(stats["loss"])
    assert all(torch.equal(v, weights[k]) for k, v in trainer.model.state_dict().items())
    assert all(torch.equal(v, moments[id(p)][k]) for p, s in trainer.optimizer.state.items() for k, v in s.items())
    assert trainer.step(*batch()).read()["bad"] is False  # and the next good step trains again
    assert not all(torch.equal(v, weights[k]) for k, v in trainer.model.state_dict().items())
    for loader in trainer.data.values():
        loader.close()


def test_non_finite_loss_rolls_back_and_lowers_lr(synthetic, tmp_path, monkeypatch):
    a, b = synthetic
    trainer = Trainer(_options(a, b, tmp_path / "m", iters=7, snapshot_every=3))
    _nan_on_calls(trainer, monkeypatch, {5})  # read one step late: step 6 was queued before the roll-back
    lr0 = trainer.lr_at(10**6)
    assert trainer.run() == 7
    assert trainer.lr_at(10**6) == pytest.approx(lr0 / 2)
    events = _history(tmp_path / "m")
    rollbacks = [e for e in events if e.get("event") == "rollback"]
    assert len(rollbacks) == 1 and rollbacks[0]["iter"] == 3  # back to the snapshot at iteration 3
    assert all(np.isfinite(e["loss"]) for e in events if "loss" in e)
    steps = [e["iter"] for e in events if "loss" in e]
    assert steps == [1, 2, 3, 4, 4, 5, 6, 7]  # 4 logged before the bad 5; the rest again after the roll-back
    assert all(torch.isfinite(p).all() for p in trainer.model.state_dict().values())


def test_a_second_roll_back_returns_to_the_same_good_state(synthetic, tmp_path, monkeypatch):
    """Two bad steps with good steps between them and no new snapshot: both roll-backs must
    restore the optimizer state as it was at the snapshot, not as the good steps left it."""
    a, b = synthetic
    trainer = Trainer(_options(a, b, tmp_path / "m", iters=4, snapshot_every=2))
    _nan_on_calls(trainer, monkeypatch, {3, 6})  # good, good (snapshot at 2), bad, .., bad, ...
    real_roll_back, seen = trainer._roll_back, []

    def roll_back(why):
        real_roll_back(why)
        seen.append({k: v["exp_avg"].clone() for k, v in trainer.optimizer.state.items()})

    monkeypatch.setattr(trainer, "_roll_back", roll_back)
    assert trainer.run() == 4
    assert len(seen) == 2 and seen[0] and seen[0].keys() == seen[1].keys()
    assert all(torch.equal(seen[0][k], seen[1][k]) for k in seen[0])


def test_a_roll_back_restores_the_discriminator_with_the_model(synthetic, tmp_path):
    """With the GAN on, the discriminator and its optimiser go back to the snapshot too: a
    discriminator that kept the steps the model lost would face a generator it has not seen."""
    a, b = synthetic
    trainer = Trainer(_options(a, b, tmp_path / "m", gan_power=0.1))
    trainer.folder.mkdir()  # the roll-back is logged there
    batch = lambda: (trainer._to(next(trainer.data["A"])), trainer._to(next(trainer.data["B"])))
    trainer.step(*batch()).read()
    trainer._take_snapshot()
    disc = {k: v.clone() for k, v in trainer.disc.state_dict().items()}
    moments = [v["exp_avg"].clone() for v in trainer.disc_opt.state.values()]
    for _ in range(2):
        assert trainer.step(*batch()).read()["bad"] is False
    assert not all(torch.equal(v, disc[k]) for k, v in trainer.disc.state_dict().items())
    trainer._roll_back("test")
    assert all(torch.equal(v, disc[k]) for k, v in trainer.disc.state_dict().items())
    assert all(torch.equal(v["exp_avg"], m) for v, m in zip(trainer.disc_opt.state.values(), moments))
    for loader in trainer.data.values():
        loader.close()


def test_kill_9_then_resume_continues_from_the_last_save(synthetic, tmp_path):
    a, b = synthetic
    model = tmp_path / "m"
    cmd = [sys.executable, "-m", "vfxswap", "train", "--src", str(a), "--dst", str(b), "--model", str(model),
           "--release-ref", "REL-1", "--iters", "400", "--batch", "4", "--workers", "0", "--save-every", "5",
           "--log-every", "1", "--preview-every", "1000", "--lr", "2e-4", "--warmup", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline:
        manifest = model / "manifest.json"
        if manifest.exists() and json.loads(manifest.read_text())["iteration"] >= 15:
            break
        time.sleep(0.2)
    time.sleep(0.7)  # land somewhere between two saves
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    _, saved = load_model(model)
    at = saved["iteration"]
    assert 15 <= at < 400
    done = _cli("train", "--src", a, "--dst", b, "--model", model, "--resume", "--iters", at + 6, "--batch", 4,
                "--workers", 0, "--log-every", 1, "--save-every", 5, "--preview-every", 1000)
    assert done.returncode == 0, done.stderr
    _, final = load_model(model)
    assert final["iteration"] == at + 6
    assert final["identities"]["A"]["release_ref"] == "REL-1"  # kept from the first run
    iters = [json.loads(line)["iter"] for line in (model / "history.jsonl").read_text().splitlines()]
    assert iters == list(range(1, at + 7))  # continuous: no gap, no duplicate after the kill
    assert any((model / "backups").iterdir())


def test_two_process_ddp_on_cpu_trains_one_model(synthetic, tmp_path):
    """Two ranks on different shards of the data end with one model, and, with the GAN on, one
    discriminator (DDP does not wrap it: its gradients are averaged by hand)."""
    a, b = synthetic
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "vfxswap", "train", "--src", str(a), "--dst", str(b), "--model", str(tmp_path / "m"),
                          "--release-ref", "REL-DDP", "--iters", "4", "--batch", "2", "--workers", "0",
                          "--device", "cpu", "--preview-every", "1000", "--log-every", "1", "--gan-power", "0.1"],
                         capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    _, manifest = load_model(tmp_path / "m")
    assert manifest["iteration"] == 4
    assert manifest["train"]["world_size"] == 2
    assert manifest["train"]["ranks_identical"] is True



DDP_NAN_ON_RANK_0 = """
import json, sys, torch
from vfxswap.jobspec import TrainOptions
from vfxswap.train.trainer import Trainer
a, b, model = sys.argv[1:4]
trainer = Trainer(TrainOptions(src=a, dst=b, model_dir=model, release_ref_src="R-A", release_ref_dst="R-B", iters=6, batch=2,
                               workers=0, device="cpu", snapshot_every=2, preview_every=1000, log_every=1, quiet=True,
                               lr=2e-4, warmup=1))
if trainer.rank == 0:  # only this rank's forward goes bad, at its fourth call
    real, calls = trainer.step_fn, [0]
    def flaky(x, y):
        calls[0] += 1
        (rgb_a, mask_a), rest = real(x, y)
        return (rgb_a * float("nan") if calls[0] == 4 else rgb_a, mask_a), rest
    trainer.step_fn = flaky
done = trainer.run()
with open(f"{model}.rank{trainer.rank}.json", "w") as f:  # a file each: printed lines interleave
    json.dump({"rank": trainer.rank, "done": done, "lr": trainer.lr_at(10**6), "identical": trainer.ranks_identical}, f)
torch.distributed.destroy_process_group()
"""


def test_a_bad_step_on_one_ddp_rank_rolls_back_every_rank(synthetic, tmp_path):
    """A NaN on one rank alone: every rank skips that step and rolls back with it (a rank that
    went its own way would leave the others waiting in the gradient all-reduce), and the ranks
    still end identical."""
    a, b = synthetic
    script = tmp_path / "nan_on_rank_0.py"
    script.write_text(DDP_NAN_ON_RANK_0)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(script), str(a), str(b), str(tmp_path / "m")],
                         capture_output=True, text=True, timeout=180, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    results = [json.loads((tmp_path / f"m.rank{rank}.json").read_text()) for rank in (0, 1)]
    assert sorted(r["rank"] for r in results) == [0, 1]
    assert all(r["done"] == 6 and r["identical"] is True for r in results)
    assert results[0]["lr"] == results[1]["lr"] == pytest.approx(1e-4)  # both halved their lr once
    rollbacks = [e for e in _history(tmp_path / "m") if e.get("event") == "rollback"]
    assert [e["iter"] for e in rollbacks] == [2]

GRID_A, GRID_B = "identities/A_grid_s1", "identities/B_grid_brbk7n"


def _stills(src, dst, names):
    dst.mkdir(parents=True)
    for name in names:
        (dst / name).symlink_to(src / name)
    return dst


def _heldout_psnr(model, faceset) -> float:
    """A->A reconstruction PSNR (dB, model encoding) inside the face mask, on faces not trained on."""
    ds = FaceSamples(faceset, model.config.resolution, face_type=model.config.face_type, augment=False, warp=False,
                     flip=False)
    batch = [ds[i] for i in range(len(ds))]
    x = torch.stack([s["target"] for s in batch])
    m = torch.stack([s["mask"] for s in batch])
    with torch.no_grad():
        pred, _ = model(x, "A")
    return float(10 * torch.log10(1.0 / masked_mse(pred, x, m)))


def test_quick_model_learns_the_grid_identities(shared_data, shared_file, tmp_path):
    src_a, src_b = shared_data / GRID_A, shared_data / GRID_B
    names_a = sorted(p.name for p in src_a.glob("*.jpg"))
    names_b = sorted(p.name for p in src_b.glob("*.jpg"))
    if len(names_a) < 60 or len(names_b) < 40:
        need_shared("GRID identity stills absent")
    for rel in ("videos/grid/brbk7n.mpg", "exr/marcie/marcie_512_linear_srgb_DERIVED.exr"):
        shared_file(rel)  # what the render at the end reads: checked before minutes of training
    opts = ExtractOptions(detector="dlib", landmarker="dlib", size=96)
    fs = {}
    for key, src, names in (("A", src_a, names_a[::2]), ("A_held", src_a, names_a[1::9]), ("B", src_b, names_b[::2])):
        fs[key] = tmp_path / f"fs_{key}"
        extract(str(_stills(src, tmp_path / f"in_{key}", names)), str(fs[key]), opts)
    model_dir = tmp_path / "model"
    options = TrainOptions(src=str(fs["A"]), dst=str(fs["B"]), model_dir=str(model_dir), **REFS,
                           preset="quick", iters=160, batch=8, lr=3e-4, warmup=10, workers=2, log_every=10,
                           preview_every=80, save_every=80, quiet=True)
    trainer = Trainer(options)
    before = _heldout_psnr(trainer.model.eval(), fs["A_held"])
    trainer.model.train()
    trainer.run()
    model, _ = load_model(model_dir)
    after = _heldout_psnr(model.eval(), fs["A_held"])
    losses = [json.loads(line)["loss"] for line in (model_dir / "history.jsonl").read_text().splitlines()]
    print(f"held-out A->A PSNR {before:.2f} dB untrained -> {after:.2f} dB after 160 its; "
          f"loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    assert after > before + 3.0
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3])
    previews = sorted((model_dir / "previews").glob("preview_*.png"))
    assert previews and (model_dir / "previews" / "loss.png").is_file()
    shutil.copy(previews[-1], tmp_path / "last_preview.png")
    _render_b_as_a(shared_data, model_dir, tmp_path)


def _render_b_as_a(shared_data, model_dir, tmp_path):
    """The trained model over B's own footage (frames B was not trained on) and over an HDR plate:
    layers with the right windows, channels and provenance; highlights above 1 survive."""
    from vfxswap.plates.convert import convert
    from vfxswap.plates import read_image
    from vfxswap.jobspec import RenderOptions
    from vfxswap.render.render import render

    convert(str(shared_data / "videos" / "grid" / "brbk7n.mpg"), str(tmp_path / "b_plates" / "b.####.exr"),
            frames="1041-1044")
    extract(str(tmp_path / "b_plates" / "b.####.exr"), str(tmp_path / "b_faces"), ExtractOptions(detector="dlib", landmarker="dlib", size=96))
    report = render(RenderOptions(model=str(model_dir), plates=str(tmp_path / "b_plates" / "b.####.exr"),
                                  faceset=str(tmp_path / "b_faces"), out=str(tmp_path / "b_render"), comp=True))
    assert report.written == [1041, 1042, 1043, 1044] and not report.without_faces
    layer = read_image(tmp_path / "b_render" / "face.1042.exr", dtype="native")
    plate = read_image(tmp_path / "b_plates" / "b.1042.exr")
    assert layer.channels == ("R", "G", "B", "A") and layer.source_format == "half"
    assert layer.display_window == plate.display_window and layer.data_window.width < plate.display_window.width
    assert layer.attribute("vfxswap:releaseRef") == f"A: {REF['A']}; B: {REF['B']}"
    assert layer.attribute("vfxswap:synthetic") == "true" and len(layer.attribute("vfxswap:modelManifestSha256")) == 64
    comp = read_image(tmp_path / "b_render" / "comp.1042.exr").pixels[..., :3]
    inside = layer.on_display_window()[..., 3] > 0.9
    assert np.abs(comp - plate.pixels[..., :3])[inside].mean() > 0.01  # the face changed
    marcie = shared_data / "exr" / "marcie" / "marcie_512_linear_srgb_DERIVED.exr"
    if marcie.exists():  # HDR: the portrait exposed up until her skin itself sits above display white
        from vfxswap.plates import Image, write_image

        m = read_image(marcie)
        hot = Image(m.pixels * np.array([6.0, 6.0, 6.0, 1.0], np.float32), m.channels, m.data_window,
                    m.display_window, dict(m.attributes))
        write_image(tmp_path / "hdr" / "m.1001.exr", hot)
        extract(str(tmp_path / "hdr" / "m.####.exr"), str(tmp_path / "hdr_faces"), ExtractOptions(detector="dlib", landmarker="dlib", size=96))
        render(RenderOptions(model=str(model_dir), plates=str(tmp_path / "hdr" / "m.####.exr"),
                             faceset=str(tmp_path / "hdr_faces"), out=str(tmp_path / "hdr_render"),
                             all_faces=True))  # she is not the model's B: asked for by name
        face = read_image(tmp_path / "hdr_render" / "face.1001.exr").on_display_window()
        core = face[..., 3] > 0.99
        plate_peak = float(hot.pixels[..., :3][core].max())
        layer_peak = float(face[..., :3][core].max())
        print(f"HDR: plate peak in the face {plate_peak:.2f}, layer peak {layer_peak:.2f}")
        assert plate_peak > 1.0 and layer_peak > 1.0  # no clip at display white
        assert float(np.median(face[..., :3][core])) > 0.5 * float(np.median(hot.pixels[..., :3][core]))


def test_gan_lr_dropout_and_liae_steps_run_and_resume(synthetic, tmp_path):
    a, b = synthetic
    options = _options(a, b, tmp_path / "m", iters=3, gan_power=0.1, lr_dropout=0.3, arch="liae")
    assert train(options) == 3
    model, manifest = load_model(tmp_path / "m")
    assert manifest["config"]["arch"] == "liae" and manifest["train"]["gan_power"] == 0.1
    from vfxswap.models.store import load_extra_tensors

    assert load_extra_tensors(tmp_path / "m", "disc.")  # the discriminator is saved beside the model
    assert train(_options(a, b, tmp_path / "m", iters=5, gan_power=0.1, resume=True)) == 5
    # transfer from it without naming parts: LIAE has no "inter"; every LIAE part is shared, so all are copied
    trainer = Trainer(_options(a, b, tmp_path / "n", arch="liae", init_from=str(tmp_path / "m")))
    source, _ = load_model(tmp_path / "m")
    assert trainer.opt.init_parts == ["encoder", "inter_AB", "inter_B", "decoder"]
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in trainer.model.state_dict().items())
    for loader in trainer.data.values():
        loader.close()


def test_init_from_copies_parts_and_freeze_holds_them(synthetic, tmp_path):
    a, b = synthetic
    train(_options(a, b, tmp_path / "base", iters=2))
    trainer = Trainer(_options(a, b, tmp_path / "new", iters=4, init_from=str(tmp_path / "base"),
                               init_parts=["encoder", "inter"], freeze=["encoder"]))
    base, _ = load_model(tmp_path / "base")
    enc_before = {k: v.clone() for k, v in trainer.model.encoder.state_dict().items()}
    for k, v in base.encoder.state_dict().items():
        assert torch.equal(enc_before[k], v)
    trainer.run()
    for k, v in trainer.model.encoder.state_dict().items():
        assert torch.equal(enc_before[k], v)  # frozen


def _train_until_logged(a, b, model, lines: int, *extra, env=None) -> subprocess.Popen:
    """`vfxswap train` in a session of its own (a terminal's job, a farm task's process group),
    returned once its history holds `lines` lines; `extra` flags come last, so they override."""
    proc = subprocess.Popen([sys.executable, "-m", "vfxswap", "train", "--src", str(a), "--dst", str(b), "--model",
                             str(model), "--release-ref", "REL-1", "--iters", "100000", "--batch", "4",
                             "--save-every", "100000", "--log-every", "1", "--preview-every", "100000", *map(str, extra)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    history = model / "history.jsonl"
    deadline = time.time() + 180
    while time.time() < deadline and not (history.exists() and len(history.read_text().splitlines()) >= lines):
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(0.2)
    return proc


def test_ctrl_c_saves_and_stops_cleanly(synthetic, tmp_path):
    """Ctrl-C in a terminal reaches the whole process group, loader workers included: the workers
    carry on until the step is done and the model saved, and the run ends with exit 0."""
    a, b = synthetic
    model = tmp_path / "m"
    proc = _train_until_logged(a, b, model, 3, "--workers", 1)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-1000:]
    assert "interrupted (SIGINT)" in err and "Traceback" not in err
    _, manifest = load_model(model)
    logged = [json.loads(line)["iter"] for line in (model / "history.jsonl").read_text().splitlines()]
    assert manifest["iteration"] == logged[-1] >= 3  # saved exactly where it stopped


def test_sigterm_saves_then_fails_the_task(synthetic, tmp_path):
    """A farm's cancel or pre-emption (SIGTERM, then SIGKILL after a grace period): the run saves
    where it stopped and exits non-zero with one line, so the farm does not count the training
    as finished; the same command with --resume continues from there."""
    a, b = synthetic
    model = tmp_path / "m"
    proc = _train_until_logged(a, b, model, 3, "--workers", 0)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    _, manifest = load_model(model)
    at = manifest["iteration"]
    logged = [json.loads(line)["iter"] for line in (model / "history.jsonl").read_text().splitlines()]
    assert proc.returncode == 1 and at == logged[-1] >= 3
    last = err.strip().splitlines()[-1]
    assert last.startswith("vfxswap: error:") and f"stopped by SIGTERM at iteration {at} of 100000" in last
    assert "Traceback" not in err


def _descendants(pid: int) -> list[int]:
    """Every process started under `pid`, at any depth (Linux /proc)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat[stat.rindex(")") + 2:].split()[1])
    found, frontier = [], [pid]
    while frontier:
        children = [p for p, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")  # the OS, not the project
def test_ranks_die_with_a_killed_launcher(synthetic, tmp_path):
    """A farm's kill -9 of the task's process group takes `vfxswap train --gpus 2` and torchrun,
    but not the ranks: torchrun starts each in a session of its own. Left running they would hold
    the GPUs and write into the model folder beside the task's retry, so each rank dies with its
    launcher (what it saved before stays whole)."""
    a, b = synthetic
    model = tmp_path / "m"
    proc = _train_until_logged(a, b, model, 2, "--gpus", 2, "--device", "cpu", "--batch", 2, "--workers", 0,
                               env=dict(os.environ, OMP_NUM_THREADS="1"))
    ranks = [p for p in _descendants(proc.pid) if os.getpgid(p) != proc.pid]
    assert len(ranks) == 2  # in sessions of their own, out of the group the farm kills
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)  # not communicate(): surviving ranks would hold its pipes open
    deadline = time.time() + 30
    while time.time() < deadline and any(Path(f"/proc/{p}").exists() for p in ranks):
        time.sleep(0.2)
    alive = [p for p in ranks if Path(f"/proc/{p}").exists()]
    for p in alive:
        os.kill(p, signal.SIGKILL)
    proc.stdout.close(), proc.stderr.close()
    assert not alive, "ranks outlived their killed launcher"


def test_torchrun_gives_stopped_ranks_the_farm_grace_to_save(monkeypatch):
    """torchrun kills ranks 30 s after passing on a SIGTERM unless told otherwise; a DDP stop may
    need longer (the ranks meet at their next snapshot, then save), so `--gpus N` extends it to
    the grace the farm bundle asks for training, and drops --gpus so the ranks do not relaunch."""
    from vfxswap.farm.bundle import TRAIN_GRACE_S
    from vfxswap.train.launch import under_torchrun

    started = []

    class Launched:
        def __init__(self, args, env):
            started.append((args, env))

        def wait(self):
            return 0

    monkeypatch.delenv("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", raising=False)
    monkeypatch.setattr(subprocess, "Popen", Launched)
    assert under_torchrun(["train", "--gpus", "2", "--iters", "9"], 2) == 0
    (args, env), = started
    assert env["TORCH_ELASTIC_SHUTDOWN_TIMEOUT"] == str(TRAIN_GRACE_S)
    assert args[-4:] == ["vfxswap", "train", "--iters", "9"] and "--nproc-per-node" in args


@pytest.mark.parametrize("how", ["farm SIGTERM to the task's process", "terminal Ctrl-C to the whole job"])
def test_a_stop_under_torchrun_stops_every_rank_together(synthetic, tmp_path, how):
    """`vfxswap train --gpus 2` (torchrun, gloo on CPU here) told to stop: by a farm (SIGTERM to
    the process it started, which passes it on through torchrun) or by Ctrl-C in a terminal
    (SIGINT to the foreground job, which torchrun passes to the ranks). The ranks agree to
    stop at the same iteration, rank 0 saves a model both ranks hold identically, and the loss
    curve ends there; SIGTERM fails the task so that a farm does not take it as finished."""
    a, b = synthetic
    model = tmp_path / "m"
    proc = _train_until_logged(a, b, model, 4, "--gpus", 2, "--device", "cpu", "--batch", 2, "--workers", 0,
                               "--preview-every", 3, env=dict(os.environ, OMP_NUM_THREADS="1"))
    history = model / "history.jsonl"
    if how.startswith("farm"):
        proc.send_signal(signal.SIGTERM)
    else:
        os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    _, manifest = load_model(model)
    logged = [json.loads(line)["iter"] for line in history.read_text().splitlines()]
    assert manifest["iteration"] >= 4 and manifest["iteration"] % 3 == 0, err[-2000:]  # a wait every rank shares
    assert manifest["iteration"] == logged[-1]
    assert manifest["train"]["ranks_identical"] is True
    if how.startswith("farm"):
        assert proc.returncode != 0 and "stopped by SIGTERM" in err
    else:
        assert "interrupted (SIGINT)" in err


def test_the_model_records_what_a_render_needs_of_its_facesets(synthetic, tmp_path):
    """The manifest carries each faceset's crop size (the render cuts its input the same way) and
    B's mean identity embedding (the faces a render replaces by default), so a farm node renders
    right without the facesets at hand."""
    from vfxswap.faceset.store import Faceset
    from vfxswap.render.render import ModelPredictor
    from vfxswap.train.trainer import train

    a, b = synthetic
    b2 = tmp_path / "B"
    shutil.copytree(b, b2)
    rng = np.random.default_rng(0)
    with Faceset(b2) as fs:
        rows = fs.faces()
        for r in rows:
            r.embedding = rng.normal(0.0, 0.1, 128).astype(np.float32)
        fs.update_faces(rows, ["embedding"])
        mean = np.mean([r.embedding for r in rows], axis=0)
        size = rows[0].size
    train(_options(a, b2, tmp_path / "m", iters=1))
    identities = json.loads((tmp_path / "m" / "manifest.json").read_text())["identities"]
    assert identities["A"]["faceset_size"] == identities["B"]["faceset_size"] == size
    assert "embedding" not in identities["A"]  # the synthetic A has none: nothing is made up
    assert np.allclose(identities["B"]["embedding"], mean, atol=1e-5)
    predictor = ModelPredictor(str(tmp_path / "m"), device="cpu")
    assert predictor.input_size == size and np.allclose(predictor.identity_b, mean, atol=1e-5)


def test_training_follows_the_segmentation_mattes_when_the_facesets_have_them(synthetic, tmp_path, caplog):
    """--mask auto: the mattes `masks apply` stored when every face has one, else the hull; the
    batches' masks (the losses' and the learned mask's target) are those mattes."""
    from vfxswap.faceset.store import Faceset
    from vfxswap.masks.labels import read_matte

    a, b = synthetic
    with Faceset(b) as fs:
        rows = fs.faces()
    seg = rows[0].seg is not None
    with caplog.at_level("INFO", logger="vfxswap"):
        train(_options(a, b, tmp_path / "m", iters=1))
    said = [r.getMessage() for r in caplog.records if "learned mask follow" in r.getMessage()]
    assert len(said) == 2 and all(("segmentation mattes" if seg else "landmark hull") in s for s in said)
    ds = FaceSamples(b, 64, augment=False, warp=False, flip=False, mask_kind="seg" if seg else "extended")
    mask = ds[0]["mask"][0].numpy()
    if seg:
        assert np.allclose(mask, read_matte(b / rows[0].seg, 64), atol=1e-3)
        assert mask[int(rows[0].aligned_landmarks[62, 1])].max() == 0  # the bar the hull would keep
    else:
        assert mask[int(rows[0].aligned_landmarks[62, 1]), 32] == 1
