"""Colour management: OCIO config resolution and the plate <-> model <-> display pipeline."""

from vfxswap.color.config import BUILTIN_CONFIG, PROJECT_CONFIG, ConfigChoice, resolve_config
from vfxswap.color.pipeline import (ENCODING_NAME, ColorPipeline, NonFinite, apply_threaded, chromaticities_of,
                                    count_nonfinite,
                                    guess_plate_space, sanitize, tag_colour_space, working_size)

__all__ = ["BUILTIN_CONFIG", "ENCODING_NAME", "PROJECT_CONFIG", "ColorPipeline", "ConfigChoice", "NonFinite",
           "apply_threaded", "chromaticities_of", "count_nonfinite", "guess_plate_space", "resolve_config", "sanitize", "tag_colour_space",
           "working_size"]
