"""The model folder: bit-exact round trips, hash-verified loading, kill-safe saves with backups,
optimizer/RNG state, init-from parts, and that a planted pickle is never executed."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import io
import os
import pickle
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from vfxswap import __version__
from vfxswap.atomic import TEMP_MARK
from vfxswap.errors import VfxSwapError
from vfxswap.models import build_model, checkpoint, fileformat, store, transfer
from vfxswap.models.config import ModelConfig
from vfxswap.models.info import format_info, model_info, release_refs


def make_model(seed: int = 0, ae_dims: int = 8) -> nn.Module:
    """A tiny DF model (16 px) so every test stays fast on CPU."""
    return build_model(ModelConfig("df", 16, ae_dims=ae_dims, e_dims=4, d_dims=4, d_mask_dims=4), seed=seed)


def make_manifest(iteration: int = 0) -> dict:
    return {"identities": {"A": {"name": "alice", "faceset": "/sets/a", "release_ref": "REL-A-001"},
                           "B": {"name": "bob", "faceset": "/sets/b", "release_ref": "REL-B-002"}},
            "colour": {"encoding": "acescct-norm", "ocio_config": "studio"},
            "iteration": iteration, "train": {"lr": 5e-5, "batch": 2}}


def state_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


def snapshot(model: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if TEMP_MARK in p.name]


# ----------------------------------------------------------------------------------------------


def test_round_trip_bit_exact_and_manifest(tmp_path):
    model = make_model(seed=3)
    disc = {"disc.w": torch.randn(4, 3), "disc.b": torch.arange(5, dtype=torch.float64)}
    manifest = make_manifest(1234)
    path = store.save_model(tmp_path / "m", model, manifest, extra_tensors=disc)
    assert path == tmp_path / "m" / "manifest.json"

    loaded, m = store.load_model(tmp_path / "m", strict=True)
    assert state_equal(snapshot(model), snapshot(loaded))
    assert state_equal(disc, store.load_extra_tensors(tmp_path / "m", "disc."))
    assert type(loaded) is type(model)

    on_disk = json.loads(path.read_text())
    assert on_disk == m
    assert manifest["model_id"] == m["model_id"]  # filled in place
    assert m["format"] == "vfxswap-model" and m["format_version"] == 1 and m["vfxswap"] == __version__
    assert len(m["model_id"]) == 32 and int(m["model_id"], 16) >= 0
    assert m["config"] == model.config.to_dict()
    assert m["identities"]["A"]["release_ref"] == "REL-A-001"
    assert m["iteration"] == 1234 and m["history"] == "history.jsonl" and m["train"]["batch"] == 2
    assert m["created"] and m["updated"]
    assert set(m["files"]) == {"weights"}
    entry = m["files"]["weights"]
    data = (tmp_path / "m" / entry["name"]).read_bytes()
    assert entry == {"name": "weights.safetensors", "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}

    # a second save keeps model_id and created, refreshes updated
    created = m["created"]
    store.save_model(tmp_path / "m", model, manifest)
    m2 = json.loads(path.read_text())
    assert m2["model_id"] == m["model_id"] and m2["created"] == created
    assert leftovers(tmp_path / "m") == []


def test_backups_keep_k_newest(tmp_path):
    folder = tmp_path / "m"
    models = {}
    for it in range(1, 6):
        models[it] = make_model(seed=it)
        store.save_model(folder, models[it], make_manifest(it * 100), keep_backups=2)
    assert [it for it, _ in fileformat.backup_dirs(folder)] == [400, 300]
    assert sorted(p.name for p in (folder / "backups").iterdir()) == ["00000300", "00000400"]
    for it, path in fileformat.backup_dirs(folder):
        _, m = fileformat.locate_save(path.parent.parent, strict=True)
        backup_manifest = json.loads((path / "manifest.json").read_text())
        assert backup_manifest["iteration"] == it
        fileformat.verify_save(path, backup_manifest, cached=False)
    loaded, m = store.load_model(folder, strict=True)
    assert m["iteration"] == 500 and state_equal(snapshot(loaded), snapshot(models[5]))
    assert leftovers(folder) == []

    store.save_model(folder, models[5], make_manifest(600), keep_backups=0)
    assert fileformat.backup_dirs(folder) == []


def test_truncated_weights_strict_refuses_default_falls_back(tmp_path, caplog):
    folder = tmp_path / "m"
    old, new = make_model(seed=1), make_model(seed=2)
    store.save_model(folder, old, make_manifest(100))
    store.save_model(folder, new, make_manifest(200))
    weights = folder / "weights.safetensors"
    with open(weights, "r+b") as f:
        f.truncate(weights.stat().st_size // 2)

    with pytest.raises(VfxSwapError, match="weights.safetensors"):
        store.load_model(folder, strict=True)
    with caplog.at_level(logging.WARNING, logger="vfxswap"):
        loaded, m = store.load_model(folder)
    assert m["iteration"] == 100 and state_equal(snapshot(loaded), snapshot(old))
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    assert "weights.safetensors" in warning and "00000100" in warning

    # the next save does not back up the broken top level, and commits normally
    store.save_model(folder, new, make_manifest(300))
    assert [it for it, _ in fileformat.backup_dirs(folder)] == [100]
    assert store.load_model(folder, strict=True)[1]["iteration"] == 300


def test_corrupt_same_size_and_missing_files_are_refused(tmp_path):
    folder = tmp_path / "m"
    model = make_model()
    opt = torch.optim.AdamW(model.parameters())
    store.save_model(folder, model, make_manifest(10), optimizer=opt, rng=checkpoint.rng_state())
    weights = folder / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(VfxSwapError, match="weights.safetensors.*sha256"):
        store.load_model(folder)  # no backup to fall back to
    store.save_model(folder, model, make_manifest(20), optimizer=opt)
    (folder / "optimizer.safetensors").unlink()
    with pytest.raises(VfxSwapError, match="optimizer.safetensors.*missing"):
        store.load_model(folder, strict=True)


class _Evil:
    """Unpickling this creates `marker` (a harmless stand-in for arbitrary code)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_planted_pickle_as_weights_is_refused_and_never_executed(tmp_path):
    # the payload is live: this test's own deliberate unpickle of it does create its marker
    probe = tmp_path / "probe"
    pickle.Unpickler(io.BytesIO(pickle.dumps(_Evil(probe)))).load().close()
    assert probe.exists()

    folder, marker = tmp_path / "m", tmp_path / "PWNED"
    store.save_model(folder, make_model(), make_manifest(5))
    payload = pickle.dumps(_Evil(marker))
    (folder / "weights.safetensors").write_bytes(payload)
    for strict in (True, False):
        with pytest.raises(VfxSwapError, match="weights.safetensors"):
            store.load_model(folder, strict=strict)
    # even with a manifest forged to match the pickle's hash and size, it is only parsed as safetensors
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["weights"].update(sha256=hashlib.sha256(payload).hexdigest(), bytes=len(payload))
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(VfxSwapError, match="weights.safetensors"):
        store.load_model(folder)
    with pytest.raises(VfxSwapError):
        transfer.init_from(make_model(), folder, ["encoder"])
    # a manifest pointing at a pickle by name is refused without opening it
    (folder / "model.pt").write_bytes(payload)
    manifest["files"]["weights"]["name"] = "model.pt"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(VfxSwapError, match="model.pt"):
        store.load_model(folder, strict=True)
    assert not marker.exists()


