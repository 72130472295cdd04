"""Building every provisioner from the settings, in provisioning order (teardown runs in reverse)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping

from pipeline.config import Settings
from pipeline.connections import cassandra_ssl, pulsar_admin_ssl, pulsar_admin_token, secret_value
from pipeline.provisioners.base import RESOURCES, Provisioner, ResourcePlan, TenantSpec
from pipeline.provisioners.cassandra import CassandraProvisioner
from pipeline.provisioners.disabled import DisabledProvisioner
from pipeline.provisioners.elasticsearch import ElasticsearchProvisioner
from pipeline.provisioners.errors import PermanentError
from pipeline.provisioners.ignite import IgniteProvisioner
from pipeline.provisioners.kubernetes import KubernetesProvisioner
from pipeline.provisioners.openproject import OpenProjectProvisioner
from pipeline.provisioners.pulsar import PulsarProvisioner
from pipeline.provisioners.s3 import S3Provisioner
from pipeline.provisioners.tiers import TiersConfig, load_tiers

logger = logging.getLogger(__name__)


def build_provisioner(resource: str, settings: Settings, tiers: TiersConfig) -> Provisioner:
    """The provisioner of one backend (``resource`` is one of :data:`RESOURCES`)."""
    if resource == "cassandra":
        return CassandraProvisioner(tiers, settings.cassandra_host_list, settings.cassandra_port,
                                    username=settings.cassandra_username,
                                    password=secret_value(settings.cassandra_password),
                                    ssl_context=cassandra_ssl(settings))
    if resource == "s3":
        return S3Provisioner(
            tiers,
            settings.minio_endpoint,
            settings.minio_access_key,
            settings.minio_secret_key.get_secret_value(),
            secure=settings.minio_secure,
        )
    if resource == "pulsar":
        return PulsarProvisioner(tiers, settings.pulsar_admin_url, token=pulsar_admin_token(settings),
                                 ssl_context=pulsar_admin_ssl(settings))
    if resource == "openproject":
        return OpenProjectProvisioner(tiers, settings.openproject_url,
                                      settings.openproject_api_key.get_secret_value())
    if resource == "ignite":
        return IgniteProvisioner(tiers, settings.ignite_host, settings.ignite_port)
    if resource == "elasticsearch":
        return ElasticsearchProvisioner(tiers, settings.elasticsearch_host, username=settings.elasticsearch_username,
                                        password=secret_value(settings.elasticsearch_password))
    if resource == "kubernetes":
        kubernetes = KubernetesProvisioner(tiers, settings.kubeconfig)
        disabled = settings.kubernetes_disabled_reason
        return kubernetes if disabled is None else DisabledProvisioner(kubernetes, disabled)
    raise PermanentError(f"unknown resource {resource!r}; choose from {', '.join(RESOURCES)}")


def build_provisioners(
    settings: Settings, tiers: TiersConfig | None = None, only: Iterable[str] | None = None
) -> dict[str, Provisioner]:
    """Every provisioner (or those in ``only``), keyed by resource, in provisioning order.

    Nothing connects here: each provisioner connects on first use and reconnects after a failure.
    """
    tiers = tiers or load_tiers(settings.tiers_file)
    wanted = set(only) if only is not None else set(RESOURCES)
    unknown = wanted - set(RESOURCES)
    if unknown:
        raise PermanentError(f"unknown resources {sorted(unknown)}; choose from {', '.join(RESOURCES)}")
    return {resource: build_provisioner(resource, settings, tiers) for resource in RESOURCES if resource in wanted}


def teardown_order(provisioners: Mapping[str, Provisioner]) -> list[Provisioner]:
    """The provisioners in reverse provisioning order."""
    return [provisioners[r] for r in reversed(RESOURCES) if r in provisioners]


def plan_all(provisioners: Mapping[str, Provisioner], tenant: TenantSpec) -> dict[str, ResourcePlan]:
    """The dry run: what every backend would create for ``tenant``. Raises ``UnsafeNameError`` and co."""
    return {resource: provisioner.plan(tenant) for resource, provisioner in provisioners.items()}


async def aclose_all(provisioners: Mapping[str, Provisioner]) -> None:
    results = await asyncio.gather(*(p.aclose() for p in provisioners.values()), return_exceptions=True)
    for resource, result in zip(provisioners, results, strict=True):
        if isinstance(result, BaseException):
            logger.warning("closing the %s provisioner failed: %s", resource, result)
