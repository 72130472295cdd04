"""A command backing off or waiting for an unreachable backend gives its slot back (issue #16): with one slot, a
command waiting for Elasticsearch does not hold up a command of another backend."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from pipeline.command_scheduler import CommandScheduler, Sleep
from pipeline.contract.records import ProvisioningResult
from pipeline.events.models import CommandAction, ProvisioningCommand


def command(resource: str) -> ProvisioningCommand:
    return ProvisioningCommand(command_id=f"c-{resource}", tenant_id="acme", resource=resource,
                               action=CommandAction.CREATE, issued_at=datetime.now(UTC), cause_event_id="e1",
                               spec={"tier": "standard"})


def result(cmd: ProvisioningCommand) -> ProvisioningResult:
    return ProvisioningResult(command_id=cmd.command_id, tenant_id=cmd.tenant_id, resource=cmd.resource,
                              action=cmd.action, status="ready", attempts=1, at=datetime.now(UTC))


async def test_a_waiting_command_lets_another_run_in_its_slot_and_the_slots_stay_bounded() -> None:
    other_done = asyncio.Event()
    in_call = 0
    most_in_call = 0
    backoffs_before_the_other_finished = 0

    async def backend_call() -> None:
        nonlocal in_call, most_in_call
        in_call += 1
        most_in_call = max(most_in_call, in_call)
        await asyncio.sleep(0)
        in_call -= 1

    async def runner(cmd: ProvisioningCommand, _replay: bool, sleep: Sleep) -> ProvisioningResult:
        nonlocal backoffs_before_the_other_finished
        if cmd.resource == "elasticsearch":  # unreachable: backs off until the other command finished
            for _ in range(500):  # bounded: without the slot given back, the other never runs meanwhile
                await backend_call()
                if other_done.is_set():
                    break
                backoffs_before_the_other_finished += 1
                await sleep(0.01)
        else:
            await backend_call()
            other_done.set()
        return result(cmd)

    scheduler = CommandScheduler(runner, concurrency=1, replay_concurrency=1, replay_backlog=10)
    assert scheduler.start(command("elasticsearch"))
    await asyncio.sleep(0)  # the waiting command takes the only slot first
    assert scheduler.start(command("cassandra"))
    await scheduler.drain()
    assert other_done.is_set()
    assert backoffs_before_the_other_finished < 500  # the other ran while the first one was backing off
    assert most_in_call == 1  # one slot: never two backend calls at once


async def test_a_command_cancelled_while_backing_off_gives_no_slot_back_twice() -> None:
    started = asyncio.Event()

    async def runner(cmd: ProvisioningCommand, _replay: bool, sleep: Sleep) -> ProvisioningResult:
        if cmd.resource == "elasticsearch":
            started.set()
            await sleep(3600)
        return result(cmd)

    scheduler = CommandScheduler(runner, concurrency=1, replay_concurrency=1, replay_backlog=10)
    scheduler.start(command("elasticsearch"))
    await started.wait()
    task = scheduler.running["c-elasticsearch"]
    task.cancel()
    await scheduler.drain()
    slots = scheduler._live_slots
    assert slots._value == 1  # released once when the backoff began, not again when cancelled
