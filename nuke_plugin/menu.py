"""vfxswap Nuke plugin: the menus (GUI sessions only; Nuke skips menu.py under -t / -x).

* Nodes toolbar > vfxswap > VfxSwap: the node; > vfxswap panel: the vfxswap window (the same one
  `vfxswap panel` opens outside Nuke), docked beside the Properties bin, or brought to the front
  when it is open already.
* Pane > vfxswap (any pane's content menu): the same window as a panel of that pane. The entry is
  made by `nukescripts.panels.registerWidgetAsPanel(widget, "vfxswap", "uk.vfxswap.panel")`, which
  also lets a saved layout restore the panel. Nuke builds the widget by evaluating `widget` (text)
  inside `nukescripts.panels.WidgetKnob(...)` and calling the class with no arguments, so the class
  registered is `vfxswap_nuke.window.NukeVfxSwapWindow`, `vfxswap.hosts.window.VfxSwapWindow`
  given the engine's Python ($VFXSWAP_PYTHON). The facts relied on, with their sources, are in
  vfxswap_nuke/host.py (the one module that calls nuke and nukescripts).
"""

import nuke

_toolbar = nuke.menu("Nodes").addMenu("vfxswap")
_toolbar.addCommand("VfxSwap", "nuke.createNode('VfxSwap')")
_toolbar.addCommand("vfxswap panel", "import vfxswap_nuke.panel_actions as a; a.open_panel()")

from vfxswap_nuke import panel_actions  # noqa: E402 - after the node's entry, which needs no vfxswap

panel_actions.register_panel()
