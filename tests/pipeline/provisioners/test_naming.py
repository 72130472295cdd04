"""Tenant id validation and the mapping to every backend's naming rules."""

from __future__ import annotations

import json

import pytest

from pipeline.contract.schema_files import SCHEMA_DIR
from pipeline.provisioners import naming
from pipeline.provisioners.errors import PermanentError, UnsafeNameError

HOSTILE_IDS = [
    "acme'; DROP KEYSPACE system; --",
    'acme"',
    "acme;rm",
    "../etc/passwd",
    "acme/../../admin",
    "acme%2F..",
    "acme/default",
    "a" * 300,
    "Acme",
    "ACME-PROD",
    "ácme",
    "acme\u200b",  # zero-width space
    "\u0430cme",  # Cyrillic a
    "acme\n",
    "acme\x00",
    "acme prod",
    "acme_prod",
    "acme.prod",
    "-acme",
    "acme-",
    "-",
    "x--ol-s3",  # the bucket would end in a reserved suffix
    "",
    "acme*",
    "acme?x",
    "acme#x",
    "acme,x",
    "acme<x>",
    "acme|x",
    "acme\\x",
    "acme:x",
    "127.0.0.1",
]


@pytest.mark.parametrize("tenant_id", HOSTILE_IDS)
def test_hostile_tenant_ids_are_refused(tenant_id: str) -> None:
    with pytest.raises(UnsafeNameError) as caught:
        naming.names_for(tenant_id)
    assert caught.value.reason
    assert isinstance(caught.value, PermanentError)
    assert not caught.value.retryable


@pytest.mark.parametrize("value", [None, 42, b"acme", ["acme"]])
def test_non_string_ids_are_refused(value: object) -> None:
    with pytest.raises(UnsafeNameError, match="string"):
        naming.names_for(value)


def test_uppercase_is_refused_not_folded() -> None:
    with pytest.raises(UnsafeNameError, match="uppercase"):
        naming.validate_tenant_id("Acme")


def test_long_ids_are_refused_with_their_length_and_a_short_repr() -> None:
    with pytest.raises(UnsafeNameError) as caught:
        naming.validate_tenant_id("a" * 300)
    assert "300" in str(caught.value)
    assert len(str(caught.value)) < 200


@pytest.mark.parametrize(
    "tenant_id", ["a", "7", "abc", "acme", "acme-prod", "a1-b2-c3", "x" * 40, "team42", "42corp", "a--b", "xn--p1ai"]
)
def test_valid_ids_map_to_every_backend(tenant_id: str) -> None:
    names = naming.names_for(tenant_id)
    underscored = tenant_id.replace("-", "_")
    assert names.cassandra_keyspace == f"tenant_{underscored}"
    assert names.s3_bucket == f"tenant-{tenant_id}"
    assert names.pulsar_tenant == f"tenant-{tenant_id}"
    assert names.pulsar_namespace == f"tenant-{tenant_id}/default"
    assert names.elasticsearch_index == f"tenant-{tenant_id}-v1"
    assert names.elasticsearch_alias == f"tenant-{tenant_id}"
    assert names.ignite_cache == f"tenant_{underscored}"
    assert names.kubernetes_namespace == f"tenant-{tenant_id}"
    assert names.openproject_identifier == f"tenant-{tenant_id}"
    # Every name passes its backend's own rules.
    naming.check_cassandra_identifier(names.cassandra_keyspace)
    naming.check_bucket_name(names.s3_bucket)
    naming.check_index_name(names.elasticsearch_index)
    naming.check_dns1123_label(names.kubernetes_namespace)
    naming.check_openproject_identifier(names.openproject_identifier)


def test_longest_id_fits_every_backend_limit() -> None:
    names = naming.names_for("a" * naming.TENANT_ID_MAX_LENGTH)
    assert len(names.cassandra_keyspace) <= 48
    assert len(names.s3_bucket) <= 63
    assert len(names.kubernetes_namespace) <= 63
    with pytest.raises(UnsafeNameError):
        naming.names_for("a" * (naming.TENANT_ID_MAX_LENGTH + 1))


def test_mapping_is_one_to_one() -> None:
    ids = ["a-b-c", "ab-c", "a-bc", "abc", "abc1", "abc-1", "a--bc", "1abc"]
    for field in naming.TenantNames.__dataclass_fields__:
        values = [getattr(naming.names_for(i), field) for i in ids]
        assert len(set(values)) == len(ids), field


def test_reserved_bucket_suffix_is_refused() -> None:
    with pytest.raises(UnsafeNameError, match="reserved"):
        naming.names_for("data-s3alias")


@pytest.mark.parametrize(
    ("check", "bad"),
    [
        (naming.check_cassandra_identifier, "system_auth"),
        (naming.check_cassandra_identifier, "Tenant"),
        (naming.check_cassandra_identifier, "t" * 49),
        (naming.check_cassandra_identifier, 'a"b'),
        (naming.check_bucket_name, "ab"),
        (naming.check_bucket_name, "a..b"),
        (naming.check_bucket_name, "192.168.1.1"),
        (naming.check_bucket_name, "xn--abc"),
        (naming.check_bucket_name, "sthree-abc"),
        (naming.check_bucket_name, "abc--ol-s3"),
        (naming.check_bucket_name, "Abc"),
        (naming.check_bucket_name, "a" * 64),
        (naming.check_pulsar_name, "a/b"),
        (naming.check_pulsar_name, ".."),
        (naming.check_index_name, "_abc"),
        (naming.check_index_name, "-abc"),
        (naming.check_index_name, "+abc"),
        (naming.check_index_name, ".abc"),
        (naming.check_index_name, "ABC"),
        (naming.check_index_name, "a*b"),
        (naming.check_index_name, "a b"),
        (naming.check_index_name, "a#b"),
        (naming.check_index_name, "a" * 256),
        (naming.check_ignite_cache_name, "a-b"),
        (naming.check_ignite_cache_name, "a'b"),
        (naming.check_dns1123_label, "a_b"),
        (naming.check_dns1123_label, "-ab"),
        (naming.check_dns1123_label, "a" * 64),
        (naming.check_openproject_identifier, "123"),
        (naming.check_openproject_identifier, "new"),
        (naming.check_openproject_identifier, "Abc"),
    ],
)
def test_backend_rules_refuse_bad_names(check: object, bad: str) -> None:
    assert callable(check)
    with pytest.raises(UnsafeNameError):
        check(bad)


@pytest.mark.parametrize("owner", ["alice", "alice@example.com", "oidc:alice", "u-123_x.y+z"])
def test_owner_ids_accepted(owner: str) -> None:
    assert naming.validate_owner_user_id(owner) == owner


@pytest.mark.parametrize("owner", ["", " alice", "alice bob", "a/b", "a\"b", "ä", "a" * 200, None])
def test_owner_ids_refused(owner: object) -> None:
    with pytest.raises(UnsafeNameError):
        naming.validate_owner_user_id(owner)


def test_path_segment_encodes_separators() -> None:
    assert naming.path_segment("a/b?c#d") == "a%2Fb%3Fc%23d"
    assert naming.path_segment("..") == ".."  # only used after validation; ".." is never a valid name


def test_grammar_is_the_event_schemas_tenant_id() -> None:
    """Every tenant id an event may carry can be provisioned (and nothing else)."""
    schema = json.loads((SCHEMA_DIR / "tenant-created-events.v1.json").read_text())
    assert schema["properties"]["tenant_id"]["pattern"] == f"^{naming.TENANT_ID_PATTERN.pattern}$"
