"""STAND-IN for OpenProject's API v3 projects endpoints, for tests and ``make run`` only.

OpenProject is a Rails application that cannot run on this stack's machines, so this small aiohttp
server plays its part: it is **not OpenProject**. It follows OpenProject's published API v3 for
projects closely enough that a client written against the real server (the project provisioner)
works unchanged against both:

- ``GET /api/v3`` (the ``Root`` resource), ``GET/POST /api/v3/projects``,
  ``GET/PATCH/DELETE /api/v3/projects/{id}`` where ``{id}`` is the numeric id or the identifier;
- HAL+JSON bodies (``application/hal+json``): ``_type: "Project"`` with ``id``, ``identifier``,
  ``name``, ``active``, ``public``, ``description``/``statusExplanation`` as formattables
  (``{format, raw, html}``), ``createdAt``/``updatedAt`` and ``_links`` (``self`` and friends);
  lists as ``_type: "Collection"`` with ``total``, ``count``, ``pageSize``, ``offset`` and
  ``_embedded.elements``;
- the filters OpenProject has for projects that matter here (``id``, ``active``, ``public``,
  ``name_and_identifier`` with ``=``, ``!``, ``~``, ``!~``; real OpenProject has no plain
  ``identifier`` filter, so neither does this), ``sortBy`` on ``id``/``name``, ``offset`` (the
  1-based page) and ``pageSize``;
- OpenProject's validation rules for ``identifier`` (lower-case letters, digits, ``-`` and ``_``,
  not digits only, at most 100 characters, unique, not ``new``/``menu``; derived from the name when
  omitted) and ``name`` (required, at most 255 characters);
- its errors: ``_type: "Error"`` with ``errorIdentifier`` ``urn:openproject-org:api:v3:errors:...``:
  ``Unauthenticated`` (401, with ``WWW-Authenticate``), ``NotFound`` (404),
  ``PropertyConstraintViolation`` (422, ``_embedded.details.attribute``), ``MultipleErrors`` (422),
  ``InvalidRequestBody`` (400), ``InvalidQuery`` (400), ``TypeNotSupported`` (415) and a plain-text
  406 when a body comes without a Content-Type;
- API-key authentication as OpenProject does it: HTTP Basic with the user name ``apikey`` and the
  key as the password;
- the parts of users, roles and memberships a project's members need: ``GET/POST /api/v3/users``
  (filters ``login``, ``status``; ``login``, ``email``, ``firstName``, ``lastName`` required, login and
  email unique), ``GET /api/v3/users/{id}``, ``GET /api/v3/roles`` and ``/api/v3/roles/{id}`` (the
  roles a fresh OpenProject seeds: ``Non member`` and ``Anonymous`` (built in, not assignable),
  ``Project admin``, ``Member``, ``Reader``), ``GET/POST /api/v3/memberships`` (filters ``project``,
  ``principal``) and ``GET/PATCH/DELETE /api/v3/memberships/{id}``: a membership links one project,
  one principal and at least one assignable role (422 ``PropertyConstraintViolation`` otherwise, and
  for a principal already member of the project); deleting a project deletes its memberships.

Differences from the real server, on purpose: state lives in memory (a restart forgets every
project), the API key acts as the one all-powerful admin (users and memberships are stored, but no
permission is ever checked against them; no groups, placeholder users, custom fields or notifications),
``DELETE`` removes the project at once (OpenProject archives it at once and deletes it in a
background job), and ``html`` renderings are a plain escaped paragraph, not OpenProject's Markdown.

Run it as ``python -m devstack.openproject_standin --port 8091 --api-key KEY``.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hmac
import html
import json
import logging
import re
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

logger = logging.getLogger(__name__)

HAL_JSON = "application/hal+json"
ERRORS = "urn:openproject-org:api:v3:errors:"
CORE_VERSION = "16.0.0 (devstack stand-in)"
INSTANCE_NAME = "OpenProject stand-in (devstack)"
IDENTIFIER_MAX_LENGTH = 100
NAME_MAX_LENGTH = 255
RESERVED_IDENTIFIERS = frozenset({"new", "menu"})
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 1000
_IDENTIFIER_RE = re.compile(r"\A(?!\d+\Z)[a-z0-9\-_]+\Z")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    """An error answered as OpenProject's HAL ``Error`` resource."""

    def __init__(self, status: int, identifier: str, message: str, attribute: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.identifier = identifier
        self.message = message
        self.attribute = attribute

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "_type": "Error",
            "errorIdentifier": ERRORS + self.identifier,
            "message": self.message,
        }
        if self.attribute is not None:
            body["_embedded"] = {"details": {"attribute": self.attribute}}
        return body