def test_pickles_beside_a_valid_model_are_ignored(tmp_path):
    folder, marker = tmp_path / "m", tmp_path / "PWNED"
    model = make_model(seed=4)
    store.save_model(folder, model, make_manifest(7), optimizer=torch.optim.AdamW(model.parameters()),
                     rng=checkpoint.rng_state())
    for name in ("model.pt", "weights.ckpt", "optimizer.pt", "rng.pkl"):
        (folder / name).write_bytes(pickle.dumps(_Evil(marker)))
    loaded, m = store.load_model(folder, strict=True)
    assert state_equal(snapshot(loaded), snapshot(model))
    checkpoint.load_training_state(folder, loaded, torch.optim.AdamW(loaded.parameters()), device="cpu")
    model_info(folder, verify=True)
    assert not marker.exists()


def test_foreign_or_newer_manifest_is_refused(tmp_path):
    folder = tmp_path / "m"
    store.save_model(folder, make_model(), make_manifest(1))
    good = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**good, "format": "something-else"}))
    with pytest.raises(VfxSwapError, match="not a vfxswap model manifest"):
        store.load_model(folder)
    with pytest.raises(VfxSwapError, match="not a vfxswap model manifest"):
        store.save_model(folder, make_model(), make_manifest(2))
    (folder / "manifest.json").write_text(json.dumps({**good, "format_version": 99}))
    with pytest.raises(VfxSwapError, match="format_version"):
        store.load_model(folder)
    with pytest.raises(VfxSwapError, match="not a vfxswap model folder"):
        store.load_model(tmp_path)
    with pytest.raises(VfxSwapError, match="not found"):
        store.load_model(tmp_path / "nope")


