"""vfxswap Nuke plugin: the menu (GUI sessions only; Nuke skips menu.py under -t / -x)."""

import nuke

_toolbar = nuke.menu("Nodes").addMenu("vfxswap")
_toolbar.addCommand("VfxSwap", "nuke.createNode('VfxSwap')")
