"""``flask key …`` end to end: secrets shown once and stored hashed, rules bounded by the team
tree, expiry, revocation and rotation."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select, update

from flask_aigateway.cli.common import display_width
from flask_aigateway.db import utcnow
from flask_aigateway.models import ApiKey, Team
from flask_aigateway.services import keys as service

SECRET_RE = re.compile(r"aigw_[A-Za-z0-9_-]{43}")


def invoke(runner: Any, *args: Any) -> Any:
    return runner.invoke(args=[str(a) for a in args])


def ok(runner: Any, *args: Any) -> Any:
    result = invoke(runner, *args)
    assert result.exit_code == 0, result.output
    return result


def snapshot(state: Any) -> tuple[list[tuple[Any, ...]], ...]:
    with state.transaction() as session:
        return tuple(
            [tuple(row) for row in session.execute(select(t).order_by(t.c.id))]
            for t in (Team.__table__, ApiKey.__table__)
        )


def fails(runner: Any, state: Any, *args: Any, message: str) -> Any:
    """Run a command that must fail with ``message`` and leave the database unchanged."""
    before = snapshot(state)
    result = invoke(runner, *args)
    assert result.exit_code == 1, result.output
    assert "Error: " in result.output and message in result.output
    assert "Traceback" not in result.output
    assert snapshot(state) == before
    return result


def keys(state: Any) -> list[ApiKey]:
    with state.transaction() as session:
        return list(session.scalars(select(ApiKey).order_by(ApiKey.created_at)))


def only_key(state: Any) -> ApiKey:
    (key,) = keys(state)
    return key


def create(runner: Any, *args: Any) -> tuple[dict[str, Any], str]:
    data = json.loads(ok(runner, "key", "create", *args, "--json").output)
    return data, data["secret"]


def make_tree(runner: Any) -> None:
    """org (20/day, 100 rpm, gpt-4*, claude*) > eng (300/month, gpt-4o, claude*) > ml (50 rpm)."""
    ok(
        runner,
        "team",
        "create",
        "--name",
        "org",
        "--budget-daily",
        "20",
        "--rate-limit",
        "100",
        "--models",
        "gpt-4*,claude*",
    )
    ok(
        runner,
        "team",
        "create",
        "--name",
        "eng",
        "--parent",
        "org",
        "--budget-monthly",
        "300",
        "--models",
        "gpt-4o,claude*",
    )
    ok(runner, "team", "create", "--name", "ml", "--parent", "eng", "--rate-limit", "50")


def test_create_prints_the_secret_once_and_stores_only_its_hash(runner, state) -> None:
    result = ok(runner, "key", "create", "--name", "ci")
    secrets_shown = SECRET_RE.findall(result.output)
    assert len(secrets_shown) == 1
    secret = secrets_shown[0]
    key = only_key(state)
    assert f"Created key 'ci' ({key.id})." in result.output
    assert "it will not be shown again" in result.output
    assert key.id.startswith("key_")
    assert key.key_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert key.key_hash == service.hash_secret(secret)
    assert key.prefix == secret[:12]
    assert key.team_id is None and key.expires_at is None and key.revoked_at is None

    with state.transaction() as session:
        row = session.execute(select(ApiKey.__table__)).one()
    for column, value in row._mapping.items():
        assert secret not in str(value), column
    for command in (
        ["key", "list"],
        ["key", "list", "--json"],
        ["key", "info", key.id],
        ["key", "info", key.id, "--json"],
    ):
        text = ok(runner, *command).output
        assert secret not in text and key.key_hash not in text
        assert key.prefix in text


def test_create_json_in_a_team_with_rules(runner, state) -> None:
    make_tree(runner)
    data, secret = create(
        runner,
        "--name",
        "ci",
        "--team",
        "ml",
        "--budget-daily",
        "5.5",
        "--budget-monthly",
        "100",
        "--rate-limit",
        "10",
        "--tokens-per-minute",
        "1000",
        "--models",
        "gpt-4o,claude-3*",
    )
    key = only_key(state)
    assert SECRET_RE.fullmatch(secret)
    assert "not be shown again" in data["warning"]
    assert data["id"] == key.id and data["team"] == "ml" and data["status"] == "active"
    assert "key_hash" not in data and data["prefix"] == secret[:12]
    assert data["budget_per_day"] == "5.5" and data["models"] == ["gpt-4o", "claude-3*"]
    assert key.budget_per_day == Decimal("5.5") and key.budget_per_month == Decimal("100")
    assert (key.rate_limit, key.tokens_per_minute) == (10, 1000)
    with state.transaction() as session:
        ml = session.scalars(select(Team).where(Team.name == "ml")).one()
    assert key.team_id == ml.id
    assert service.hash_secret(secret) == key.key_hash


def test_every_secret_is_new_and_long() -> None:
    made = {service.generate_secret() for _ in range(50)}
    assert len(made) == 50
    assert all(SECRET_RE.fullmatch(s) for s in made)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--budget-daily", "20.01"],
            "The daily budget of key 'new' (20.01 USD) is looser than the 20 USD set by team 'org'",
        ),
        (["--budget-monthly", "301"], "(301 USD) is looser than the 300 USD set by team 'eng'"),
        (
            ["--rate-limit", "51"],
            "(51 requests/minute) is looser than the 50 requests/minute set by team 'ml'",
        ),
        (["--models", "gpt-4o,gpt-4o-mini"], "'gpt-4o-mini', which team 'eng' does not allow"),
        (["--models", "claude-3*,o1-*"], "'o1-*', which team 'eng' does not allow"),
        (["--models", "gpt-*"], "'gpt-*', which team 'eng' does not allow"),
    ],
)
def test_overrides_looser_than_the_team_ancestry_are_refused(
    runner, state, args: list[str], message: str
) -> None:
    make_tree(runner)
    existing, _ = create(runner, "--name", "old", "--team", "ml")
    fails(runner, state, "key", "create", "--name", "new", "--team", "ml", *args, message=message)
    fails(
        runner,
        state,
        "key",
        "update",
        existing["id"],
        *args,
        message=message.replace("key 'new'", "key 'old'"),
    )
    assert [k.name for k in keys(state)] == ["old"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--budget-per-day", "-1"], "The budget per day must be zero or more (got '-1')."),
        (["--budget-per-month", "a lot"], "The budget per month must be a number of US dollars"),
        (["--rate-limit", "ten"], "The rate limit must be a whole number (got 'ten')."),
        (["--tokens-per-minute", "0"], "The tokens per minute must be 1 or more (got 0)."),
        (["--team", "nope"], "No team 'nope'"),
        (["--expires", "31/01/2099"], "The expiry '31/01/2099' is not an ISO date"),
        (["--expires", "2001-01-01"], "The expiry 2001-01-01T00:00:00+00:00 is in the past"),
        (
            ["--expires-in-days", "0"],
            "--expires-in-days needs a whole number of days, 1 or more (got '0').",
        ),
        (["--expires-in-days", "x"], "--expires-in-days needs a whole number of days"),
        (["--expires-in-days", "3000000"], "--expires-in-days 3000000 reaches past 9998-12-31"),
        (["--expires-in-days", "2147483647"], "--expires-in-days 2147483647 reaches past"),
        (
            ["--expires", "9999-12-31"],
            "The expiry '9999-12-31' is out of range: give a moment between 1970-01-01 and "
            "9998-12-31.",
        ),
        (["--expires", "9998-12-31T23:00:00-05:00"], "is out of range: give a moment between"),
        (
            ["--expires", "2099-01-01", "--expires-in-days", "3"],
            "Give either --expires or --expires-in-days, not both.",
        ),
    ],
)
def test_invalid_input_is_refused(runner, state, args: list[str], message: str) -> None:
    existing, _ = create(runner, "--name", "old")
    fails(runner, state, "key", "create", "--name", "new", *args, message=message)
    fails(runner, state, "key", "update", existing["id"], *args, message=message)
    fails(runner, state, "key", "create", "--name", "bad\tname", message="U+0009")
    assert [k.name for k in keys(state)] == ["old"]


def test_expiry_parsing(runner, state) -> None:
    first, _ = create(runner, "--name", "a", "--expires", "2099-01-31")
    second, _ = create(runner, "--name", "b", "--expires", "2099-01-31T12:30:00+02:00")
    before = utcnow()
    third, _ = create(runner, "--name", "c", "--expires-in-days", "30")
    after = utcnow()
    stored = {k.name: k.expires_at for k in keys(state)}
    assert stored["a"] == dt.datetime(2099, 1, 31, tzinfo=dt.UTC)
    assert first["expires_at"] == "2099-01-31T00:00:00+00:00"
    assert stored["b"] == dt.datetime(2099, 1, 31, 10, 30, tzinfo=dt.UTC)
    assert second["expires_at"] == "2099-01-31T10:30:00+00:00"
    assert before + dt.timedelta(days=30) <= stored["c"] <= after + dt.timedelta(days=30)
    assert third["status"] == "active"


def test_list_aligns_wide_names(runner) -> None:
    ok(runner, "team", "create", "--name", "客服")
    names = ["客服机器人", "bot", "plain"]
    for name in names:
        create(runner, "--name", name, *(["--team", "客服"] if name != "plain" else []))
    header, *lines = ok(runner, "key", "list").output.splitlines()
    prefix = display_width(header[: header.index("PREFIX")])
    status = display_width(header[: header.index("STATUS")])
    for line, name in zip(lines, names, strict=True):
        end = line.index(name) + len(name)
        gap = len(line[end:]) - len(line[end:].lstrip(" "))
        assert display_width(line[:end]) + gap == prefix, lines
        assert display_width(line[: line.index("active")]) == status, lines


def test_list_filters_by_team_and_activity(runner, state) -> None:
    make_tree(runner)
    assert "No keys" in ok(runner, "key", "list").output
    a, _ = create(runner, "--name", "a", "--team", "ml")
    b, _ = create(runner, "--name", "b", "--team", "eng")
    create(runner, "--name", "c")
    d, _ = create(runner, "--name", "d", "--team", "ml")
    ok(runner, "key", "revoke", b["id"])
    with state.transaction() as session:
        session.execute(
            update(ApiKey)
            .where(ApiKey.id == d["id"])
            .values(expires_at=utcnow() - dt.timedelta(seconds=1))
        )

    listed = json.loads(ok(runner, "key", "list", "--json").output)
    assert [(k["name"], k["team"], k["status"]) for k in listed] == [
        ("a", "ml", "active"),
        ("b", "eng", "revoked"),
        ("c", None, "active"),
        ("d", "ml", "expired"),
    ]
    assert all("key_hash" not in k and "secret" not in k for k in listed)
    active = json.loads(ok(runner, "key", "list", "--active", "--json").output)
    assert [k["name"] for k in active] == ["a", "c"]
    in_ml = json.loads(ok(runner, "key", "list", "--team", "ml", "--json").output)
    assert [k["name"] for k in in_ml] == ["a", "d"]
    in_ml_active = json.loads(
        ok(runner, "key", "list", "--team", "ml", "--active", "--json").output
    )
    assert [k["id"] for k in in_ml_active] == [a["id"]]

    text = ok(runner, "key", "list").output.splitlines()
    assert text[0].split()[:5] == ["ID", "NAME", "PREFIX", "TEAM", "STATUS"]
    assert text[2].split()[:5] == [b["id"], "b", b["prefix"], "eng", "revoked"]
    fails(runner, state, "key", "list", "--team", "nope", message="No team 'nope'")
    # Filters that match nothing say so, rather than suggesting a first key.
    empty = ok(runner, "key", "list", "--team", "org", "--active").output
    assert "No keys directly in team 'org' and active" in empty
    assert "sub-teams' keys are listed with their own --team" in empty
    assert "create one" not in empty


def test_info_shows_own_and_effective_rules(runner, state) -> None:
    make_tree(runner)
    data, _ = create(runner, "--name", "ci", "--team", "ml", "--budget-daily", "5")
    info = json.loads(ok(runner, "key", "info", data["id"], "--json").output)
    assert info["key"]["id"] == data["id"] and info["key"]["status"] == "active"
    assert [t["name"] for t in info["team_path"]] == ["org", "eng", "ml"]
    assert info["rules"]["budget_per_day"] == "5"
    assert info["effective"]["budget_per_day"] == "5"
    assert info["effective"]["rate_limit"] == 50
    assert info["effective"]["models"] == ["gpt-4o", "claude*"]
    assert info["effective"]["sources"]["budget_per_day"] == f"key 'ci' ({data['id']})"
    assert info["effective"]["sources"]["rate_limit"] == "team 'ml'"

    text = ok(runner, "key", "info", data["id"]).output
    assert "org > eng > ml" in text
    rows = {line.split()[0]: line.split()[1:] for line in text.splitlines() if line.strip()}
    assert rows["rate_limit"] == ["-", "50", "team", "'ml'"]
    assert rows["status"] == ["active"]

    fails(
        runner,
        state,
        "key",
        "info",
        "key_doesnotexist",
        message="No API key with id 'key_doesnotexist'",
    )
    result = fails(
        runner,
        state,
        "key",
        "info",
        "aigw_" + "x" * 43,
        message="That looks like a key secret or its prefix, not a key id",
    )
    assert "x" * 43 not in result.output


def test_update_name_team_expiry_and_rules(runner, state) -> None:
    make_tree(runner)
    ok(runner, "team", "create", "--name", "cheap", "--budget-daily", "1")
    data, _ = create(
        runner,
        "--name",
        "ci",
        "--team",
        "ml",
        "--budget-daily",
        "5",
        "--rate-limit",
        "40",
        "--expires",
        "2099-01-01",
    )
    key_id = data["id"]

    result = ok(
        runner,
        "key",
        "update",
        key_id,
        "--name",
        "ci2",
        "--models",
        "gpt-4o",
        "--rate-limit",
        "unset",
        "--expires",
        "2099-06-01",
    )
    assert f"Updated key 'ci2' ({key_id})." in result.output
    key = only_key(state)
    assert (key.name, key.models, key.rate_limit) == ("ci2", ["gpt-4o"], None)
    assert key.budget_per_day == Decimal("5")
    assert key.expires_at == dt.datetime(2099, 6, 1, tzinfo=dt.UTC)

    fails(
        runner,
        state,
        "key",
        "update",
        key_id,
        "--team",
        "cheap",
        message="The daily budget of key 'ci2' (5 USD) is looser than the 1 USD set by "
        "team 'cheap'",
    )
    fails(
        runner,
        state,
        "key",
        "update",
        key_id,
        "--models",
        "gpt-4o,mistral",
        message="'mistral', which team 'eng' does not allow",
    )
    fails(
        runner,
        state,
        "key",
        "update",
        key_id,
        "--team",
        "x",
        "--no-team",
        message="Give either --team or --no-team, not both.",
    )
    fails(
        runner,
        state,
        "key",
        "update",
        key_id,
        "--expires-in-days",
        "2",
        "--no-expiry",
        message="Give either an expiry or --no-expiry, not both.",
    )
    fails(runner, state, "key", "update", key_id, message="Nothing to change")

    data = json.loads(
        ok(
            runner, "key", "update", key_id, "--team", "cheap", "--budget-daily", "none", "--json"
        ).output
    )
    assert data["team"] == "cheap" and data["budget_per_day"] is None
    ok(
        runner,
        "key",
        "update",
        key_id,
        "--no-team",
        "--no-expiry",
        "--models",
        "all",
        "--budget-monthly",
        "1000",
    )
    key = only_key(state)
    assert (key.team_id, key.expires_at, key.models) == (None, None, None)
    assert key.budget_per_month == Decimal("1000")


def test_revoke_is_idempotent_and_final(runner, state) -> None:
    data, _ = create(runner, "--name", "ci")
    result = ok(runner, "key", "revoke", data["id"])
    assert f"Revoked key 'ci' ({data['id']})." in result.output
    revoked_at = only_key(state).revoked_at
    assert revoked_at is not None and revoked_at <= utcnow()

    result = ok(runner, "key", "revoke", data["id"])
    assert "was already revoked at" in result.output and "nothing changed" in result.output
    assert only_key(state).revoked_at == revoked_at

    info = json.loads(ok(runner, "key", "info", data["id"], "--json").output)
    assert info["key"]["status"] == "revoked"
    fails(runner, state, "key", "update", data["id"], "--name", "x", message="was revoked")
    fails(runner, state, "key", "rotate", data["id"], message="was revoked")
    fails(runner, state, "key", "revoke", "key_nope", message="No API key with id 'key_nope'")


def test_an_expired_key_is_not_rotated_until_its_expiry_is_extended(runner, state, client) -> None:
    """Rotating an expired key printed a secret the gateway refused (401 expired_api_key)."""
    data, _ = create(runner, "--name", "ci")
    with state.transaction() as session:
        session.execute(
            update(ApiKey)
            .values(expires_at=utcnow() - dt.timedelta(days=1))
            .execution_options(synchronize_session=False)
        )
    state.invalidate()
    result = fails(runner, state, "key", "rotate", data["id"], message="expired on")
    assert "aigw_" not in result.output and "--expires" in result.output
    ok(runner, "key", "update", data["id"], "--expires-in-days", "30")
    rotated = json.loads(ok(runner, "key", "rotate", data["id"], "--json").output)
    answer = client.get("/v1/models", headers={"Authorization": f"Bearer {rotated['secret']}"})
    assert answer.status_code == 200, answer.get_data(as_text=True)


def test_rotate_keeps_the_id_and_changes_the_hash(runner, state) -> None:
    data, old_secret = create(runner, "--name", "ci", "--rate-limit", "7")
    old = only_key(state)

    result = ok(runner, "key", "rotate", data["id"])
    new_secret = SECRET_RE.findall(result.output)
    assert len(new_secret) == 1 and new_secret[0] != old_secret
    assert "The previous secret no longer works." in result.output
    assert "it will not be shown again" in result.output
    key = only_key(state)
    assert key.id == old.id and key.created_at == old.created_at and key.rate_limit == 7
    assert key.key_hash == service.hash_secret(new_secret[0]) != old.key_hash
    assert key.prefix == new_secret[0][:12]
    assert key.previous_key_hash is None and key.previous_expires_at is None

    before = utcnow()
    rotated = json.loads(
        ok(runner, "key", "rotate", data["id"], "--grace-seconds", "600", "--json").output
    )
    key2 = only_key(state)
    assert rotated["id"] == key.id and SECRET_RE.fullmatch(rotated["secret"])
    assert key2.key_hash == service.hash_secret(rotated["secret"])
    assert key2.previous_key_hash == key.key_hash
    assert before + dt.timedelta(seconds=600) <= key2.previous_expires_at
    assert key2.previous_expires_at <= utcnow() + dt.timedelta(seconds=600)
    assert rotated["previous_valid_until"] == key2.previous_expires_at.isoformat()
    assert "key_hash" not in rotated and "previous_key_hash" not in rotated

    fails(
        runner,
        state,
        "key",
        "rotate",
        data["id"],
        "--grace-seconds",
        "-1",
        message="The grace seconds must be 0 or more (got -1).",
    )
    fails(
        runner,
        state,
        "key",
        "rotate",
        data["id"],
        "--grace-seconds",
        "soon",
        message="The grace seconds must be a whole number",
    )


@pytest.mark.parametrize(
    ("typed", "stored_name"),
    [
        ("Frontend App", "Frontend App"),
        ("  Équipe données — prod 🚀  ", "Équipe données — prod 🚀"),
        ("客服机器人", "客服机器人"),
        ("bad name!", "bad name!"),
    ],
)
def test_names_are_labels_with_spaces_and_unicode(runner, state, typed, stored_name) -> None:
    ok(runner, "team", "create", "--name", "Data Science")
    data, _ = create(runner, "--name", typed, "--team", "Data Science")
    key = only_key(state)
    assert key.name == data["name"] == stored_name
    assert data["team"] == "Data Science"
    text = ok(runner, "key", "create", "--name", typed, "--team", "Data Science").output
    assert f"Created key {stored_name!r}" in text and "in team 'Data Science'" in text
    listed = ok(runner, "key", "list", "--team", "Data Science").output
    assert listed.count(stored_name) == 2
    renamed = json.loads(ok(runner, "key", "update", key.id, "--name", "Café Bot", "--json").output)
    assert renamed["name"] == "Café Bot"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("line\nbreak", "U+000A"),
        ("bell\x07", "U+0007"),
        ("right\u202eto-left", "U+202E"),
        ("   ", "--name is empty: leave the option out"),
        ("n" * 101, "at most 100 characters (got 101)"),
    ],
)
def test_names_with_control_characters_or_too_long_are_refused(
    runner, state, name, message
) -> None:
    existing, _ = create(runner, "--name", "old")
    fails(runner, state, "key", "create", "--name", name, message=message)
    fails(runner, state, "key", "update", existing["id"], "--name", name, message=message)


def test_a_team_reference_is_matched_after_unicode_normalisation(runner, state) -> None:
    composed, decomposed = "Caf\u00e9 Team", "Cafe\u0301 Team"
    ok(runner, "team", "create", "--name", composed)
    data, _ = create(runner, "--name", "k", "--team", decomposed)
    assert data["team"] == composed
    with state.transaction() as session:
        (team,) = session.scalars(select(Team))
    assert only_key(state).team_id == team.id


# --- Unix timestamps for --expires, on every command that takes it -----------------------------

UNIX_2099 = 4_102_444_800  # 2100-01-01T00:00:00Z


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        (str(UNIX_2099), dt.datetime(2100, 1, 1, tzinfo=dt.UTC)),
        (f" {UNIX_2099 + 90}.5 ", dt.datetime(2100, 1, 1, 0, 1, 30, 500000, tzinfo=dt.UTC)),
        ("21000101", dt.datetime(2100, 1, 1, tzinfo=dt.UTC)),
    ],
)
def test_expires_takes_a_unix_timestamp_on_create_and_update(
    runner, state, typed, expected
) -> None:
    created, _ = create(runner, "--name", "a", "--expires", typed)
    assert only_key(state).expires_at == expected
    assert created["expires_at"] == expected.isoformat()

    ok(runner, "key", "update", created["id"], "--no-expiry")
    assert only_key(state).expires_at is None
    updated = json.loads(
        ok(runner, "key", "update", created["id"], "--expires", typed, "--json").output
    )
    assert only_key(state).expires_at == expected
    assert updated["expires_at"] == expected.isoformat()


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("1000000000", "The expiry 2001-09-09T01:46:40+00:00 is in the past"),
        (
            "4102444800000",
            "The expiry '4102444800000' is out of range for a Unix timestamp: give seconds since "
            "1970-01-01 UTC (not milliseconds), e.g. 1801440000.",
        ),
        ("17672256OO", "The expiry '17672256OO' is not an ISO date or datetime or a Unix"),
    ],
)
def test_expires_refuses_past_or_millisecond_timestamps(runner, state, typed, message) -> None:
    existing, _ = create(runner, "--name", "old")
    fails(runner, state, "key", "create", "--name", "new", "--expires", typed, message=message)
    fails(runner, state, "key", "update", existing["id"], "--expires", typed, message=message)


@pytest.mark.parametrize(
    ("word", "stored", "status"),
    [
        ("ALL", None, 200),
        ("All", None, 200),
        ("*", None, 200),
        ("None", [], 403),
        ("NONE", [], 403),
    ],
)
def test_models_words_are_read_in_any_case(
    runner, state, client, upstreams, word, stored, status
) -> None:
    """'all' / 'none' are keywords in any case, as 'unset' and the limits' 'none' are, not a
    one-alias list named 'ALL' that refuses every request."""
    created, secret = create(runner, "--name", "k", "--models", word)
    assert only_key(state).models == stored and created["models"] == stored
    response = client.post(
        "/v1/chat/completions",
        json={"model": "gpt", "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {secret}"},
    )
    assert response.status_code == status, response.json
    ok(runner, "key", "update", created["id"], "--models", "gpt")
    ok(runner, "key", "update", created["id"], "--models", word)
    assert only_key(state).models == stored