@pytest.mark.parametrize("edit, named", [
    (lambda m: m.update(identities="A,B"), "identities"),
    (lambda m: m.update(config=[1]), "config"),
    (lambda m: m.pop("iteration"), "iteration"),
    (lambda m: m.update(iteration="abc"), "iteration"),
    (lambda m: m["config"].update(ae_dims=2_000_000), "the model needs"),  # would allocate ~70 GB
])
def test_a_hand_edited_manifest_is_named_not_a_traceback(tmp_path, edit, named):
    """Loaders and `model info` read these fields blindly; an edit that breaks one is refused in
    one line, and a config whose dims disagree with the saved tensors is caught before the model
    is built, so it cannot ask for memory it made up."""
    folder = tmp_path / "m"
    store.save_model(folder, make_model(), make_manifest(1), keep_backups=0)
    manifest = json.loads((folder / "manifest.json").read_text())
    edit(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(VfxSwapError, match=named):
        store.load_model(folder)
    if named != "the model needs":
        with pytest.raises(VfxSwapError, match=named):
            model_info(folder)


# ----------------------------------------------------------------------------------------------
# kill safety


class _Killed(BaseException):
    """A simulated SIGKILL: BaseException, so no `except Exception` cleanup runs."""


def _kill_harness(monkeypatch, kill_at: int | None, check) -> list[str]:
    """Wrap every file-system mutation the save makes; call `check()` before each (the folder must
    hold a verified save at that instant) and raise _Killed at mutation number `kill_at`."""
    ops: list[str] = []

    def wrap(owner, name):
        real = getattr(owner, name)

        def op(*args, **kwargs):
            ops.append(f"{name} {args[0] if args else ''}")
            check()
            if kill_at is not None and len(ops) == kill_at:
                raise _Killed(ops[-1])
            return real(*args, **kwargs)

        monkeypatch.setattr(owner, name, op)

    for owner, name in ((os, "replace"), (os, "rename"), (os, "link"), (os, "unlink"), (os, "mkdir"),
                        (shutil, "rmtree"), (store, "write_safetensors")):
        wrap(owner, name)
    return ops


def test_kill_at_every_step_of_a_save_leaves_a_verified_save(tmp_path, monkeypatch):
    models = {it: make_model(seed=it) for it in (100, 200, 300, 400)}
    expected = {it: snapshot(m) for it, m in models.items()}

    def fresh(folder: Path) -> None:
        for it in (100, 200):
            opt = torch.optim.AdamW(models[it].parameters())
            store.save_model(folder, models[it], make_manifest(it), optimizer=opt, rng=checkpoint.rng_state(),
                             keep_backups=1)

    def loadable(folder: Path, allowed: set[int]) -> int:
        loaded, m = store.load_model(folder)
        assert m["iteration"] in allowed
        assert state_equal(snapshot(loaded), expected[m["iteration"]])
        return m["iteration"]

    def save_300(folder: Path) -> None:
        store.save_model(folder, models[300], make_manifest(300), rng=checkpoint.rng_state(),
                         optimizer=torch.optim.AdamW(models[300].parameters()), keep_backups=1)

    # a dry run counts the mutations and checks the invariant before every one of them
    folder = tmp_path / "dry"
    fresh(folder)
    with monkeypatch.context() as mp:
        ops = _kill_harness(mp, None, lambda: loadable(folder, {200, 300}))
        save_300(folder)
    assert len(ops) >= 10, ops
    assert any(o.startswith("link") for o in ops) and any(o.startswith("write_safetensors") for o in ops)

    seen = set()
    for k in range(1, len(ops) + 1):
        folder = tmp_path / f"kill{k}"
        fresh(folder)
        with monkeypatch.context() as mp:
            _kill_harness(mp, k, lambda: None)
            with pytest.raises(_Killed):
                save_300(folder)
        seen.add(loadable(folder, {200, 300}))
        # the next save recovers: clears leftovers, commits, keeps a verified backup
        store.save_model(folder, models[400], make_manifest(400), keep_backups=1)
        assert store.load_model(folder, strict=True)[1]["iteration"] == 400
        assert leftovers(folder) == [], (k, ops[k - 1])
        backups = fileformat.backup_dirs(folder)
        assert len(backups) == 1 and backups[0][0] in (200, 300)
        fileformat.verify_save(backups[0][1], json.loads((backups[0][1] / "manifest.json").read_text()), cached=False)
    assert seen == {200, 300}


def test_backup_by_copy_where_hard_links_fail(tmp_path, monkeypatch):
    def no_links(*args, **kwargs):
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    folder = tmp_path / "m"
    a, b = make_model(seed=1), make_model(seed=2)
    store.save_model(folder, a, make_manifest(1))
    store.save_model(folder, b, make_manifest(2))
    backup = folder / "backups" / "00000001"
    fileformat.verify_save(backup, json.loads((backup / "manifest.json").read_text()), cached=False)
    (folder / "weights.safetensors").write_bytes(b"x")
    loaded, m = store.load_model(folder)
    assert m["iteration"] == 1 and state_equal(snapshot(loaded), snapshot(a))


# ----------------------------------------------------------------------------------------------
# optimizer and RNG state


def _train_step(model: nn.Module, opt: torch.optim.Optimizer) -> None:
    # every global RNG feeds the step, so a wrongly restored one changes the result
    x = torch.rand(2, 3, 16, 16) * 0.9 + float(np.random.rand()) * 0.05 + random.random() * 0.05
    opt.zero_grad()
    rgb, mask = model(x, "A" if random.random() < 0.5 else "B")
    loss = ((rgb - x) ** 2).mean() + mask.mean() * 0.1
    loss.backward()
    opt.step()


def _adamw(model: nn.Module) -> torch.optim.AdamW:
    return torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.5, 0.999), weight_decay=0.01)


