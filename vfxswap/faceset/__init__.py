"""The faceset store (SQLite index + aligned face images) and the tools that curate it."""

from vfxswap.faceset.store import SCHEMA_VERSION, Faceset, FaceRow

__all__ = ["SCHEMA_VERSION", "FaceRow", "Faceset"]
