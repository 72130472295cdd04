from __future__ import annotations

from pipeline.scaling.forecast import Forecast
from pipeline.scaling.policies import PredictivePolicy, TargetTrackingPolicy
from pipeline.scaling.predictive import predictive_desired, required_quantiles


def policy(**kw: object) -> PredictivePolicy:
    doc = {
        "policy_id": "p",
        "tenant_id": "t",
        "workload": "w",
        "lead_steps": 2,
        "target_utilization": 1.0,
        "quantile": 0.9,
        "scale_in_quantile": 0.95,
        "min_residuals": 10,
        **kw,
    }
    return PredictivePolicy.model_validate(doc)


def forecast(q90: tuple[float, ...], q95: tuple[float, ...], seen: int = 100) -> Forecast:
    return Forecast(
        observations=500,
        interval_minutes=5,
        mean=tuple(v * 0.9 for v in q90),
        quantiles={0.9: q90, 0.95: q95},
        residuals_seen=(seen,) * len(q90),
    )


def test_provisions_for_the_quantile_one_boot_time_ahead() -> None:
    result = predictive_desired(policy(), forecast((100, 200, 650), (110, 220, 700)), 2, 100.0)
    assert result.desired == 7  # ceil(650 / 100) at step 3 = lead + 1
    assert result.details["provisioned_step"] == 3


def test_scale_in_only_as_far_as_the_upper_band_allows() -> None:
    # Demand falls by step 3, but the upper band says 900 at step 1: keep 9 of the 10 replicas.
    result = predictive_desired(policy(), forecast((850, 400, 300), (900, 450, 320)), 10, 100.0)
    assert result.desired == 9
    assert "upper band" in result.reason
    held = predictive_desired(policy(), forecast((990, 400, 300), (1000, 450, 320)), 10, 100.0)
    assert held.desired == 10
    free = predictive_desired(policy(), forecast((300, 300, 300), (320, 320, 320)), 10, 100.0)
    assert free.desired == 4


def test_abstains_while_warming_up_or_without_a_long_enough_forecast() -> None:
    assert predictive_desired(policy(), None, 3, 100.0).desired is None
    warming = predictive_desired(policy(), forecast((1, 2, 3), (1, 2, 3), seen=3), 3, 100.0)
    assert warming.desired is None
    assert "warming up" in warming.reason
    short = predictive_desired(policy(lead_steps=5), forecast((1, 2, 3), (1, 2, 3)), 3, 100.0)
    assert short.desired is None


def test_bounds_and_required_quantiles() -> None:
    result = predictive_desired(policy(max_replicas=5), forecast((1000, 1000, 1000), (1, 1, 1)), 2, 100.0)
    assert result.desired == 5
    tt = TargetTrackingPolicy(policy_id="r", tenant_id="t", workload="w", target_utilization=0.5)
    assert required_quantiles([policy(), tt]) == (0.1, 0.9, 0.95)
