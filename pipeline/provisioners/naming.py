"""Tenant ids, and the name each backend gives a tenant's resource.

**Tenant id grammar** (:data:`TENANT_ID_PATTERN`, the same as the events' ``tenant_id`` schema): 1 to 40
ASCII characters, lowercase letters, digits and hyphens, starting and ending with a letter or digit
(``acme``, ``acme-prod-2``, ``42corp``). There is no case folding and no transliteration: ``Acme``,
``acme_prod``, ``ácme``, ``acme.prod`` are refused, never "fixed", so two different inputs can never end
up as the same resource.

Every backend name is the tenant id behind the fixed prefix ``tenant``, with ``-`` turned into ``_`` where
the backend does not allow hyphens (Cassandra, Ignite). As tenant ids never contain ``_``, the mapping is
one to one. The prefix keeps tenants out of every backend's reserved names (``system*`` keyspaces, the
``public`` Pulsar tenant, ``.``-indices, ``kube-*`` namespaces...). Each derived name is checked again
against that backend's own rules (defence in depth); a name that fails raises :class:`UnsafeNameError`.

==================  ===========================  =========================================
backend             name for ``acme-prod``       backend rule checked
==================  ===========================  =========================================
Cassandra keyspace  ``tenant_acme_prod``         ``[a-z][a-z0-9_]{0,47}``, not ``system*``
S3 bucket           ``tenant-acme-prod``         3-63, ``[a-z0-9.-]``, no ``..``, not an IP,
                                                 no ``xn--``/``sthree-`` prefix, no
                                                 ``-s3alias``/``--ol-s3`` suffix
Pulsar              ``tenant-acme-prod``,        ``[-=:.\\w]+`` (we use ``[a-z0-9-]``)
                    ``tenant-acme-prod/default``
Elasticsearch       index ``tenant-acme-prod-v1``,  lowercase, no ``\\ / * ? " < > | , # :`` or
                    alias ``tenant-acme-prod``      space, not ``-_+.`` first, <= 255 bytes
Ignite cache        ``tenant_acme_prod``         ``[a-z][a-z0-9_]{0,254}`` (SQL-friendly)
Kubernetes          namespace                    DNS-1123 label ``[a-z0-9]([-a-z0-9]*[a-z0-9])?``,
                    ``tenant-acme-prod``         <= 63
OpenProject         identifier                   ``[a-z][a-z0-9_-]{0,99}``, not only digits,
                    ``tenant-acme-prod``         not ``new``/``menu``
==================  ===========================  =========================================

Names reach the backends only as validated values: CQL identifiers are additionally quoted with the
driver's own escaping, URL path segments are built with :func:`urllib.parse.quote` (``safe=""``).
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from dataclasses import asdict, dataclass
from urllib.parse import quote

from pipeline.events.models import OWNER_ID_PATTERN, REGION_PATTERN
from pipeline.provisioners.errors import UnsafeNameError

TENANT_ID_MIN_LENGTH = 1
TENANT_ID_MAX_LENGTH = 40
#: Lowercase ASCII letters, digits and hyphens; a letter or digit at both ends (``tenant_id`` in the events).
TENANT_ID_PATTERN = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?", re.ASCII)
#: The prefix of every backend name.
PREFIX = "tenant"

_OWNER_PATTERN = re.compile(OWNER_ID_PATTERN.strip("^$"), re.ASCII)
_REGION_PATTERN = re.compile(REGION_PATTERN.strip("^$"), re.ASCII)

_CASSANDRA_IDENTIFIER = re.compile(r"[a-z][a-z0-9_]{0,47}", re.ASCII)
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", re.ASCII)
_BUCKET_BAD_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_BUCKET_BAD_SUFFIXES = ("-s3alias", "--ol-s3", "--x-s3", "--table-s3")
_PULSAR_NAME = re.compile(r"[-=:.\w]+", re.ASCII)
_INDEX_FORBIDDEN = set('\\/*?"<>|, #:')
_IGNITE_CACHE = re.compile(r"[a-z][a-z0-9_]{0,254}", re.ASCII)
_DNS1123_LABEL = re.compile(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?", re.ASCII)
_OPENPROJECT_IDENTIFIER = re.compile(r"[a-z][a-z0-9_-]{0,99}", re.ASCII)
_OPENPROJECT_RESERVED = frozenset({"new", "menu"})


def validate_tenant_id(value: object) -> str:
    """Return ``value`` if it is a valid tenant id, else raise :class:`UnsafeNameError` saying why."""
    if not isinstance(value, str):
        raise UnsafeNameError(value, f"a tenant id is a string, not {type(value).__name__}")
    if len(value) > TENANT_ID_MAX_LENGTH:
        raise UnsafeNameError(value, f"longer than {TENANT_ID_MAX_LENGTH} characters ({len(value)})")
    if len(value) < TENANT_ID_MIN_LENGTH:
        raise UnsafeNameError(value, "empty")
    if not value.isascii():
        raise UnsafeNameError(value, "non-ASCII characters are not allowed (no transliteration is done)")
    if any(unicodedata.category(ch).startswith("C") for ch in value):
        raise UnsafeNameError(value, "control characters are not allowed")
    if value != value.lower():
        raise UnsafeNameError(value, "uppercase letters are not allowed (ids are not case-folded)")
    if TENANT_ID_PATTERN.fullmatch(value) is None:
        bad = sorted({ch for ch in value if not (ch.isalnum() or ch == "-")})
        if bad:
            reason = f"characters {''.join(bad)!r} are not allowed"
        else:
            reason = "must start and end with a letter or digit"
        raise UnsafeNameError(value, f"{reason}; expected {TENANT_ID_PATTERN.pattern}")
    return value


def validate_owner_user_id(value: object) -> str:
    """The tenant admin's user id (a Kubernetes RoleBinding subject, an annotation): 1-128 safe characters."""
    if not isinstance(value, str) or _OWNER_PATTERN.fullmatch(value) is None:
        raise UnsafeNameError(value, f"owner user id must match {_OWNER_PATTERN.pattern}", backend="owner")
    return value


