"""Scaling engine: online forecasts, scaling policies, fair sharing, explained decisions, backtests.

Pure logic, no brokers: the Faust agents, tables and the REST API call into these modules
(``docs/scaling.md`` describes them and the measured figures).

* :mod:`pipeline.scaling.forecast` - :class:`~pipeline.scaling.forecast.OnlineForecaster` (River),
  one per tenant and workload, with snapshots;
* :mod:`pipeline.scaling.policies` - validated policy documents (target tracking, predictive,
  scheduled, cost-aware);
* :mod:`pipeline.scaling.hpa`, :mod:`~pipeline.scaling.predictive`, :mod:`~pipeline.scaling.schedule`,
  :mod:`~pipeline.scaling.cost` - what each policy kind computes;
* :mod:`pipeline.scaling.fairshare` - weighted Dominant Resource Fairness;
* :mod:`pipeline.scaling.decide` - :func:`~pipeline.scaling.decide.decide`, one named step per stage, with
  :mod:`~pipeline.scaling.decide_caps` (budgets, quota, fair share), :mod:`~pipeline.scaling.decide_explain` and
  :mod:`~pipeline.scaling.decision_models` (its inputs, the explained decision and the state it keeps);
* :mod:`pipeline.scaling.backtest` - the backtest command (``main(argv)``);
* :mod:`pipeline.scaling.engine` - :class:`~pipeline.scaling.engine.ScalingEngine`, all of the above as the
  agents run it over the tables (windows, models in memory and their snapshots, decisions, the fair-share
  pool), with :mod:`~pipeline.scaling.records` (its records) and :mod:`~pipeline.scaling.kube` (the
  Deployments' scale subresource, in threads).
"""
