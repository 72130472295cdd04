"""The scaling engine end to end: a real worker process, a real Kafka broker, the real kube-apiserver.

One worker serves the module (its settings: 30-minute utilization windows, so a day is 48 windows; the
scheduled-policy timer every second with an injected clock offset; a fair-share pool of 6 GPUs; forecaster
snapshots every 5 windows). Metrics are replayed as ``resource-metrics`` events with ``occurred_at`` in the past,
as fast as the worker takes them: windows are event time, so a replayed day decides as it would have live.
Each test has its own tenants (namespace ``tenant-<id>`` and a Deployment created with the kubernetes client;
the executor is off). The last test restarts the worker.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from devstack.base import StackContext
from devstack.harness.scaling import (
    Api,
    Broker,
    Cluster,
    EventStream,
    free_port,
    produce,
    read_topic,
    run_id,
    samples,
    tenant_created,
)
from devstack.harness.worker import WorkerProcess, poll
from devstack.process import log_tail
from pipeline.outputs import derived_id
from pipeline.scaling.fairshare import ResourceVector, TenantDemand, drf_allocate
from tests.integration.conftest import JWT_SECRET, SNAPSHOT_SIGNING_KEY

pytestmark = pytest.mark.integration

WINDOW = timedelta(minutes=30)
STEP = timedelta(minutes=15)  # two samples per window
T0 = datetime(2024, 3, 4, tzinfo=UTC)  # a Monday, in the past
#: The timer's clock runs this far ahead of the wall clock (SCALING_CLOCK_OFFSET_SECONDS).
CLOCK_OFFSET = timedelta(days=9, hours=3, minutes=17)
POOL = ResourceVector(cpu=1000, memory=100_000, gpu=6)
ENTERPRISE_QUOTA = ResourceVector(cpu=32, memory=128, gpu=4)  # pipeline/provisioners/tiers.yaml


def daily(at: datetime) -> float:
    """A seasonal load: 1 core at night, 8 cores from 08:00 to 18:00 (a small wobble on top)."""
    wobble = 0.05 * math.sin(at.timestamp() / 3600.0)
    return (8.0 if 8 <= at.hour < 18 else 1.0) + wobble


@dataclass
class Service:
    """The module's worker (replaced by the restart test), its API, the broker and the cluster."""

    broker: Broker
    cluster: Cluster
    env: dict[str, str]
    tmp: Path
    token: str
    run: str
    port: int = field(default_factory=free_port)
    worker: WorkerProcess | None = None

    def start(self, data_dir: Path) -> WorkerProcess:
        self.worker = WorkerProcess(self.env, self.port, data_dir, self.tmp / f"worker-{data_dir.name}.log").start()
        self.worker.wait_ready()
        return self.worker

    @property
    def api(self) -> Api:
        return Api(f"http://127.0.0.1:{self.port}", self.token)

    def log(self) -> str:
        assert self.worker is not None
        return log_tail(self.worker.log_path, 80)

    def tenant(self, name: str, tier: str = "standard") -> str:
        tenant_id = f"{name}-{self.run}"
        produce(self.broker.bootstrap, "tenant-created-events", [tenant_created(tenant_id, tier)])
        if not poll(lambda: self.api.call("GET", f"/api/v1/tenants/{tenant_id}")[0] == 200, 60):
            pytest.fail(f"tenant {tenant_id} never appeared\n{self.log()}")
        return tenant_id

    def policy(self, tenant_id: str, document: dict[str, Any]) -> None:
        body = {"tenant_id": tenant_id, "workload": "api", **document}
        status, answer = self.api.call("POST", "/api/v1/scaling/policies", body)
        assert status == 202, answer
        if not poll(lambda: any(p["policy_id"] == body["policy_id"] for p in self.api.policies(tenant_id)), 60):
            pytest.fail(f"policy {body['policy_id']} of {tenant_id} never applied\n{self.log()}")

    def wait(self, what: str, check: Any, timeout: float = 120, tenants: tuple[str, ...] = ()) -> Any:
        value = poll(check, timeout)
        if not value:
            trails = "\n".join(self.trail(t) for t in tenants)
            pool = "\n".join(
                f"  {topic} " + json.dumps({k: v for k, v in r.items() if k not in ("capacity", "used")})
                for topic in ("scaling-demands", "scaling-grants")
                for r in read_topic(self.broker.bootstrap, topic) if r.get("tenant_id") in tenants
            )
            pytest.fail(f"timed out waiting for {what}\n{trails}\n{pool}\n{self.log()}")
        return value

    def trail(self, tenant_id: str) -> str:
        """The tenant's decisions, oldest first, one line each (for failure messages)."""
        lines = [tenant_id]
        for d in reversed(self.api.decisions(tenant_id)):
            fair = d["decision"]["fair_share"] or {}
            lines.append(f"  {d['trigger']:10} at {d['decision']['at']} current {d['decision']['current_replicas']} "
                         f"uncapped {d['uncapped_replicas']} desired {d['decision']['desired_replicas']} "
                         f"grant {fair.get('granted')}/{fair.get('requested')} {fair.get('limited_by')} "
                         f"applied {d['applied']} ({d['apply_reason']})")
        return "\n".join(lines)