class ConstraintViolations(Exception):
    """One or more ``PropertyConstraintViolation`` errors (422)."""

    def __init__(self, violations: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(message for _, message in violations))
        self.violations = violations

    def body(self) -> dict[str, Any]:
        errors = [
            ApiError(422, "PropertyConstraintViolation", message, attribute).body()
            for attribute, message in self.violations
        ]
        if len(errors) == 1:
            return errors[0]
        return {
            "_type": "Error",
            "errorIdentifier": ERRORS + "MultipleErrors",
            "message": "Multiple field constraints have been violated.",
            "_embedded": {"errors": errors},
        }


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def formattable(raw: str) -> dict[str, str]:
    """OpenProject's ``Formattable``; ``html`` is a plain escaped paragraph here, not rendered Markdown."""
    rendered = "".join(f'<p class="op-uc-p">{html.escape(p)}</p>' for p in raw.split("\n\n") if p.strip())
    return {"format": "markdown", "raw": raw, "html": rendered}


@dataclass
class Project:
    id: int
    identifier: str
    name: str
    description: str = ""
    status_explanation: str = ""
    public: bool = False
    active: bool = True
    parent_id: int | None = None
    created_at: str = field(default_factory=_now)
    updated_at: str = field(default_factory=_now)

    def to_hal(self, store: ProjectStore) -> dict[str, Any]:
        self_href = f"/api/v3/projects/{self.id}"
        parent = store.projects.get(self.parent_id) if self.parent_id is not None else None
        parent_link: dict[str, Any] = (
            {"href": f"/api/v3/projects/{parent.id}", "title": parent.name} if parent else {"href": None}
        )
        memberships_filter = json.dumps([{"project": {"operator": "=", "values": [str(self.id)]}}])
        return {
            "_type": "Project",
            "id": self.id,
            "identifier": self.identifier,
            "name": self.name,
            "active": self.active,
            "public": self.public,
            "description": formattable(self.description),
            "statusExplanation": formattable(self.status_explanation),
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
            "_links": {
                "self": {"href": self_href, "title": self.name},
                "update": {"href": f"{self_href}/form", "method": "post"},
                "updateImmediately": {"href": self_href, "method": "patch"},
                "delete": {"href": self_href, "method": "delete"},
                "createWorkPackage": {"href": f"{self_href}/work_packages/form", "method": "post"},
                "createWorkPackageImmediately": {"href": f"{self_href}/work_packages", "method": "post"},
                "workPackages": {"href": f"{self_href}/work_packages"},
                "categories": {"href": f"{self_href}/categories"},
                "versions": {"href": f"{self_href}/versions"},
                "memberships": {"href": "/api/v3/memberships?" + urlencode({"filters": memberships_filter})},
                "types": {"href": f"{self_href}/types"},
                "parent": parent_link,
                "ancestors": [parent_link] if parent else [],
                "status": {"href": None},
            },
        }


@dataclass
class User:
    id: int
    login: str
    email: str
    first_name: str
    last_name: str
    status: str = "active"
    admin: bool = False
    created_at: str = field(default_factory=_now)
    updated_at: str = field(default_factory=_now)

    def to_hal(self) -> dict[str, Any]:
        href = f"/api/v3/users/{self.id}"
        name = f"{self.first_name} {self.last_name}".strip()
        return {
            "_type": "User", "id": self.id, "login": self.login, "firstName": self.first_name,
            "lastName": self.last_name, "name": name, "email": self.email, "admin": self.admin,
            "status": self.status, "createdAt": self.created_at, "updatedAt": self.updated_at,
            "_links": {"self": {"href": href, "title": name}},
        }


