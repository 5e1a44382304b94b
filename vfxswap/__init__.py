"""vfxswap: face replacement engine and compositing bridge for professional VFX.

The engine is importable without Qt, Nuke or Resolve. Stages live in subpackages:
`plates` (image sequences and video), `color` (OCIO pipeline), and later `faces`,
`faceset`, `models`, `train`, `render`, `farm`, `hosts`.
"""

__version__ = "0.1.0"
