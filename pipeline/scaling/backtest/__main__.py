"""``python -m pipeline.scaling.backtest``."""

from pipeline.scaling.backtest.cli import main

raise SystemExit(main())