@dataclass(frozen=True)
class Role:
    id: int
    name: str
    builtin: bool = False

    def link(self) -> dict[str, Any]:
        return {"href": f"/api/v3/roles/{self.id}", "title": self.name}

    def to_hal(self) -> dict[str, Any]:
        return {"_type": "Role", "id": self.id, "name": self.name, "_links": {"self": self.link()}}


#: The roles a fresh OpenProject seeds (ids as this stand-in numbers them).
SEEDED_ROLES = (Role(1, "Non member", builtin=True), Role(2, "Anonymous", builtin=True), Role(3, "Project admin"),
                Role(4, "Member"), Role(5, "Reader"))


@dataclass
class Membership:
    id: int
    project_id: int
    principal_id: int
    role_ids: list[int]
    created_at: str = field(default_factory=_now)
    updated_at: str = field(default_factory=_now)

    def to_hal(self, store: ProjectStore) -> dict[str, Any]:
        href = f"/api/v3/memberships/{self.id}"
        project = store.projects[self.project_id]
        principal = store.users[self.principal_id]
        return {
            "_type": "Membership", "id": self.id, "createdAt": self.created_at, "updatedAt": self.updated_at,
            "_links": {
                "self": {"href": href, "title": principal.login},
                "project": {"href": f"/api/v3/projects/{project.id}", "title": project.name},
                "principal": {"href": f"/api/v3/users/{principal.id}", "title": principal.login},
                "roles": [store.roles[r].link() for r in self.role_ids],
                "update": {"href": f"{href}/form", "method": "post"},
                "updateImmediately": {"href": href, "method": "patch"},
            },
        }


@dataclass
class ProjectStore:
    """All projects (and users, roles, memberships) of the stand-in, in memory."""

    projects: dict[int, Project] = field(default_factory=dict)
    next_id: int = 1
    users: dict[int, User] = field(default_factory=lambda: {
        1: User(1, "admin", "admin@example.net", "OpenProject", "Admin", admin=True)})
    next_user_id: int = 2
    roles: dict[int, Role] = field(default_factory=lambda: {role.id: role for role in SEEDED_ROLES})
    memberships: dict[int, Membership] = field(default_factory=dict)
    next_membership_id: int = 1

    def find(self, key: str) -> Project:
        """By numeric id, or by identifier as OpenProject also accepts in the path."""
        if key.isdigit():
            project = self.projects.get(int(key))
        else:
            project = next((p for p in self.projects.values() if p.identifier == key), None)
        if project is None:
            raise ApiError(404, "NotFound", "The requested resource could not be found.")
        return project

    def identifier_taken(self, identifier: str, except_id: int | None = None) -> bool:
        return any(p.identifier == identifier and p.id != except_id for p in self.projects.values())

    def derive_identifier(self, name: str) -> str:
        """A free identifier made from the name, as OpenProject does when none is given."""
        base = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[: IDENTIFIER_MAX_LENGTH - 4] or "project"
        if base.isdigit() or base in RESERVED_IDENTIFIERS:
            base = f"project-{base}"
        candidate, n = base, 1
        while self.identifier_taken(candidate):
            candidate, n = f"{base}-{n}", n + 1
        return candidate


# -- request parsing --------------------------------------------------------------------------------


async def _json_body(request: web.Request) -> dict[str, Any]:
    content_type = request.headers.get("Content-Type")
    if not content_type:
        raise web.HTTPNotAcceptable(text="Missing content-type header", content_type="text/plain")
    if request.content_type != "application/json":
        raise ApiError(
            415,
            "TypeNotSupported",
            f"Expected CONTENT-TYPE to be (application/json) but got ({request.content_type}).",
        )
    try:
        body = json.loads(await request.read() or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "InvalidRequestBody", "The request body was not a single JSON object.") from None
    if not isinstance(body, dict):
        raise ApiError(400, "InvalidRequestBody", "The request body was not a single JSON object.")
    return body


def _formattable_raw(body: dict[str, Any], key: str) -> str | None:
    if key not in body:
        return None
    value = body[key]
    if value is None:
        return ""
    if isinstance(value, dict) and isinstance(value.get("raw", ""), str | None):
        return str(value.get("raw") or "")
    raise ApiError(422, "PropertyConstraintViolation", f"{_human(key)} is invalid.", key)


