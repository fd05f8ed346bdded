"""``python -m loom``: the same as the ``loom`` command."""

from loom.daemon.cli import main

raise SystemExit(main())
