"""``flask team …`` end to end: the tree, inherited rules, and every refusal leaving no trace."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from flask_aigateway.cli.common import display_width
from flask_aigateway.models import ApiKey, Team
from flask_aigateway.services import keys as key_service


def invoke(runner: Any, *args: Any) -> Any:
    return runner.invoke(args=[str(a) for a in args])


def ok(runner: Any, *args: Any) -> Any:
    result = invoke(runner, *args)
    assert result.exit_code == 0, result.output
    return result


def fails(runner: Any, state: Any, *args: Any, message: str) -> Any:
    """Run a command that must fail with ``message`` and leave the database unchanged."""
    before = snapshot(state)
    result = invoke(runner, *args)
    assert result.exit_code == 1, result.output
    assert "Error: " in result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert snapshot(state) == before
    return result


def snapshot(state: Any) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Every column of every team and key row."""
    with state.transaction() as session:
        tables = (Team.__table__, ApiKey.__table__)
        return tuple(  # type: ignore[return-value]
            [tuple(row) for row in session.execute(select(t).order_by(t.c.id))] for t in tables
        )


def teams(state: Any) -> dict[str, Team]:
    with state.transaction() as session:
        return {team.name: team for team in session.scalars(select(Team))}


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


def test_create_stores_the_rules_and_the_parent(runner, state) -> None:
    result = ok(
        runner,
        "team",
        "create",
        "--name",
        "org",
        "--budget-per-day",
        "20.5",
        "--budget-per-month",
        "500",
        "--rate-limit",
        "100",
        "--tokens-per-minute",
        "50000",
        "--models",
        "gpt-4*, claude-3-5-sonnet",
    )
    org = teams(state)["org"]
    assert f"Created team 'org' ({org.id})." in result.output
    assert org.id.startswith("team_")
    assert org.parent_id is None
    assert org.budget_per_day == Decimal("20.5")
    assert org.budget_per_month == Decimal("500")
    assert (org.rate_limit, org.tokens_per_minute) == (100, 50000)
    assert org.models == ["gpt-4*", "claude-3-5-sonnet"]

    ok(runner, "team", "create", "--name", "eng", "--parent", "org", "--models", "none")
    ok(runner, "team", "create", "--name", "ops", "--parent", org.id)
    rows = teams(state)
    assert rows["eng"].parent_id == org.id and rows["eng"].models == []
    assert rows["ops"].parent_id == org.id and rows["ops"].models is None
    assert rows["ops"].budget_per_day is None


def test_create_json(runner, state) -> None:
    ok(runner, "team", "create", "--name", "org")
    result = ok(
        runner,
        "team",
        "create",
        "--name",
        "eng",
        "--parent",
        "org",
        "--budget-daily",
        "7.25",
        "--models",
        "a,b*",
        "--json",
    )
    data = json.loads(result.output)
    assert data["id"] == teams(state)["eng"].id
    assert data["parent"] == "org" and data["parent_id"] == teams(state)["org"].id
    assert data["budget_per_day"] == "7.25"
    assert data["models"] == ["a", "b*"]
    assert data["rate_limit"] is None


def test_list_shows_the_tree_in_order(runner, state) -> None:
    assert "No teams yet" in ok(runner, "team", "list").output
    ok(runner, "team", "create", "--name", "zeta")
    ok(runner, "team", "create", "--name", "alpha")
    ok(runner, "team", "create", "--name", "zz-child", "--parent", "alpha")
    ok(runner, "team", "create", "--name", "a-child", "--parent", "zeta")
    ok(runner, "team", "create", "--name", "grandchild", "--parent", "zz-child")

    data = json.loads(ok(runner, "team", "list", "--json").output)
    assert [(t["name"], t["parent"]) for t in data] == [
        ("alpha", None),
        ("zz-child", "alpha"),
        ("grandchild", "zz-child"),
        ("zeta", None),
        ("a-child", "zeta"),
    ]
    lines = ok(runner, "team", "list").output.splitlines()
    assert lines[0].split()[:3] == ["ID", "NAME", "PARENT"]
    assert [line.split()[1:3] for line in lines[1:]] == [
        ["alpha", "-"],
        ["zz-child", "alpha"],
        ["grandchild", "zz-child"],
        ["zeta", "-"],
        ["a-child", "zeta"],
    ]
    assert teams(state)["grandchild"].id in lines[3]


