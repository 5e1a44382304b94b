from vfxswap.cli import main

raise SystemExit(main())