@pytest.fixture(scope="module")
def service(stack_ctx: StackContext, kafka_service: dict[str, str], kubernetes_service: dict[str, str],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    from web.auth import issue_dev_token

    tmp = tmp_path_factory.mktemp("scaling")
    broker = Broker.start(stack_ctx.cache_dir, tmp / "kafka-home")  # the stack's Kafka, installed by kafka_service
    cluster = Cluster(kubernetes_service["KUBECONFIG"])
    run = run_id()
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
        "KUBECONFIG": kubernetes_service["KUBECONFIG"],
        "APP_ID": f"scaling-it-{run}",
        "JWT_SECRET": JWT_SECRET,
        "SNAPSHOT_SIGNING_KEY": SNAPSHOT_SIGNING_KEY,
        "EXECUTOR_ENABLED": "false",
        "BRIDGE_ENABLED": "false",
        "STORE": "rocksdb://",
        "UTILIZATION_WINDOW_SECONDS": str(int(WINDOW.total_seconds())),
        "SCALING_TICK_SECONDS": "1",
        "SCALING_CLOCK_OFFSET_SECONDS": str(CLOCK_OFFSET.total_seconds()),
        "SCALING_POOL_CPU": str(POOL.cpu),
        "SCALING_POOL_MEMORY_GIB": str(POOL.memory),
        "SCALING_POOL_GPUS": str(POOL.gpu),
        "SCALING_SNAPSHOT_EVERY_WINDOWS": "5",
    }
    token = issue_dev_token(JWT_SECRET, "scaling-admin", ["platform-admin"], None, timedelta(hours=2))
    svc = Service(broker, cluster, env, tmp, token, run)
    try:
        svc.start(tmp / "data-1")
        yield svc
    finally:
        if svc.worker is not None:
            svc.worker.stop()
        broker.stop()
        cluster.cleanup()


def newest(decisions: list[dict[str, Any]], **match: Any) -> dict[str, Any] | None:
    for item in decisions:
        if all(item.get(k) == v for k, v in match.items()):
            return item
    return None


# -- forecasts -----------------------------------------------------------------------------------------------


def test_metrics_events_drive_forecasts_with_a_band(service: Service) -> None:
    tenant = service.tenant("fc")
    service.cluster.deployment(tenant, "api", replicas=1)
    service.policy(tenant, {"policy_id": "watch", "kind": "predictive", "forecast_only": True,
                            "lead_steps": 2, "horizon_steps": 4, "min_residuals": 10})
    produce(service.broker.bootstrap, "resource-metrics",
            samples(tenant, "api", T0, T0 + timedelta(days=2), daily, STEP))  # 96 windows close

    decisions = service.wait("96 learned windows", lambda: (
        lambda items: items if items and items[0]["model"]["observations"] >= 96 else None
    )(service.api.decisions(tenant)))
    last = decisions[0]
    assert last["decision"]["at"] == (T0 + timedelta(days=2)).isoformat().replace("+00:00", "Z")
    forecast = last["decision"]["forecast"]
    assert len(forecast["mean"]) == 12 and {"0.1", "0.9"} <= set(forecast["quantiles"])
    for low, mean, high in zip(forecast["quantiles"]["0.1"], forecast["mean"], forecast["quantiles"]["0.9"],
                               strict=True):
        assert low <= mean <= high
    assert min(forecast["residuals_seen"]) >= 10
    # midnight: the band for 08:00 (step 16 is outside the horizon); steps 1..12 stay at the night level
    assert max(forecast["mean"]) < 3.0
    [watch] = last["decision"]["policies"]
    assert watch["policy_id"] == "watch" and watch["desired"] is not None and not watch["active"]
    assert not last["applied"] and last["apply_reason"].startswith("forecast-only")
    assert service.cluster.replicas(tenant, "api") == 1  # forecast-only: never applied
    assert len(decisions) == 50  # SCALING_RECENT_DECISIONS are kept; all 96 are on scaling-events

    events = [e for e in read_topic(service.broker.bootstrap, "scaling-events")
              if e.get("tenant_id") == tenant and e.get("kind") == "scaling-decision"]
    assert len(events) >= 96 and {e["status"] for e in events} == {"forecast-only"}
    assert events[-1]["decision"]["forecast"]["quantiles"]["0.9"]


