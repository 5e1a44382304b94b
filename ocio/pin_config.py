"""Write ocio/config.ocio: the project's pinned OCIO config, a copy of one versioned built-in.

    python ocio/pin_config.py [ocio://studio-config-vX.Y.Z_aces-vA.B_ocio-vC.D]

Pinning a versioned copy means a workstation and a farm node resolve the same colour spaces
and views even when their OpenColorIO releases differ ("latest" moves with the library).
"""

import sys
from pathlib import Path

import PyOpenColorIO as OCIO

PINNED = "ocio://studio-config-v5.0.0_aces-v2.1_ocio-v2.6"


def main() -> None:
    uri = sys.argv[1] if len(sys.argv) > 1 else PINNED
    config = OCIO.Config.CreateFromFile(OCIO.ResolveConfigPath(uri))
    config.validate()
    out = Path(__file__).with_name("config.ocio")
    out.write_text(config.serialize())
    print(f"wrote {out} ({config.getName()})")


if __name__ == "__main__":
    main()
