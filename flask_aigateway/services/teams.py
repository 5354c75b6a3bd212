"""Teams: create, list, show, update and delete the team tree, keeping every override in bounds.

Invariant kept by every mutation here and in :mod:`.keys`: no team or key sets a rule looser
than what its ancestry allows (:func:`~flask_aigateway.policy.check_within`). Mutations load
the team table with ``FOR UPDATE`` (a no-op on SQLite, whose writers are serialised anyway) so
two concurrent changes cannot together break the tree or the invariant.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from ..errors import ConflictError, NotFoundError, ValidationError
from ..governance.policy import (
    RULE_FIELDS,
    EffectiveRules,
    Rules,
    check_within,
    describe,
    effective_rules,
    rules_of,
)
from ..models import ApiKey, Team
from ..state import GatewayState
from ..wording import counted, joined
from . import validation
from .validation import UNSET

#: Words that clear a numeric limit (inherit it) when typed instead of a number.
CLEAR_WORDS = ("none", "unset")
#: A team id: a name of this shape would be shadowed by (or shadow) the team with that id,
#: since references try ids first.
_ID_RE = re.compile(r"^team_[0-9a-f]{16}$")


def _check_not_id_shaped(name: str) -> None:
    if _ID_RE.match(name):
        raise ValidationError(
            f"The name {name!r} looks like a team id; choose a name that does not start with "
            "'team_' followed by an id.",
            param="name",
        )


def parse_rules(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Typed rule values from raw input (CLI strings, form fields or Python values).

    Budgets are USD ≥ 0; rate limits whole numbers ≥ 1; for limits ``""``, ``None``, "none"
    and "unset" mean no limit of its own. Models come from a list or "a,b,prefix*"; "all",
    "unset" and ``None`` mean no restriction of its own, "none" means no model at all.
    Keys that are absent or :data:`UNSET` are left out of the result.

    :raises ValidationError: for an unknown field or an invalid value, ``param`` = the field.
    """
    parsed: dict[str, Any] = {}
    for field, value in raw.items():
        if value is UNSET:
            continue
        if field not in RULE_FIELDS:
            raise ValidationError(f"Unknown rule {field!r}.", param=field)
        text = value.strip().lower() if isinstance(value, str) else None
        if field == "models":
            parsed[field] = None if text == "unset" else validation.name_list(value, field)
        elif text in CLEAR_WORDS:
            parsed[field] = None
        elif field.startswith("budget"):
            parsed[field] = validation.optional_money(value, field)
        else:
            parsed[field] = validation.optional_int(value, field, minimum=1)
    return parsed


def _not_found(ref: str, param: str) -> NotFoundError:
    return NotFoundError(
        f"No team {ref!r}: give a team id (team_…) or name, as shown by `flask team list`.",
        param=param,
    )


def load_teams(session: Session, *, lock: bool = False) -> dict[str, Team]:
    """Every team by id, sorted by name, each with ``parent`` set (usable after the session).

    The tree is small, so services work on it in memory; ``lock`` takes ``FOR UPDATE`` on
    every row, serialising changes to the tree.
    """
    stmt = select(Team).order_by(Team.name)
    if lock:
        stmt = stmt.with_for_update()
    teams = {team.id: team for team in session.scalars(stmt)}
    for team in teams.values():
        set_committed_value(team, "parent", teams.get(team.parent_id) if team.parent_id else None)
    return teams


def resolve(teams: Mapping[str, Team], ref: str | None, *, param: str = "team") -> Team:
    """The team ``ref`` names (a full id, else a name) among ``teams``."""
    if not isinstance(ref, str) or not ref.strip():
        raise ValidationError(f"The {validation.label(param)} is required.", param=param)
    ref = validation.normalize_label(ref)
    if ref in teams:
        return teams[ref]
    for team in teams.values():
        if team.name == ref:
            return team
    raise _not_found(ref, param)