def test_info_shows_ancestry_and_effective_rules(runner, state) -> None:
    make_tree(runner)
    ok(runner, "team", "create", "--name", "cv", "--parent", "ml")
    key_service.create_key(state, name="k1", team="ml")
    key_service.create_key(state, name="k2", team="ml")

    text = ok(runner, "team", "info", "ml").output
    assert "org > eng > ml" in text
    assert "cv" in text
    rows = {line.split()[0]: line.split()[1:] for line in text.splitlines() if line.strip()}
    assert rows["keys"] == ["2"]
    assert rows["budget_per_day"] == ["-", "20", "team", "'org'"]
    assert rows["rate_limit"] == ["50", "50", "team", "'ml'"]
    assert rows["models"] == ["-", "gpt-4o,claude*", "team", "'eng'"]

    tree = teams(state)
    data = json.loads(ok(runner, "team", "info", tree["ml"].id, "--json").output)
    assert data["team"]["id"] == tree["ml"].id
    assert [p["name"] for p in data["path"]] == ["org", "eng", "ml"]
    assert data["rules"]["rate_limit"] == 50 and data["rules"]["budget_per_day"] is None
    effective = data["effective"]
    assert effective["budget_per_day"] == "20"
    assert effective["budget_per_month"] == "300"
    assert effective["rate_limit"] == 50
    assert effective["models"] == ["gpt-4o", "claude*"]
    assert effective["sources"]["budget_per_month"] == "team 'eng'"
    assert data["sub_teams"] == [{"id": tree["cv"].id, "name": "cv"}]
    assert data["keys"] == 2


def test_update_changes_clears_and_moves(runner, state) -> None:
    make_tree(runner)
    ok(runner, "team", "create", "--name", "other")
    result = ok(
        runner,
        "team",
        "update",
        "ml",
        "--name",
        "ml2",
        "--budget-daily",
        "10",
        "--models",
        "none",
        "--tokens-per-minute",
        "900",
    )
    ml = teams(state)["ml2"]
    assert f"Updated team 'ml2' ({ml.id})." in result.output
    assert ml.budget_per_day == Decimal("10") and ml.models == [] and ml.rate_limit == 50
    assert ml.tokens_per_minute == 900

    data = json.loads(
        ok(
            runner,
            "team",
            "update",
            ml.id,
            "--budget-per-day",
            "none",
            "--rate-limit",
            "unset",
            "--models",
            "all",
            "--json",
        ).output
    )
    ml = teams(state)["ml2"]
    assert (ml.budget_per_day, ml.rate_limit, ml.models) == (None, None, None)
    assert ml.tokens_per_minute == 900
    assert data["budget_per_day"] is None and data["models"] is None

    ok(runner, "team", "update", "ml2", "--models", "claude-3*")
    assert teams(state)["ml2"].models == ["claude-3*"]
    ok(runner, "team", "update", "ml2", "--models", "unset")
    assert teams(state)["ml2"].models is None
    # The words in any case, as the limits' 'none' / 'unset': not a list of one alias 'ALL'.
    ok(runner, "team", "update", "ml2", "--models", "NONE")
    assert teams(state)["ml2"].models == []
    ok(runner, "team", "update", "ml2", "--models", "All")
    assert teams(state)["ml2"].models is None

    ok(runner, "team", "update", "ml2", "--parent", "other")
    assert teams(state)["ml2"].parent_id == teams(state)["other"].id
    data = json.loads(ok(runner, "team", "update", "ml2", "--no-parent", "--json").output)
    assert teams(state)["ml2"].parent_id is None and data["parent"] is None


