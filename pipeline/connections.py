"""The security arguments of every Kafka and Pulsar client, built from the settings in one place.

Kafka: the Faust worker gets ``broker_credentials`` (Faust turns them into aiokafka's arguments); the bridge's
aiokafka admin client gets the same arguments directly, and its librdkafka (confluent-kafka) producer and consumer
the same settings as librdkafka configuration properties. Pulsar: the bridge's client gets
token authentication and its CA bundle; the admin API (tenant and namespace provisioning) gets an
``Authorization: Bearer`` header and the same CA bundle.

Secrets stay ``SecretStr`` in the settings and are unwrapped here only, into the client arguments; the
credential objects' reprs name no password (Faust's ``SASLCredentials`` shows the user name only).
"""

from __future__ import annotations

import ssl
from typing import Any

import faust
import pulsar
from faust.types.auth import CredentialsT
from pydantic import SecretStr

from pipeline.config import Settings


def kafka_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of the Kafka clients (``SSL``/``SASL_SSL``), or None for a plain connection."""
    if settings.kafka_security_protocol not in ("SSL", "SASL_SSL"):
        return None
    cafile = str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    context.check_hostname = settings.kafka_ssl_check_hostname
    if settings.kafka_ssl_certfile is not None and settings.kafka_ssl_keyfile is not None:
        context.load_cert_chain(str(settings.kafka_ssl_certfile), str(settings.kafka_ssl_keyfile))
    return context


def aiokafka_security(settings: Settings) -> dict[str, Any]:
    """Keyword arguments of ``AIOKafkaProducer``/``AIOKafkaConsumer``/``AIOKafkaAdminClient``."""
    protocol = settings.kafka_security_protocol
    options: dict[str, Any] = {"security_protocol": protocol}
    context = kafka_ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    if protocol.startswith("SASL_"):
        assert settings.kafka_sasl_username is not None and settings.kafka_sasl_password is not None  # validated
        options.update(
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_plain_username=settings.kafka_sasl_username,
            sasl_plain_password=settings.kafka_sasl_password.get_secret_value(),
        )
    return options


def librdkafka_security(settings: Settings) -> dict[str, str]:
    """The same settings as :func:`aiokafka_security`, as librdkafka configuration properties (the bridge's
    confluent-kafka producer and consumer)."""
    protocol = settings.kafka_security_protocol
    options = {"security.protocol": protocol.lower()}
    if protocol in ("SSL", "SASL_SSL"):
        # Unset, librdkafka would use its bundled OpenSSL's default paths; "probe" finds the system's CA bundle,
        # as Python's default context does.
        options["ssl.ca.location"] = str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else "probe"
        options["ssl.endpoint.identification.algorithm"] = "https" if settings.kafka_ssl_check_hostname else "none"
        if settings.kafka_ssl_certfile is not None and settings.kafka_ssl_keyfile is not None:
            options["ssl.certificate.location"] = str(settings.kafka_ssl_certfile)
            options["ssl.key.location"] = str(settings.kafka_ssl_keyfile)
    if protocol.startswith("SASL_"):
        assert settings.kafka_sasl_username is not None and settings.kafka_sasl_password is not None  # validated
        options.update({
            "sasl.mechanism": settings.kafka_sasl_mechanism,
            "sasl.username": settings.kafka_sasl_username,
            "sasl.password": settings.kafka_sasl_password.get_secret_value(),
        })
    return options


def faust_broker_credentials(settings: Settings) -> CredentialsT | None:
    """The worker's ``broker_credentials``: None for PLAINTEXT (Faust's default, as before these settings)."""
    protocol = settings.kafka_security_protocol
    context = kafka_ssl_context(settings)
    if protocol.startswith("SASL_"):
        assert settings.kafka_sasl_username is not None and settings.kafka_sasl_password is not None  # validated
        # Faust picks SASL_SSL when a context is given, SASL_PLAINTEXT otherwise.
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password.get_secret_value(),
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def pulsar_client_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments of ``pulsar.Client`` (and of its asyncio twin) beyond the service URL.

    TLS itself follows the URL's scheme (``pulsar+ssl://``); these add the CA bundle, hostname validation and
    token authentication.
    """
    options: dict[str, Any] = {}
    if settings.pulsar_auth_token is not None:
        options["authentication"] = pulsar.AuthenticationToken(settings.pulsar_auth_token.get_secret_value())
    if settings.pulsar_url.startswith("pulsar+ssl://"):
        options["tls_validate_hostname"] = settings.pulsar_tls_validate_hostname
        if settings.pulsar_tls_trust_certs_file is not None:
            options["tls_trust_certs_file_path"] = str(settings.pulsar_tls_trust_certs_file)
    return options


def pulsar_admin_token(settings: Settings) -> str | None:
    """The bearer token of the Pulsar admin API: its own, else the client's, else none."""
    token = settings.pulsar_admin_auth_token or settings.pulsar_auth_token
    return token.get_secret_value() if token is not None else None


def pulsar_admin_ssl(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of an ``https://`` admin URL with its own CA bundle or without hostname validation; None
    where aiohttp's default (the system's CAs, hostname checked) applies."""
    if not settings.pulsar_admin_url.startswith("https://"):
        return None
    if settings.pulsar_tls_trust_certs_file is None and settings.pulsar_tls_validate_hostname:
        return None
    cafile = str(settings.pulsar_tls_trust_certs_file) if settings.pulsar_tls_trust_certs_file else None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    context.check_hostname = settings.pulsar_tls_validate_hostname
    return context


def cassandra_ssl(settings: Settings) -> ssl.SSLContext | None:
    """The Cassandra driver's TLS context (the nodes' CA bundle, hostnames checked), or None for plain CQL."""
    if settings.cassandra_ssl_cafile is None:
        return None
    return ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(settings.cassandra_ssl_cafile))


def secret_value(secret: SecretStr | None) -> str | None:
    return None if secret is None else secret.get_secret_value()