def _bool(body: dict[str, Any], key: str) -> bool | None:
    if key not in body:
        return None
    value = body[key]
    if not isinstance(value, bool):
        raise ApiError(422, "PropertyConstraintViolation", f"{_human(key)} is invalid.", key)
    return value


def _human(attribute: str) -> str:
    return {"statusExplanation": "Status description"}.get(attribute, attribute.capitalize())


def _parent_id(body: dict[str, Any], store: ProjectStore) -> tuple[bool, int | None]:
    """Whether ``_links.parent`` was given, and the parent's id (None for no parent)."""
    links = body.get("_links")
    if not isinstance(links, dict) or "parent" not in links:
        return False, None
    href = (links["parent"] or {}).get("href") if isinstance(links["parent"], dict | None) else None
    if href is None:
        return True, None
    match = re.fullmatch(r"/api/v3/projects/([^/]+)", str(href))
    if not match:
        raise ConstraintViolations([("parent", "Subproject of does not exist.")])
    try:
        return True, store.find(match.group(1)).id
    except ApiError:
        raise ConstraintViolations([("parent", "Subproject of does not exist.")]) from None


def _validate(store: ProjectStore, project: Project) -> None:
    violations: list[tuple[str, str]] = []
    if not project.name.strip():
        violations.append(("name", "Name can't be blank."))
    elif len(project.name) > NAME_MAX_LENGTH:
        violations.append(("name", f"Name is too long (maximum is {NAME_MAX_LENGTH} characters)."))
    identifier = project.identifier
    if not identifier:
        violations.append(("identifier", "Identifier can't be blank."))
    elif len(identifier) > IDENTIFIER_MAX_LENGTH:
        violations.append(("identifier", f"Identifier is too long (maximum is {IDENTIFIER_MAX_LENGTH} characters)."))
    elif not _IDENTIFIER_RE.match(identifier):
        violations.append(("identifier", "Identifier is invalid."))
    elif identifier in RESERVED_IDENTIFIERS:
        violations.append(("identifier", "Identifier is reserved."))
    elif store.identifier_taken(identifier, except_id=project.id):
        violations.append(("identifier", "Identifier has already been taken."))
    if project.parent_id == project.id:
        violations.append(("parent", "Subproject of does not exist."))
    if violations:
        raise ConstraintViolations(violations)


def _apply(project: Project, body: dict[str, Any], store: ProjectStore) -> None:
    for key in ("name", "identifier"):
        if key in body:
            value = body[key]
            if value is not None and not isinstance(value, str):
                raise ConstraintViolations([(key, f"{_human(key)} is invalid.")])
            setattr(project, key, value or "")
    description = _formattable_raw(body, "description")
    if description is not None:
        project.description = description
    explanation = _formattable_raw(body, "statusExplanation")
    if explanation is not None:
        project.status_explanation = explanation
    public = _bool(body, "public")
    if public is not None:
        project.public = public
    active = _bool(body, "active")
    if active is not None:
        project.active = active
    given, parent_id = _parent_id(body, store)
    if given:
        project.parent_id = parent_id


# -- filters ----------------------------------------------------------------------------------------


def _filter_predicate(name: str, spec: Any) -> Callable[[Project], bool]:
    if not isinstance(spec, dict) or "operator" not in spec:
        raise ApiError(400, "InvalidQuery", f"Filters {name} is invalid.")
    operator = spec["operator"]
    values = [str(v) for v in spec.get("values") or []]
    if name == "id":
        ids = {int(v) for v in values if v.isdigit()}
        if operator == "=":
            return lambda p: p.id in ids
        if operator == "!":
            return lambda p: p.id not in ids
    elif name in ("active", "public"):
        wanted = {v in ("t", "true", "1") for v in values}
        if operator == "=":
            return lambda p: getattr(p, name) in wanted
        if operator == "!":
            return lambda p: getattr(p, name) not in wanted
    elif name == "name_and_identifier":
        lowered = [v.lower() for v in values]

        def equal(p: Project) -> bool:
            return any(v in (p.identifier.lower(), p.name.lower()) for v in lowered)

        def contains(p: Project) -> bool:
            return any(v in p.identifier.lower() or v in p.name.lower() for v in lowered)

        predicates: dict[str, Callable[[Project], bool]] = {
            "=": equal,
            "!": lambda p: not equal(p),
            "~": contains,
            "!~": lambda p: not contains(p),
        }
        if operator in predicates:
            return predicates[operator]
    else:
        raise ApiError(400, "InvalidQuery", f"Filters {name} filter does not exist.")
    raise ApiError(400, "InvalidQuery", f"Filters {name} operator {operator} is not supported.")