# -- a predictive policy, before the load --------------------------------------------------------------------


def test_a_predictive_policy_scales_the_deployment_before_the_load_arrives(service: Service) -> None:
    tenant = service.tenant("pr", tier="enterprise")  # a standard tenant's quota (8 cores) would cap it at 8
    service.cluster.deployment(tenant, "api", replicas=1, cpu="1")
    service.policy(tenant, {"policy_id": "ahead", "kind": "predictive", "lead_steps": 2, "horizon_steps": 3,
                            "quantile": 0.9, "target_utilization": 0.8, "min_replicas": 1, "max_replicas": 20})
    day4 = T0 + timedelta(days=4)
    # four days, then the fifth night up to 07:00: the window 06:30-07:00 closes, the load is still 1 core
    produce(service.broker.bootstrap, "resource-metrics",
            samples(tenant, "api", T0, day4 + timedelta(hours=7), daily, STEP))
    needed = math.ceil(8.0 / 0.8)
    seven = (day4 + timedelta(hours=7)).isoformat().replace("+00:00", "Z")

    def scaled_at_seven() -> dict[str, Any] | None:
        last = newest(service.api.decisions(tenant))  # the latest decision (a grant may re-make it)
        if last is None or last["decision"]["at"] != seven or last["decision"]["desired_replicas"] < needed:
            return None
        return last if service.cluster.replicas(tenant, "api") >= needed else None

    ahead = service.wait("the Deployment scaled up by the 07:00 decision", scaled_at_seven)
    assert newest(service.api.decisions(tenant), applied=True, decision_id=ahead["decision_id"]) is not None
    assert ahead["decision"]["demand"] < 1.1  # what it saw was the night load...
    assert ahead["decision"]["desired_replicas"] >= needed  # ...what it provisioned is the 08:00 load
    assert ahead["decision"]["binding"] in ("policy:ahead", "fair_share")
    [evaluation] = [p for p in ahead["decision"]["policies"] if p["policy_id"] == "ahead"]
    assert evaluation["details"]["provisioned_step"] == 3 and evaluation["details"]["provisioned_demand"] > 7
    assert service.cluster.replicas(tenant, "api") >= needed

    # now the load arrives: the capacity was there before its first window closed
    produce(service.broker.bootstrap, "resource-metrics",
            samples(tenant, "api", day4 + timedelta(hours=7, minutes=15), day4 + timedelta(hours=9), daily, STEP))
    eight_thirty = (day4 + timedelta(hours=8, minutes=30)).isoformat().replace("+00:00", "Z")
    loaded = service.wait("the 08:00-08:30 window", lambda: next(
        (d for d in service.api.decisions(tenant) if d["decision"]["at"] == eight_thirty), None))
    assert loaded["decision"]["demand"] > 7.5
    # the windows between may refine the forecast (10 -> 11 is seen when the 07:30 window's quantile moves up);
    # what matters is that no window in between took the capacity away before the load came
    assert loaded["decision"]["current_replicas"] >= needed, service.trail(tenant)
    assert loaded["decision"]["current_replicas"] * 1.0 * 0.8 >= 7.9  # no under-provisioned window


# -- a schedule, at its cron time ----------------------------------------------------------------------------


