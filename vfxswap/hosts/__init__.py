"""Host-agnostic bridge code shared by the Nuke and Resolve glue and the panel (no host imports)."""

from vfxswap.hosts.jobs import JobResult, JobRunner, RenderJob

__all__ = ["JobResult", "JobRunner", "RenderJob"]