def test_update_needs_something_to_change(runner, state) -> None:
    ok(runner, "team", "create", "--name", "org")
    fails(runner, state, "team", "update", "org", message="Nothing to change")
    fails(
        runner,
        state,
        "team",
        "update",
        "org",
        "--parent",
        "x",
        "--no-parent",
        message="either --parent or --no-parent",
    )
    fails(runner, state, "team", "update", "nope", "--rate-limit", "5", message="No team 'nope'")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--budget-per-day", "-1"], "The budget per day must be zero or more (got '-1')."),
        (["--budget-daily", "ten"], "The budget per day must be a number of US dollars"),
        (["--budget-per-month", "-0.01"], "The budget per month must be zero or more"),
        (["--budget-monthly", "NaN"], "The budget per month must be"),
        (["--rate-limit", "1.5"], "The rate limit must be a whole number (got '1.5')."),
        (["--rate-limit", "0"], "The rate limit must be 1 or more (got 0)."),
        (["--tokens-per-minute", "-5"], "The tokens per minute must be 1 or more"),
        (["--tokens-per-minute", "lots"], "The tokens per minute must be a whole number"),
        (["--models", "gpt-4o,,x"], "The models list has an empty entry (check the commas)."),
        (
            ["--models", "gpt-4o,bad alias"],
            "'bad alias' in the models list is not a valid alias: use up to 200 letters",
        ),
        (["--models", "bad alias*"], "'bad alias*' in the models list is not a valid alias"),
        (["--parent", "nope"], "No team 'nope'"),
        (["--parent", "team_0000000000000000"], "No team 'team_0000000000000000'"),
    ],
)
def test_create_refuses_invalid_input(runner, state, args: list[str], message: str) -> None:
    ok(runner, "team", "create", "--name", "existing")
    fails(runner, state, "team", "create", "--name", "new", *args, message=message)
    fails(runner, state, "team", "update", "existing", *args, message=message)
    assert set(teams(state)) == {"existing"}


def test_a_name_shaped_like_a_team_id_is_refused(runner, state) -> None:
    """References try ids first: a team named like another team's id would be shadowed by it
    (``key create --team``, ``team delete`` reaching the other team), as providers and aliases
    refuse such names too."""
    ok(runner, "team", "create", "--name", "Finance")
    finance = teams(state)["Finance"]
    message = "looks like a team id"
    fails(runner, state, "team", "create", "--name", finance.id, message=message)
    fails(runner, state, "team", "create", "--name", "team_0123456789abcdef", message=message)
    ok(runner, "team", "create", "--name", "Sales")
    fails(runner, state, "team", "update", "Sales", "--name", finance.id, message=message)
    assert set(teams(state)) == {"Finance", "Sales"}
    ok(runner, "team", "create", "--name", "team_notanid")


def test_a_team_named_like_an_id_before_the_check_can_still_be_changed(runner, state) -> None:
    ok(runner, "team", "create", "--name", "legacy")
    with state.transaction() as session:
        session.scalars(select(Team)).one().name = "team_0123456789abcdef"
    state.invalidate()
    ok(runner, "team", "update", "team_0123456789abcdef", "--name", "team_0123456789abcdef")
    ok(runner, "team", "update", "team_0123456789abcdef", "--rate-limit", "5")
    ok(runner, "team", "update", "team_0123456789abcdef", "--name", "renamed")
    assert teams(state)["renamed"].rate_limit == 5


def test_invalid_names_and_duplicates_are_refused(runner, state) -> None:
    ok(runner, "team", "create", "--name", "org")
    ok(runner, "team", "create", "--name", "eng")
    org_id = teams(state)["org"].id
    fails(runner, state, "team", "create", "--name", "bad\x00name", message="U+0000")
    fails(
        runner,
        state,
        "team",
        "create",
        "--name",
        "org",
        message=f"A team named 'org' already exists ({org_id})",
    )
    fails(
        runner,
        state,
        "team",
        "update",
        "eng",
        "--name",
        "org",
        message="A team named 'org' already exists",
    )
    ok(runner, "team", "update", "org", "--name", "org")


def test_cycles_are_refused(runner, state) -> None:
    ok(runner, "team", "create", "--name", "a")
    ok(runner, "team", "create", "--name", "b", "--parent", "a")
    ok(runner, "team", "create", "--name", "c", "--parent", "b")
    fails(
        runner,
        state,
        "team",
        "update",
        "a",
        "--parent",
        "b",
        message="Moving team 'a' under 'b' would make a cycle",
    )
    fails(runner, state, "team", "update", "a", "--parent", "c", message="'c' is inside 'a'")
    fails(
        runner,
        state,
        "team",
        "update",
        "b",
        "--parent",
        "b",
        message="Team 'b' cannot be its own parent",
    )
    fails(
        runner,
        state,
        "team",
        "update",
        "a",
        "--parent",
        teams(state)["a"].id,
        message="cannot be its own parent",
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--budget-daily", "25"],
            "The daily budget of team 'new' (25 USD) is looser than the 20 USD set by team 'org'",
        ),
        (["--budget-monthly", "300.01"], "than the 300 USD set by team 'eng'"),
        (["--rate-limit", "51"], "than the 50 requests/minute set by team 'ml'"),
        (["--models", "gpt-4o,mistral"], "'mistral', which team 'eng' does not allow"),
        (["--models", "gpt-4*"], "'gpt-4*', which team 'eng' does not allow"),
        (["--models", "claude*,o1"], "'o1', which team 'eng' does not allow"),
    ],
)
def test_overrides_looser_than_the_ancestry_are_refused(
    runner, state, args: list[str], message: str
) -> None:
    make_tree(runner)
    ok(runner, "team", "create", "--name", "sibling", "--parent", "ml")
    fails(
        runner, state, "team", "create", "--name", "new", "--parent", "ml", *args, message=message
    )
    fails(
        runner,
        state,
        "team",
        "update",
        "sibling",
        *args,
        message=message.replace("team 'new'", "team 'sibling'"),
    )