def _parse_filters(raw: str | None) -> list[Callable[[Project], bool]]:
    if not raw:
        return []
    try:
        filters = json.loads(raw)
    except ValueError:
        raise ApiError(400, "InvalidQuery", "Filters is not valid JSON.") from None
    if not isinstance(filters, list):
        raise ApiError(400, "InvalidQuery", "Filters is not a list.")
    predicates = []
    for entry in filters:
        if not isinstance(entry, dict) or len(entry) != 1:
            raise ApiError(400, "InvalidQuery", "Filters contains an invalid entry.")
        ((name, spec),) = entry.items()
        predicates.append(_filter_predicate(str(name), spec))
    return predicates


def _sort_key(raw: str | None) -> tuple[Callable[[Project], Any], bool]:
    if not raw:
        return (lambda p: p.id), False
    try:
        criteria = json.loads(raw)
        field_name, direction = criteria[0]
    except (ValueError, TypeError, IndexError, KeyError):
        raise ApiError(400, "InvalidQuery", "Sort by is invalid.") from None
    keys: dict[str, Callable[[Project], Any]] = {
        "id": lambda p: p.id,
        "name": lambda p: p.name.lower(),
        "created_at": lambda p: p.created_at,
        "public": lambda p: p.public,
    }
    if field_name not in keys or direction not in ("asc", "desc"):
        raise ApiError(400, "InvalidQuery", f"Sort by {field_name} {direction} is not supported.")
    return keys[field_name], direction == "desc"


