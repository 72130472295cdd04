"""Scaling engine: online forecasts, scaling policies, fair sharing, explained decisions, backtests.

Pure logic, no brokers: the Faust agents, tables and the REST API call into these modules.

* :mod:`pipeline.scaling.forecast` - :class:`~pipeline.scaling.forecast.OnlineForecaster` (River);
* :mod:`pipeline.scaling.policies` - validated policy documents;
* :mod:`pipeline.scaling.decide` - :func:`~pipeline.scaling.decide.decide`, the decision and its state;
* :mod:`pipeline.scaling.fairshare` - weighted DRF;
* :mod:`pipeline.scaling.backtest` - the backtest command (``main(argv)``).
"""