def test_overrides_within_the_ancestry_are_accepted(runner, state) -> None:
    make_tree(runner)
    ok(
        runner,
        "team",
        "create",
        "--name",
        "new",
        "--parent",
        "ml",
        "--budget-daily",
        "20",
        "--budget-monthly",
        "300",
        "--rate-limit",
        "50",
        "--tokens-per-minute",
        "999999",
        "--models",
        "gpt-4o,claude-3*",
    )
    assert teams(state)["new"].models == ["gpt-4o", "claude-3*"]


def test_a_change_may_not_leave_a_descendant_looser(runner, state) -> None:
    make_tree(runner)
    ok(runner, "team", "create", "--name", "cv", "--parent", "ml", "--rate-limit", "30")
    key, _ = key_service.create_key(
        state, name="ci", team="cv", budget_per_day="15", models="claude-3-5-sonnet"
    )
    fails(
        runner,
        state,
        "team",
        "update",
        "org",
        "--rate-limit",
        "20",
        message="Cannot change team 'org': the rate limit of sub-team 'ml' (50 "
        "requests/minute) is looser than the 20 requests/minute set by team 'org'",
    )
    fails(
        runner,
        state,
        "team",
        "update",
        "ml",
        "--rate-limit",
        "20",
        message="the rate limit of sub-team 'cv' (30 requests/minute) is looser than the 20",
    )
    fails(
        runner,
        state,
        "team",
        "update",
        "eng",
        "--budget-daily",
        "10",
        message=f"the daily budget of key 'ci' ({key.id}) (15 USD) is looser than the 10 USD "
        "set by team 'eng'",
    )
    fails(
        runner,
        state,
        "team",
        "update",
        "org",
        "--models",
        "gpt-4*",
        message="the models of sub-team 'eng' include 'claude*', which team 'org' does not allow",
    )
    fails(
        runner,
        state,
        "team",
        "update",
        "eng",
        "--models",
        "gpt-4o",
        message=f"the models of key 'ci' ({key.id}) include 'claude-3-5-sonnet', which team "
        "'eng' does not allow",
    )
    ok(runner, "team", "create", "--name", "strict", "--rate-limit", "10")
    fails(
        runner,
        state,
        "team",
        "update",
        "cv",
        "--parent",
        "strict",
        message="The rate limit of team 'cv' (30 requests/minute) is looser than the 10",
    )
    ok(runner, "team", "create", "--name", "cheap", "--budget-daily", "1")
    fails(
        runner,
        state,
        "team",
        "update",
        "ml",
        "--parent",
        "cheap",
        message="Cannot change team 'ml': the daily budget of key 'ci'",
    )

    key_service.revoke_key(state, key.id)
    ok(runner, "team", "update", "eng", "--budget-daily", "10")
    assert teams(state)["eng"].budget_per_day == Decimal("10")


def test_delete(runner, state) -> None:
    make_tree(runner)
    ok(runner, "team", "create", "--name", "cv", "--parent", "ml")
    ok(runner, "team", "create", "--name", "leaf")
    key, _ = key_service.create_key(state, name="ci", team="ml")
    tree = teams(state)

    result = ok(runner, "team", "delete", tree["leaf"].id)
    assert f"Deleted team 'leaf' ({tree['leaf'].id})." in result.output
    assert "leaf" not in teams(state)

    fails(
        runner,
        state,
        "team",
        "delete",
        "ml",
        message="Team 'ml' still has 1 sub-team and 1 key; move or delete them first",
    )
    fails(runner, state, "team", "delete", "nope", message="No team 'nope'")

    result = ok(runner, "team", "delete", "ml", "--force")
    assert "Moved 1 sub-team and 1 key to team 'eng'." in result.output
    after = teams(state)
    assert "ml" not in after and after["cv"].parent_id == tree["eng"].id
    assert key_service.get_key(state, key.id).team_id == tree["eng"].id

    result = ok(runner, "team", "delete", "org", "--force")
    assert "Moved 1 sub-team to the top level." in result.output
    assert teams(state)["eng"].parent_id is None