def test_a_scheduled_policy_changes_replicas_at_its_cron_time(service: Service) -> None:
    tenant = service.tenant("sc")
    service.cluster.deployment(tenant, "api", replicas=1)
    clock = datetime.now(UTC) + CLOCK_OFFSET  # the worker's timer clock
    fire = (clock + timedelta(seconds=75)).replace(second=0, microsecond=0)  # 15 to 75 s ahead, on a minute
    local = fire.astimezone(__import__("zoneinfo").ZoneInfo("America/New_York"))
    cron = f"{local.minute} {local.hour} {local.day} {local.month} *"
    service.policy(tenant, {"policy_id": "launch", "kind": "scheduled", "windows": [
        {"name": "launch", "cron": cron, "timezone": "America/New_York", "duration_minutes": 10,
         "desired_replicas": 4, "min_replicas": 4}]})

    first = service.wait("the first timer decision", lambda: service.api.decisions(tenant))[-1]
    assert datetime.fromisoformat(first["decision"]["at"]) < fire  # made before the cron time...
    assert first["decision"]["desired_replicas"] == 1 and first["trigger"] == "schedule"
    assert first["decision"]["policies"][0]["reason"] == "no window active"
    assert service.cluster.replicas(tenant, "api") == 1

    service.wait("the Deployment at 4 replicas", lambda: service.cluster.replicas(tenant, "api") == 4, timeout=150)
    scaled = newest(service.api.decisions(tenant), applied=True)
    assert scaled is not None and scaled["trigger"] == "schedule"
    at = datetime.fromisoformat(scaled["decision"]["at"])
    assert fire <= at < fire + timedelta(minutes=10)  # ...and the change at it, on the injected clock
    assert scaled["decision"]["binding"] == "schedule:launch" and scaled["decision"]["min_replicas"] == 4
    assert "launch (" + cron in scaled["decision"]["policies"][0]["reason"]


# -- a budget ----------------------------------------------------------------------------------------------------


def test_a_budget_caps_a_scale_up_and_the_explanation_says_so(service: Service) -> None:
    tenant = service.tenant("bg")
    service.cluster.deployment(tenant, "api", replicas=1, cpu="1")
    service.policy(tenant, {"policy_id": "cpu", "kind": "target_tracking", "target_utilization": 0.5,
                            "max_replicas": 20})
    service.policy(tenant, {"policy_id": "budget", "kind": "cost_aware", "currency": "EUR", "budget_per_hour": 3.0,
                            "capacity_classes": [{"name": "on-demand", "price_per_unit_hour": 1.0}]})
    dashboard = EventStream(service.api.base_url, service.token)
    dashboard.start()
    assert dashboard.connected.wait(60), "the dashboard stream did not open"
    produce(service.broker.bootstrap, "resource-metrics",
            samples(tenant, "api", T0, T0 + timedelta(hours=1), lambda _: 3.0, STEP))  # 3 cores: 6 replicas wanted
    service.wait("the Deployment at 3 replicas", lambda: service.cluster.replicas(tenant, "api") == 3)
    shown = service.wait("the capped decision on the dashboard", lambda: next(
        (data for name, data in dashboard.events if name == "scaling" and data["tenant_id"] == tenant
         and data["data"]["binding"] == "budget:budget"), None))
    dashboard.close()
    assert shown["data"]["kind"] == "scaling-decision"
    assert "capped by budget of policy budget" in shown["data"]["reason"]
    capped = newest(service.api.decisions(tenant), applied=True)
    assert capped is not None
    decision = capped["decision"]
    assert decision["desired_replicas"] == 3 and decision["binding"] == "budget:budget"
    assert "capped by budget of policy budget: 5 replicas wanted, 3 affordable" in decision["explanation"] or (
        "capped by budget of policy budget: 6 replicas wanted, 3 affordable" in decision["explanation"])
    [budget] = decision["budget"]
    assert budget["capped"] and budget["affordable_replicas"] == 3 and budget["cost_per_hour"] == 3.0
    assert decision["cost_per_hour"] == 3.0 and decision["currency"] == "EUR"
    assert service.cluster.replicas(tenant, "api") == 3


# -- fair share --------------------------------------------------------------------------------------------------


