"""The real local Pulsar standalone: messaging over the binary protocol and the admin REST API."""

from __future__ import annotations

import uuid

import aiohttp
import pulsar
import pytest

pytestmark = pytest.mark.integration


def test_produce_and_consume_through_the_real_pulsar(pulsar_service: dict[str, str]) -> None:
    run = uuid.uuid4().hex
    topic = f"persistent://public/default/devstack-test-{run}"
    payloads = [f"provision-request-{i}-{run}".encode() for i in range(3)]
    client = pulsar.Client(pulsar_service["PULSAR_URL"], logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Warn))
    try:
        consumer = client.subscribe(
            topic,
            subscription_name=f"devstack-test-{run}",
            initial_position=pulsar.InitialPosition.Earliest,
        )
        producer = client.create_producer(topic)
        for payload in payloads:
            producer.send(payload, properties={"tenant": "tenant-1"})
        received = []
        for _ in payloads:
            message = consumer.receive(timeout_millis=60_000)
            consumer.acknowledge(message)
            received.append(message)
    finally:
        client.close()

    assert [message.data() for message in received] == payloads
    assert {message.properties()["tenant"] for message in received} == {"tenant-1"}
    assert {message.topic_name() for message in received} == {topic}


async def test_create_a_tenant_and_namespace_through_the_admin_api(pulsar_service: dict[str, str]) -> None:
    admin = pulsar_service["PULSAR_ADMIN_URL"]
    tenant = f"devstack-test-{uuid.uuid4().hex[:12]}"
    namespace = f"{tenant}/provisioning"
    async with aiohttp.ClientSession(raise_for_status=False) as session:
        async with session.get(f"{admin}/admin/v2/clusters") as response:
            assert response.status == 200
            clusters = await response.json()
        assert clusters, "the standalone registers its cluster"

        tenant_info = {"adminRoles": ["devstack-admin"], "allowedClusters": clusters}
        async with session.put(f"{admin}/admin/v2/tenants/{tenant}", json=tenant_info) as response:
            assert response.status == 204, await response.text()
        try:
            policies = {"bundles": {"numBundles": 2}}
            async with session.put(f"{admin}/admin/v2/namespaces/{namespace}", json=policies) as response:
                assert response.status == 204, await response.text()

            async with session.get(f"{admin}/admin/v2/tenants") as response:
                assert tenant in await response.json()
            async with session.get(f"{admin}/admin/v2/tenants/{tenant}") as response:
                assert response.status == 200
                read_back = await response.json()
            assert read_back["adminRoles"] == ["devstack-admin"]
            assert sorted(read_back["allowedClusters"]) == sorted(clusters)
            async with session.get(f"{admin}/admin/v2/namespaces/{tenant}") as response:
                assert await response.json() == [namespace]
            async with session.get(f"{admin}/admin/v2/namespaces/{namespace}") as response:
                assert response.status == 200
                read_policies = await response.json()
            assert read_policies["bundles"]["numBundles"] == 2
            assert read_policies["bundles"]["boundaries"] == ["0x00000000", "0x80000000", "0xffffffff"]
        finally:
            async with session.delete(f"{admin}/admin/v2/namespaces/{namespace}?force=true") as response:
                assert response.status in (204, 404), await response.text()
            async with session.delete(f"{admin}/admin/v2/tenants/{tenant}?force=true") as response:
                assert response.status == 204, await response.text()

        async with session.get(f"{admin}/admin/v2/tenants") as response:
            assert tenant not in await response.json()


async def test_the_standalone_serves_the_default_namespace(pulsar_service: dict[str, str]) -> None:
    admin = pulsar_service["PULSAR_ADMIN_URL"]
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{admin}/admin/v2/brokers/health") as response:
            assert (response.status, await response.text()) == (200, "ok")
        async with session.get(f"{admin}/admin/v2/namespaces/public") as response:
            assert "public/default" in await response.json()
