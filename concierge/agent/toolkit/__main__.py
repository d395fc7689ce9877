"""``python -m concierge.agent.toolkit [--write]``: print or regenerate ``tools/``."""

from concierge.agent.toolkit._definitions import main

raise SystemExit(main())
