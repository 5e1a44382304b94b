"""Plates in and out: frame patterns and ranges, image sequences via OpenImageIO, movies via ffmpeg."""

from vfxswap.plates.frames import (FramePattern, Sequence, find_sequence, format_frames, is_movie,
                                   parse_frames, select_frames)
from vfxswap.plates.image import Box, Image, ImageInfo, list_parts, read_image, read_info, write_image

__all__ = ["Box", "FramePattern", "Image", "ImageInfo", "Sequence", "find_sequence", "format_frames", "is_movie",
           "list_parts", "parse_frames", "read_image", "read_info", "select_frames", "write_image"]
