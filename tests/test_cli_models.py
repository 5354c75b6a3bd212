"""``flask model …`` end to end: aliases and deployments, output, exit codes and database state."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select

from flask_aigateway.models import Deployment, ModelAlias, Provider
from flask_aigateway.services import models as service
from flask_aigateway.services import providers as provider_service

PRICES = ["--pricing-input", "0.15", "--pricing-output", "0.6"]


def count(state: Any, model: type) -> int:
    with state.session() as session:
        return session.scalar(select(func.count()).select_from(model))


def snapshot(state: Any) -> list[dict[str, Any]]:
    """Every alias with its deployments, to prove a failed command changed nothing."""
    return [service.model_to_dict(m) for m in service.list_models(state)]


def invoke_ok(runner: Any, *args: str) -> Any:
    result = runner.invoke(args=list(args))
    assert result.exit_code == 0, result.output
    return result


def invoke_error(runner: Any, *args: str) -> str:
    result = runner.invoke(args=list(args))
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert result.output.startswith("Error: "), result.output
    return result.output


def alias_row(state: Any, alias: str) -> ModelAlias | None:
    with state.session() as session:
        return session.scalar(select(ModelAlias).where(ModelAlias.alias == alias))


def deployments_of(state: Any, alias: str) -> list[Deployment]:
    return list(service.get_model(state, alias).deployments)


@pytest.fixture
def providers(state: Any) -> dict[str, Provider]:
    return {
        "openai": provider_service.create_provider(
            state, name="openai", format="openai", api_key="sk-test-0000000000000000"
        ),
        "claude": provider_service.create_provider(state, name="claude", format="anthropic"),
    }


@pytest.fixture
def gpt(state: Any, providers: dict[str, Provider]) -> ModelAlias:
    return service.create_model(
        state,
        alias="gpt",
        provider="openai",
        model="gpt-4o-mini",
        pricing_input="0.15",
        pricing_output="0.6",
    )


# --- create -----------------------------------------------------------------------------------


def test_create_alias_with_first_deployment(runner, state, providers):
    result = invoke_ok(
        runner,
        "model",
        "create",
        "--alias",
        "gpt",
        "--provider",
        "openai",
        "--model",
        "gpt-4o-mini",
        *PRICES,
    )
    row = alias_row(state, "gpt")
    assert row is not None and row.id in result.output
    assert row.strategy == "weighted" and row.fallbacks == [] and row.enabled is True
    (dep,) = deployments_of(state, "gpt")
    assert dep.id in result.output
    assert dep.provider_id == providers["openai"].id
    assert dep.provider_model == "gpt-4o-mini"
    assert dep.input_price == Decimal("0.15") and dep.output_price == Decimal("0.6")
    assert dep.cached_input_price is None
    assert (dep.priority, dep.weight, dep.rpm_limit, dep.enabled) == (0, 1, None, True)


def test_create_with_every_option_json(runner, state, providers):
    service.create_model(
        state,
        alias="backup",
        provider="claude",
        model="claude-haiku",
        pricing_input="1",
        pricing_output="5",
    )
    service.create_model(
        state,
        alias="long",
        provider="claude",
        model="claude-sonnet",
        pricing_input="3",
        pricing_output="15",
    )
    result = invoke_ok(
        runner,
        "model",
        "create",
        "--alias",
        "gpt",
        "--provider",
        providers["openai"].id,
        "--model",
        "gpt-4o",
        "--pricing-input",
        "2.5",
        "--pricing-output",
        "10",
        "--pricing-cached-input",
        "1.25",
        "--strategy",
        "round-robin",
        "--fallbacks",
        "long,backup",
        "--max-tokens",
        "2048",
        "--cache-ttl",
        "0",
        "--context-fallback",
        "long",
        "--priority",
        "2",
        "--weight",
        "5",
        "--rpm-limit",
        "600",
        "--json",
    )
    data = json.loads(result.stdout)
    row = alias_row(state, "gpt")
    assert data["id"] == row.id
    assert data["strategy"] == "round-robin"
    assert data["fallbacks"] == ["long", "backup"]
    assert (data["max_tokens"], data["cache_ttl"], data["context_fallback"]) == (2048, 0, "long")
    (dep,) = data["deployments"]
    assert dep["provider"] == "openai" and dep["provider_id"] == providers["openai"].id
    assert dep["model"] == "gpt-4o"
    assert (dep["pricing_input"], dep["pricing_output"], dep["pricing_cached_input"]) == (
        "2.5",
        "10",
        "1.25",
    )
    assert (dep["priority"], dep["weight"], dep["rpm_limit"]) == (2, 5, 600)
    assert row.fallbacks == ["long", "backup"] and row.cache_ttl == 0
    stored = deployments_of(state, "gpt")[0]
    assert stored.cached_input_price == Decimal("1.25") and stored.rpm_limit == 600


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--pricing-input", "-1"], "The pricing input must be zero or more (got '-1')"),
        (["--pricing-output", "cheap"], "The pricing output must be a number of US dollars"),
        (["--pricing-cached-input", "-0.5"], "The pricing cached input must be zero or more"),
        (["--priority", "-1"], "The priority must be 0 or more"),
        (["--weight", "0"], "The weight must be 1 or more"),
        (["--weight", "1.5"], "The weight must be a whole number"),
        (["--rpm-limit", "0"], "The rpm limit must be 1 or more"),
        (["--rpm-limit", "lots"], "The rpm limit must be a whole number (got 'lots')"),
        (["--max-tokens", "0"], "The max tokens must be 1 or more"),
        (["--cache-ttl", "-5"], "The cache ttl must be 0 or more"),
        (["--strategy", "random"], "The strategy 'random' is not valid; choose one of: weighted"),
        (["--fallbacks", "ghost"], "Unknown alias in the fallbacks: ghost; create it first"),
        (
            ["--fallbacks", "ghost,spook"],
            "Unknown aliases in the fallbacks: ghost, spook; create them",
        ),
        (["--fallbacks", "bad one"], "'bad one' in the fallbacks list is not a valid alias"),
        (["--fallbacks", "new"], "cannot be its own fallback"),
        (["--fallbacks", "gpt,gpt"], "The fallbacks list names 'gpt' twice"),
        (["--fallbacks", "gpt,,x"], "The fallbacks list has an empty entry"),
        (["--context-fallback", "ghost"], "Unknown alias 'ghost' as context fallback"),
        (["--context-fallback", "new"], "cannot be its own context fallback"),
        (["--provider", "ghost"], "No provider with name or id 'ghost'"),
        (["--alias", "has space"], "The alias 'has space' is not valid"),
        (["--alias", "gpt"], "A model alias 'gpt' already exists"),
        (["--model", "two words"], "The model 'two words' is not valid"),
    ],
)
def test_create_invalid_writes_nothing(runner, state, gpt, args, expected):
    base = {
        "--alias": "new",
        "--provider": "openai",
        "--model": "m",
        "--pricing-input": "1",
        "--pricing-output": "2",
    }
    extra: list[str] = []
    for flag, value in zip(args[::2], args[1::2], strict=True):
        if flag in base:
            base[flag] = value
        else:
            extra += [flag, value]
    before = snapshot(state)
    message = invoke_error(
        runner, "model", "create", *[p for kv in base.items() for p in kv], *extra
    )
    assert expected in message
    assert snapshot(state) == before
    assert count(state, ModelAlias) == 1 and count(state, Deployment) == 1


def test_create_requires_the_deployment_options(runner, state, providers):
    result = runner.invoke(args=["model", "create", "--alias", "x", "--provider", "openai"])
    assert result.exit_code == 2 and "--model" in result.output
    assert count(state, ModelAlias) == 0


def test_fallbacks_are_aliases_of_the_same_kind(runner, state, gpt):
    """A request only falls back to an alias of its own kind, so a chain mixing chat and
    embedding aliases is refused when it is set (create, update, or a kind changed under
    it) instead of being skipped at every request."""
    for alias in ("embed", "embed2"):
        service.create_model(
            state,
            alias=alias,
            provider="openai",
            model=alias,
            pricing_input="1",
            pricing_output="0",
            kind="embedding",
        )
    base = ["--provider", "openai", "--model", "m", "--pricing-input", "1", "--pricing-output", "2"]
    before = snapshot(state)
    message = invoke_error(runner, "model", "create", "--alias", "x", *base, "--fallbacks", "embed")
    assert "'embed' is an alias of kind 'embedding' and 'x' of kind 'chat'" in message
    message = invoke_error(
        runner,
        "model",
        "create",
        "--alias",
        "x",
        *base,
        "--kind",
        "embedding",
        "--context-fallback",
        "gpt",
    )
    assert "'gpt' is an alias of kind 'chat' and 'x' of kind 'embedding'" in message
    assert "only falls back to an alias of its own kind" in message
    assert invoke_error(runner, "model", "update", "gpt", "--fallbacks", "embed")
    assert snapshot(state) == before

    invoke_ok(runner, "model", "update", "embed", "--fallbacks", "embed2")
    invoke_ok(runner, "model", "create", "--alias", "x", *base, "--fallbacks", "gpt")
    before = snapshot(state)
    # embed2 is embed's fallback: it cannot turn chat; embed's own fallback stays embedding.
    message = invoke_error(runner, "model", "update", "embed2", "--kind", "chat")
    assert "'embed2' is a fallback of 'embed' (kind 'embedding')" in message
    message = invoke_error(runner, "model", "update", "x", "--kind", "embedding")
    assert "'gpt' is an alias of kind 'chat' and 'x' of kind 'embedding'" in message
    assert snapshot(state) == before
    # Settings other than the chain and the kind are not held up by it.
    invoke_ok(runner, "model", "update", "x", "--max-tokens", "100")


# --- list / info ------------------------------------------------------------------------------


def test_list(runner, state, gpt):
    service.add_deployment(
        state, "gpt", provider="claude", model="c", pricing_input="1", pricing_output="1"
    )
    service.create_model(
        state,
        alias="alt",
        provider="claude",
        model="c",
        pricing_input="1",
        pricing_output="1",
        fallbacks=["gpt"],
        strategy="cost-based",
    )
    service.update_model(state, "alt", enabled=False)
    lines = invoke_ok(runner, "model", "list").output.splitlines()
    header = ["ID", "ALIAS", "KIND", "STRATEGY", "FALLBACKS", "DEPLOYMENTS", "ENABLED"]
    assert lines[0].split() == header
    alt_id = alias_row(state, "alt").id
    assert lines[1].split() == [alt_id, "alt", "chat", "cost-based", "gpt", "1", "no"]
    assert lines[2].split() == [gpt.id, "gpt", "chat", "weighted", "(none)", "2", "yes"]
    data = json.loads(invoke_ok(runner, "model", "list", "--json").stdout)
    assert [m["alias"] for m in data] == ["alt", "gpt"]
    assert len(data[1]["deployments"]) == 2


def test_list_empty(runner):
    assert "No model aliases yet" in invoke_ok(runner, "model", "list").output
    assert json.loads(invoke_ok(runner, "model", "list", "--json").stdout) == []


def test_info_shows_every_deployment_with_full_ids(runner, state, gpt):
    second = service.add_deployment(
        state,
        "gpt",
        provider="claude",
        model="claude-haiku",
        pricing_input="0.8",
        pricing_output="4",
        priority="1",
    )
    result = invoke_ok(runner, "model", "info", "gpt")
    assert gpt.id in result.output
    for dep in deployments_of(state, "gpt"):
        assert dep.id in result.output
    assert "claude-haiku" in result.output
    data = json.loads(invoke_ok(runner, "model", "info", gpt.id, "--json").stdout)
    assert data["alias"] == "gpt"
    assert [d["id"] for d in data["deployments"]] == [gpt.deployments[0].id, second.id]
    assert data["deployments"][1]["pricing_output"] == "4"


def test_small_prices_are_written_in_plain_decimals(runner, state, gpt):
    """USD per million tokens of cheap models are tiny: the table and --json write them as
    decimals (as /v1/stats writes costs), never in exponent notation such as 1E-7."""
    service.add_deployment(
        state,
        "gpt",
        provider="claude",
        model="tiny",
        pricing_input="0.0000001",
        pricing_output="0.00000005",
    )
    table = invoke_ok(runner, "model", "info", "gpt").output
    assert "0.0000001" in table and "0.00000005" in table and "E-" not in table
    data = json.loads(invoke_ok(runner, "model", "info", "gpt", "--json").stdout)
    tiny = data["deployments"][-1]
    assert (tiny["pricing_input"], tiny["pricing_output"]) == ("0.0000001", "0.00000005")
    assert data["deployments"][0]["pricing_output"] == "0.6"


def test_info_unknown(runner):
    message = invoke_error(runner, "model", "info", "ghost")
    assert "No model alias 'ghost'" in message and "flask model list" in message


# --- update -----------------------------------------------------------------------------------


def test_update_settings(runner, state, gpt):
    for alias in ("a", "b"):
        service.create_model(
            state, alias=alias, provider="claude", model="c", pricing_input="1", pricing_output="1"
        )
    result = invoke_ok(
        runner,
        "model",
        "update",
        "gpt",
        "--strategy",
        "latency-based",
        "--fallbacks",
        "b,a",
        "--disable",
        "--max-tokens",
        "1000",
        "--cache-ttl",
        "60",
        "--context-fallback",
        "a",
        "--json",
    )
    assert json.loads(result.stdout)["fallbacks"] == ["b", "a"]
    row = alias_row(state, "gpt")
    assert (row.strategy, row.fallbacks, row.enabled) == ("latency-based", ["b", "a"], False)
    assert (row.max_tokens, row.cache_ttl, row.context_fallback) == (1000, 60, "a")

    invoke_ok(
        runner,
        "model",
        "update",
        gpt.id,
        "--fallbacks",
        "none",
        "--enable",
        "--max-tokens",
        "none",
        "--cache-ttl",
        "none",
        "--context-fallback",
        "none",
    )
    row = alias_row(state, "gpt")
    assert (row.fallbacks, row.enabled, row.max_tokens) == ([], True, None)
    assert (row.cache_ttl, row.context_fallback) == (None, None)
    assert row.strategy == "latency-based"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--fallbacks", "gpt"], "cannot be its own fallback"),
        (["--fallbacks", "a,ghost"], "Unknown alias in the fallbacks: ghost"),
        (["--fallbacks", "a,a"], "The fallbacks list names 'a' twice"),
        (["--context-fallback", "gpt"], "cannot be its own context fallback"),
        (["--strategy", "fastest"], "The strategy 'fastest' is not valid"),
        (["--max-tokens", "-1"], "The max tokens must be 1 or more"),
        (["--cache-ttl", "soon"], "The cache ttl must be a whole number"),
    ],
)
def test_update_invalid_changes_nothing(runner, state, gpt, args, expected):
    service.create_model(
        state, alias="a", provider="claude", model="c", pricing_input="1", pricing_output="1"
    )
    before = snapshot(state)
    message = invoke_error(runner, "model", "update", "gpt", "--disable", *args)
    assert expected in message
    assert snapshot(state) == before


def test_update_usage_errors(runner, state, gpt):
    # Exit 1 and one line naming the options, as key and team update say it.
    before = snapshot(state)
    message = invoke_error(runner, "model", "update", "gpt")
    assert message == (
        "Error: Nothing to change: give --strategy, --fallbacks, --enable/--disable, "
        "--max-tokens, --cache-ttl, --context-fallback or --kind (see --help).\n"
    )
    assert snapshot(state) == before
    assert "No model alias 'ghost'" in invoke_error(runner, "model", "update", "ghost", "--disable")


# --- deploy / undeploy ------------------------------------------------------------------------


def test_deploy_adds_a_deployment(runner, state, gpt, providers):
    result = invoke_ok(
        runner,
        "model",
        "deploy",
        "gpt",
        "--provider",
        "claude",
        "--model",
        "claude-haiku",
        "--pricing-input",
        "0.8",
        "--pricing-output",
        "4",
        "--priority",
        "1",
        "--weight",
        "3",
        "--rpm-limit",
        "100",
        "--pricing-cached-input",
        "0.08",
    )
    deps = deployments_of(state, "gpt")
    assert len(deps) == 2
    new = deps[1]
    assert new.id in result.output
    assert new.provider_id == providers["claude"].id and new.provider_model == "claude-haiku"
    assert (new.input_price, new.output_price, new.cached_input_price) == (
        Decimal("0.8"),
        Decimal("4"),
        Decimal("0.08"),
    )
    assert (new.priority, new.weight, new.rpm_limit) == (1, 3, 100)
    data = json.loads(
        invoke_ok(
            runner,
            "model",
            "deploy",
            gpt.id,
            "--provider",
            "openai",
            "--model",
            "gpt-4o",
            *PRICES,
            "--json",
        ).stdout
    )
    assert data["alias"] == "gpt" and data["model"] == "gpt-4o"
    assert data["id"] == deployments_of(state, "gpt")[2].id


@pytest.mark.parametrize(
    ("target", "args", "expected"),
    [
        ("gpt", ["--pricing-input", "-0.01"], "The pricing input must be zero or more"),
        ("gpt", ["--weight", "-2"], "The weight must be 1 or more"),
        ("gpt", ["--rpm-limit", "x"], "The rpm limit must be a whole number"),
        ("gpt", ["--provider", "ghost"], "No provider with name or id 'ghost'"),
        ("ghost", [], "No model alias 'ghost'"),
    ],
)
def test_deploy_invalid_writes_nothing(runner, state, gpt, target, args, expected):
    base = {"--provider": "claude", "--model": "m", "--pricing-input": "1", "--pricing-output": "1"}
    extra: list[str] = []
    for flag, value in zip(args[::2], args[1::2], strict=True):
        if flag in base:
            base[flag] = value
        else:
            extra += [flag, value]
    message = invoke_error(
        runner, "model", "deploy", target, *[p for kv in base.items() for p in kv], *extra
    )
    assert expected in message
    assert count(state, Deployment) == 1


@pytest.mark.parametrize("model_id", ["gpt\x00x", "gpt\u202ex", "gpt\x07x", "gpt\u200bx"])
@pytest.mark.parametrize("command", ["create", "deploy"])
def test_a_model_id_with_a_control_or_invisible_character_is_refused(
    runner, state, gpt, command, model_id
):
    """A NUL was a DataError traceback on PostgreSQL; U+202E or BEL were stored and then
    reordered or hid the listing's text."""
    before = snapshot(state)
    target = ["create", "--alias", "new"] if command == "create" else ["deploy", "gpt"]
    message = invoke_error(
        runner, "model", *target, "--provider", "openai", "--model", model_id, *PRICES
    )
    assert f"contains the control or invisible character U+{ord(model_id[3]):04X}" in message
    assert "give the provider's model id in printable characters" in message
    assert snapshot(state) == before


