"""The gizmo's render-option knobs, written from the engine's own render options.

Choices, defaults and help come from `vfxswap.jobspec.RenderOptions`, as for the CLI, the panel and
the farm, so the gizmo cannot offer a mask or colour match the engine does not have. A gizmo is a
static file Nuke reads from NUKE_PATH, so its knob lines are generated: run
`python nuke_plugin/python/vfxswap_nuke/knobs.py` after changing an option or a registry, and
tests/test_nuke_plugin.py checks that the gizmo holds exactly these lines.
"""

from __future__ import annotations

from pathlib import Path

from vfxswap.jobspec import RenderOptions, spec

# the render options the node shows, in order (knob name = the option's field name)
OPTIONS = ("face_type", "color", "color_smooth", "mask", "erode", "blur", "morph", "layers", "all_faces")
GIZMO = Path(__file__).resolve().parents[2] / "gizmos" / "VfxSwap.gizmo"
_KNOB_TYPE = {str: 4, float: 7, int: 3, bool: 6}  # enumeration (with choices), double, int, bool


def _tcl(text: str) -> str:
    """A Tcl double-quoted string: no substitution of [], $ or \\ inside it."""
    return '"' + "".join("\\" + c if c in '"\\[]$' else c for c in text) + '"'


def knob_lines() -> list[str]:
    """The gizmo's addUserKnob lines (and default values) for OPTIONS."""
    lines = []
    for name in OPTIONS:
        s = spec(RenderOptions)[name]
        label = _tcl(name.replace("_", " ").capitalize())
        line = f" addUserKnob {{{_KNOB_TYPE[s.kind]} {name} l {label} t {_tcl(s.help)}"
        if s.choices:
            line += " M {" + " ".join(map(str, s.choices)) + "}"
        if s.ui_range:
            line += f" R {s.ui_range[0]:g} {s.ui_range[1]:g}"
        if s.kind is bool:
            line += " +STARTLINE"
        lines.append(line + "}")
        if s.kind is not bool and s.default not in (None, 0, 0.0):
            lines.append(f" {name} {s.default}")
    return lines


def _is_option_line(line: str) -> bool:
    words = line.replace("{", " ").split()
    return bool(words) and ((words[0] == "addUserKnob" and len(words) > 2 and words[2] in OPTIONS)
                            or words[0] in OPTIONS)


def write_gizmo(path: Path = GIZMO) -> bool:
    """Put knob_lines() in place of the gizmo's option knobs (one block); True when it changed."""
    lines = path.read_text().splitlines()
    at = [i for i, line in enumerate(lines) if _is_option_line(line)]
    new = lines[:at[0]] + knob_lines() + lines[at[-1] + 1:]
    if new == lines:
        return False
    path.write_text("\n".join(new) + "\n")
    return True


if __name__ == "__main__":
    print(f"{GIZMO}: {'rewritten' if write_gizmo() else 'already up to date'}")