def chain(teams: Mapping[str, Team], team_id: str | None) -> list[Team]:
    """The team ``team_id`` and its ancestors, nearest first (empty for no team)."""
    result: list[Team] = []
    seen: set[str] = set()
    while team_id is not None and team_id not in seen:
        seen.add(team_id)
        team = teams[team_id]
        result.append(team)
        team_id = team.parent_id
    return result


def ancestors(session: Session, team_id: str | None) -> list[Team]:
    """The team ``team_id`` and its ancestors, nearest first, loaded through ``session``.

    For the request pipeline: pooled team budgets and rate limits apply on each of them.
    """
    result: list[Team] = []
    seen: set[str] = set()
    while team_id is not None and team_id not in seen:
        seen.add(team_id)
        team = session.get(Team, team_id)
        if team is None:
            break
        result.append(team)
        team_id = team.parent_id
    return result


def ancestry_rules(teams: Iterable[Team]) -> EffectiveRules:
    """Effective rules of a chain of teams (nearest first)."""
    return effective_rules([rules_of(team) for team in teams])


def subtree(teams: Mapping[str, Team], root_id: str) -> list[Team]:
    """``root_id``'s descendants (not itself), parents before children."""
    children: dict[str | None, list[Team]] = {}
    for team in teams.values():
        children.setdefault(team.parent_id, []).append(team)
    result: list[Team] = []
    seen = {root_id}
    pending = list(children.get(root_id, []))
    while pending:
        team = pending.pop(0)
        if team.id in seen:
            continue
        seen.add(team.id)
        result.append(team)
        pending.extend(children.get(team.id, []))
    return result


def subtree_ids(session: Session, team_id: str) -> list[str]:
    """``team_id`` and the ids of all its descendants, parents before children: the teams
    whose keys a team's own figures pool over, as its budgets do (``[team_id]`` alone for a
    team that no longer exists, whose logged traffic keeps its id)."""
    teams = load_teams(session)
    if team_id not in teams:
        return [team_id]
    return [team_id, *(team.id for team in subtree(teams, team_id))]


def _check_name_free(teams: Mapping[str, Team], name: str, *, except_id: str | None = None) -> None:
    for team in teams.values():
        if team.name == name and team.id != except_id:
            raise ConflictError(
                f"A team named {name!r} already exists ({team.id}); pick another name or "
                "update that team.",
                param="name",
            )


def _conflict_on_race(name: str) -> ConflictError:
    return ConflictError(
        f"A team named {name!r} was created at the same time; pick another name.", param="name"
    )


def create_team(
    state: GatewayState,
    *,
    name: str,
    parent: str | None = None,
    budget_per_day: Any = None,
    budget_per_month: Any = None,
    rate_limit: Any = None,
    tokens_per_minute: Any = None,
    models: Any = None,
) -> Team:
    """Create a team, optionally under ``parent`` (id or name), with its own rules.

    :raises ValidationError: invalid name or rule, or a rule looser than the parent's ancestry.
    :raises NotFoundError: unknown parent. :raises ConflictError: the name is taken.
    """
    name = validation.name(name)
    _check_not_id_shaped(name)
    rules = parse_rules(
        {
            "budget_per_day": budget_per_day,
            "budget_per_month": budget_per_month,
            "rate_limit": rate_limit,
            "tokens_per_minute": tokens_per_minute,
            "models": models,
        }
    )
    try:
        with state.transaction() as session:
            teams = load_teams(session, lock=True)
            _check_name_free(teams, name)
            parent_team = resolve(teams, parent, param="parent") if parent is not None else None
            team = Team(name=name, parent_id=parent_team.id if parent_team else None, **rules)
            check_within(
                rules_of(team),
                ancestry_rules(chain(teams, team.parent_id)),
                what=f"team {name!r}",
            )
            session.add(team)
            session.flush()
            team.parent = parent_team
    except IntegrityError:
        raise _conflict_on_race(name) from None
    state.invalidate()
    return team


