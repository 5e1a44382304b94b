"""The package's shape, read from the source with `ast` (nothing under vfxswap/ is imported):

* only `vfxswap/__main__.py` imports `vfxswap.cli`: the command line sits on top of the engine,
  and nothing in the engine, the farm or the hosts reaches up into it;
* the package has no import cycle;
* every third-party package imported under vfxswap/ is declared in pyproject.toml.

What counts as an import, and why:

* (a) and (c) look at every import statement, at any depth (inside functions too): a lazy
  import still needs the module, and is still a dependency on it.
* (b) builds the graph from the imports that run when a module is imported: every statement
  outside a function body (class bodies, `if`, `try` and `with` blocks at module level run on
  import). The body of `if TYPE_CHECKING:` is left out: it never runs, and it is the usual way
  to name a type without importing its module at run time. A cycle made of module-level imports
  is an import-order hazard (a partially initialised module; `ImportError: cannot import name`
  depending on which module a program happens to import first). A second test also follows
  function-level imports: a lazy import that closes a loop hides a cycle instead of removing
  it; that test reports it the same way, so layering stays one-way.
* `from vfxswap.x import y` where `vfxswap/x/y.py` exists imports the submodule
  `vfxswap.x.y`; otherwise it imports `vfxswap.x` (and reads a name from it).
* Importing `vfxswap.a.b` also runs `vfxswap/a/__init__.py`, so it is an edge to `vfxswap.a`
  as well, except where the importing module itself lives in `vfxswap.a`: its own packages are
  already in `sys.modules` when it runs (the normal `__init__` that imports its submodules is
  not a cycle). A module inside `vfxswap.a` that names `vfxswap.a` itself (`from vfxswap.a import
  Thing`, where Thing is not a submodule) does depend on that `__init__`, and that edge is kept.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest itself depends on tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "vfxswap"
CLI = "vfxswap.cli"
CLI_ALLOWED = {"vfxswap.__main__"}

# Host applications' own modules: they exist only inside the host (Nuke, Resolve) or are the old
# Qt binding a host ships (Nuke 14-15 bring PySide2), are never pip-installed here, and are only
# imported by the host glue under vfxswap/hosts/ (checked below), behind a check for the host.
HOST_ONLY = {"nuke", "DaVinciResolveScript", "PySide2"}
HOST_GLUE = "vfxswap.hosts"


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # the module imported (absolute); for third-party imports the dotted name as written
    line: int
    runtime: bool  # runs when `module` is imported (not inside a function, not under TYPE_CHECKING)

    def where(self) -> str:
        path = MODULES.get(self.module)
        return f"{path.relative_to(ROOT) if path else self.module}:{self.line}"


def _module_files() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _module_files()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _statements(body, runtime=True):
    """(import statement, runs on module import?) for every import below `body`."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, runtime
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            for child in ast.walk(node):
                if isinstance(child, (ast.Import, ast.ImportFrom)):
                    yield child, False
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _statements(node.body, False)
            yield from _statements(node.orelse, runtime)
        else:
            # class bodies, if/try/with/for/while/match at module level: run on import
            for field in ("body", "orelse", "finalbody", "handlers", "cases"):
                yield from _statements(getattr(node, field, None) or [], runtime)


def _resolve_relative(module: str, is_package: bool, level: int, name: str | None) -> str:
    base = module.split(".") if is_package else module.split(".")[:-1]
    if level > 1:
        base = base[: -(level - 1)]
    return ".".join(base + ([name] if name else []))


def imports_in(module: str, is_package: bool, source: str, filename: str = "<string>") -> list[Import]:
    """Every import in `source` (the text of `module`), internal targets resolved to the modules
    they load."""
    found = []
    for node, runtime in _statements(ast.parse(source, filename).body):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append(Import(module, alias.name, node.lineno, runtime))
            continue
        source_module = _resolve_relative(module, is_package, node.level, node.module) if node.level else node.module
        if source_module in MODULES:  # internal: `from pkg import sub` imports pkg.sub when that is a module
            subs = [f"{source_module}.{a.name}" for a in node.names if f"{source_module}.{a.name}" in MODULES]
            for sub in subs:
                found.append(Import(module, sub, node.lineno, runtime))
            if len(subs) < len(node.names):  # at least one plain name read from the package itself
                found.append(Import(module, source_module, node.lineno, runtime))
        else:
            found.append(Import(module, source_module, node.lineno, runtime))
    return found