def test_undeploy(runner, state, gpt):
    second = service.add_deployment(
        state, "gpt", provider="claude", model="c", pricing_input="1", pricing_output="1"
    )
    first_id = gpt.deployments[0].id
    result = invoke_ok(runner, "model", "undeploy", "gpt", first_id)
    assert first_id in result.output
    assert [d.id for d in deployments_of(state, "gpt")] == [second.id]


def test_undeploy_refusals(runner, state, gpt):
    other = service.create_model(
        state, alias="other", provider="claude", model="c", pricing_input="1", pricing_output="1"
    )
    other_dep = other.deployments[0].id
    service.add_deployment(
        state, "other", provider="openai", model="m", pricing_input="1", pricing_output="1"
    )
    assert "does not belong to alias 'gpt'" in invoke_error(
        runner, "model", "undeploy", "gpt", other_dep
    )
    assert "No deployment with id 'dep_missing'" in invoke_error(
        runner, "model", "undeploy", "gpt", "dep_missing"
    )
    message = invoke_error(runner, "model", "undeploy", "gpt", gpt.deployments[0].id)
    assert "the only one of alias 'gpt'" in message and "flask model delete" in message
    assert count(state, Deployment) == 3


# --- delete -----------------------------------------------------------------------------------


def test_delete_removes_its_deployments(runner, state, gpt):
    service.add_deployment(
        state, "gpt", provider="claude", model="c", pricing_input="1", pricing_output="1"
    )
    result = invoke_ok(runner, "model", "delete", "gpt")
    assert gpt.id in result.output and "and its 2 deployments." in result.output
    assert count(state, ModelAlias) == 0 and count(state, Deployment) == 0
    assert count(state, Provider) == 2


