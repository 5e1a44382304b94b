"""vfxswap Nuke host layer: only host.py imports nuke."""
