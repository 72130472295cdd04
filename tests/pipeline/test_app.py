"""The Faust app built from the deployment settings: what peers are told, where state lives, replication."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import faust
from yarl import URL

from pipeline.app import create_app
from pipeline.config import WILDCARD_HOSTS, Settings
from pipeline.faust_adapter import StateResetAwareRecovery
from web.routing import is_this_worker


def test_a_worker_bound_to_every_interface_advertises_a_callable_address() -> None:
    app = create_app(Settings(app_id="app-test-wild", web_host="0.0.0.0", web_port=6123))  # noqa: S104
    advertised = URL(str(app.conf.canonical_url))
    assert advertised.host not in WILDCARD_HOSTS and advertised.port == 6123
    assert app.conf.web_bind == "0.0.0.0"  # noqa: S104 (still listening everywhere)
    # Routing takes this worker's own URL, as the group reports it, for itself, and a peer's for the peer:
    # with the bind address advertised, every peer on the same port looked like this worker.
    assert is_this_worker(app, advertised)
    assert not is_this_worker(app, URL("http://10.99.0.2:6123"))


def test_a_pod_ip_is_what_peers_are_told() -> None:
    app = create_app(Settings(app_id="app-test-pod", web_host="0.0.0.0", pod_ip="10.42.0.9"))  # noqa: S104
    assert str(app.conf.canonical_url) == "http://10.42.0.9:6066"
    assert is_this_worker(app, URL("http://10.42.0.9:6066"))
    assert not is_this_worker(app, URL("http://10.42.0.10:6066"))


def test_defaults_build_the_app_as_before(tmp_path: Path) -> None:
    app = create_app(Settings(app_id="app-test-default", data_dir=tmp_path))
    assert str(app.conf.canonical_url) == "http://127.0.0.1:6066"
    assert app.conf.topic_replication_factor == 1 and app.conf.table_standby_replicas == 0
    assert app.conf.broker_credentials is None
    assert not app.topic("some-topic").config  # no min.insync.replicas unless asked


def test_state_lives_under_the_app_id(tmp_path: Path) -> None:
    one = create_app(Settings(app_id="app-one", data_dir=tmp_path))
    two = create_app(Settings(app_id="app-two", data_dir=tmp_path))
    assert Path(one.conf.tabledir).is_relative_to(tmp_path / "app-one")
    assert Path(two.conf.tabledir).is_relative_to(tmp_path / "app-two")
    assert isinstance(one.tables.recovery, StateResetAwareRecovery)


def test_replication_settings_reach_faust_and_the_topics_it_creates(tmp_path: Path) -> None:
    settings = Settings(app_id="app-test-ha", data_dir=tmp_path, topic_replication_factor=3,
                        topic_min_insync_replicas=2, table_standby_replicas=1, store="memory://")
    app = create_app(settings)
    assert app.conf.topic_replication_factor == 3 and app.conf.table_standby_replicas == 1
    table: Any = app.Table("ha-table", default=int)
    assert table.changelog_topic.config == {"min.insync.replicas": "2"}
    explicit = app.topic("compacted", config={"min.insync.replicas": "3", "cleanup.policy": "compact"})
    assert explicit.config == {"min.insync.replicas": "3", "cleanup.policy": "compact"}  # an explicit value wins


def test_sasl_settings_become_the_workers_broker_credentials() -> None:
    app = create_app(Settings(app_id="app-test-sasl", kafka_security_protocol="SASL_PLAINTEXT",
                              kafka_sasl_mechanism="SCRAM-SHA-512", kafka_sasl_username="svc",
                              kafka_sasl_password="pw-0123456789"))
    credentials = app.conf.broker_credentials
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.mechanism.value == "SCRAM-SHA-512" and credentials.username == "svc"


def test_the_session_timeout_is_the_setting_and_heartbeats_fit_inside_it(tmp_path: Path) -> None:
    default = create_app(Settings(app_id="app-test-session-default", data_dir=tmp_path))
    assert default.conf.broker_session_timeout == 60.0 and default.conf.broker_heartbeat_interval == 3.0
    fast = create_app(Settings(app_id="app-test-session-fast", data_dir=tmp_path, kafka_session_timeout_seconds=6))
    assert fast.conf.broker_session_timeout == 6.0 and fast.conf.broker_heartbeat_interval == 2.0


def test_a_session_timeout_outside_what_brokers_accept_is_refused() -> None:
    for seconds in (0, 5.9, 301, float("nan")):
        try:
            Settings(app_id="x", kafka_session_timeout_seconds=seconds)
        except ValueError:
            continue
        raise AssertionError(f"{seconds} was accepted")
