"""Where a farm render stands: frames done, missing, failed, and leftovers of killed writers.

The truth is the layers folder itself, not the farm's task states: a frame is done only when its
file reads back whole (as `--skip-existing` judges it). The per-chunk run manifests in
OUT/manifests/ add what the disk cannot say: which frames failed and why, and which frames were
rendered without a face. Works on a bundle folder (its parameter values name the layers folder
and range) or on a layers folder alone (the range is the union of its manifests').
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from vfxswap import atomic
from vfxswap.errors import VfxSwapError
from vfxswap.plates.frames import FramePattern, format_frames, parse_frames


@dataclass
class FarmStatus:
    out: str
    output: str  # the layers' pattern
    frames: list[int]
    done: list[int] = field(default_factory=list)
    missing: list[int] = field(default_factory=list)  # never written, or cut short (see `unreadable`)
    unreadable: list[int] = field(default_factory=list)  # on disk but not whole
    failed: dict[int, str] = field(default_factory=dict)  # not done, and a chunk reported why
    without_faces: list[int] = field(default_factory=list)
    temp_files: list[str] = field(default_factory=list)  # writers still running, or killed on other hosts
    chunks_run: int = 0

    @property
    def complete(self) -> bool:
        return not self.missing

    def summary(self) -> str:
        lines = [f"{self.out}: {len(self.done)} of {len(self.frames)} frame(s) done ({self.output}), "
                 f"{self.chunks_run} chunk run(s) recorded"]
        if self.missing:
            lines.append(f"  missing: {format_frames(self.missing)}")
        if self.unreadable:
            lines.append(f"  on disk but not whole (will be re-rendered): {format_frames(self.unreadable)}")
        for frame, why in sorted(self.failed.items()):
            lines.append(f"  failed {frame}: {why}")
        if self.without_faces:
            lines.append(f"  no face (empty layer): {format_frames(self.without_faces)}")
        if self.temp_files:
            lines.append(f"  {len(self.temp_files)} temporary file(s) of running or killed writers: "
                         + ", ".join(Path(t).name for t in self.temp_files[:3]))
        return "\n".join(lines)

    def as_dict(self) -> dict:
        data = asdict(self)
        data["frames"] = format_frames(self.frames)
        for key in ("done", "missing", "unreadable", "without_faces"):
            data[key] = format_frames(data[key]) if data[key] else ""
        data["complete"] = self.complete
        return data


def farm_status(target: str | Path, frames: str | None = None) -> FarmStatus:
    """Status of a bundle folder or a layers folder; `frames` overrides the range."""
    from vfxswap.render.render import frame_is_complete

    target = Path(target)
    out, frame_text, plate_name = _out_and_frames(target)
    records = _manifests(out)
    if frames:
        frame_text = frames
    elif frame_text is None:
        if not records:
            raise VfxSwapError(f"{target}: neither a bundle (parameter_values.yaml) nor a layers folder with "
                               f"run manifests; pass --frames")
        frame_text = ",".join(r["frames"] for r in records if r.get("frames"))
    expected = parse_frames(frame_text)
    pattern = _output_pattern(out, records, plate_name)
    status = FarmStatus(out=str(out), output=str(pattern), frames=expected, chunks_run=len(records))
    reasons: dict[int, str] = {}
    faceless: set[int] = set()
    for record in records:  # oldest first: later runs overrule earlier ones
        for frame in _frames_of(record.get("written")) + _frames_of(record.get("skipped")):
            reasons.pop(frame, None)
        reasons.update({int(f): why for f, why in (record.get("failed") or {}).items()})
        faceless.update(_frames_of(record.get("without_faces")))
    for frame in expected:
        path = pattern.path(frame)
        if frame_is_complete(path):
            status.done.append(frame)
            if frame in faceless:
                status.without_faces.append(frame)
            continue
        status.missing.append(frame)
        if Path(path).exists():
            status.unreadable.append(frame)
        if frame in reasons:
            status.failed[frame] = reasons[frame]
    if out.is_dir():
        status.temp_files = sorted(str(p) for p in out.iterdir() if atomic.is_temp_path(p.name))
    return status


def _out_and_frames(target: Path) -> tuple[Path, str | None, str | None]:
    """(layers folder, frame range, plate file name): the last two from a bundle, else None."""
    values_file = target / "parameter_values.yaml"
    if values_file.is_file():
        try:
            values = {v["name"]: v["value"] for v in yaml.safe_load(values_file.read_text())["parameterValues"]}
            return Path(values["OutDir"]), str(values["Frames"]), values.get("PlateName")
        except (KeyError, TypeError, yaml.YAMLError) as exc:
            raise VfxSwapError(f"{values_file}: not a vfxswap bundle's parameter values ({exc})") from None
    if not target.is_dir():
        raise VfxSwapError(f"{target}: no such bundle or layers folder")
    return target, None, None


def _manifests(out: Path) -> list[dict]:
    records = []
    for path in sorted((out / "manifests").glob("render_*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise VfxSwapError(f"{path}: unreadable run manifest ({exc})") from None
        records.append(record)
    return sorted(records, key=lambda r: r.get("time", ""))


def _output_pattern(out: Path, records: list[dict], plate_name: str | None) -> FramePattern:
    """The layers' pattern as the last run recorded it; before any run finished, the one a render
    of these plates writes (the plate's padding, at least 4 digits)."""
    for record in reversed(records):
        if record.get("output"):
            pattern = FramePattern.parse(record["output"])
            return FramePattern(str(out / Path(pattern.head).name), pattern.padding, pattern.tail)
    from vfxswap.render.render import output_pattern

    return output_pattern(out, "face", FramePattern.parse(plate_name).padding if plate_name else 4)


def _frames_of(text) -> list[int]:
    return parse_frames(text) if text else []