def _same_optimizer_state(a: dict, b: dict) -> None:
    assert a["param_groups"] == b["param_groups"]
    assert a["state"].keys() == b["state"].keys()
    for idx in a["state"]:
        sa, sb = a["state"][idx], b["state"][idx]
        assert sa.keys() == sb.keys()
        for key in sa:
            if torch.is_tensor(sa[key]):
                assert sa[key].dtype == sb[key].dtype and torch.equal(sa[key], sb[key]), (idx, key)
            else:
                assert sa[key] == sb[key]


def test_optimizer_and_rng_round_trip_continue_identically(tmp_path):
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    model = make_model(seed=5)
    opt = _adamw(model)
    for _ in range(3):
        _train_step(model, opt)
    saved_opt = copy.deepcopy(opt.state_dict())
    store.save_model(tmp_path / "m", model, make_manifest(3), optimizer=opt, rng=checkpoint.rng_state())
    _train_step(model, opt)  # the run that was never interrupted

    # scramble the global RNGs, then resume in fresh objects
    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    model2, m = store.load_model(tmp_path / "m", strict=True)
    opt2 = _adamw(model2)
    rng = checkpoint.load_training_state(tmp_path / "m", model2, opt2, device="cpu")
    _same_optimizer_state(saved_opt, opt2.state_dict())
    assert isinstance(opt2.state_dict()["param_groups"][0]["betas"], tuple)
    checkpoint.restore_rng(rng)
    _train_step(model2, opt2)
    assert state_equal(snapshot(model), snapshot(model2))


