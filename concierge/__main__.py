"""``python -m concierge`` is the ``concierge`` command."""

from concierge.cli import main

raise SystemExit(main())
