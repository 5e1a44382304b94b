"""Face masks: landmark hulls now; learned and segmentation masks later."""

from vfxswap.masks.hull import hull_mask

__all__ = ["hull_mask"]
