"""All settings of the service, built in one place from the environment.

This is the only module that reads environment variables; everything else receives a
``Settings`` (or the part of it that it needs) as an argument.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipeline.compute.kubernetes_provider import KubernetesProviderConfig
from pipeline.compute.optimizer import TenantComputeSettings
from pipeline.contract.topics import DEAD_LETTER_EVENTS
from pipeline.events.models import Tier

EventLoop = Literal["uvloop", "asyncio"]

SeverityName = Literal["low", "medium", "high", "critical"]
ReactionName = Literal["notify", "scale", "quarantine"]


def _default_reactions() -> dict[SeverityName, ReactionName]:
    return {"low": "notify", "medium": "notify", "high": "scale", "critical": "quarantine"}


def _default_cache_dir() -> Path:
    return Path.home() / ".cache" / "provisioning-devstack"


class Settings(BaseSettings):
    """Settings of the worker, the bridge, the provisioners and the web API.

    Field names map one to one to upper-case environment variables (``kafka_bootstrap_servers``
    is ``KAFKA_BOOTSTRAP_SERVERS``); the README lists them.
    """

    # Every number is finite (NAN or INF in the environment would reach timers and sums) and in a range.
    model_config = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=False, allow_inf_nan=False)

    # Faust worker
    app_id: str = "provisioning-service"
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_group_instance_id: str | None = Field(
        None, min_length=1, max_length=249, pattern=r"^[A-Za-z0-9._-]+$",
        description="Static consumer-group membership (KIP-345): a worker restarted with the same id gets its "
        "partitions back at once instead of after the session timeout. Unique per worker (a StatefulSet's pod "
        "name); unset: dynamic membership.",
    )
    store: str = Field("rocksdb://", description="Faust table store: rocksdb:// in the worker, memory://")
    data_dir: Path = Path(".data")
    web_host: str = "127.0.0.1"
    web_port: int = Field(6066, ge=1, le=65535)
    topic_partitions: int = Field(4, ge=1, le=1024)
    dead_letter_topic: str = DEAD_LETTER_EVENTS
    dedupe_window_seconds: int = Field(7 * 24 * 3600, ge=1, le=366 * 24 * 3600)
    utilization_window_seconds: int = Field(60, ge=1, le=24 * 3600)
    event_loop: EventLoop = Field("uvloop", description="The worker's asyncio event loop: uvloop or asyncio")
    metrics_batch_max: int = Field(
        20_000, ge=1, le=1_000_000,
        description="resource-metrics events folded per batch at most; as many more may wait while one is folded",
    )
    metrics_batch_seconds: float = Field(
        0.5, gt=0, le=60, description="How long the resource-metrics agent waits to fill a batch before it folds it"
    )
    anomaly_reactions: dict[SeverityName, ReactionName] = Field(
        default_factory=_default_reactions,
        description="Reaction per anomaly severity, as JSON in ANOMALY_REACTIONS.",
    )

    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info",
        description="The service's own log level. Libraries (Pulsar, Kafka, Faust's per-partition lines, "
        "Kubernetes, HTTP clients, drivers) log at WARNING and above unless this is debug.",
    )

    # Pulsar
    pulsar_url: str = "pulsar://127.0.0.1:6650"
    pulsar_admin_url: str = "http://127.0.0.1:8080"
    pulsar_namespace: str = "public/default"
    bridge_enabled: bool = True
    bridge_subscription: str = "provisioning-bridge"

    # Backends
    cassandra_hosts: str = "127.0.0.1"
    cassandra_port: int = 9042
    minio_endpoint: str = "127.0.0.1:8333"
    minio_access_key: str = "devstack"
    minio_secret_key: SecretStr = SecretStr("devstack-secret")
    minio_secure: bool = False
    ignite_host: str = "127.0.0.1"
    ignite_port: int = 10800
    elasticsearch_host: str = "http://127.0.0.1:9200"
    openproject_url: str = "http://127.0.0.1:8091"
    openproject_api_key: SecretStr = SecretStr("devstack-openproject-key")
    kubeconfig: Path | None = None
    k8s_namespace: str = "provisioning-system"
    prometheus_url: str = "http://127.0.0.1:9090"
    derivatives_engine_url: str = "http://127.0.0.1:8092"
    tiers_file: Path | None = None
    executor_enabled: bool = Field(True, description="Run provisioning commands against the backends.")
    executor_concurrency: int = Field(32, ge=1, le=1024, description="Live commands applied at once.")
    executor_replay_concurrency: int = Field(
        4, ge=1, le=256,
        description="Commands of events older than the worker's start (replays, restarts) run at once.",
    )
    executor_replay_backlog: int = Field(
        64, ge=1, le=10_000,
        description="Replay commands queued at most; more stay pending for the reconciler to start later.",
    )
    executor_max_attempts: int = Field(8, ge=1, le=1000)
    executor_base_delay_seconds: float = Field(0.5, gt=0, le=3600)
    executor_max_delay_seconds: float = Field(20.0, gt=0, le=24 * 3600)
    reconcile_interval_seconds: float = Field(30.0, gt=0, le=24 * 3600)
    reconcile_stale_after_seconds: float = Field(60.0, gt=0, le=7 * 24 * 3600)
    reconcile_batch_tenants: int = Field(
        50, ge=1, le=10_000, description="Tenants the reconciler looks at per pass (round robin over passes)."
    )
    reconcile_verify_concurrency: int = Field(4, ge=1, le=256, description="Reconciler verifies run at once.")
    reconcile_orphan_window_seconds: float = Field(
        3600.0, ge=0, le=30 * 86400, allow_inf_nan=False,
        description="How long after a deletion the reconciler checks for resources re-created by a late create.",
    )

    # Compute provisioning (settings of pipeline/compute and its agents go here)
    compute_catalog_dir: Path | None = Field(
        None, description="Folder of lambda/nebius/verda_vms.v8.csv; default: the packaged copies."
    )
    compute_extra_catalogs: list[Path] = Field(
        default_factory=list, description="More SkyPilot v8 CSVs (JSON list); provider = file name before '_'."
    )
    derivatives_engine_api_token: SecretStr | None = None
    compute_engine_timeout_seconds: float = Field(10.0, gt=0)
    compute_allocate_timeout_seconds: float = Field(30.0, gt=0)
    compute_quote_refresh_seconds: float = Field(60.0, gt=0)
    compute_max_attempts: int = Field(5, ge=1)
    compute_deadline_seconds: float = Field(600.0, gt=0)
    compute_poll_interval_seconds: float = Field(2.0, gt=0)
    compute_provisioning_timeout_seconds: float | None = Field(900.0, gt=0)
    compute_idle_timeout_seconds: float | None = Field(3600.0, gt=0)
    compute_busy_threshold: float = Field(0.05, ge=0, le=1)
    compute_enforce_interval_seconds: float = Field(15.0, gt=0)
    compute_provision_wait_seconds: float = Field(
        60.0, ge=0, le=600, description="How long POST /compute/provision waits for running before answering 202."
    )
    compute_access_claim_ttl_seconds: float = Field(
        900.0, gt=0, description="How long undelivered access details stay claimable (in memory only)."
    )
    compute_budget_period: Literal["month", "total"] = "month"
    compute_ssh_user: str = "ubuntu"
    compute_jupyter_url_template: str = "https://{host}:8888/lab"
    compute_monitoring_url_template: str = (
        "http://127.0.0.1:3000/d/compute-allocation/compute-allocation?var-allocation={allocation_id}"
    )
    compute_kubernetes: KubernetesProviderConfig = Field(
        default_factory=KubernetesProviderConfig,
        description="The in-house provider (JSON): shapes, prices per GPU/vCPU/GiB-hour, image...",
    )
    compute_tenant_policies: dict[str, TenantComputeSettings] = Field(
        default_factory=dict,
        description='Per tenant (or "*"): max_gpus, max_price_per_hour, budget_usd, discounts (JSON).',
    )
    # -- end compute --

    # Scaling (settings of pipeline/scaling and its agents go here)
    scaling_enabled: bool = Field(True, description="Run the scaling agents (forecasts, decisions, fair share).")
    scaling_forecast_enabled: bool = Field(
        True, description="Learn and forecast each workload's demand; false: decisions without forecasts."
    )
    scaling_forecast_horizon: int = Field(12, ge=1, le=500, description="Windows forecast ahead.")
    scaling_snapshot_every_windows: int = Field(
        30, ge=1, description="Snapshot each forecaster into model-snapshots after this many learned windows."
    )
    scaling_recent_decisions: int = Field(50, ge=1, le=1000, description="Decisions kept per tenant/workload.")
    scaling_default_capacity_per_replica: float = Field(
        1.0, gt=0, description="CPU cores one replica serves when its Deployment has no CPU request."
    )
    scaling_apply_enabled: bool = Field(
        True, description="Patch the Deployments' scale subresource; false: decide and explain only."
    )
    scaling_apply_concurrency: int = Field(4, ge=1, description="Threads talking to the Kubernetes API.")
    scaling_observe_interval_seconds: float = Field(
        300.0, gt=0, description="Re-read a Deployment (replicas, requests) at most this often when nothing changes."
    )
    scaling_tick_seconds: float = Field(
        15.0, ge=0, description="Scheduled policies are evaluated on this timer (0: only when windows close)."
    )
    scaling_clock_offset_seconds: float = Field(
        0.0, ge=-1e9, le=1e9,
        description="Added to the wall clock of the scheduled-policy timer (tests inject time with it).",
    )
    scaling_pool_cpu: float | None = Field(None, ge=0, description="Pool CPU cores shared by DRF (unset: unlimited).")
    scaling_pool_memory_gib: float | None = Field(None, ge=0, description="Pool memory (GiB) shared by DRF.")
    scaling_pool_gpus: float | None = Field(None, ge=0, description="Pool GPUs shared by DRF.")
    scaling_tier_weights: dict[str, float] = Field(
        default_factory=lambda: {"free": 1.0, "standard": 2.0, "enterprise": 4.0},
        description="DRF weight per tenant tier (JSON); unknown tiers weigh 1.",
    )
    scaling_demand_ttl_seconds: float = Field(
        1800.0, gt=0, description="A workload's demand leaves the fair-share pool when not refreshed for this long."
    )
    scaling_max_workloads_per_tenant: int = Field(
        200, ge=1, le=100_000,
        description="Forecasters one tenant may hold in memory; the least recently used is evicted (and restored "
        "from its snapshot when its workload comes back).",
    )
    scaling_max_models: int = Field(
        5000, ge=1, le=1_000_000, description="Forecasters this worker holds in memory over all tenants (LRU)."
    )
    snapshot_signing_key: SecretStr | None = Field(
        None,
        description="HMAC-SHA256 key of the forecaster snapshots (>= 16 bytes, the same on every worker); "
        "required while forecasting is on. Unsigned or foreign snapshots are refused.",
    )
    # -- end scaling --

    # Auth
    self_service_tier: Tier = Field(
        Tier.FREE, description="The tier a tenant-admin's own provisioning gets; other tiers: platform-admin only."
    )
    jwt_secret: SecretStr | None = None
    peer_secret: SecretStr | None = Field(
        None, description="Shared by the workers of a group only: guards /internal/ (at least 32 characters; the "
        "worker refuses to start without it).",
    )
    peer_network_encrypted: bool = Field(
        False, description="The network between workers is encrypted (mesh mTLS, WireGuard): peer calls, which "
        "carry secrets over plain http, may leave 127.0.0.1.",
    )
    jwt_public_key: str | None = None
    jwt_jwks_url: str | None = None
    jwt_audience: str | None = None
    jwt_issuer: str | None = None

    # Command-line client (python -m pipeline compute | tenants)
    provisioning_api_url: str = Field(
        "http://127.0.0.1:6066", max_length=2048, pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$",
        description="Where the compute and tenants commands find the REST API (the worker's web server).",
    )
    provisioning_token: SecretStr | None = Field(
        None, description="The bearer token the compute and tenants commands send (python -m pipeline dev-token).",
    )

    # Local stack (python -m devstack)
    devstack_cache_dir: Path = Field(default_factory=_default_cache_dir)
    devstack_home: Path = Path(".devstack")

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_case_level(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @property
    def cassandra_host_list(self) -> list[str]:
        return [h.strip() for h in self.cassandra_hosts.split(",") if h.strip()]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment once."""
    return Settings()