def imports_of(module: str) -> list[Import]:
    path = MODULES[module]
    return imports_in(module, path.name == "__init__.py", path.read_text(encoding="utf-8"), str(path))


ALL_IMPORTS = [imp for module in MODULES for imp in imports_of(module)]


def _ancestors(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_graph(runtime_only: bool) -> dict[str, dict[str, Import]]:
    """module -> {module it causes to run: the import statement responsible}."""
    graph: dict[str, dict[str, Import]] = {m: {} for m in MODULES}
    for imp in ALL_IMPORTS:
        if (runtime_only and not imp.runtime) or imp.target not in MODULES:
            continue
        own = set(_ancestors(imp.module))  # already initialising while imp.module runs
        ran = [a for a in _ancestors(imp.target) if a not in own]
        for target in ran + [imp.target]:
            if target != imp.module:
                graph[imp.module].setdefault(target, imp)
    return graph


def _components(graph: dict[str, dict[str, Import]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []
    counter = 0
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    members = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        members.append(member)
                        if member == node:
                            break
                    if len(members) > 1:
                        out.append(sorted(members))
    return out


def _shortest_cycle(graph, start: str, allowed: set[str]) -> list[str]:
    """The shortest path start -> ... -> start inside `allowed`."""
    previous = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for child in sorted(graph[node]):
            if child == start:
                path = [node]
                while previous[path[-1]] is not None:
                    path.append(previous[path[-1]])
                return path[::-1] + [start]
            if child in allowed and child not in previous:
                previous[child] = node
                queue.append(child)
    raise AssertionError(f"{start} is in a component but on no cycle")


def cycles(runtime_only: bool) -> list[str]:
    """Each cycle, once, as `a (file:line) -> b (file:line) -> a`."""
    graph = import_graph(runtime_only)
    seen, lines = set(), []
    for members in _components(graph):
        for start in members:
            path = _shortest_cycle(graph, start, set(members))
            turn = path.index(min(path[:-1]))  # one spelling per cycle, whatever node it starts from
            path = path[turn:-1] + path[:turn] + [path[turn]]
            if tuple(path) in seen:
                continue
            seen.add(tuple(path))
            hops = [f"{a} ({graph[a][b].where()}: imports {graph[a][b].target})" for a, b in zip(path, path[1:])]
            lines.append(" -> ".join(hops + [path[-1]]))
    return lines


# --- (a) the command line is on top ------------------------------------------------------------

def test_only_main_imports_the_cli():
    offenders = [f"{imp.where()}: {imp.module} imports {imp.target}" for imp in ALL_IMPORTS
                 if imp.target == CLI and imp.module not in CLI_ALLOWED | {CLI}]
    assert not offenders, "the engine must not import the command line (move what it needs below cli.py):\n" + \
        "\n".join(offenders)


def test_the_cli_import_check_sees_every_spelling():
    """The resolver behind the check above, on each way of writing an import of vfxswap.cli."""
    def targets(module: str, is_package: bool, source: str) -> set[str]:
        return {imp.target for imp in imports_in(module, is_package, source)}

    for source in ("import vfxswap.cli", "import vfxswap.cli as c", "from vfxswap.cli import main",
                   "from vfxswap import cli", "from vfxswap import errors, cli", "from .. import cli",
                   "from ..cli import main", "def f():\n    from vfxswap.cli import to_flags",
                   "class C:\n    import vfxswap.cli", "if True:\n    from ..cli import main"):
        assert CLI in targets("vfxswap.farm.job", False, source), source
    assert CLI in targets("vfxswap.farm", True, "from ..cli import main")  # a package's `..` is its parent
    assert CLI not in targets("vfxswap.farm", True, "from . import cli")  # that would be vfxswap.farm.cli
    assert targets("vfxswap.farm.job", False, "from vfxswap import cli") == {CLI}
    assert targets("vfxswap.farm.job", False, "from vfxswap import __version__") == {"vfxswap"}


# --- (b) no import cycles ------------------------------------------------------------------------

def test_no_import_cycles_at_import_time():
    found = cycles(runtime_only=True)
    assert not found, "import cycles (module-level imports):\n" + "\n".join(found)


def test_no_import_cycles_through_lazy_imports():
    found = cycles(runtime_only=False)
    assert not found, "import cycles closed by a function-level import (move the shared part into a module " \
                      "both import):\n" + "\n".join(found)


def test_the_cycle_finder_reports_a_chain():
    graph = {"a": {}, "b": {}, "c": {}, "d": {}}
    for line, (a, b) in enumerate([("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")], 1):
        graph[a][b] = Import(a, b, line, True)
    assert _components(graph) == [["a", "b", "c"]]
    assert _shortest_cycle(graph, "b", {"a", "b", "c"}) == ["b", "c", "a", "b"]


# --- (c) every third-party import is declared -------------------------------------------------

def _normalise(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def _providers() -> dict[tuple[str, ...], set[str]]:
    """Dotted-name prefix -> the installed distributions whose files live under it, read from
    their RECORDs: `openjd.model` is openjd-model's even though `openjd` (a namespace package) is
    shared by three distributions, and top-level extension modules count (dlib-bin's
    `dlib.cpython-*.so`, which packages_distributions() misses before Python 3.12)."""
    found: dict[tuple[str, ...], set[str]] = {}
    for dist in importlib.metadata.distributions():
        distribution = _normalise(dist.metadata["Name"])
        for file in dist.files or ():
            parts = file.parts
            if parts[0].endswith((".dist-info", ".egg-info", ".data")) or parts[0] in ("..", "__pycache__"):
                continue
            names = list(parts[:-1]) + [parts[-1].split(".")[0]]
            if names[-1] == "__init__":
                names.pop()
            for i in range(1, len(names) + 1):
                if not names[i - 1].isidentifier():
                    break
                found.setdefault(tuple(names[:i]), set()).add(distribution)
    for name, dists in importlib.metadata.packages_distributions().items():  # installs without a RECORD
        found.setdefault((name,), set()).update(_normalise(d) for d in dists)
    return found


def _provided_by(dotted: str, providers: dict[tuple[str, ...], set[str]]) -> set[str]:
    """The distributions behind the longest known prefix of `dotted`."""
    parts = tuple(dotted.split("."))
    for i in range(len(parts), 0, -1):
        if parts[:i] in providers:
            return providers[parts[:i]]
    return set()


def _declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return {_normalise(re.match(r"[A-Za-z0-9._-]+", dep).group()) for dep in project["dependencies"]}


def test_third_party_imports_are_declared():
    declared, providers = _declared(), _providers()
    undeclared, host_misuse = {}, []
    for imp in ALL_IMPORTS:
        top = imp.target.split(".")[0]
        if top == "vfxswap" or top in sys.stdlib_module_names or top == "__future__":
            continue
        if top in HOST_ONLY:
            if imp.module != HOST_GLUE and not imp.module.startswith(HOST_GLUE + "."):
                host_misuse.append(f"{imp.where()}: {top}")
            continue
        dists = _provided_by(imp.target, providers)
        if not dists & declared:
            key = " or ".join(sorted(dists)) or f"{imp.target.split('.')[0]} (no installed distribution)"
            undeclared.setdefault(key, []).append(f"{imp.where()} ({imp.target})")
    assert not host_misuse, "host-only modules imported outside the host glue:\n" + "\n".join(host_misuse)
    assert not undeclared, "imported under vfxswap/ but not in pyproject.toml's dependencies:\n" + "\n".join(
        f"{name}: {', '.join(where)}" for name, where in sorted(undeclared.items()))
