"""Face detection and 68-point landmark backends, alignment, tracking and identity.

`weights` knows where each backend's model files live, so `vfxswap doctor` (and the `auto`
backend choice) can say what is usable offline without loading anything.
"""
