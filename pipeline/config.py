"""All settings of the service, built in one place from the environment.

This is the only module that reads environment variables; everything else receives a
``Settings`` (or the part of it that it needs) as an argument.
"""

from __future__ import annotations

import ipaddress
import math
import socket
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Literal, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from yarl import URL

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


KafkaSecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
KafkaSaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
LogFormat = Literal["text", "json"]

#: What the worker logs once, and what every piece of Kubernetes work it skips reports, under
#: KUBERNETES_ENABLED=false (compose.yaml's default: Docker users need no cluster to try the service).
KUBERNETES_DISABLED_REASON = (
    "Kubernetes disabled (KUBERNETES_ENABLED=false): tenant namespaces, quotas and role bindings are skipped, "
    "the kubernetes compute provider is left out of offers and scaling decisions are advisory; set "
    "KUBERNETES_ENABLED=true and KUBECONFIG (with compose: add compose.kubernetes.yaml, see README.md) to "
    "provision namespaces, compute and scaling on a cluster"
)

#: Bind addresses that mean "every interface": a peer cannot call a worker there.
WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::", "[::]", "*"})  # noqa: S104 (names, not a bind)


def _url_host(host: str) -> str:
    """``host`` as the host part of a URL (an IPv6 address in brackets)."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def hostname_address() -> str:
    """This machine's address as its hostname resolves (a pod's IP in Kubernetes), else the hostname itself
    (peers may resolve it through their DNS)."""
    name = socket.gethostname()
    try:
        return socket.gethostbyname(name)
    except OSError:
        return socket.getfqdn(name)


def derive_advertised_url(
    web_host: str,
    web_port: int,
    configured: str | None,
    pod_ip: str | None,
    host_address: Callable[[], str] = hostname_address,
) -> str:
    """The URL the other workers reach this worker's web server at (its Faust ``canonical_url``).

    ``configured`` (``WEB_ADVERTISED_URL``) wins. Otherwise the bind host, unless it is a wildcard
    (``0.0.0.0``/``::``), which no peer can call: then the pod's IP (``POD_IP``), else the hostname's address.
    Never a wildcard: with one, every worker took every peer for itself and routed nothing.
    """
    if configured:
        return configured.rstrip("/")
    host = web_host.strip()
    if host in WILDCARD_HOSTS:
        host = pod_ip or host_address()
    if host in WILDCARD_HOSTS:  # a resolver that answered a wildcard: the loopback is at least reachable here
        host = "127.0.0.1"
    return f"http://{_url_host(host)}:{web_port}"


def is_loopback_host(host: str | None) -> bool:
    """Whether ``host`` names this machine (localhost or a loopback address)."""
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Settings(BaseSettings):
    """Settings of the worker, the bridge, the provisioners and the web API.

    Field names map one to one to upper-case environment variables (``kafka_bootstrap_servers``
    is ``KAFKA_BOOTSTRAP_SERVERS``); the README lists them.
    """

    # Every number is finite (NAN or INF in the environment would reach timers and sums) and in a range.
    model_config = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=False, allow_inf_nan=False)

    # Faust worker
    app_id: str = Field(
        "provisioning-service", min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._-]+$",
        description="Consumer group, changelog topic prefix and the folder of the worker's state under DATA_DIR "
        "(Kafka's topic-name characters).",
    )
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_group_instance_id: str | None = Field(
        None, min_length=1, max_length=249, pattern=r"^[A-Za-z0-9._-]+$",
        description="Static consumer-group membership (KIP-345): a worker restarted with the same id gets its "
        "partitions back at once instead of after the session timeout. Unique per worker (a StatefulSet's pod "
        "name); unset: dynamic membership.",
    )
    kafka_session_timeout_seconds: float = Field(
        60.0, ge=6.0, le=300.0,
        description="How long the group waits for a silent worker (killed, partitioned) before giving its "
        "partitions to the others: the survivors' take-over time after a crash. Shorter means a faster "
        "take-over and more rebalances on a long GC pause or network hiccup. Within the brokers' "
        "group.min/max.session.timeout.ms (6 s to 30 min by default).",
    )
    kafka_producer_linger_ms: float = Field(
        5.0, ge=0.0, le=100.0,
        description="How long the worker's producer waits to batch records into one produce request. Each "
        "tenant event sends some twenty records (commands, status, table changelogs); with 0 every record "
        "tends to become a request of its own, whose write and acknowledgement cost more CPU than the wait.",
    )
    store: str = Field("rocksdb://", description="Faust table store: rocksdb:// in the worker, memory://")
    data_dir: Path = Field(Path(".data"), description="The worker's state lives in DATA_DIR/<APP_ID>/.")
    web_host: str = Field("127.0.0.1", max_length=253, description="Address the web server binds to.")
    web_port: int = Field(6066, ge=1, le=65535)
    web_advertised_url: str | None = Field(
        None, max_length=2048, pattern=r"^https?://[^\s/?#@]+/?$",
        description="URL the other workers call this worker at; unset: derived from WEB_HOST, or from POD_IP or "
        "the hostname's address when WEB_HOST is a wildcard (0.0.0.0, ::).",
    )
    pod_ip: str | None = Field(
        None, max_length=64, description="This pod's IP (Kubernetes downward API), advertised when WEB_HOST is a "
        "wildcard and WEB_ADVERTISED_URL is unset.",
    )
    topic_partitions: int = Field(4, ge=1, le=1024)
    topic_replication_factor: int = Field(
        1, ge=1, le=32, description="Replicas of every topic the service creates (inputs, outputs, changelogs)."
    )
    topic_min_insync_replicas: int | None = Field(
        None, ge=1, le=32, description="min.insync.replicas of the topics the service creates (unset: the "
        "broker's default); at most TOPIC_REPLICATION_FACTOR.",
    )
    table_standby_replicas: int = Field(
        0, ge=0, le=8, description="Workers that keep a hot copy of each table partition, to take over faster."
    )
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
    log_format: LogFormat = Field(
        "text", description="text: one readable line per record; json: one JSON object per line (timestamp, "
        "level, logger, message and, where known, tenant_id, event_id, command_id).",
    )

    # Kafka security (every Kafka client: the Faust worker and the bridge)
    kafka_security_protocol: KafkaSecurityProtocol = "PLAINTEXT"
    kafka_sasl_mechanism: KafkaSaslMechanism = "PLAIN"
    kafka_sasl_username: str | None = Field(None, min_length=1, max_length=1024)
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = Field(None, description="CA bundle of the brokers' certificates (unset: system)")
    kafka_ssl_certfile: Path | None = Field(None, description="Client certificate (mutual TLS), with the key file")
    kafka_ssl_keyfile: Path | None = None
    kafka_ssl_check_hostname: bool = True

    # Pulsar
    pulsar_url: str = "pulsar://127.0.0.1:6650"
    pulsar_admin_url: str = "http://127.0.0.1:8080"
    pulsar_namespace: str = "public/default"
    bridge_enabled: bool = True
    bridge_subscription: str = "provisioning-bridge"
    pulsar_auth_token: SecretStr | None = Field(
        None, description="JWT of the bridge's Pulsar client (and of the admin API unless PULSAR_ADMIN_AUTH_TOKEN)."
    )
    pulsar_admin_auth_token: SecretStr | None = Field(
        None, description="JWT of the admin API calls (tenant/namespace provisioning); unset: PULSAR_AUTH_TOKEN."
    )
    pulsar_tls_trust_certs_file: Path | None = Field(
        None, description="CA bundle for pulsar+ssl:// and an https:// admin URL (unset: the system's)."
    )
    pulsar_tls_validate_hostname: bool = True

    # Backends
    cassandra_hosts: str = "127.0.0.1"
    cassandra_port: int = 9042
    cassandra_username: str | None = Field(None, min_length=1, max_length=256,
                                           description="Cassandra login (PasswordAuthenticator); with the password")
    cassandra_password: SecretStr | None = None
    cassandra_ssl_cafile: Path | None = Field(
        None, description="CA bundle of the Cassandra nodes' certificates: the driver connects over TLS. Needed for "
        "credentials sent to a node off this machine.",
    )
    minio_endpoint: str = "127.0.0.1:8333"
    minio_access_key: str = "devstack"
    minio_secret_key: SecretStr = SecretStr("devstack-secret")
    minio_secure: bool = False
    ignite_host: str = "127.0.0.1"
    ignite_port: int = 10800
    shared_cache_enabled: bool = Field(
        True, description="Share the derivatives engine's quotes between the workers through Ignite "
        "(IGNITE_HOST/PORT); off: each worker keeps only the quotes it got itself, for the TTL. An unreachable "
        "Ignite is a miss, never a failed request.",
    )
    shared_cache_name: str = Field(
        "service_compute_quotes", pattern=r"^service_[a-z0-9_]{1,56}$",
        description="The Ignite cache of the shared quotes (service_*: never a tenant's tenant_* cache).",
    )
    shared_cache_quote_ttl_seconds: float = Field(
        15.0, ge=1, le=600, allow_inf_nan=False,
        description="How long a cached quote serves every worker (never past the quote's own valid_until).",
    )
    shared_cache_timeout_seconds: float = Field(
        1.0, ge=0.01, le=10, allow_inf_nan=False, description="Bound of one shared-cache read or write."
    )
    shared_cache_retry_seconds: float = Field(
        30.0, ge=1, le=3600, allow_inf_nan=False,
        description="After a failed connect to Ignite, how long the workers go without the cache before retrying.",
    )
    elasticsearch_host: str = "http://127.0.0.1:9200"
    elasticsearch_username: str | None = Field(None, min_length=1, max_length=256,
                                               description="Elasticsearch basic-auth user; with the password")
    elasticsearch_password: SecretStr | None = None
    openproject_url: str = "http://127.0.0.1:8091"
    openproject_api_key: SecretStr = SecretStr("devstack-openproject-key")
    kubernetes_enabled: bool = Field(
        True,
        description="Talk to a Kubernetes cluster (KUBECONFIG, else in-cluster); false: tenant namespaces are "
        "skipped, the kubernetes compute provider is left out and scaling only advises.",
    )
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
    provisioning_backend_wait_seconds: float = Field(
        1800.0, ge=0, le=7 * 24 * 3600,
        description="How long a provisioning command waits for a backend it cannot reach (still starting, or "
        "down) before it fails; the tries while waiting do not count as attempts.",
    )
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
    compute_quote_on_request: bool = Field(
        False, description="Provision and quote first merge a current engine quote of the request's GPU type, "
        "providers and regions (through the shared cache when it is on); off: the offer book of the periodic refresh.",
    )
    compute_max_attempts: int = Field(5, ge=1)
    compute_deadline_seconds: float = Field(600.0, gt=0)
    compute_poll_interval_seconds: float = Field(2.0, gt=0)
    compute_provisioning_timeout_seconds: float | None = Field(900.0, gt=0)
    compute_idle_warning_seconds: float = Field(
        600.0, gt=0, le=86400,
        description="Idle termination (opt-in per request) is announced (idle-warning) this long before it acts.",
    )
    compute_enforce_interval_seconds: float = Field(15.0, gt=0)
    compute_provision_wait_seconds: float = Field(
        60.0, ge=0, le=600, description="How long POST /compute/provision waits for running before answering 202."
    )
    compute_access_claim_ttl_seconds: float = Field(
        900.0, gt=0, description="How long undelivered access details stay claimable (in memory only)."
    )
    compute_budget_period: Literal["month", "total"] = "month"
    compute_budget_alert_thresholds: str = Field(
        "0.5,0.8,1.0",
        description="Fractions of a tenant's budget (spent + committed) at which a budget-alert event is sent, "
        "once per threshold and budget period (comma-separated, each in (0, 10], at most 10; empty: none).",
    )
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

    @field_validator("app_id")
    @classmethod
    def _app_id_is_a_name(cls, value: str) -> str:
        if value in {".", ".."}:  # a folder under DATA_DIR and a Kafka topic prefix: neither may be . or ..
            raise ValueError("APP_ID cannot be '.' or '..'")
        return value

    @field_validator("compute_budget_alert_thresholds")
    @classmethod
    def _thresholds_are_fractions(cls, value: str) -> str:
        parse_thresholds(value)  # ValueError: refused at start-up, with the reason
        return value

    @field_validator("pod_ip")
    @classmethod
    def _pod_ip_is_an_address(cls, value: str | None) -> str | None:
        if value is None:
            return None
        address = ipaddress.ip_address(value.strip())  # ValueError: not an IP address
        if address.is_unspecified:
            raise ValueError("POD_IP cannot be a wildcard address")
        return str(address)

    @field_validator("web_advertised_url")
    @classmethod
    def _advertised_url_is_callable(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if (URL(value).host or "") in WILDCARD_HOSTS:
            raise ValueError("WEB_ADVERTISED_URL must name an address peers can call, not a wildcard")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        """Combinations that cannot work refuse to start, with the reason (instead of failing at first use)."""
        min_isr = self.topic_min_insync_replicas
        if min_isr is not None and min_isr > self.topic_replication_factor:
            raise ValueError(f"TOPIC_MIN_INSYNC_REPLICAS ({self.topic_min_insync_replicas}) cannot exceed "
                             f"TOPIC_REPLICATION_FACTOR ({self.topic_replication_factor}): no write would succeed")
        sasl = self.kafka_security_protocol.startswith("SASL_")
        tls = self.kafka_security_protocol in ("SSL", "SASL_SSL")
        has_credentials = self.kafka_sasl_username is not None or self.kafka_sasl_password is not None
        if sasl and (self.kafka_sasl_username is None or self.kafka_sasl_password is None):
            raise ValueError(f"KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs KAFKA_SASL_USERNAME and "
                             "KAFKA_SASL_PASSWORD")
        if has_credentials and not sasl:
            raise ValueError("KAFKA_SASL_USERNAME/PASSWORD are set but KAFKA_SECURITY_PROTOCOL is "
                             f"{self.kafka_security_protocol}: use SASL_SSL (or SASL_PLAINTEXT)")
        tls_files = (self.kafka_ssl_cafile, self.kafka_ssl_certfile, self.kafka_ssl_keyfile)
        if not tls and any(f is not None for f in tls_files):
            raise ValueError("KAFKA_SSL_* files are set but KAFKA_SECURITY_PROTOCOL is "
                             f"{self.kafka_security_protocol}: use SSL or SASL_SSL")
        if (self.kafka_ssl_certfile is None) != (self.kafka_ssl_keyfile is None):
            raise ValueError("KAFKA_SSL_CERTFILE and KAFKA_SSL_KEYFILE go together (mutual TLS)")
        self._backend_credentials_are_safe()
        if self.pulsar_tls_trust_certs_file is not None and not (
            self.pulsar_url.startswith("pulsar+ssl://") or self.pulsar_admin_url.startswith("https://")
        ):
            raise ValueError("PULSAR_TLS_TRUST_CERTS_FILE is set but neither PULSAR_URL (pulsar+ssl://) nor "
                             "PULSAR_ADMIN_URL (https://) uses TLS")
        return self

    def _backend_credentials_are_safe(self) -> None:
        """A login goes with its password, and neither travels in clear off this machine."""
        for name, user, password in (("CASSANDRA", self.cassandra_username, self.cassandra_password),
                                     ("ELASTICSEARCH", self.elasticsearch_username, self.elasticsearch_password)):
            if (user is None) != (password is None):
                raise ValueError(f"{name}_USERNAME and {name}_PASSWORD go together")
        if self.cassandra_password is not None and self.cassandra_ssl_cafile is None and not all(
            is_loopback_host(host) for host in self.cassandra_host_list
        ):
            raise ValueError("CASSANDRA_PASSWORD would be sent in clear to a node off this machine: set "
                             "CASSANDRA_SSL_CAFILE (TLS)")
        url = URL(self.elasticsearch_host)
        if self.elasticsearch_password is not None and url.scheme != "https" and not is_loopback_host(url.host):
            raise ValueError("ELASTICSEARCH_PASSWORD would be sent over plain http off this machine: use an "
                             "https:// ELASTICSEARCH_HOST")

    @property
    def state_dir(self) -> Path:
        """Where this app id's local state (RocksDB tables) lives: another APP_ID never opens its files."""
        return self.data_dir / self.app_id

    def advertised_url(self, host_address: Callable[[], str] = hostname_address) -> str:
        """The URL peers reach this worker at (:func:`derive_advertised_url`)."""
        return derive_advertised_url(self.web_host, self.web_port, self.web_advertised_url, self.pod_ip, host_address)

    @property
    def kubernetes_disabled_reason(self) -> str | None:
        """Why nothing talks to Kubernetes (the one message the worker logs, and what skipped work reports), or
        None when Kubernetes is enabled."""
        if self.kubernetes_enabled:
            return None
        return KUBERNETES_DISABLED_REASON

    @property
    def budget_alert_thresholds(self) -> tuple[float, ...]:
        """COMPUTE_BUDGET_ALERT_THRESHOLDS as fractions, ascending."""
        return parse_thresholds(self.compute_budget_alert_thresholds)

    @property
    def cassandra_host_list(self) -> list[str]:
        return [h.strip() for h in self.cassandra_hosts.split(",") if h.strip()]


