"""Kafka and Pulsar client arguments built from the security settings."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path
from typing import Any

import confluent_kafka
import faust
import pulsar
import pytest

from pipeline.config import Settings
from pipeline.connections import (
    aiokafka_security,
    faust_broker_credentials,
    librdkafka_security,
    pulsar_admin_ssl,
    pulsar_admin_token,
    pulsar_client_options,
)

PASSWORD = "kafka-secret-pw-7f3a"
TOKEN = "pulsar.jwt.token-91c2"


@pytest.fixture(scope="module")
def cert_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate and its key, made by openssl (a CA bundle and a client certificate)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def test_plaintext_is_as_before() -> None:
    settings = Settings()
    assert aiokafka_security(settings) == {"security_protocol": "PLAINTEXT"}
    assert faust_broker_credentials(settings) is None
    assert pulsar_client_options(settings) == {}
    assert pulsar_admin_token(settings) is None
    assert pulsar_admin_ssl(settings) is None


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_over_tls_reaches_aiokafka_and_faust(mechanism: str, cert_pair: tuple[Path, Path]) -> None:
    cert, _ = cert_pair
    settings = Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism=mechanism,
                        kafka_sasl_username="svc-provisioning", kafka_sasl_password=PASSWORD, kafka_ssl_cafile=cert)
    options = aiokafka_security(settings)
    assert {k: v for k, v in options.items() if k != "ssl_context"} == {
        "security_protocol": "SASL_SSL", "sasl_mechanism": mechanism,
        "sasl_plain_username": "svc-provisioning", "sasl_plain_password": PASSWORD,
    }
    context: ssl.SSLContext = options["ssl_context"]
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname
    assert context.cert_store_stats()["x509_ca"] >= 1  # the configured CA is loaded

    credentials: Any = faust_broker_credentials(settings)
    assert isinstance(credentials, faust.SASLCredentials)
    assert (credentials.protocol.value, credentials.mechanism.value) == ("SASL_SSL", mechanism)
    assert (credentials.username, credentials.password) == ("svc-provisioning", PASSWORD)
    assert PASSWORD not in repr(credentials)
    # What Faust hands aiokafka from them (its own translation, as the worker's consumer and producer get it).
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
    translated = credentials_to_aiokafka_auth(credentials)
    assert translated["security_protocol"] == "SASL_SSL" and translated["sasl_mechanism"] == mechanism
    assert translated["sasl_plain_password"] == PASSWORD


def test_sasl_without_tls_is_sasl_plaintext() -> None:
    settings = Settings(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism="SCRAM-SHA-256",
                        kafka_sasl_username="u", kafka_sasl_password=PASSWORD)
    assert "ssl_context" not in aiokafka_security(settings)
    credentials: Any = faust_broker_credentials(settings)
    assert credentials.protocol.value == "SASL_PLAINTEXT" and credentials.ssl_context is None


def test_tls_with_a_client_certificate(cert_pair: tuple[Path, Path]) -> None:
    cert, key = cert_pair
    settings = Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=cert, kafka_ssl_certfile=cert,
                        kafka_ssl_keyfile=key, kafka_ssl_check_hostname=False)
    options = aiokafka_security(settings)
    assert options["security_protocol"] == "SSL" and "sasl_mechanism" not in options
    assert options["ssl_context"].check_hostname is False
    credentials: Any = faust_broker_credentials(settings)
    assert isinstance(credentials, faust.SSLCredentials) and credentials.protocol.value == "SSL"


def test_pulsar_token_and_tls_reach_the_client(cert_pair: tuple[Path, Path]) -> None:
    cert, _ = cert_pair
    settings = Settings(pulsar_url="pulsar+ssl://broker:6651", pulsar_auth_token=TOKEN,
                        pulsar_tls_trust_certs_file=cert, pulsar_tls_validate_hostname=True)
    options = pulsar_client_options(settings)
    assert isinstance(options.pop("authentication"), pulsar.AuthenticationToken)
    assert options == {"tls_validate_hostname": True, "tls_trust_certs_file_path": str(cert)}
    # The client accepts them (it connects lazily: nothing is reached here).
    client = pulsar.Client(settings.pulsar_url, **pulsar_client_options(settings))
    client.close()


def test_pulsar_admin_gets_its_own_token_or_the_clients(cert_pair: tuple[Path, Path]) -> None:
    assert pulsar_admin_token(Settings(pulsar_auth_token=TOKEN)) == TOKEN
    assert pulsar_admin_token(Settings(pulsar_auth_token=TOKEN, pulsar_admin_auth_token="admin-tok")) == "admin-tok"
    cert, _ = cert_pair
    context = pulsar_admin_ssl(Settings(pulsar_admin_url="https://pulsar:8443", pulsar_tls_trust_certs_file=cert))
    assert context is not None and context.cert_store_stats()["x509_ca"] >= 1
    assert pulsar_admin_ssl(Settings(pulsar_admin_url="https://pulsar:8443")) is None  # aiohttp's default


async def test_the_admin_token_is_sent_as_a_bearer_header() -> None:
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    from pipeline.provisioners.registry import build_provisioner
    from pipeline.provisioners.tiers import load_tiers

    seen: list[str | None] = []

    async def clusters(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.json_response(["standalone"])

    server_app = web.Application()
    server_app.router.add_get("/admin/v2/clusters", clusters)
    async with TestServer(server_app, host="127.0.0.1") as server:
        settings = Settings(pulsar_admin_url=str(server.make_url("")), pulsar_admin_auth_token=TOKEN)
        provisioner: Any = build_provisioner("pulsar", settings, load_tiers(None))
        try:
            response = await provisioner._http.request("GET", "/admin/v2/clusters")
        finally:
            await provisioner.aclose()
    assert response.data == ["standalone"]
    assert seen == [f"Bearer {TOKEN}"]


# -- the bridge's librdkafka clients get the same settings -------------------------------------------------


def test_librdkafka_plaintext() -> None:
    assert librdkafka_security(Settings()) == {"security.protocol": "plaintext"}


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_librdkafka_sasl_over_tls_with_a_client_certificate(mechanism: str, cert_pair: tuple[Path, Path]) -> None:
    cert, key = cert_pair
    settings = Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism=mechanism,
                        kafka_sasl_username="svc-provisioning", kafka_sasl_password=PASSWORD, kafka_ssl_cafile=cert,
                        kafka_ssl_certfile=cert, kafka_ssl_keyfile=key)
    options = librdkafka_security(settings)
    assert options == {
        "security.protocol": "sasl_ssl", "sasl.mechanism": mechanism, "sasl.username": "svc-provisioning",
        "sasl.password": PASSWORD, "ssl.ca.location": str(cert), "ssl.endpoint.identification.algorithm": "https",
        "ssl.certificate.location": str(cert), "ssl.key.location": str(key),
    }
    # librdkafka itself accepts every property (it checks names and values, and loads the files, when the
    # client is created; nothing connects before a request).
    confluent_kafka.Producer({"bootstrap.servers": "127.0.0.1:1", **options}).flush(0)


def test_librdkafka_sasl_plaintext_and_tls_without_hostname_check(cert_pair: tuple[Path, Path]) -> None:
    sasl = librdkafka_security(Settings(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism="SCRAM-SHA-256",
                                        kafka_sasl_username="u", kafka_sasl_password=PASSWORD))
    assert sasl == {"security.protocol": "sasl_plaintext", "sasl.mechanism": "SCRAM-SHA-256", "sasl.username": "u",
                    "sasl.password": PASSWORD}
    tls = librdkafka_security(Settings(kafka_security_protocol="SSL", kafka_ssl_check_hostname=False))
    assert tls == {"security.protocol": "ssl", "ssl.ca.location": "probe",
                   "ssl.endpoint.identification.algorithm": "none"}
    confluent_kafka.Consumer({"bootstrap.servers": "127.0.0.1:1", "group.id": "g", **tls}).close()
