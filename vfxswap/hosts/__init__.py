"""Host-agnostic bridge code shared by the Nuke and Resolve glue and the panel (no host imports)."""

from vfxswap.hosts.jobs import EngineJob, JobResult, JobRunner, RenderJob

__all__ = ["EngineJob", "JobResult", "JobRunner", "RenderJob"]