#: Most budget-alert thresholds: each one may send an event per tenant and period.
MAX_BUDGET_ALERT_THRESHOLDS = 10


def parse_thresholds(value: str) -> tuple[float, ...]:
    """``"0.5,0.8,1.0"`` -> ``(0.5, 0.8, 1.0)``: finite fractions in (0, 10], distinct, at most
    :data:`MAX_BUDGET_ALERT_THRESHOLDS`, ascending; raises ValueError otherwise."""
    parts = [p.strip() for p in value.split(",") if p.strip()]
    if len(parts) > MAX_BUDGET_ALERT_THRESHOLDS:
        raise ValueError(f"at most {MAX_BUDGET_ALERT_THRESHOLDS} budget alert thresholds, got {len(parts)}")
    thresholds: list[float] = []
    for part in parts:
        try:
            number = float(part[:32])
        except ValueError:
            raise ValueError(f"budget alert threshold {part[:32]!r} is not a number") from None
        if not math.isfinite(number) or not 0 < number <= 10:
            raise ValueError(f"budget alert threshold {part[:32]!r} must be in (0, 10]")
        if number in thresholds:
            raise ValueError(f"budget alert threshold {part[:32]!r} is repeated")
        thresholds.append(number)
    return tuple(sorted(thresholds))


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment once."""
    return Settings()
