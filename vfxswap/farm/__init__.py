"""Farm jobs: one job description (`job.FarmJob`) written in each farm's own format, chunked and
retry-safe, plus the per-session render engine and status.

This file is the stage's registry of formats: `vfxswap farm bundle --format NAME`. A format is a
function `write(job: FarmJob, folder) -> list[Path]` that writes every file or nothing.
"""

from __future__ import annotations

from vfxswap.registry import Registry

FORMATS = Registry("farm format", {
    "openjd": "vfxswap.farm.bundle:write_bundle",  # Open Job Description bundle: openjd run, Deadline Cloud
    "opencue": "vfxswap.farm.managers:write_opencue",  # PyOutline script + cuebot job spec XML
    "deadline10": "vfxswap.farm.managers:write_deadline10",  # job/plugin info files + submit.sh
})
