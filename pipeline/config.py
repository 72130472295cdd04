"""All settings of the service, built in one place from the environment.

This is the only module that reads environment variables; everything else receives a
``Settings`` (or the part of it that it needs) as an argument.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


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

    model_config = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=False)

    # Faust worker
    app_id: str = "provisioning-service"
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    store: str = Field("rocksdb://", description="Faust table store: rocksdb:// in the worker, memory://")
    data_dir: Path = Path(".data")
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    topic_partitions: int = 4
    dead_letter_topic: str = "dead-letter-events"
    dedupe_window_seconds: int = 7 * 24 * 3600
    utilization_window_seconds: int = 60
    anomaly_reactions: dict[SeverityName, ReactionName] = Field(
        default_factory=_default_reactions,
        description="Reaction per anomaly severity, as JSON in ANOMALY_REACTIONS.",
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
    executor_concurrency: int = 32
    executor_max_attempts: int = 8
    executor_base_delay_seconds: float = 0.5
    executor_max_delay_seconds: float = 20.0
    reconcile_interval_seconds: float = 30.0
    reconcile_stale_after_seconds: float = 60.0

    # Compute provisioning (settings of pipeline/compute and its agents go here)
    # -- end compute --

    # Scaling (settings of pipeline/scaling and its agents go here)
    # -- end scaling --

    # Auth
    jwt_secret: SecretStr | None = None
    jwt_public_key: str | None = None
    jwt_jwks_url: str | None = None
    jwt_audience: str | None = None
    jwt_issuer: str | None = None

    # Local stack (python -m pipeline.devstack)
    devstack_cache_dir: Path = Field(default_factory=_default_cache_dir)
    devstack_home: Path = Path(".devstack")

    @property
    def cassandra_host_list(self) -> list[str]:
        return [h.strip() for h in self.cassandra_hosts.split(",") if h.strip()]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment once."""
    return Settings()
