"""The engine's forecasters (engine_models): snapshots and restores, signed snapshots only, residency."""

from __future__ import annotations

import base64
import pickle
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from pipeline.scaling.forecast import ForecasterConfig, OnlineForecaster
from pipeline.scaling.metrics import FORECASTERS_EVICTED, FORECASTERS_LIVE
from pipeline.scaling.snapshot_signing import SnapshotSigner
from tests.pipeline.scaling.support import (
    SIGNER,
    T0,
    add_tenant,
    close_window,
    daily,
    engine,
    make_tables,
    replay,
    sample,
)


def test_a_restarted_engine_resumes_the_model_from_its_snapshot_and_the_windows_since() -> None:
    tables = make_tables()
    eng = engine(tables, snapshot_every=10)
    replay(eng, T0, T0 + timedelta(days=1, hours=3, minutes=15), daily)
    state = tables.state.get("acme/api")
    assert state is not None and state.observations == 54
    assert state.snapshot_observations == 50 and tables.snapshots.get("acme/api") is not None
    reference = eng.host.models["acme/api"].forecast().mean

    restarted = engine(tables, snapshot_every=10)  # a new process: nothing in memory
    model, source, replayed = restarted.host.restore("acme/api", restarted.restore_material("acme/api", state))
    assert (source, replayed, model.observations) == ("snapshot", 4, 54)  # snapshot at 50 + 4 windows since
    assert model.forecast().mean == pytest.approx(reference)

    # The window open at the restart (03:00-03:30) lived in memory only: it is imputed, the lags stay aligned.
    restarted.on_sample(sample(T0 + timedelta(days=1, hours=3, minutes=31), 1.0))
    restarted.on_sample(sample(T0 + timedelta(days=1, hours=4, minutes=1), 1.0))
    after = tables.state.get("acme/api")
    assert after is not None and after.observations == 56 and after.recent[-1][0] == T0 + timedelta(days=1, hours=4)
    assert restarted.stats.restores == {"snapshot": 1}  # the engine did not know what its host held: it restored


def test_without_a_snapshot_only_the_recent_windows_can_be_relearned() -> None:
    tables = make_tables()
    eng = engine(tables, snapshot_every=100)
    replay(eng, T0, T0 + timedelta(hours=12), daily)
    state = tables.state.get("acme/api")
    assert state is not None and state.observations == 24
    restarted = engine(tables, snapshot_every=100)
    model, source, _ = restarted.host.restore("acme/api", restarted.restore_material("acme/api", state))
    assert (source, model.observations) == ("relearned", len(state.recent))