def validate_region(value: object) -> str:
    if not isinstance(value, str) or _REGION_PATTERN.fullmatch(value) is None:
        raise UnsafeNameError(value, f"region must match {_REGION_PATTERN.pattern}", backend="region")
    return value


# -- each backend's own naming rules ----------------------------------------------------------------


def check_cassandra_identifier(name: str) -> str:
    if _CASSANDRA_IDENTIFIER.fullmatch(name) is None:
        raise UnsafeNameError(name, f"not a keyspace name {_CASSANDRA_IDENTIFIER.pattern}", backend="cassandra")
    if name.startswith("system"):
        raise UnsafeNameError(name, "system* keyspaces are reserved", backend="cassandra")
    return name


def check_bucket_name(name: str) -> str:
    if _BUCKET.fullmatch(name) is None:
        raise UnsafeNameError(name, "bucket names are 3-63 of [a-z0-9.-], alphanumeric at both ends", backend="s3")
    if ".." in name or ".-" in name or "-." in name:
        raise UnsafeNameError(name, "'..', '.-' and '-.' are not allowed in bucket names", backend="s3")
    try:
        ipaddress.ip_address(name)
    except ValueError:
        pass
    else:
        raise UnsafeNameError(name, "a bucket name must not look like an IP address", backend="s3")
    if name.startswith(_BUCKET_BAD_PREFIXES) or name.endswith(_BUCKET_BAD_SUFFIXES):
        raise UnsafeNameError(name, "reserved bucket name prefix or suffix", backend="s3")
    return name


def check_pulsar_name(name: str) -> str:
    if _PULSAR_NAME.fullmatch(name) is None or name in {".", ".."}:
        raise UnsafeNameError(name, f"not a Pulsar name {_PULSAR_NAME.pattern}", backend="pulsar")
    return name


def check_index_name(name: str) -> str:
    if not name or name != name.lower() or not name.isascii():
        raise UnsafeNameError(name, "index names are non-empty lowercase ASCII", backend="elasticsearch")
    if _INDEX_FORBIDDEN.intersection(name):
        raise UnsafeNameError(name, 'index names must not contain \\ / * ? " < > | , # : or space',
                              backend="elasticsearch")
    if name[0] in "-_+." or name in {".", ".."}:
        raise UnsafeNameError(name, "index names must not start with - _ + or .", backend="elasticsearch")
    if len(name.encode()) > 255:
        raise UnsafeNameError(name, "index names are at most 255 bytes", backend="elasticsearch")
    return name


def check_ignite_cache_name(name: str) -> str:
    if _IGNITE_CACHE.fullmatch(name) is None:
        raise UnsafeNameError(name, f"not a cache name {_IGNITE_CACHE.pattern}", backend="ignite")
    return name


def check_dns1123_label(name: str) -> str:
    if len(name) > 63 or _DNS1123_LABEL.fullmatch(name) is None:
        raise UnsafeNameError(name, "not a DNS-1123 label (<= 63 of [a-z0-9-])", backend="kubernetes")
    return name


def check_openproject_identifier(name: str) -> str:
    if (
        _OPENPROJECT_IDENTIFIER.fullmatch(name) is None
        or name.isdigit()
        or name in _OPENPROJECT_RESERVED
    ):
        raise UnsafeNameError(name, f"not a project identifier {_OPENPROJECT_IDENTIFIER.pattern}",
                              backend="openproject")
    return name


def path_segment(value: str) -> str:
    """One URL path segment: percent-encode everything outside the unreserved set (``/`` included)."""
    return quote(value, safe="")


@dataclass(frozen=True)
class TenantNames:
    """Every backend name of one tenant."""

    tenant_id: str
    cassandra_keyspace: str
    s3_bucket: str
    pulsar_tenant: str
    pulsar_namespace: str
    elasticsearch_index: str
    elasticsearch_alias: str
    ignite_cache: str
    kubernetes_namespace: str
    openproject_identifier: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def names_for(tenant_id: object) -> TenantNames:
    """Validate ``tenant_id`` and derive every backend name from it; raise :class:`UnsafeNameError`."""
    tid = validate_tenant_id(tenant_id)
    hyphenated = f"{PREFIX}-{tid}"
    underscored = f"{PREFIX}_{tid.replace('-', '_')}"
    pulsar_tenant = check_pulsar_name(hyphenated)
    return TenantNames(
        tenant_id=tid,
        cassandra_keyspace=check_cassandra_identifier(underscored),
        s3_bucket=check_bucket_name(hyphenated),
        pulsar_tenant=pulsar_tenant,
        pulsar_namespace=f"{pulsar_tenant}/{check_pulsar_name('default')}",
        elasticsearch_index=check_index_name(f"{hyphenated}-v1"),
        elasticsearch_alias=check_index_name(hyphenated),
        ignite_cache=check_ignite_cache_name(underscored),
        kubernetes_namespace=check_dns1123_label(hyphenated),
        openproject_identifier=check_openproject_identifier(hyphenated),
    )
