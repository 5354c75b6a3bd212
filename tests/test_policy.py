"""Rules inheritance (policy.py): effective rules along key → team → ancestors, wildcards,
and the refusal of overrides looser than their ancestry."""

from __future__ import annotations

import itertools
from decimal import Decimal

import pytest

from flask_aigateway.errors import ValidationError
from flask_aigateway.governance.policy import (
    EffectiveRules,
    Rules,
    check_within,
    covers,
    effective_rules,
    matches,
    rules_of,
)
from flask_aigateway.models import ApiKey, Team

ORG = Rules(
    budget_per_day=Decimal("20"),
    rate_limit=100,
    models=("gpt-4*", "claude*"),
    owner="team 'org'",
)
ENG = Rules(
    budget_per_day=Decimal("50"),
    budget_per_month=Decimal("300"),
    tokens_per_minute=20_000,
    models=("gpt-4o", "gpt-4o-mini", "claude-3*"),
    owner="team 'eng'",
)
ML = Rules(rate_limit=40, models=("gpt-4o*", "claude-3-5*", "mistral"), owner="team 'ml'")


def test_no_levels_means_no_limits() -> None:
    rules = effective_rules([])
    assert rules == EffectiveRules()
    assert rules.allows_model("anything")
    assert rules.to_dict()["sources"] == dict.fromkeys(
        ("budget_per_day", "budget_per_month", "rate_limit", "tokens_per_minute", "models")
    )


def test_three_levels_take_the_strictest_value_and_name_who_sets_it() -> None:
    key = Rules(budget_per_day=Decimal("5"), owner="key 'ci'")
    rules = effective_rules([key, ML, ENG, ORG])
    assert rules.budget_per_day == Decimal("5")
    assert rules.budget_per_month == Decimal("300")
    assert rules.rate_limit == 40
    assert rules.tokens_per_minute == 20_000
    assert rules.models == ("gpt-4o", "gpt-4o-mini", "claude-3-5*")
    sources = rules.to_dict()["sources"]
    assert sources == {
        "budget_per_day": "key 'ci'",
        "budget_per_month": "team 'eng'",
        "rate_limit": "team 'ml'",
        "tokens_per_minute": "team 'eng'",
        "models": "team 'ml'",
    }


def test_an_unset_level_inherits_and_the_nearest_equal_level_is_named() -> None:
    parent = Rules(rate_limit=10, owner="team 'parent'")
    child = Rules(rate_limit=10, owner="team 'child'")
    rules = effective_rules([Rules(owner="key 'k'"), child, parent])
    assert rules.rate_limit == 10
    assert rules.source("rate_limit") is child
    assert rules.source("budget_per_day") is None


@pytest.mark.parametrize(
    ("entry", "alias", "allowed"),
    [
        ("gpt-4o", "gpt-4o", True),
        ("gpt-4o", "gpt-4o-mini", False),
        ("gpt-4", "gpt-4o", False),
        ("gpt-4*", "gpt-4o", True),
        ("gpt-4*", "gpt-4", True),
        ("gpt-4*", "gpt-3.5-turbo", False),
        ("*", "anything", True),
    ],
)
def test_entries_match_exactly_and_star_is_an_explicit_prefix(
    entry: str, alias: str, allowed: bool
) -> None:
    assert matches(entry, alias) is allowed
    assert effective_rules([Rules(models=(entry,))]).allows_model(alias) is allowed


def test_none_allows_every_model_and_empty_allows_none() -> None:
    assert effective_rules([Rules(models=None)]).allows_model("gpt-4o")
    empty = effective_rules([Rules(models=()), Rules(models=None)])
    assert empty.models == ()
    assert not empty.allows_model("gpt-4o")
    assert empty.to_dict()["models"] == []


ALIASES = (
    "gpt-4",
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-3.5-turbo",
    "claude-3-5-sonnet",
    "claude-3-opus",
    "claude-2",
    "mistral",
    "mistral-large",
)
WHITELISTS = (
    None,
    (),
    ("gpt-4*",),
    ("gpt-4o", "claude*"),
    ("gpt*", "claude-3*", "mistral"),
    ("gpt-4o*", "claude-3-5*", "mistral*"),
)


@pytest.mark.parametrize(("a", "b", "c"), list(itertools.product(WHITELISTS, repeat=3)))
def test_intersection_allows_exactly_what_every_level_allows(a, b, c) -> None:
    levels = [Rules(models=a), Rules(models=b), Rules(models=c)]
    rules = effective_rules(levels)
    for alias in ALIASES:
        expected = all(
            level.models is None or any(matches(e, alias) for e in level.models) for level in levels
        )
        assert rules.allows_model(alias) is expected, (alias, rules.models)


