"""Configuration: defaults, type coercion, clear errors, environment mapping, README table."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from flask_aigateway import AIGateway, config, get_state
from flask_aigateway.errors import ConfigError

README = Path(__file__).resolve().parent.parent / "README.md"

EXPECTED_DEFAULTS: dict[str, Any] = {
    "AIGATEWAY_DATABASE_URI": None,
    "AIGATEWAY_ROUTE_PREFIX": "",
    "AIGATEWAY_API_ENABLED": True,
    "AIGATEWAY_DASHBOARD_ENABLED": True,
    "AIGATEWAY_DASHBOARD_TOKEN": None,
    "AIGATEWAY_SECRET_KEY": None,
    "AIGATEWAY_RETRY_MAX_ATTEMPTS": 3,
    "AIGATEWAY_RETRY_DELAY_MS": 200,
    "AIGATEWAY_RETRY_BACKOFF": "exponential",
    "AIGATEWAY_REQUEST_TIMEOUT": 600.0,
    "AIGATEWAY_STREAM_IDLE_TIMEOUT": 300.0,
    "AIGATEWAY_CACHE_ENABLED": False,
    "AIGATEWAY_CACHE_TTL": 3600,
    "AIGATEWAY_REDIS_URL": None,
    "AIGATEWAY_RATELIMIT_STORAGE_URI": None,
    "AIGATEWAY_CREATE_TABLES": False,
}


def test_issue_options_exist_with_their_defaults() -> None:
    resolved = config.resolve({}, {})
    for name, default in EXPECTED_DEFAULTS.items():
        assert resolved[name] == default, name
        assert type(resolved[name]) is type(default), name


def test_every_option_resolves_to_its_declared_default_and_type() -> None:
    resolved = config.resolve({}, {})
    assert set(resolved) == {opt.name for opt in config.OPTIONS}
    for opt in config.OPTIONS:
        assert resolved[opt.name] == opt.default, opt.name
        if opt.default is None:
            assert opt.nullable, f"{opt.name} defaults to None but is not nullable"
        else:
            assert isinstance(resolved[opt.name], opt.type), opt.name


def test_every_option_is_documented_and_prefixed() -> None:
    names = [opt.name for opt in config.OPTIONS]
    assert len(names) == len(set(names))
    for opt in config.OPTIONS:
        assert opt.name.startswith("AIGATEWAY_")
        assert len(opt.doc) > 20, f"{opt.name} needs a meaningful doc"
        if opt.choices:
            assert opt.default in opt.choices


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1", True),
        ("true", True),
        ("Yes", True),
        (" on ", True),
        (True, True),
        ("0", False),
        ("false", False),
        ("NO", False),
        ("off", False),
        ("", False),
        (False, False),
    ],
)
def test_bool_coercion(raw: Any, expected: bool) -> None:
    assert config.coerce(config.BY_NAME["AIGATEWAY_API_ENABLED"], raw) is expected


@pytest.mark.parametrize(
    ("name", "raw", "expected"),
    [
        ("AIGATEWAY_RETRY_MAX_ATTEMPTS", "5", 5),
        ("AIGATEWAY_RETRY_MAX_ATTEMPTS", 1, 1),
        ("AIGATEWAY_LOG_RETENTION_DAYS", "0", 0),
        ("AIGATEWAY_CACHE_TTL", "60", 60),
        ("AIGATEWAY_REQUEST_TIMEOUT", "2.5", 2.5),
        ("AIGATEWAY_REQUEST_TIMEOUT", 30, 30.0),
        ("AIGATEWAY_RETRY_BACKOFF", "fixed", "fixed"),
        ("AIGATEWAY_REDIS_URL", "redis://h:6379/1", "redis://h:6379/1"),
        ("AIGATEWAY_REDIS_URL", "", None),
        ("AIGATEWAY_DASHBOARD_TOKEN", None, None),
    ],
)
def test_typed_coercion(name: str, raw: Any, expected: Any) -> None:
    value = config.coerce(config.BY_NAME[name], raw)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    ("name", "raw", "words"),
    [
        ("AIGATEWAY_API_ENABLED", "maybe", "not a valid bool"),
        ("AIGATEWAY_API_ENABLED", 1, "not a valid bool"),
        ("AIGATEWAY_RETRY_MAX_ATTEMPTS", "three", "not a valid int"),
        ("AIGATEWAY_RETRY_MAX_ATTEMPTS", True, "not a valid int"),
        ("AIGATEWAY_RETRY_MAX_ATTEMPTS", "-1", "must be 1 or more"),
        ("AIGATEWAY_RETRY_DELAY_MS", "-1", "must not be negative"),
        ("AIGATEWAY_REQUEST_TIMEOUT", "soon", "not a valid float"),
        ("AIGATEWAY_REQUEST_TIMEOUT", -0.5, "must not be negative"),
        ("AIGATEWAY_REQUEST_TIMEOUT", "0", "must be greater than 0"),
        ("AIGATEWAY_STREAM_IDLE_TIMEOUT", 0, "must be greater than 0"),
        ("AIGATEWAY_STREAM_IDLE_TIMEOUT", "nan", "must be a finite number"),
        ("AIGATEWAY_CONNECT_TIMEOUT", "inf", "must be a finite number"),
        ("AIGATEWAY_CONNECT_TIMEOUT", 0, "must be greater than 0"),
        ("AIGATEWAY_RETRY_BACKOFF", "linear", "not one of: fixed, exponential"),
        ("AIGATEWAY_CACHE_BACKEND", "disk", "not one of: sql, redis, memory"),
        ("AIGATEWAY_ROUTE_PREFIX", None, "must be set"),
        ("AIGATEWAY_REDIS_URL", 6379, "not a valid str"),
    ],
)
def test_bad_values_raise_config_error_naming_the_option(name: str, raw: Any, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.coerce(config.BY_NAME[name], raw)
    assert name in info.value.message
    assert words in info.value.message


#: The numeric options for which 0 is a documented value (every other one refuses it).
ZERO_MEANS = {
    "AIGATEWAY_DASHBOARD_CACHE_SECONDS": "0 recomputes them on every view",
    "AIGATEWAY_RETRY_DELAY_MS": "0 retries at once",
    "AIGATEWAY_CIRCUIT_FAILURES": "0 disables the breaker",
    "AIGATEWAY_KEY_CACHE_SECONDS": "0 checks the database on every request",
    "AIGATEWAY_LOG_RETENTION_DAYS": "0 keeps every row",
    "AIGATEWAY_LOG_FLUSH_INTERVAL": "0 writes each row as soon as it is queued",
    "AIGATEWAY_TRUSTED_PROXIES": "0 trusts none",
}
NUMERIC = [opt for opt in config.OPTIONS if opt.type in (int, float)]


@pytest.mark.parametrize("opt", NUMERIC, ids=lambda opt: opt.name)
def test_every_numeric_option_refuses_zero_unless_zero_is_documented(opt: config.Option) -> None:
    """0 in a body limit, pool size, depth or token default broke every request quietly."""
    if opt.name in ZERO_MEANS:
        assert config.coerce(opt, "0") == 0
        assert ZERO_MEANS[opt.name] in opt.doc
        return
    with pytest.raises(ConfigError) as info:
        config.coerce(opt, "0")
    assert info.value.message.startswith(f"{opt.name} must be ")
    assert ("1 or more" if opt.type is int else "greater than 0") in info.value.message or (
        f"{opt.minimum} or more" in info.value.message
    )
    assert config.coerce(opt, opt.default) == opt.default, "the default is accepted"
    assert config.coerce(opt, str(max(opt.minimum, 1))) == max(opt.minimum, 1)


@pytest.mark.parametrize(
    ("name", "raw", "words"),
    [
        ("AIGATEWAY_MAX_BODY_BYTES", "0", "AIGATEWAY_MAX_BODY_BYTES must be 1 or more (got 0)"),
        ("AIGATEWAY_MAX_JSON_DEPTH", "0", "AIGATEWAY_MAX_JSON_DEPTH must be 3 or more (got 0)"),
        ("AIGATEWAY_MAX_JSON_DEPTH", "2", "AIGATEWAY_MAX_JSON_DEPTH must be 3 or more (got 2)"),
        ("AIGATEWAY_DEFAULT_MAX_TOKENS", "0", "AIGATEWAY_DEFAULT_MAX_TOKENS must be 1 or more"),
        ("AIGATEWAY_UPSTREAM_POOL_SIZE", "0", "AIGATEWAY_UPSTREAM_POOL_SIZE must be 1 or more"),
        ("AIGATEWAY_CACHE_TTL", "0", "AIGATEWAY_CACHE_TTL must be 1 or more"),
        ("AIGATEWAY_LOG_QUEUE_SIZE", "0", "AIGATEWAY_LOG_QUEUE_SIZE must be 1 or more"),
        (
            "AIGATEWAY_DASHBOARD_SESSION_HOURS",
            "0",
            "AIGATEWAY_DASHBOARD_SESSION_HOURS must be greater than 0",
        ),
    ],
)
def test_out_of_range_environment_values_are_refused(name: str, raw: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.resolve(config.from_environ({name: raw}), {})
    assert words in info.value.message


def test_options_table_states_each_minimum() -> None:
    rows = {line.split(" | ")[0]: line for line in config.options_table().splitlines()}
    assert "At least 1." in rows["| `AIGATEWAY_MAX_BODY_BYTES`"]
    assert "At least 3." in rows["| `AIGATEWAY_MAX_JSON_DEPTH`"]
    assert "Greater than 0." in rows["| `AIGATEWAY_REQUEST_TIMEOUT`"]
    assert "At least" not in rows["| `AIGATEWAY_LOG_RETENTION_DAYS`"]


def test_redis_cache_backend_without_redis_url_is_refused_at_start() -> None:
    """Accepted before: every request then logged 'cache read failed' and answered MISS."""
    with pytest.raises(ConfigError) as info:
        config.resolve({"AIGATEWAY_CACHE_BACKEND": "redis"}, {})
    assert "AIGATEWAY_CACHE_BACKEND='redis' needs AIGATEWAY_REDIS_URL" in info.value.message
    resolved = config.resolve(
        {"AIGATEWAY_CACHE_BACKEND": "redis", "AIGATEWAY_REDIS_URL": "redis://127.0.0.1:6379/0"},
        {},
    )
    assert resolved["AIGATEWAY_CACHE_BACKEND"] == "redis"


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("notaurl", "AIGATEWAY_REDIS_URL='notaurl' is not a Redis URL"),
        ("localhost:6379", "AIGATEWAY_REDIS_URL='localhost:6379' is not a Redis URL"),
        ("http://cache:6379/0", "is not a Redis URL"),
        ("redis://cache:port/0", "AIGATEWAY_REDIS_URL='redis://cache:port/0' has an invalid port"),
    ],
)
def test_bad_redis_url_is_named_as_itself(url: str, words: str) -> None:
    """The throttles and rate windows follow AIGATEWAY_REDIS_URL; its error named
    AIGATEWAY_RATELIMIT_STORAGE_URI, which the operator never set."""
    with pytest.raises(ConfigError) as info:
        config.resolve({"AIGATEWAY_REDIS_URL": url}, {})
    assert words in info.value.message
    assert "RATELIMIT_STORAGE_URI" not in info.value.message


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:6379/0", "rediss://:pw@cache:6380/1", "unix:///run/redis.sock"]
)
def test_good_redis_urls(url: str) -> None:
    assert config.resolve({"AIGATEWAY_REDIS_URL": url}, {})["AIGATEWAY_REDIS_URL"] == url


@pytest.mark.parametrize(
    ("uri", "words"),
    [
        ("notaurl", "AIGATEWAY_RATELIMIT_STORAGE_URI='notaurl' is not supported"),
        ("redis://h:x", "AIGATEWAY_RATELIMIT_STORAGE_URI='redis://h:x' has an invalid port"),
    ],
)
def test_bad_ratelimit_storage_is_refused_at_start(uri: str, words: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(words)):
        config.resolve({"AIGATEWAY_RATELIMIT_STORAGE_URI": uri}, {})


def test_bad_value_in_app_config_fails_resolve() -> None:
    with pytest.raises(ConfigError, match="AIGATEWAY_CACHE_TTL='an hour' is not a valid int"):
        config.resolve({"AIGATEWAY_CACHE_TTL": "an hour"}, {})


def test_precedence_constructor_over_app_config_over_default() -> None:
    resolved = config.resolve(
        {"AIGATEWAY_CACHE_TTL": 10, "AIGATEWAY_RETRY_MAX_ATTEMPTS": 7},
        {"AIGATEWAY_CACHE_TTL": "20"},
    )
    assert resolved["AIGATEWAY_CACHE_TTL"] == 20
    assert resolved["AIGATEWAY_RETRY_MAX_ATTEMPTS"] == 7
    assert resolved["AIGATEWAY_RETRY_DELAY_MS"] == 200


def test_unknown_override_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"Unknown AIGateway option.*AIGATEWAY_CACHE_TTLS"):
        config.resolve({}, {"AIGATEWAY_CACHE_TTLS": 1})


@pytest.mark.parametrize("prefix", ["ai-gateway", "/ai-gateway/", "//x", "/a//b"])
def test_bad_route_prefix(prefix: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.resolve({"AIGATEWAY_ROUTE_PREFIX": prefix}, {})
    assert "must start with '/' and not end with '/'" in info.value.message
    assert "'/ai-gateway'" in info.value.message


@pytest.mark.parametrize("prefix", ["", "/ai-gateway", "/tools/ai"])
def test_good_route_prefix(prefix: str) -> None:
    resolved = config.resolve({"AIGATEWAY_ROUTE_PREFIX": prefix}, {})
    assert resolved["AIGATEWAY_ROUTE_PREFIX"] == prefix


def test_from_environ_maps_and_types_every_gateway_variable() -> None:
    environ = {
        "AIGATEWAY_API_ENABLED": "false",
        "AIGATEWAY_RETRY_MAX_ATTEMPTS": "4",
        "AIGATEWAY_REQUEST_TIMEOUT": "9.5",
        "AIGATEWAY_REDIS_URL": "redis://127.0.0.1:6379/2",
        "AIGATEWAY_DASHBOARD_TOKEN": "",
        "PATH": "/usr/bin",
        "DATABASE_URL": "sqlite://",
    }
    assert config.from_environ(environ) == {
        "AIGATEWAY_API_ENABLED": False,
        "AIGATEWAY_RETRY_MAX_ATTEMPTS": 4,
        "AIGATEWAY_REQUEST_TIMEOUT": 9.5,
        "AIGATEWAY_REDIS_URL": "redis://127.0.0.1:6379/2",
        "AIGATEWAY_DASHBOARD_TOKEN": None,
    }


def test_from_environ_accepts_every_option_as_a_string() -> None:
    environ = {opt.name: _as_env(opt) for opt in config.OPTIONS}
    mapped = config.from_environ(environ)
    assert set(mapped) == set(environ)
    for opt in config.OPTIONS:
        assert mapped[opt.name] == config.coerce(opt, environ[opt.name])


def _as_env(opt: config.Option) -> str:
    if opt.default is None:
        return "value"
    if opt.type is bool:
        return "true" if opt.default else "false"
    return str(opt.default)


def test_from_environ_refuses_unknown_gateway_variable() -> None:
    with pytest.raises(ConfigError) as info:
        config.from_environ({"AIGATEWAY_RETRIES": "3"})
    assert "Unknown environment variable AIGATEWAY_RETRIES" in info.value.message
    assert "AIGATEWAY_RETRY_MAX_ATTEMPTS" in info.value.message


def test_from_environ_bad_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="AIGATEWAY_CACHE_ENABLED='sometimes'"):
        config.from_environ({"AIGATEWAY_CACHE_ENABLED": "sometimes"})


def test_readme_configuration_table_is_the_generated_one() -> None:
    text = README.read_text(encoding="utf-8")
    match = re.search(
        r"<!-- options-table:start -->\n(.*?)\n<!-- options-table:end -->", text, re.S
    )
    assert match, "README.md lacks the <!-- options-table:start/end --> markers"
    assert match.group(1) == config.options_table(), (
        "README.md's configuration table is out of date: regenerate it with `make options-table`."
    )
    for opt in config.OPTIONS:
        assert f"| `{opt.name}` |" in match.group(1)


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        # Each passed init_app, then failed every request or the log writer (OverflowError),
        # or raised OverflowError from init_app, or was quietly truncated.
        ("AIGATEWAY_REQUEST_TIMEOUT", 1e10, "AIGATEWAY_REQUEST_TIMEOUT must be 31536000 or less"),
        ("AIGATEWAY_CONNECT_TIMEOUT", "1e10", "AIGATEWAY_CONNECT_TIMEOUT must be 31536000 or"),
        ("AIGATEWAY_LOG_FLUSH_INTERVAL", 1e12, "AIGATEWAY_LOG_FLUSH_INTERVAL must be 31536000"),
        ("AIGATEWAY_CACHE_TTL", float("inf"), "AIGATEWAY_CACHE_TTL=inf is not a valid int"),
        ("AIGATEWAY_CACHE_TTL", float("nan"), "AIGATEWAY_CACHE_TTL=nan is not a valid int"),
        ("AIGATEWAY_CACHE_TTL", 10**12, "AIGATEWAY_CACHE_TTL must be 31536000 or less"),
        ("AIGATEWAY_RETRY_MAX_ATTEMPTS", 2.9, "AIGATEWAY_RETRY_MAX_ATTEMPTS=2.9 must be a whole"),
        ("AIGATEWAY_LOG_RETENTION_DAYS", 10**9, "AIGATEWAY_LOG_RETENTION_DAYS must be 36500 or"),
        ("AIGATEWAY_DASHBOARD_SESSION_HOURS", 1e9, "_SESSION_HOURS must be 8760 or less"),
    ],
)
def test_values_that_would_break_later_are_refused_at_init(
    app_config: dict[str, Any], tmp_path: Path, name: str, value: Any, words: str
) -> None:
    app = Flask("bounds", instance_path=str(tmp_path / "instance"))
    app.config.update({**app_config, name: value})
    with pytest.raises(ConfigError) as info:
        AIGateway(app)
    assert words in info.value.message


def test_whole_floats_and_the_greatest_durations_are_accepted(
    app_config: dict[str, Any], tmp_path: Path
) -> None:
    """The bound is far inside what the clocks take: a year everywhere still serves."""
    app = Flask("bounds", instance_path=str(tmp_path / "instance"))
    durations = {opt.name: opt.maximum for opt in config.OPTIONS if opt.maximum is not None}
    app.config.update({**app_config, **durations, "AIGATEWAY_RETRY_MAX_ATTEMPTS": 2.0})
    AIGateway(app)
    state = get_state(app)
    try:
        assert state.settings["AIGATEWAY_RETRY_MAX_ATTEMPTS"] == 2
        assert state.settings["AIGATEWAY_REQUEST_TIMEOUT"] == config.YEAR_SECONDS
        assert app.test_client().get("/v1/health").status_code == 200
    finally:
        state.close()


def test_options_table_states_each_maximum() -> None:
    rows = {line.split(" | ")[0]: line for line in config.options_table().splitlines()}
    assert "At most 31536000 (a year)." in rows["| `AIGATEWAY_REQUEST_TIMEOUT`"]
    assert "At most 36500 (a century)." in rows["| `AIGATEWAY_LOG_RETENTION_DAYS`"]