def test_three_tenants_competing_for_too_few_gpus_get_the_drf_allocation(service: Service) -> None:
    shapes = {"ga": ("4", 1), "gb": ("1", 1), "gc": ("1", 2)}  # CPU request and GPUs of one replica
    tenants = {name: service.tenant(name, tier="enterprise") for name in shapes}
    for name, tenant in tenants.items():
        cpu, gpus = shapes[name]
        service.cluster.deployment(tenant, "api", replicas=1, cpu=cpu, gpus=gpus)
        service.policy(tenant, {"policy_id": "cpu", "kind": "target_tracking", "target_utilization": 0.5,
                                "max_replicas": 10})
    records = []
    for name, tenant in tenants.items():
        cores = 2.0 * float(shapes[name][0])  # 4 replicas wanted at 50 %
        records += samples(tenant, "api", T0, T0 + timedelta(hours=1), lambda _, c=cores: c, STEP)
    produce(service.broker.bootstrap, "resource-metrics", records)

    demands = [TenantDemand(tenant_id=name, per_replica=ResourceVector(cpu=float(cpu), memory=1.0, gpu=gpus),
                            replicas=4, weight=4.0, group=name) for name, (cpu, gpus) in shapes.items()]
    expected = drf_allocate(POOL, demands, {name: ENTERPRISE_QUOTA for name in shapes}).granted()
    assert expected == {"ga": 2, "gb": 2, "gc": 1}  # equal dominant (GPU) shares of 1/3: 6 GPUs for 16 wanted

    def allocated() -> dict[str, int] | None:
        now = {name: service.cluster.replicas(tenant, "api") for name, tenant in tenants.items()}
        return now if now == expected else None

    service.wait(f"the Deployments at {expected}", allocated, timeout=180, tenants=tuple(tenants.values()))
    for name, tenant in tenants.items():
        decision = newest(service.api.decisions(tenant))  # the one in force (gc: 1 replica, never patched)
        assert decision is not None, name
        fair = decision["decision"]["fair_share"]
        assert fair["granted"] == expected[name] and fair["requested"] == 4 and fair["dominant_resource"] == "gpu"
        assert fair["limited_by"] == "capacity" and fair["capped"]
        assert decision["decision"]["desired_replicas"] == expected[name] and decision["uncapped_replicas"] == 4
        assert decision["decision"]["binding"] == "fair_share"
        assert f"fair share: granted {expected[name]} of 4 requested" in decision["decision"]["explanation"]
    assert sum(expected[n] * shapes[n][1] for n in shapes) <= POOL.gpu


# -- scaling requests ------------------------------------------------------------------------------------------


def scaling_request(tenant_id: str, event_id: str, workload: str = "api", **target: Any) -> tuple[str, dict[str, Any],
                                                                                                  None]:
    event = {"event_id": event_id, "tenant_id": tenant_id, "occurred_at": datetime.now(UTC).isoformat(),
             "workload": workload, "reason": "integration test", **target}
    return tenant_id, event, None


def test_a_scaling_request_is_decided_by_the_engine_and_applied_once_within_the_policy_max(service: Service) -> None:
    tenant = service.tenant("rq", tier="enterprise")
    service.cluster.deployment(tenant, "api", replicas=1, cpu="1")
    service.policy(tenant, {"policy_id": "cpu", "kind": "target_tracking", "target_utilization": 0.5,
                            "min_replicas": 1, "max_replicas": 6})
    bootstrap = service.broker.bootstrap
    first, second, third = (f"{tenant}-req-{n}" for n in (1, 2, 3))

    def applied_for(event_id: str, replicas: int) -> dict[str, Any] | None:
        """The applied decision made for the request (or its re-make once the pool answered), once the
        Deployment is at ``replicas``."""
        if service.cluster.replicas(tenant, "api") != replicas:
            return None
        return newest(service.api.decisions(tenant), applied=True, cause_event_id=event_id)

    produce(bootstrap, "scaling-request-events", [scaling_request(tenant, first, desired_replicas=4)])
    done = service.wait("the Deployment at 4 replicas", lambda: applied_for(first, 4), tenants=(tenant,))
    assert done["decision"]["desired_replicas"] == 4 and done["trigger"] in ("request", "fair_share")
    made = newest(service.api.decisions(tenant), trigger="request", cause_event_id=first)
    assert made is not None  # the request's own decision, with the id derived from its event id
    assert made["decision_id"] == derived_id(f"{tenant}/api", "request", first)
    assert "desired_replicas 4: integration test" in made["decision"]["explanation"]

    # above the policy's max: capped at 6, and the explanation says by what
    produce(bootstrap, "scaling-request-events", [scaling_request(tenant, second, desired_replicas=50)])
    capped = service.wait("the Deployment at 6 replicas", lambda: applied_for(second, 6), tenants=(tenant,))
    assert capped["decision"]["binding"] == "max_replicas"
    assert f"request {second} for 50 replicas: capped at 6 by max_replicas" in capped["decision"]["explanation"]

    # the first request again (a redelivery), then a delta: only the delta acts
    produce(bootstrap, "scaling-request-events", [scaling_request(tenant, first, desired_replicas=4),
                                                  scaling_request(tenant, third, delta=-1)])
    service.wait("the Deployment at 5 replicas", lambda: applied_for(third, 5), tenants=(tenant,))
    decisions = service.api.decisions(tenant)
    assert [d["trigger"] for d in decisions if d["cause_event_id"] == first].count("request") == 1
    assert newest(decisions)["cause_event_id"] == third  # type: ignore[index]
    assert service.cluster.replicas(tenant, "api") == 5

    events = [e for e in read_topic(bootstrap, "scaling-events") if e.get("tenant_id") == tenant]
    assert {e["kind"] for e in events} == {"scaling-decision"}  # no scaling-command nobody applies
    assert {e["cause_event_id"] for e in events if e["trigger"] == "request"} == {first, second, third}


