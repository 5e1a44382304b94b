"""Which OCIO config is in force, and its exact versioned name for provenance.

Order: explicit option > `$OCIO` > the project's `ocio/config.ocio` > the built-in
`ocio://studio-config-latest`. "latest" moves with the OpenColorIO release, so we always
record the versioned URI it resolved to (e.g. `ocio://studio-config-v5.0.0_aces-v2.1_ocio-v2.6`)
and a farm node can load exactly the config a workstation used.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import PyOpenColorIO as OCIO

from vfxswap.errors import VfxSwapError

PROJECT_CONFIG = Path(__file__).resolve().parents[2] / "ocio" / "config.ocio"
BUILTIN_CONFIG = "ocio://studio-config-latest"


@dataclass(frozen=True)
class ConfigChoice:
    """A loaded config and how it was chosen."""

    config: OCIO.Config
    source: str  # "option", "$OCIO", "project" or "builtin"
    uri: str  # a path or a versioned ocio:// URI that loads this exact config again
    name: str  # the config's own name (versioned for built-ins)

    def describe(self) -> str:
        return f"{self.name or '(unnamed)'} from {self.source}: {self.uri}"


def resolve_config(option: str | os.PathLike | None = None) -> ConfigChoice:
    env = os.environ.get("OCIO") or None
    project = str(PROJECT_CONFIG) if PROJECT_CONFIG.is_file() else None
    return _load(str(option) if option else None, env, project)


@functools.lru_cache(maxsize=8)
def _load(option: str | None, env: str | None, project: str | None) -> ConfigChoice:
    for source, uri in (("option", option), ("$OCIO", env), ("project", project), ("builtin", BUILTIN_CONFIG)):
        if uri:
            break
    if uri.startswith("ocio://"):
        uri = OCIO.ResolveConfigPath(uri)  # "latest" -> the versioned built-in name
    elif not os.path.isfile(uri):
        raise VfxSwapError(f"OCIO config {uri} (from {source}): no such file")
    try:
        config = OCIO.Config.CreateFromFile(uri)
    except OCIO.Exception as exc:
        raise VfxSwapError(f"OCIO config {uri} (from {source}): {' '.join(str(exc).split())}") from None
    return ConfigChoice(config, source, uri, config.getName())