def test_optimizer_tensor_names_and_rng_exactness():
    model = make_model()
    opt = _adamw(model)
    _train_step(model, opt)
    tensors, meta = checkpoint.optimizer_to_tensors(opt)
    assert "state.0.exp_avg" in tensors and "state.0.step" in tensors and tensors["state.0.step"].dim() == 0
    json.dumps(meta)  # JSON-safe
    fresh = _adamw(make_model())
    checkpoint.tensors_to_optimizer(fresh, tensors, json.loads(json.dumps(meta)))
    _same_optimizer_state(opt.state_dict(), fresh.state_dict())
    with pytest.raises(VfxSwapError, match="AdamW"):
        checkpoint.tensors_to_optimizer(torch.optim.SGD(model.parameters(), lr=0.1), tensors, meta)

    np.random.normal()  # leave a cached gaussian in numpy's legacy state
    random.gauss(0, 1)
    gen = np.random.default_rng(7)
    tgen = torch.Generator().manual_seed(3)
    state = checkpoint.rng_state({"np": gen, "torch": tgen})
    tensors = {}
    encoded = json.loads(json.dumps(checkpoint.encode_state(state, "", tensors)))
    state = checkpoint.decode_state(encoded, tensors, "test")
    draw = lambda: (torch.rand(3).tolist(), np.random.normal(size=3).tolist(), random.gauss(0, 1),
                    gen.random(2).tolist(), torch.rand(2, generator=tgen).tolist())
    first = draw()
    checkpoint.restore_rng(state, {"np": gen, "torch": tgen})
    assert draw() == first


# ----------------------------------------------------------------------------------------------
# init from parts, info


def test_init_from_copies_only_named_parts_and_freezes(tmp_path):
    source = make_model(seed=11)
    store.save_model(tmp_path / "src", source, make_manifest(50))
    target = make_model(seed=12)
    before = snapshot(target)
    copied = transfer.init_from(target, tmp_path / "src", ["encoder", "inter"], freeze=["encoder"])
    assert copied and all(k.startswith(("encoder.", "inter.")) for k in copied)
    after, src = snapshot(target), snapshot(source)
    for k in after:
        want = src[k] if k.startswith(("encoder.", "inter.")) else before[k]
        assert torch.equal(after[k], want), k
    assert all(not p.requires_grad for p in target.encoder.parameters())
    assert all(p.requires_grad for n, p in target.named_parameters() if not n.startswith("encoder."))

    other = make_model(seed=13, ae_dims=12)
    keep = snapshot(other)
    with pytest.raises(VfxSwapError, match=r"tensor 'inter\.[^']+' has shape"):
        transfer.init_from(other, tmp_path / "src", ["encoder", "inter"])
    assert state_equal(snapshot(other), keep)  # nothing copied when any check fails
    with pytest.raises(VfxSwapError, match="no part 'nose'"):
        transfer.init_from(other, tmp_path / "src", ["nose"])
    with pytest.raises(VfxSwapError, match="freeze 'nose'"):
        transfer.init_from(other, tmp_path / "src", ["encoder"], freeze=["nose"])


