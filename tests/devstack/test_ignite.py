"""The real local Ignite 2.x node creates caches through pyignite with the configuration asked for."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from pyignite import Client
from pyignite.datatypes.cache_config import CacheAtomicityMode, CacheMode
from pyignite.datatypes.prop_codes import (
    PROP_BACKUPS_NUMBER,
    PROP_CACHE_ATOMICITY_MODE,
    PROP_CACHE_MODE,
    PROP_DATA_REGION_NAME,
    PROP_NAME,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def client(ignite_service: dict[str, str]) -> Iterator[Client]:
    client = Client(timeout=10.0)
    client.connect(ignite_service["IGNITE_HOST"], int(ignite_service["IGNITE_PORT"]))
    try:
        yield client
    finally:
        client.close()


@pytest.mark.parametrize(
    ("mode", "backups", "atomicity"),
    [
        (CacheMode.PARTITIONED, 1, CacheAtomicityMode.TRANSACTIONAL),
        (CacheMode.REPLICATED, 0, CacheAtomicityMode.ATOMIC),
    ],
)
def test_cache_keeps_its_configuration(
    client: Client, ignite_service: dict[str, str], mode: int, backups: int, atomicity: int
) -> None:
    name = f"devstack-test-{uuid.uuid4().hex[:12]}"
    client.get_or_create_cache(
        {PROP_NAME: name, PROP_CACHE_MODE: mode, PROP_BACKUPS_NUMBER: backups, PROP_CACHE_ATOMICITY_MODE: atomicity}
    )
    try:
        # Read back through a second connection: the configuration comes from the server, not a local copy.
        reader = Client(timeout=10.0)
        reader.connect(ignite_service["IGNITE_HOST"], int(ignite_service["IGNITE_PORT"]))
        try:
            assert name in reader.get_cache_names()
            cache = reader.get_cache(name)
            settings = cache.settings
            assert settings[PROP_NAME] == name
            assert settings[PROP_CACHE_MODE] == mode
            assert settings[PROP_CACHE_ATOMICITY_MODE] == atomicity
            # A replicated cache keeps a copy on every node, which Ignite reports as Integer.MAX_VALUE backups.
            expected_backups = backups if mode == CacheMode.PARTITIONED else 2**31 - 1
            assert settings[PROP_BACKUPS_NUMBER] == expected_backups
            assert settings[PROP_DATA_REGION_NAME] is None  # the node's capped default region
            cache.put("tenant-1", "ready")
            assert client.get_cache(name).get("tenant-1") == "ready"
        finally:
            reader.close()
    finally:
        client.get_cache(name).destroy()
    assert name not in client.get_cache_names()