def _int_param(request: web.Request, name: str, default: int, lowest: int, highest: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        return max(lowest, min(highest, int(raw)))
    except ValueError:
        raise ApiError(400, "InvalidQuery", f"{name} is not an integer.") from None


# -- users, roles, memberships ----------------------------------------------------------------------

USER_FIELD_MAX_LENGTH = 256
_EMAIL_RE = re.compile(r"\A[^@\s]+@[^@\s]+\.[^@\s]+\Z")


def _equals_filters(raw: str | None, allowed: Sequence[str]) -> dict[str, set[str]]:
    """``filters`` of a users/memberships collection: only ``=`` on the names this stand-in supports."""
    if not raw:
        return {}
    try:
        filters = json.loads(raw)
    except ValueError:
        raise ApiError(400, "InvalidQuery", "Filters is not valid JSON.") from None
    if not isinstance(filters, list):
        raise ApiError(400, "InvalidQuery", "Filters is not a list.")
    wanted: dict[str, set[str]] = {}
    for entry in filters:
        if not isinstance(entry, dict) or len(entry) != 1:
            raise ApiError(400, "InvalidQuery", "Filters contains an invalid entry.")
        ((name, spec),) = entry.items()
        if name not in allowed:
            raise ApiError(400, "InvalidQuery", f"Filters {name} filter does not exist.")
        if not isinstance(spec, dict) or spec.get("operator") != "=" or not isinstance(spec.get("values"), list):
            raise ApiError(400, "InvalidQuery", f"Filters {name} operator is not supported.")
        wanted[name] = {str(v) for v in spec["values"]}
    return wanted


def _collection(href: str, elements: list[dict[str, Any]]) -> dict[str, Any]:
    return {"_type": "Collection", "total": len(elements), "count": len(elements), "pageSize": len(elements),
            "offset": 1, "_embedded": {"elements": elements}, "_links": {"self": {"href": href}}}


def _linked_id(links: dict[str, Any], name: str, collection: str) -> int | None:
    """The id in ``_links.<name>.href`` if it is ``/api/v3/<collection>/<digits>``, else None."""
    link = links.get(name)
    href = link.get("href") if isinstance(link, dict) else None
    match = re.fullmatch(rf"/api/v3/{collection}/(\d+)", href) if isinstance(href, str) else None
    return int(match.group(1)) if match else None


def _links_of(body: dict[str, Any]) -> dict[str, Any]:
    links = body.get("_links")
    return links if isinstance(links, dict) else {}


def _role_ids(links: dict[str, Any], store: ProjectStore) -> list[int]:
    raw = links.get("roles")
    if not isinstance(raw, list) or not raw:
        raise ConstraintViolations([("roles", "Roles need to be assigned.")])
    ids: list[int] = []
    for link in raw:
        role_id = _linked_id({"role": link}, "role", "roles")
        role = store.roles.get(role_id) if role_id is not None else None
        if role is None or role.builtin:
            raise ConstraintViolations([("roles", "Roles is invalid.")])
        if role.id not in ids:
            ids.append(role.id)
    return ids


def _new_user(body: dict[str, Any], store: ProjectStore) -> User:
    violations: list[tuple[str, str]] = []
    values: dict[str, str] = {}
    for key, label in (("login", "Username"), ("email", "Email"), ("firstName", "First name"),
                       ("lastName", "Last name")):
        value = body.get(key)
        if value is not None and not isinstance(value, str):
            violations.append((key, f"{label} is invalid."))
        elif not value or not value.strip():
            violations.append((key, f"{label} can't be blank."))
        elif len(value) > USER_FIELD_MAX_LENGTH:
            violations.append((key, f"{label} is too long (maximum is {USER_FIELD_MAX_LENGTH} characters)."))
        else:
            values[key] = value
    if "email" in values and not _EMAIL_RE.match(values["email"]):
        violations.append(("email", "Email is invalid."))
    elif "email" in values and any(u.email.lower() == values["email"].lower() for u in store.users.values()):
        violations.append(("email", "Email has already been taken."))
    if "login" in values and any(u.login.lower() == values["login"].lower() for u in store.users.values()):
        violations.append(("login", "Username has already been taken."))
    status = body.get("status", "active")
    if status not in ("active", "invited"):
        violations.append(("status", "Status is invalid."))
    if violations:
        raise ConstraintViolations(violations)
    return User(id=0, login=values["login"], email=values["email"], first_name=values["firstName"],
                last_name=values["lastName"], status=str(status))


def add_member_routes(app: web.Application, store: ProjectStore) -> None:
    """The users, roles and memberships endpoints (see the module docstring for what they follow)."""

    async def list_users(request: web.Request) -> web.Response:
        filters = _equals_filters(request.query.get("filters"), ("login", "status"))
        users = [u for u in sorted(store.users.values(), key=lambda u: u.id)
                 if ("login" not in filters or u.login in filters["login"])
                 and ("status" not in filters or u.status in filters["status"])]
        return _hal(_collection("/api/v3/users", [u.to_hal() for u in users]))

    async def create_user(request: web.Request) -> web.Response:
        user = _new_user(await _json_body(request), store)
        user.id = store.next_user_id
        store.next_user_id += 1
        store.users[user.id] = user
        return _hal(user.to_hal(), 201)

    def find_user(key: str) -> User:
        user = store.users.get(int(key)) if key.isdigit() else None
        if user is None:
            raise ApiError(404, "NotFound", "The requested resource could not be found.")
        return user

    async def get_user(request: web.Request) -> web.Response:
        return _hal(find_user(request.match_info["id"]).to_hal())

    async def list_roles(request: web.Request) -> web.Response:
        return _hal(_collection("/api/v3/roles", [r.to_hal() for r in store.roles.values()]))

    async def get_role(request: web.Request) -> web.Response:
        key = request.match_info["id"]
        role = store.roles.get(int(key)) if key.isdigit() else None
        if role is None:
            raise ApiError(404, "NotFound", "The requested resource could not be found.")
        return _hal(role.to_hal())

    async def list_memberships(request: web.Request) -> web.Response:
        filters = _equals_filters(request.query.get("filters"), ("project", "principal"))
        found = [m for m in sorted(store.memberships.values(), key=lambda m: m.id)
                 if ("project" not in filters or str(m.project_id) in filters["project"])
                 and ("principal" not in filters or str(m.principal_id) in filters["principal"])]
        return _hal(_collection("/api/v3/memberships", [m.to_hal(store) for m in found]))

    def find_membership(key: str) -> Membership:
        membership = store.memberships.get(int(key)) if key.isdigit() else None
        if membership is None:
            raise ApiError(404, "NotFound", "The requested resource could not be found.")
        return membership

    async def create_membership(request: web.Request) -> web.Response:
        body = await _json_body(request)
        links = _links_of(body)
        project_id = _linked_id(links, "project", "projects")
        principal_id = _linked_id(links, "principal", "users")
        violations: list[tuple[str, str]] = []
        if project_id not in store.projects:
            violations.append(("project", "Project can't be blank."))
        if principal_id not in store.users:
            violations.append(("principal", "Principal can't be blank."))
        if violations:
            raise ConstraintViolations(violations)
        assert project_id is not None and principal_id is not None
        role_ids = _role_ids(links, store)
        if any(m.project_id == project_id and m.principal_id == principal_id for m in store.memberships.values()):
            raise ConstraintViolations([("principal", "Principal has already been taken.")])
        membership = Membership(store.next_membership_id, project_id, principal_id, role_ids)
        store.next_membership_id += 1
        store.memberships[membership.id] = membership
        return _hal(membership.to_hal(store), 201)

    async def get_membership(request: web.Request) -> web.Response:
        return _hal(find_membership(request.match_info["id"]).to_hal(store))

    async def update_membership(request: web.Request) -> web.Response:
        membership = find_membership(request.match_info["id"])
        body = await _json_body(request)
        links = _links_of(body)
        if "roles" in links:  # project and principal of a membership cannot change
            membership.role_ids = _role_ids(links, store)
            membership.updated_at = _now()
        return _hal(membership.to_hal(store))

    async def delete_membership(request: web.Request) -> web.Response:
        del store.memberships[find_membership(request.match_info["id"]).id]
        return web.Response(status=204)

    app.router.add_get("/api/v3/users", list_users)
    app.router.add_post("/api/v3/users", create_user)
    app.router.add_get("/api/v3/users/{id}", get_user)
    app.router.add_get("/api/v3/roles", list_roles)
    app.router.add_get("/api/v3/roles/{id}", get_role)
    app.router.add_get("/api/v3/memberships", list_memberships)
    app.router.add_post("/api/v3/memberships", create_membership)
    app.router.add_get("/api/v3/memberships/{id}", get_membership)
    app.router.add_patch("/api/v3/memberships/{id}", update_membership)
    app.router.add_delete("/api/v3/memberships/{id}", delete_membership)


# -- the application --------------------------------------------------------------------------------


def _hal(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(body), content_type=HAL_JSON)


def _authenticated(request: web.Request, api_key: str) -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic" or not token:
        return False
    try:
        user, _, password = base64.b64decode(token.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    return user == "apikey" and hmac.compare_digest(password.encode(), api_key.encode())


def create_app(api_key: str) -> web.Application:
    """The stand-in's aiohttp application; every ``/api/v3`` route needs the API key."""
    store = ProjectStore()

    @web.middleware
    async def errors_and_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            if request.path.startswith("/api/v3") and not _authenticated(request, api_key):
                response = _hal(
                    ApiError(401, "Unauthenticated", "You need to be authenticated to access this resource.").body(),
                    401,
                )
                response.headers["WWW-Authenticate"] = 'Basic realm="OpenProject API"'
                return response
            return await handler(request)
        except ApiError as exc:
            return _hal(exc.body(), exc.status)
        except ConstraintViolations as exc:
            return _hal(exc.body(), 422)
        except web.HTTPNotFound:
            return _hal(ApiError(404, "NotFound", "The requested resource could not be found.").body(), 404)

    async def root(request: web.Request) -> web.Response:
        return _hal(
            {
                "_type": "Root",
                "instanceName": INSTANCE_NAME,
                "coreVersion": CORE_VERSION,
                "_links": {
                    "self": {"href": "/api/v3"},
                    "projects": {"href": "/api/v3/projects"},
                    "memberships": {"href": "/api/v3/memberships"},
                    "users": {"href": "/api/v3/users"},
                    "user": {"href": "/api/v3/users/1", "title": "OpenProject Admin"},
                    "configuration": {"href": "/api/v3/configuration"},
                },
            }
        )

    async def list_projects(request: web.Request) -> web.Response:
        predicates = _parse_filters(request.query.get("filters"))
        key, reverse = _sort_key(request.query.get("sortBy"))
        page_size = _int_param(request, "pageSize", DEFAULT_PAGE_SIZE, 0, MAX_PAGE_SIZE)
        offset = _int_param(request, "offset", 1, 1, 10**9)
        matching = sorted(
            (p for p in store.projects.values() if all(pred(p) for pred in predicates)),
            key=key,
            reverse=reverse,
        )
        page = matching[(offset - 1) * page_size : offset * page_size]
        query = {k: v for k, v in request.query.items() if k not in ("offset", "pageSize")}
        base = "/api/v3/projects?" + urlencode({"filters": "[]", **query})
        return _hal(
            {
                "_type": "Collection",
                "total": len(matching),
                "count": len(page),
                "pageSize": page_size,
                "offset": offset,
                "_embedded": {"elements": [p.to_hal(store) for p in page]},
                "_links": {
                    "self": {"href": f"{base}&offset={offset}&pageSize={page_size}"},
                    "jumpTo": {"href": f"{base}&offset=%7Boffset%7D&pageSize={page_size}", "templated": True},
                    "changeSize": {"href": f"{base}&offset={offset}&pageSize=%7Bsize%7D", "templated": True},
                },
            }
        )

    async def create_project(request: web.Request) -> web.Response:
        body = await _json_body(request)
        project = Project(id=0, identifier="", name="")
        _apply(project, body, store)
        if not project.identifier and project.name.strip():
            project.identifier = store.derive_identifier(project.name)
        _validate(store, project)
        project.id = store.next_id
        store.next_id += 1
        store.projects[project.id] = project
        logger.info("created project %d %s", project.id, project.identifier)
        return _hal(project.to_hal(store), 201)

    async def get_project(request: web.Request) -> web.Response:
        return _hal(store.find(request.match_info["id"]).to_hal(store))

    async def update_project(request: web.Request) -> web.Response:
        project = store.find(request.match_info["id"])
        body = await _json_body(request)
        candidate = Project(**{**project.__dict__})
        _apply(candidate, body, store)
        _validate(store, candidate)
        candidate.updated_at = _now()
        store.projects[project.id] = candidate
        return _hal(candidate.to_hal(store))

    async def delete_project(request: web.Request) -> web.Response:
        project = store.find(request.match_info["id"])
        doomed = {project.id}
        changed = True
        while changed:  # subprojects go with their parent, as in OpenProject
            children = {p.id for p in store.projects.values() if p.parent_id in doomed}
            changed = not children <= doomed
            doomed |= children
        for project_id in doomed:
            del store.projects[project_id]
        for membership in [m for m in store.memberships.values() if m.project_id in doomed]:
            del store.memberships[membership.id]  # a project's memberships go with it
        return web.Response(status=204)

    app = web.Application(middlewares=[errors_and_auth])
    app.router.add_get("/api/v3", root)
    app.router.add_get("/api/v3/", root)
    app.router.add_get("/api/v3/projects", list_projects)
    app.router.add_post("/api/v3/projects", create_project)
    app.router.add_get("/api/v3/projects/{id}", get_project)
    app.router.add_patch("/api/v3/projects/{id}", update_project)
    app.router.add_delete("/api/v3/projects/{id}", delete_project)
    add_member_routes(app, store)
    return app


def arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (compose.yaml's service passes ``--host 0.0.0.0``; on the host it stays on loopback)."""
    parser = argparse.ArgumentParser(
        prog="python -m devstack.openproject_standin",
        description="STAND-IN for OpenProject's API v3 projects endpoints (tests and local runs only).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address; 0.0.0.0 inside a container only")
    parser.add_argument("--port", type=int, default=8091)
    parser.add_argument("--api-key", default="devstack-openproject-key")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = arguments(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.stdout.write(f"OpenProject API v3 STAND-IN listening on http://{args.host}:{args.port}/api/v3\n")
    sys.stdout.flush()
    web.run_app(create_app(args.api_key), host=args.host, port=args.port, print=None, access_log=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
