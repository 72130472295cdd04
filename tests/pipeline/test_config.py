"""Deployment settings: the advertised URL, replication, state per app id and the security combinations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from pipeline.config import Settings, derive_advertised_url

#: The IPv4 wildcard, as WEB_HOST sets it (a value compared with, never bound here).
ANY = "0.0.0.0"  # noqa: S104


def no_lookup() -> str:
    raise AssertionError("the hostname is looked up only for a wildcard bind without POD_IP")


@pytest.mark.parametrize(("host", "port", "configured", "pod_ip", "expected"), [
    ("127.0.0.1", 6066, None, None, "http://127.0.0.1:6066"),
    ("worker-0.workers.ns.svc", 7000, None, "10.1.2.3", "http://worker-0.workers.ns.svc:7000"),
    (ANY, 6066, None, "10.1.2.3", "http://10.1.2.3:6066"),
    ("::", 6066, None, "fd00::7", "http://[fd00::7]:6066"),
    (ANY, 6066, "https://worker-1.example:8443/", "10.1.2.3", "https://worker-1.example:8443"),
    ("127.0.0.1", 6066, "http://10.9.9.9:6066", None, "http://10.9.9.9:6066"),
])
def test_the_advertised_url_is_the_configured_one_or_the_bind_host_unless_a_wildcard(
    host: str, port: int, configured: str | None, pod_ip: str | None, expected: str
) -> None:
    assert derive_advertised_url(host, port, configured, pod_ip, no_lookup) == expected


@pytest.mark.parametrize(("wildcard", "address", "expected"), [
    (ANY, "10.0.0.5", "http://10.0.0.5:6066"),
    ("::", "10.0.0.5", "http://10.0.0.5:6066"),
    (ANY, "worker-2.local", "http://worker-2.local:6066"),
    (ANY, "fe80::1", "http://[fe80::1]:6066"),
    (ANY, ANY, "http://127.0.0.1:6066"),  # a resolver answering a wildcard: never advertised
])
def test_a_wildcard_bind_without_pod_ip_advertises_the_hostnames_address(
    wildcard: str, address: str, expected: str
) -> None:
    assert derive_advertised_url(wildcard, 6066, None, None, lambda: address) == expected


def test_settings_advertise_the_pod_ip_for_a_wildcard_bind() -> None:
    settings = Settings(web_host=ANY, web_port=6070, pod_ip="10.4.0.17")
    assert settings.advertised_url(no_lookup) == "http://10.4.0.17:6070"
    assert Settings().advertised_url(no_lookup) == "http://127.0.0.1:6066"  # the default: as before


@pytest.mark.parametrize("bad", ["http://0.0.0.0:6066", "http://[::]:6066", "ftp://w:1", "http://w:1/path",
                                 "http://user@w:1", "w:6066"])
def test_an_advertised_url_must_be_callable(bad: str) -> None:
    with pytest.raises(ValidationError):
        Settings(web_advertised_url=bad)


@pytest.mark.parametrize("bad", [ANY, "::", "not-an-ip", "10.0.0.300"])
def test_pod_ip_must_be_a_concrete_address(bad: str) -> None:
    with pytest.raises(ValidationError):
        Settings(pod_ip=bad)


def test_replication_defaults_are_single_broker_and_ranges_are_checked() -> None:
    default = Settings()
    assert (default.topic_replication_factor, default.topic_min_insync_replicas, default.table_standby_replicas) \
        == (1, None, 0)
    ok = Settings(topic_replication_factor=3, topic_min_insync_replicas=2, table_standby_replicas=1)
    assert (ok.topic_replication_factor, ok.topic_min_insync_replicas) == (3, 2)
    for bad in ({"topic_replication_factor": 0}, {"table_standby_replicas": -1},
                {"topic_min_insync_replicas": 0}, {"topic_replication_factor": 2, "topic_min_insync_replicas": 3}):
        with pytest.raises(ValidationError):
            Settings(**bad)


def test_min_insync_above_replication_says_why() -> None:
    with pytest.raises(ValidationError, match="TOPIC_MIN_INSYNC_REPLICAS \\(2\\) cannot exceed"):
        Settings(topic_min_insync_replicas=2)


def test_state_follows_the_app_id() -> None:
    settings = Settings(data_dir=Path("/var/lib/provisioning"), app_id="prod-eu")
    assert settings.state_dir == Path("/var/lib/provisioning/prod-eu")
    assert Settings(data_dir=Path("/d"), app_id="staging").state_dir != settings.state_dir


@pytest.mark.parametrize("bad", ["", ".", "..", "a/b", "../x", "x y", "a" * 201])
def test_an_app_id_is_a_safe_folder_and_topic_prefix(bad: str) -> None:
    with pytest.raises(ValidationError):
        Settings(app_id=bad)


@pytest.mark.parametrize("combo", [
    {"kafka_security_protocol": "SASL_SSL"},  # no credentials
    {"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_username": "svc"},  # no password
    {"kafka_sasl_username": "svc", "kafka_sasl_password": "pw"},  # credentials on PLAINTEXT
    {"kafka_ssl_cafile": "/ca.pem"},  # a CA on PLAINTEXT
    {"kafka_security_protocol": "SSL", "kafka_ssl_certfile": "/c.pem"},  # a certificate without its key
    {"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "GSSAPI", "kafka_sasl_username": "svc",
     "kafka_sasl_password": "pw"},  # not a supported mechanism
    {"pulsar_tls_trust_certs_file": "/ca.pem"},  # neither Pulsar URL uses TLS
])
def test_security_settings_that_cannot_work_are_refused(combo: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Settings(**combo)


def test_security_defaults_are_plain_and_log_format_text() -> None:
    settings = Settings()
    assert settings.kafka_security_protocol == "PLAINTEXT"
    assert settings.pulsar_auth_token is None and settings.pulsar_admin_auth_token is None
    assert settings.log_format == "text"
    with pytest.raises(ValidationError):
        Settings(log_format="xml")


def test_secrets_do_not_show_in_the_settings_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "svc")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "kafka-pw-123")
    monkeypatch.setenv("PULSAR_AUTH_TOKEN", "pulsar-token-456")
    settings = Settings()
    assert settings.kafka_sasl_password is not None
    assert settings.kafka_sasl_password.get_secret_value() == "kafka-pw-123"
    text = f"{settings!r} {settings}"
    assert "kafka-pw-123" not in text and "pulsar-token-456" not in text


@pytest.mark.parametrize("combo", [
    {"cassandra_username": "svc"},  # a login without its password
    {"elasticsearch_password": "p"},
    {"cassandra_hosts": "10.0.0.5,127.0.0.1", "cassandra_username": "svc", "cassandra_password": "p"},  # clear text
    {"elasticsearch_host": "http://search.internal:9200", "elasticsearch_username": "svc",
     "elasticsearch_password": "p"},
])
def test_backend_credentials_that_would_leak_or_cannot_work_are_refused(combo: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Settings(**combo)


def test_backend_credentials_over_tls_or_on_this_machine_are_accepted(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    remote = Settings(cassandra_hosts="10.0.0.5", cassandra_username="svc", cassandra_password="cql-secret-42",
                      cassandra_ssl_cafile=ca, elasticsearch_host="https://search.internal:9200",
                      elasticsearch_username="svc", elasticsearch_password="es-secret-42")
    assert remote.cassandra_password is not None
    assert "secret-42" not in repr(remote)
    local = Settings(cassandra_username="svc", cassandra_password="p", elasticsearch_username="svc",
                     elasticsearch_password="p")
    assert local.elasticsearch_host.startswith("http://127.0.0.1")