class _WritesAFile:
    """A pickle that, when loaded, creates ``path`` (what a writer of the changelog topic could ship)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


def malicious_snapshot(path: Path) -> bytes:
    """A snapshot whose outer layer is well formed and whose inner (full-pickle) layer runs code."""
    outer = pickle.loads(OnlineForecaster(ForecasterConfig(interval_minutes=30.0)).to_snapshot())  # noqa: S301
    outer["models"] = pickle.dumps({"models": _WritesAFile(path)})
    return pickle.dumps(outer)


@pytest.mark.parametrize("signature", [None, "00" * 32, "forged", "signed-by-another-key", "other-workload"])
def test_an_unsigned_or_foreign_snapshot_is_refused_before_unpickling(tmp_path: Path, signature: str | None) -> None:
    tables = make_tables()
    eng = engine(tables, snapshot_every=4)
    replay(eng, T0, T0 + timedelta(hours=3), daily)
    state = tables.state.get("acme/api")
    assert state is not None and state.snapshot_observations == 4
    pwned = tmp_path / "pwned"
    blob = malicious_snapshot(pwned)
    if signature == "signed-by-another-key":
        signature = SnapshotSigner(b"someone-elses-key-0000").sign("acme/api", blob)
    elif signature == "other-workload":
        signature = SIGNER.sign("acme/other", blob)
    stored = tables.snapshots.get("acme/api")
    assert stored is not None
    tables.snapshots.put("acme/api", stored.model_copy(update={
        "data_b64": base64.b64encode(blob).decode(), "signature": signature}))

    restarted = engine(tables, snapshot_every=4)  # a new process restores from the table
    restarted.on_sample(sample(T0 + timedelta(hours=3, minutes=31), 1.0))
    restarted.on_sample(sample(T0 + timedelta(hours=4, minutes=1), 1.0))  # closes 03:30-04:00: restores
    assert not pwned.exists()  # before the fix the inner pickle ran: the file was created
    assert restarted.stats.snapshots_refused == 1 and restarted.stats.restores == {"relearned": 1}
    model = restarted.host.models["acme/api"]  # started anew from the windows its state keeps
    assert model.observations == len(state.recent) + 2  # + the imputed window open at the restart + 03:30-04:00


def test_the_engines_own_signed_snapshot_is_accepted_and_nothing_is_stored_without_a_key() -> None:
    tables = make_tables()
    eng = engine(tables, snapshot_every=4)
    replay(eng, T0, T0 + timedelta(hours=3), daily)
    stored = tables.snapshots.get("acme/api")
    assert stored is not None and stored.signature == SIGNER.sign("acme/api", base64.b64decode(stored.data_b64))
    restarted = engine(tables, snapshot_every=4)
    restarted.on_sample(sample(T0 + timedelta(hours=3, minutes=31), 1.0))
    restarted.on_sample(sample(T0 + timedelta(hours=4, minutes=1), 1.0))
    assert restarted.stats.restores == {"snapshot": 1} and restarted.stats.snapshots_refused == 0

    keyless = make_tables()
    unsigned = engine(keyless, snapshot_every=4, signer=None)
    replay(unsigned, T0, T0 + timedelta(hours=3), daily)
    assert keyless.snapshots.get("acme/api") is None and unsigned.stats.snapshots == 0


def test_forecasters_are_capped_per_tenant_and_in_all_least_recently_used_first() -> None:
    tables = make_tables()
    add_tenant(tables, "beta")
    eng = engine(tables, max_models_per_tenant=3, max_models=5)
    before = {reason: FORECASTERS_EVICTED.labels(reason)._value.get() for reason in ("tenant_cap", "global_cap")}
    acme = [f"w{i}" for i in range(6)]
    for step in range(4):  # every acme workload closes a window at each step
        at = T0 + timedelta(minutes=30 * step + 1)
        for workload in acme:
            eng.on_sample(sample(at, 1.0 + step, workload=workload))
        assert len(eng.residency) <= 5 and eng.residency.tenant_count("acme") <= 3
        assert len(eng.host.models) == len(eng.residency)
    assert set(eng.host.models) == {"acme/w3", "acme/w4", "acme/w5"}  # the most recently used
    assert FORECASTERS_EVICTED.labels("tenant_cap")._value.get() > before["tenant_cap"]
    assert FORECASTERS_LIVE._value.get() == 3

    for step in range(4, 6):  # another tenant comes in: the global cap evicts the oldest of all
        at = T0 + timedelta(minutes=30 * step + 1)
        for workload in ("a", "b", "c"):
            eng.on_sample(sample(at, 2.0, tenant_id="beta", workload=workload))
    assert len(eng.host.models) == 5 and eng.residency.tenant_count("beta") == 3
    assert "acme/w3" not in eng.host.models and "acme/w5" in eng.host.models
    assert FORECASTERS_EVICTED.labels("global_cap")._value.get() == before["global_cap"] + 1

    # An evicted workload comes back: its model is restored, never looked up in a host that dropped it.
    at = T0 + timedelta(minutes=30 * 6 + 1)
    eng.on_sample(sample(at, 3.0, workload="w0"))
    eng.on_sample(sample(at + timedelta(minutes=30), 3.0, workload="w0"))
    state = tables.state.get("acme/w0")
    assert state is not None and "acme/w0" in eng.host.models
    assert eng.host.models["acme/w0"].observations == state.observations


def test_a_request_carries_the_restore_material_only_when_the_host_may_lack_the_model() -> None:
    eng = engine()
    eng.accumulate([sample(T0, 1.0)])
    first = close_window(eng, T0 + timedelta(minutes=30), 2.0)
    assert len(first) == 1 and first[0].restore is not None and first[0].restore.observations == 0
    assert first[0].value == 1.0 and first[0].end == T0 + timedelta(minutes=30)
    assert close_window(eng, T0 + timedelta(minutes=60), 2.0)[0].restore is None
    eng.models_lost()  # the child process died
    third = close_window(eng, T0 + timedelta(minutes=90), 2.0)
    assert third[0].restore is not None and third[0].restore.observations == 2
    assert [value for _, value in third[0].restore.recent] == [1.0, 2.0]
    state = eng.tables.state.get("acme/api")
    assert state is not None and state.observations == 3 and eng.stats.restores == {"new": 1, "relearned": 1}