def test_delete_says_only_what_the_team_still_has(runner, state) -> None:
    ok(runner, "team", "create", "--name", "solo")
    key_service.create_key(state, name="k1", team="solo")
    fails(
        runner,
        state,
        "team",
        "delete",
        "solo",
        message="Team 'solo' still has 1 key; move or delete it first, or force the deletion "
        "(--force) to move it to its parent.",
    )
    key_service.create_key(state, name="k2", team="solo")
    fails(
        runner,
        state,
        "team",
        "delete",
        "solo",
        message="Team 'solo' still has 2 keys; move or delete them first",
    )
    result = ok(runner, "team", "delete", "solo", "--force")
    assert "Moved 2 keys to the top level." in result.output


def test_help_documents_the_rule_options(runner) -> None:
    text = ok(runner, "team", "update", "--help").output
    for option in (
        "--budget-per-day",
        "--budget-daily",
        "--budget-per-month",
        "--budget-monthly",
        "--rate-limit",
        "--tokens-per-minute",
        "--models",
        "'none' or 'unset' removes it",
        "--no-parent",
    ):
        assert option in text


def column_after(line: str, value: str) -> int:
    """The terminal column where the cell after ``value`` starts on ``line`` (wide East Asian
    characters take two columns, combining marks none)."""
    end = line.index(value) + len(value)
    gap = len(line[end:]) - len(line[end:].lstrip(" "))
    return display_width(line[:end]) + gap


def test_display_width_counts_terminal_columns() -> None:
    assert display_width("ops") == 3
    assert display_width("客服") == 4
    assert display_width("\uff26\uff55\uff4c\uff4c") == 8  # fullwidth Latin
    assert display_width("q\u0303a") == 2  # q, combining tilde, a
    assert display_width("a\u200db") == 2  # zero-width joiner


def test_list_aligns_wide_and_combining_names(runner) -> None:
    names = ["客服", "ops", "q\u0303 team", "\uff26\uff55\uff4c\uff4c"]
    for name in names:
        ok(runner, "team", "create", "--name", name, "--rate-limit", "7")
    header, *lines = ok(runner, "team", "list").output.splitlines()
    parent = display_width(header[: header.index("PARENT")])
    assert {column_after(line, name) for line, name in zip(lines, sorted(names), strict=True)} == {
        parent
    }, lines
    rate = display_width(header[: header.index("RATE_LIMIT")])
    assert {display_width(line[: line.index(" 7 ") + 1]) for line in lines} == {rate}, lines


def test_team_names_with_spaces_and_unicode_are_quoted_references(runner, state) -> None:
    ok(runner, "team", "create", "--name", "Data Science", "--budget-daily", "10")
    ok(runner, "team", "create", "--name", "  Ingeniería 日本  ", "--parent", "Data Science")
    tree = teams(state)
    assert set(tree) == {"Data Science", "Ingeniería 日本"}
    child = tree["Ingeniería 日本"]
    assert child.parent_id == tree["Data Science"].id

    info = json.loads(ok(runner, "team", "info", "Ingeniería 日本", "--json").output)
    assert [step["name"] for step in info["path"]] == ["Data Science", "Ingeniería 日本"]
    assert "Data Science > Ingeniería 日本" in ok(runner, "team", "info", "Ingeniería 日本").output
    listed = ok(runner, "team", "list").output
    assert "Data Science" in listed and "Ingeniería 日本" in listed

    ok(runner, "team", "update", "Data Science", "--name", "Data & ML", "--budget-daily", "5")
    assert teams(state)["Data & ML"].budget_per_day == Decimal("5")
    fails(
        runner,
        state,
        "team",
        "create",
        "--name",
        " Data & ML ",
        message="already",
    )
    ok(runner, "team", "delete", "Ingeniería 日本")
    assert set(teams(state)) == {"Data & ML"}
