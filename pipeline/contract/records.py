"""Records that cross Kafka and belong to no one domain module: a provisioning command's transition and a
scaling command. The platform's events and the service's status, audit and dead-letter records are in
:mod:`pipeline.events.models`; the scaling engine's records in :mod:`pipeline.scaling.records`; the topic ->
record map of all of them in :mod:`pipeline.contract.messages`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, Field

from pipeline.events.models import CommandAction


class ProvisioningResult(BaseModel):
    """A transition of one command's resource, sent on the internal ``provisioning-results`` topic."""

    command_id: str
    tenant_id: str
    resource: str
    action: CommandAction
    #: ``fenced``: the command was stopped before touching the backend (its tenant was deleted or re-created).
    #: ``waiting``: the backend cannot be reached (yet); the command waits for it without spending attempts.
    #: ``skipped``: the backend is switched off by configuration (``detail.reason`` says which setting).
    status: Literal["provisioning", "retrying", "waiting", "ready", "failed", "deleted", "drifted", "fenced",
                    "skipped"]
    attempts: int
    error: str | None = None
    detail: dict[str, Any] = Field(default_factory=dict)
    at: AwareDatetime
    #: The user of a ``create_user``/``delete_user`` command (its status is kept in the user's record).
    user_id: str | None = None


class ScalingCommand(BaseModel):
    """A scaling command on ``scaling-events``: set or change a workload's replicas."""

    kind: Literal["scaling-command"] = "scaling-command"
    command_id: str
    tenant_id: str
    workload: str
    desired_replicas: int | None
    delta: int | None
    reason: str
    status: Literal["accepted", "refused"]
    refusal: str | None = None
    issued_at: AwareDatetime
    cause_event_id: str