def test_a_scaling_request_that_cannot_act_is_recorded_or_dead_lettered(service: Service) -> None:
    tenant = service.tenant("rr")
    bootstrap = service.broker.bootstrap
    produce(bootstrap, "scaling-request-events", [
        scaling_request(tenant, f"{tenant}-bad-name", workload="Not_A_Deployment", desired_replicas=2),
        scaling_request(tenant, f"{tenant}-ghost", workload="ghost", desired_replicas=2),
    ])
    ghost = service.wait("the decision on the missing Deployment", lambda: newest(
        service.api.decisions(tenant), cause_event_id=f"{tenant}-ghost"))
    assert ghost["trigger"] == "request" and not ghost["applied"]  # the only one: no demand, so no re-make
    assert ghost["apply_reason"] == "the Deployment does not exist"
    letters = service.wait("the dead letter of the invalid name", lambda: [
        d for d in read_topic(bootstrap, "dead-letter-events")
        if d.get("source_topic") == "scaling-request-events" and d.get("reason") == "schema"
        and f"{tenant}-bad-name".encode() in base64.b64decode(d.get("original_base64", ""))])
    assert "workload" in letters[0]["detail"]


# -- a restart -------------------------------------------------------------------------------------------------


def test_a_restarted_worker_keeps_the_policies_and_resumes_the_models_from_their_snapshot(service: Service) -> None:
    tenant = service.tenant("rs")
    service.cluster.deployment(tenant, "api", replicas=1)
    service.policy(tenant, {"policy_id": "cpu", "kind": "target_tracking", "target_utilization": 0.5,
                            "max_replicas": 20})
    service.policy(tenant, {"policy_id": "pred", "kind": "predictive", "forecast_only": True, "lead_steps": 1})
    produce(service.broker.bootstrap, "resource-metrics",
            samples(tenant, "api", T0, T0 + timedelta(hours=12), daily, STEP))  # 24 windows close
    before = service.wait("24 learned windows", lambda: (
        lambda items: items[0] if items and items[0]["model"]["observations"] == 24 else None
    )(service.api.decisions(tenant)))
    assert before["model"]["snapshot_observations"] == 20  # every 5 windows

    assert service.worker is not None
    service.worker.stop()
    service.start(service.tmp / "data-2")  # a fresh data dir: every table comes back from its changelog
    assert {p["policy_id"] for p in service.api.policies(tenant)} == {"cpu", "pred"}
    # The decision is back from the changelog (a tick of the restarted worker may already have added a newer one).
    assert before["decision_id"] in {d["decision_id"] for d in service.api.decisions(tenant)}

    # the window 12:00-12:30 was open at the restart; it continues, then two windows close
    produce(service.broker.bootstrap, "resource-metrics",
            samples(tenant, "api", T0 + timedelta(hours=12, minutes=15), T0 + timedelta(hours=13), daily, STEP))
    after = service.wait("26 learned windows", lambda: (
        lambda items: items if items and items[0]["model"]["observations"] >= 26 else None
    )(service.api.decisions(tenant)))
    windows = [d for d in after if d["trigger"] == "window"]
    assert [d["model"]["observations"] for d in windows[:3]] == [26, 25, 24]  # continues; never back to 1
    assert service.api.metric_value("scaling_model_restores_total", source="snapshot") == 1
    assert service.api.metric_value("scaling_model_restores_total", source="relearned") == 0
    assert after[0]["decision"]["forecast"]["observations"] == 26
