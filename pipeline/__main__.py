"""``python -m pipeline worker | bridge | backtest ... | schemas | dev-token | compute ... | tenants ...``
(``python -m pipeline --help`` lists them; every command answers ``--help``)."""

from __future__ import annotations

import sys

from pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main())