def test_intersection_keeps_the_narrower_wildcard_and_drops_covered_entries() -> None:
    rules = effective_rules([Rules(models=("gpt-4*", "gpt-4o")), Rules(models=("gpt-*",))])
    assert rules.models == ("gpt-4*",)


@pytest.mark.parametrize(
    ("entries", "entry", "covered"),
    [
        (("gpt-4*",), "gpt-4o", True),
        (("gpt-4*",), "gpt-4o*", True),
        (("gpt-4*",), "gpt-4*", True),
        (("gpt-4*",), "gpt-*", False),
        (("gpt-4o", "gpt-4o-mini"), "gpt-4o*", False),
        (("gpt-4o",), "gpt-4o", True),
        (("gpt-4o",), "gpt-4", False),
        (("*",), "claude*", True),
    ],
)
def test_covers(entries: tuple[str, ...], entry: str, covered: bool) -> None:
    assert covers(entries, entry) is covered


def ancestry() -> EffectiveRules:
    return effective_rules([ML, ENG, ORG])


def test_check_within_accepts_equal_stricter_and_unset_values() -> None:
    check_within(
        Rules(budget_per_day=Decimal("20"), rate_limit=40, models=("gpt-4o", "claude-3-5-sonnet")),
        ancestry(),
        what="key 'k'",
    )
    check_within(Rules(models=()), ancestry(), what="key 'k'")
    check_within(Rules(models=("claude-3-5*", "gpt-4o-mini")), ancestry(), what="key 'k'")
    check_within(Rules(), ancestry(), what="key 'k'")
    check_within(Rules(budget_per_day=Decimal("1e6"), models=("x*",)), EffectiveRules(), what="k")


@pytest.mark.parametrize(
    ("child", "param", "fragment"),
    [
        (
            Rules(budget_per_day=Decimal("20.01")),
            "budget_per_day",
            "daily budget of key 'k' (20.01 USD) is looser than the 20 USD set by team 'org'",
        ),
        (
            Rules(budget_per_month=Decimal("301")),
            "budget_per_month",
            "(301 USD) is looser than the 300 USD set by team 'eng'",
        ),
        (
            Rules(rate_limit=41),
            "rate_limit",
            "(41 requests/minute) is looser than the 40 requests/minute set by team 'ml'",
        ),
        (
            Rules(tokens_per_minute=20_001),
            "tokens_per_minute",
            "the 20000 tokens/minute set by team 'eng'",
        ),
        (Rules(models=("mistral",)), "models", "'mistral', which team 'eng' does not allow"),
        (Rules(models=("gpt-4o-mini", "gpt-4*")), "models", "'gpt-4*', which team 'ml'"),
        (Rules(models=("claude-3*",)), "models", "'claude-3*', which team 'ml'"),
        (Rules(models=("claude-3-5-sonnet", "llama")), "models", "'llama', which team 'ml'"),
    ],
)
def test_check_within_refuses_looser_overrides_naming_the_ancestor(
    child: Rules, param: str, fragment: str
) -> None:
    with pytest.raises(ValidationError) as info:
        check_within(child, ancestry(), what="key 'k'")
    assert info.value.param == param
    assert fragment in info.value.message


def test_a_wildcard_is_not_covered_by_a_list_of_aliases() -> None:
    parent = effective_rules([Rules(models=("gpt-4o", "gpt-4o-mini"), owner="team 'p'")])
    with pytest.raises(ValidationError) as info:
        check_within(Rules(models=("gpt-4o*",)), parent, what="team 'c'")
    assert "covered only by an ancestor wildcard" in info.value.message
    assert "it allows gpt-4o, gpt-4o-mini" in info.value.message


def test_the_grandparent_whitelist_binds_even_when_the_parent_sets_none() -> None:
    chain = effective_rules([Rules(owner="team 'ml'"), Rules(owner="team 'eng'"), ORG])
    with pytest.raises(ValidationError) as info:
        check_within(Rules(models=("mistral",)), chain, what="key 'k'")
    assert "team 'org' does not allow" in info.value.message


def test_rules_of_reads_team_and_key_rows() -> None:
    team = Team(name="eng", budget_per_day=Decimal("3.5"), rate_limit=7, models=["a", "b*"])
    key = ApiKey(id="key_1", name="ci", tokens_per_minute=100, models=None)
    assert rules_of(team) == Rules(
        budget_per_day=Decimal("3.5"), rate_limit=7, models=("a", "b*"), owner="team 'eng'"
    )
    assert rules_of(key) == Rules(tokens_per_minute=100, owner="key 'ci' (key_1)")