def list_teams(state: GatewayState) -> list[Team]:
    """Every team in tree order: each root (by name) followed by its subtree, depth first."""
    with state.transaction() as session:
        teams = load_teams(session)
    children: dict[str | None, list[Team]] = {}
    for team in teams.values():
        children.setdefault(team.parent_id, []).append(team)
    ordered: list[Team] = []
    stack = list(reversed(children.get(None, [])))
    while stack:
        team = stack.pop()
        ordered.append(team)
        stack.extend(reversed(children.get(team.id, [])))
    listed = {team.id for team in ordered}
    return ordered + [team for team in teams.values() if team.id not in listed]


def get_team(state: GatewayState, ref: str) -> Team:
    """The team with full id or name ``ref``, its parent loaded. :raises NotFoundError:"""
    with state.transaction() as session:
        return resolve(load_teams(session), ref)


def update_team(state: GatewayState, ref: str, **changes: Any) -> Team:
    """Change a team's name, parent (id/name, ``None`` = root) and/or rules.

    Arguments absent or :data:`UNSET` stay as they are; a rule given as ``None`` is cleared.
    Re-parenting refuses cycles (the team itself or one of its descendants as parent). The
    new rules must fit the new ancestry, and no descendant team or active key may end up
    looser than its new ancestry (the error names it).

    :raises ValidationError: :raises NotFoundError: :raises ConflictError:
    """
    unknown = sorted(set(changes) - {"name", "parent", *RULE_FIELDS})
    if unknown:
        raise TypeError(f"update_team() got unexpected arguments: {', '.join(unknown)}")
    new_name = changes.get("name", UNSET)
    if new_name is not UNSET:
        new_name = validation.name(new_name)
    rules = parse_rules({f: changes[f] for f in RULE_FIELDS if f in changes})
    parent_ref = changes.get("parent", UNSET)
    try:
        with state.transaction() as session, session.no_autoflush:
            teams = load_teams(session, lock=True)
            team = resolve(teams, ref)
            old_label = f"team {team.name!r}"
            if new_name is not UNSET:
                if new_name != team.name:  # a team named so before the check keeps its name
                    _check_not_id_shaped(new_name)
                _check_name_free(teams, new_name, except_id=team.id)
                team.name = new_name
            if parent_ref is not UNSET:
                team.parent_id = _new_parent(teams, team, parent_ref)
            for field, value in rules.items():
                setattr(team, field, value)
            check_within(
                rules_of(team),
                ancestry_rules(chain(teams, team.parent_id)),
                what=f"team {team.name!r}",
            )
            _check_descendants(session, teams, team, old_label)
            team.parent = teams.get(team.parent_id) if team.parent_id else None
    except IntegrityError:
        raise _conflict_on_race(str(new_name)) from None
    state.invalidate()
    return team


def _new_parent(teams: Mapping[str, Team], team: Team, parent_ref: str | None) -> str | None:
    if parent_ref is None:
        return None
    parent = resolve(teams, parent_ref, param="parent")
    if parent.id == team.id:
        raise ValidationError(
            f"Team {team.name!r} cannot be its own parent; pick another team or no parent.",
            param="parent",
        )
    if any(t.id == team.id for t in chain(teams, parent.parent_id)):
        raise ValidationError(
            f"Moving team {team.name!r} under {parent.name!r} would make a cycle: "
            f"{parent.name!r} is inside {team.name!r}. Pick a parent outside its subtree.",
            param="parent",
        )
    return parent.id


def _check_descendants(session: Session, teams: Mapping[str, Team], team: Team, label: str) -> None:
    """Refuse the change if a sub-team or a non-revoked key below would become too loose."""
    below = subtree(teams, team.id)
    for sub in below:
        _check_member(rules_of(sub), chain(teams, sub.parent_id), label, f"sub-team {sub.name!r}")
    team_ids = [team.id, *(t.id for t in below)]
    keys = session.scalars(
        select(ApiKey).where(ApiKey.team_id.in_(team_ids), ApiKey.revoked_at.is_(None))
    )
    for key in keys:
        _check_member(rules_of(key), chain(teams, key.team_id), label, describe(key))


