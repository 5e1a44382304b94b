"""vfxswap Nuke plugin: paths only.

Nuke runs this in every session, including terminal and render sessions (`nuke -t`, `nuke -x`),
so it must not build any UI: it only puts the gizmo folder and the Python host layer on the
plugin path (and, through `pluginAddPath`, on `sys.path`). The menu lives in menu.py.
"""

import os

import nuke

_HERE = os.path.dirname(os.path.abspath(__file__))

nuke.pluginAddPath(os.path.join(_HERE, "gizmos"))
nuke.pluginAddPath(os.path.join(_HERE, "python"))
