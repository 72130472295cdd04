"""Backtest command: replay a recorded series through the forecaster and the scaling policies.

``python -m pipeline backtest --csv PATH --time-column NAME --value-column NAME --interval-minutes N
[--capacity-per-replica X] [--boot-steps K] [--policy FILE] [--horizon H] [--score-from INDEX]``

It uses the same :class:`~pipeline.scaling.forecast.OnlineForecaster` and the same
:func:`~pipeline.scaling.decide.decide` as the agents, and prints one JSON document:

* ``forecast``: for the ``--horizon`` step, weighted MAPE (sum |error| / sum |truth|) and NRMSE (RMSE
  over the scored points / standard deviation of the whole series) of the forecasts made at origins
  ``t >= score_from`` (for ``t + horizon`` inside the series), microseconds per learn+forecast (wall
  clock and process CPU time, over the whole run), the band coverage and two naive baselines;
* ``policies``: for ``reactive`` (target tracking), ``predictive``, ``predictive_plus_reactive`` (the
  maximum of both), ``scheduled`` (reactive plus the scheduled policy of ``--policy``, if given) and
  ``oracle`` (perfect foresight): fraction of scored steps under-provisioned (demand above ready
  capacity), fraction of demand unserved, replica-hours (every requested replica counts, booting or
  not) and replica-hours relative to the oracle;
* ``equal_cost`` (and ``equal_cost_predictive_plus_reactive``): the reactive target utilization tuned
  (bisection) until its replica-hours are within 2 % of the predictive (hybrid) run's, and both
  under-provisioned fractions at that cost.

Simulation: at the end of step ``t`` the demand of step ``t`` is known, the forecaster learns it and
the policy decides; new replicas serve step ``t + 1 + boot_steps`` onwards, removals take effect at
step ``t + 1`` (booting replicas are removed first).

Malformed input (missing columns, non-numeric values, unparsable or decreasing timestamps, a spacing
that does not match ``--interval-minutes``, too few rows) is refused with a one-line message on std

Modules: ``series`` (CSV loading), ``options``, ``simulation`` (replay and scores), ``run`` (the whole
backtest), ``report`` (the summary table people read; ``--json`` prints the document above instead),
``plot`` (``--plot PATH``: a self-contained HTML page with the series, the forecast band and each policy's
replicas), ``cli`` (arguments and output).
"""

from pipeline.scaling.backtest.cli import add_backtest_arguments, main, options_from_args, run_from_args
from pipeline.scaling.backtest.errors import BacktestError
from pipeline.scaling.backtest.options import BacktestOptions
from pipeline.scaling.backtest.run import run_backtest
from pipeline.scaling.backtest.series import Series, load_series
from pipeline.scaling.backtest.simulation import PolicyRun, oracle, simulate

__all__ = [
    "BacktestError",
    "BacktestOptions",
    "PolicyRun",
    "Series",
    "add_backtest_arguments",
    "load_series",
    "main",
    "options_from_args",
    "oracle",
    "run_backtest",
    "run_from_args",
    "simulate",
]
