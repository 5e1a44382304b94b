"""Render a VfxSwap gizmo's job without the GUI.

    nuke -t render_headless.py script.nk VfxSwap1 [first last]

Opens the script, finds the node, runs the same engine job synchronously (progress on stdout)
and prints where the face layers landed (the script itself is not modified). Exit code 0 on success, 1 on failure.
"""

import json
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(_HERE, "python"))


def main(argv) -> int:
    import nuke

    from vfxswap.hosts import JobRunner
    from vfxswap_nuke import panel_actions

    if len(argv) not in (2, 4):
        print("usage: nuke -t render_headless.py script.nk NODE [first last]", file=sys.stderr)
        return 2
    script, name = argv[0], argv[1]
    nuke.scriptOpen(script)
    node = nuke.toNode(name)
    if node is None:
        print(f"vfxswap: no node {name} in {script}", file=sys.stderr)
        return 1
    if len(argv) == 4:
        node["first_frame"].setValue(int(argv[2]))
        node["last_frame"].setValue(int(argv[3]))
    try:
        job, first, last, _colour = panel_actions.prepare(node)
    except Exception as exc:  # noqa: BLE001
        print(f"vfxswap: {exc}", file=sys.stderr)
        return 1
    result = JobRunner(job).run(lambda event: print(json.dumps(event), flush=True))  # JSON lines for farm logs
    if not result.ok:
        print(result.error or f"vfxswap render failed (exit {result.returncode})", file=sys.stderr)
        return 1
    print(f"vfxswap: {len(result.written)} frame(s) of {first}-{last} -> {job.outputs()['layer']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
