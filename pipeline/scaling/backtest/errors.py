"""Bad input for the backtest, reported as one line and exit status 2."""

from __future__ import annotations


class BacktestError(Exception):
    """Bad input for the backtest; the message is shown to the user as is."""