def test_delete_referenced_alias_is_refused_then_forced(runner, state, gpt):
    service.create_model(
        state,
        alias="a",
        provider="claude",
        model="c",
        pricing_input="1",
        pricing_output="1",
        fallbacks="gpt",
    )
    service.create_model(
        state,
        alias="b",
        provider="claude",
        model="c",
        pricing_input="1",
        pricing_output="1",
        fallbacks="a,gpt",
        context_fallback="gpt",
    )
    message = invoke_error(runner, "model", "delete", "gpt")
    assert "is a fallback of a, b" in message and "--force" in message
    assert count(state, ModelAlias) == 3 and count(state, Deployment) == 3

    result = invoke_ok(runner, "model", "delete", "gpt", "--force")
    assert "Removed it from the fallbacks of: a, b" in result.output
    assert alias_row(state, "gpt") is None
    assert alias_row(state, "a").fallbacks == []
    b = alias_row(state, "b")
    assert b.fallbacks == ["a"] and b.context_fallback is None
    assert count(state, Deployment) == 2


def test_delete_unknown(runner):
    assert "No model alias 'ghost'" in invoke_error(runner, "model", "delete", "ghost")


ONE_DOLLAR = ("--pricing-input", "1", "--pricing-output", "1")


@pytest.mark.parametrize(
    "args",
    [
        ["provider", "info", "a\x00b"],
        ["model", "info", "a\x00b"],
        ["key", "info", "a\x00b"],
        ["team", "info", "a\x00b"],
        ["key", "revoke", "key_\x00"],
        ["model", "undeploy", "smart", "dep_\x00"],
        ["model", "deploy", "smart", "--provider", "a\x00b", "--model", "x", *ONE_DOLLAR],
        ["model", "create", "--alias", "m", "--provider", "a\x00b", "--model", "x", *ONE_DOLLAR],
    ],
)
def test_a_reference_holding_a_nul_character_is_not_found(runner, state, args) -> None:
    """No name or id holds a NUL; on PostgreSQL the lookup was a DataError traceback."""
    provider_service.create_provider(state, name="up", format="openai")
    service.create_model(
        state, alias="smart", provider="up", model="m", pricing_input="1", pricing_output="1"
    )
    before = snapshot(state)
    message = invoke_error(runner, *args)
    assert "No " in message
    assert snapshot(state) == before