def test_model_info_format_info_release_refs(tmp_path):
    folder = tmp_path / "m"
    model = make_model()
    disc = {"disc.w": torch.zeros(10)}
    store.save_model(folder, model, make_manifest(1), extra_tensors=disc)
    store.save_model(folder, model, make_manifest(2000), optimizer=_adamw(model), extra_tensors=disc)
    with open(folder / "history.jsonl", "w") as f:
        f.write(json.dumps({"iter": 1990, "loss": 0.5, "loss_A": 0.4, "loss_B": 0.6}) + "\n")
        f.write(json.dumps({"iter": 2000, "loss": 0.25, "loss_A": 0.2, "loss_B": 0.3, "lr": 5e-5}) + "\n")
        f.write('{"iter": 2001, "loss"')  # a line cut short by a kill
    info = model_info(folder, verify=True)
    assert info["iteration"] == 2000 and info["verified"] is True
    assert info["params"] == sum(t.numel() for t in model.state_dict().values()) and info["extra_params"] == 10
    assert info["backups"] == [1]
    assert info["last"]["iter"] == 2000 and info["last"]["loss_A"] == 0.2
    assert info["files"]["weights"]["size_ok"] and set(info["files"]) == {"weights", "optimizer"}
    text = format_info(info)
    for needed in ("2000", "REL-A-001", "REL-B-002", "weights.safetensors", "loss_A 0.2", "verified    yes"):
        assert needed in text, needed

    refs = release_refs(json.loads((folder / "manifest.json").read_text()))
    assert refs["A_release_ref"] == "REL-A-001" and refs["B_name"] == "bob" and refs["model_iteration"] == "2000"
    assert all(isinstance(v, str) for v in refs.values())
    assert release_refs({})["A_release_ref"] == ""

    (folder / "weights.safetensors").write_bytes(b"broken")
    info = model_info(folder, verify=True)
    assert info["verified"] is False and "weights.safetensors" in info["problem"]
    assert "WRONG SIZE" in format_info(info)


def test_pick_device_words():
    from vfxswap.models.device import pick_device

    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert pick_device("cpu") == torch.device("cpu")
    with pytest.raises(VfxSwapError, match="not a device"):
        pick_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(VfxSwapError, match="CUDA is not available"):
            pick_device("cuda:1")


def test_bf16_by_default_on_cuda_and_on_cpus_with_it_in_hardware(monkeypatch):
    from vfxswap.models import device

    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    native = any(f" {name}" in flags for name in ("amx_bf16", "avx512_bf16"))
    assert bool(device.cpu_bf16_flags()) is native
    assert device.bf16_by_default(torch.device("cpu")) is native
    for capability, bf16 in (((9, 0), True), ((8, 0), True), ((7, 5), False)):  # H100, A100; T4 emulates bf16
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None, c=capability: c)
        assert device.bf16_by_default(torch.device("cuda")) is bf16
    monkeypatch.setattr(device, "cpu_bf16_flags", lambda: ())
    assert device.bf16_by_default(torch.device("cpu")) is False


def test_resumed_moments_take_their_channels_last_parameters_layout(tmp_path):
    """A save is contiguous; a model on CUDA trains channels_last with fused AdamW. The resumed
    moments must have their parameters' strides, or the fused step mixes up elements (CPU) or
    refuses to run (CUDA): the resumed run must continue exactly as the unbroken one."""
    def fresh():
        model = make_model(seed=5).to(memory_format=torch.channels_last)
        return model, torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.5, 0.999), fused=True)

    x = torch.rand(2, 3, 16, 16).contiguous(memory_format=torch.channels_last)

    def step(model, opt):
        opt.zero_grad()
        rgb, mask = model(x, "A")
        (((rgb - x) ** 2).mean() + mask.mean() * 0.1).backward()
        opt.step()

    model, opt = fresh()
    for _ in range(3):
        step(model, opt)
    store.save_model(tmp_path / "m", model, make_manifest(3), optimizer=opt)
    step(model, opt)  # the unbroken run's next step

    resumed, ropt = fresh()
    resumed.load_state_dict(store.load_model(tmp_path / "m")[0].state_dict())
    checkpoint.load_training_state(tmp_path / "m", resumed, ropt)
    conv = resumed.encoder.downs[1].weight
    assert not conv.is_contiguous() and conv.is_contiguous(memory_format=torch.channels_last)
    assert ropt.state[conv]["exp_avg"].stride() == conv.stride()
    step(resumed, ropt)
    for (name, a), b in zip(model.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