def _check_member(own: Rules, ancestry: list[Team], label: str, what: str) -> None:
    try:
        check_within(own, ancestry_rules(ancestry), what=what)
    except ValidationError as exc:
        detail = exc.message[:1].lower() + exc.message[1:]
        raise ValidationError(
            f"Cannot change {label}: {detail} Change or clear that override first.",
            param=exc.param,
        ) from None


def moved_summary(result: dict[str, Any]) -> str:
    """What :func:`delete_team` moved, for a message: ``1 sub-team and 2 keys``, ``1 key``."""
    members = [
        counted(len(result["moved_teams"]), "sub-team"),
        counted(len(result["moved_keys"]), "key"),
    ]
    return joined([m for m in members if not m.startswith("0 ")])


def delete_team(state: GatewayState, ref: str, *, force: bool = False) -> dict[str, Any]:
    """Delete a team. Refused while it has sub-teams or keys, unless ``force``.

    With ``force`` its sub-teams and keys (revoked ones too) move to its parent (or to no
    team), in the same transaction. Moving up only removes a level of rules, so nothing can
    become looser than its ancestry. Returns the deleted team's dict plus ``moved_teams``
    (names), ``moved_keys`` (ids) and ``moved_to`` (the parent's name or None).

    :raises NotFoundError: :raises ConflictError: members exist and ``force`` is false.
    """
    with state.transaction() as session:
        teams = load_teams(session, lock=True)
        team = resolve(teams, ref)
        subs = [t for t in teams.values() if t.parent_id == team.id]
        keys = list(session.scalars(select(ApiKey).where(ApiKey.team_id == team.id)))
        if (subs or keys) and not force:
            members = [counted(len(subs), "sub-team"), counted(len(keys), "key")]
            members = [m for m in members if not m.startswith("0 ")]
            them = "it" if len(subs) + len(keys) == 1 else "them"
            raise ConflictError(
                f"Team {team.name!r} still has {joined(members)}; move or delete {them} first, "
                f"or force the deletion (--force) to move {them} to its parent.",
                param="team",
            )
        parent = team.parent
        for sub in subs:
            sub.parent = parent
        for key in keys:
            key.team_id = team.parent_id
        session.flush()
        result = team_to_dict(team)
        session.delete(team)
    state.invalidate()
    result.update(
        moved_teams=[t.name for t in subs],
        moved_keys=[k.id for k in keys],
        moved_to=parent.name if parent else None,
    )
    return result


def team_to_dict(team: Team) -> dict[str, Any]:
    """A team as plain data: id, name, parent id and name, its own rules, timestamps.

    Expects ``team.parent`` loaded, as every team the services return has it.
    """
    return {
        "id": team.id,
        "name": team.name,
        "parent_id": team.parent_id,
        "parent": team.parent.name if team.parent is not None else None,
        **rules_of(team).to_dict(),
        "created_at": team.created_at,
        "updated_at": team.updated_at,
    }


def team_info(state: GatewayState, ref: str) -> dict[str, Any]:
    """Everything about a team: itself, its path from the root, own and effective rules
    (``effective.sources`` names who sets each value), sub-teams and its number of keys."""
    with state.transaction() as session:
        teams = load_teams(session)
        team = resolve(teams, ref)
        lineage = chain(teams, team.id)
        key_count = session.scalar(
            select(func.count()).select_from(ApiKey).where(ApiKey.team_id == team.id)
        )
    return {
        "team": team_to_dict(team),
        "path": [{"id": t.id, "name": t.name} for t in reversed(lineage)],
        "rules": rules_of(team).to_dict(),
        "effective": ancestry_rules(lineage).to_dict(),
        "sub_teams": [
            {"id": t.id, "name": t.name} for t in teams.values() if t.parent_id == team.id
        ],
        "keys": int(key_count or 0),
    }


__all__ = [
    "CLEAR_WORDS",
    "UNSET",
    "ancestors",
    "ancestry_rules",
    "chain",
    "create_team",
    "delete_team",
    "get_team",
    "list_teams",
    "load_teams",
    "parse_rules",
    "resolve",
    "subtree",
    "subtree_ids",
    "team_info",
    "team_to_dict",
    "update_team",
]
