"""Training: faceset samples and augmentation (`data`), losses and previews, and the training loop.

Submodules import torch; this package file imports nothing, so `import vfxswap.train` stays
cheap and the CLI can list commands without loading torch.
"""
