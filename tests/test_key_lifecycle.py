"""API keys over HTTP: expiry, revocation (here and in another process), last use, rotation
with a grace period, and rules inherited across three levels of teams."""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

import pytest
from fakes import Reply
from flask import Flask
from sqlalchemy import select

from flask_aigateway import AIGateway
from flask_aigateway.db import utcnow
from flask_aigateway.models import ApiKey, RequestLog
from flask_aigateway.services.keys import create_key, revoke_key, rotate_key
from flask_aigateway.services.teams import create_team

BODY = {"model": "gpt", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}


@pytest.fixture
def app_config(app_config: dict[str, Any]) -> dict[str, Any]:
    app_config["AIGATEWAY_DASHBOARD_ENABLED"] = False
    return app_config


@pytest.fixture
def gpt(upstreams: dict[str, Any]) -> Any:
    upstreams["gpt"].default = Reply(text="ok", prompt_tokens=5, completion_tokens=2)
    return upstreams["gpt"]


def post(client: Any, key: str, body: dict[str, Any] | None = None) -> Any:
    return client.post(
        "/v1/chat/completions",
        data=json.dumps(body or BODY),
        headers={"Authorization": f"Bearer {key}"},
        content_type="application/json",
    )


def error_of(response: Any) -> tuple[int, str, str]:
    error = response.json["error"]
    return response.status_code, error["code"], error["message"]


def test_expired_key_stops_at_its_second_even_when_cached(client, state, gpt):
    expires = utcnow() + dt.timedelta(seconds=1.5)
    _key, secret = create_key(state, name="short", expires_at=expires)
    assert post(client, secret).status_code == 200
    time.sleep(max(0.0, (expires - utcnow()).total_seconds()) + 0.05)
    status, code, message = error_of(post(client, secret))
    assert (status, code) == (401, "expired_api_key")
    assert "expired" in message and secret not in message
    assert len(gpt.requests) == 1


def test_revoked_key_is_refused_at_once_on_this_process(client, state, gpt):
    key, secret = create_key(state, name="k")
    assert post(client, secret).status_code == 200
    revoke_key(state, key.id)
    status, code, message = error_of(post(client, secret))
    assert (status, code) == (401, "revoked_api_key")
    assert "revoked" in message


def test_revocation_reaches_another_process_within_the_key_cache_time(
    client, state, gpt, app_config, tmp_path
):
    """A second app on the same database stands for another gateway process: it has its
    own key cache, which only its TTL (here 1 s) refreshes."""
    other = Flask("other_process", instance_path=str(tmp_path / "other"))
    other.config.update(app_config, AIGATEWAY_KEY_CACHE_SECONDS=1.0)
    AIGateway(other)
    try:
        remote = other.test_client()
        key, secret = create_key(state, name="k")
        assert post(remote, secret).status_code == 200
        revoke_key(state, key.id)
        revoked_at = time.monotonic()
        assert post(client, secret).status_code == 401
        while post(remote, secret).status_code == 200:
            # the cache lasts 1 s; the rest is slack for a loaded machine
            assert time.monotonic() - revoked_at < 3.0, "still accepted after the cache TTL"
            time.sleep(0.05)
        assert error_of(post(remote, secret))[1] == "revoked_api_key"
    finally:
        AIGateway.get_state(other).close()


def test_last_used_at_is_recorded(client, state, gpt):
    key, secret = create_key(state, name="k")
    assert key.last_used_at is None
    before = utcnow()
    assert post(client, secret).status_code == 200
    with state.transaction() as session:
        used = session.get(ApiKey, key.id).last_used_at
    assert used is not None and before - dt.timedelta(seconds=1) <= used <= utcnow()


def test_rotation_keeps_the_key_and_honours_the_grace_period(client, state, gpt):
    key, old = create_key(state, name="k", rate_limit=100)
    assert post(client, old).status_code == 200
    same, new = rotate_key(state, key.id, grace_seconds=2)
    assert same.id == key.id and new != old
    grace_ends = utcnow() + dt.timedelta(seconds=2)
    assert post(client, new).status_code == 200
    assert post(client, old).status_code == 200
    time.sleep(max(0.0, (grace_ends - utcnow()).total_seconds()) + 0.1)
    status, code, message = error_of(post(client, old))
    assert (status, code) == (401, "invalid_api_key")
    assert "rotated" in message
    assert post(client, new).status_code == 200
    with state.transaction() as session:
        owners = session.scalars(
            select(RequestLog.key_id).where(RequestLog.status_code == 200)
        ).all()
    assert set(owners) == {key.id} and len(owners) == 4
    # the rate window is the key's, whichever secret is used: 4 of 100 counted
    response = post(client, new)
    assert response.headers["x-ratelimit-remaining-requests"] == "95"


def test_rotation_without_grace_ends_the_old_secret_at_once(client, state, gpt):
    key, old = create_key(state, name="k")
    assert post(client, old).status_code == 200
    _same, new = rotate_key(state, key.id)
    assert post(client, old).status_code == 401
    assert post(client, new).status_code == 200


def test_rules_are_inherited_across_three_levels_of_teams(client, state, gpt, upstreams):
    create_team(state, name="org", models=["gpt", "claude"], rate_limit=100, budget_per_day="5")
    create_team(state, name="research", parent="org", models=["gpt"])
    create_team(state, name="nlp", parent="research", rate_limit=3)
    _key, secret = create_key(state, name="deep", team="nlp")

    status, code, message = error_of(post(client, secret, {**BODY, "model": "claude"}))
    assert (status, code) == (403, "model_not_allowed")
    assert "claude" in message
    listed = client.get("/v1/models", headers={"Authorization": f"Bearer {secret}"}).json
    assert [m["id"] for m in listed["data"]] == ["gpt"]

    responses = [post(client, secret) for _ in range(4)]
    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    assert responses[0].headers["x-ratelimit-limit-requests"] == "3"
    assert "team 'nlp' allows 3 requests/minute" in responses[3].json["error"]["message"]
    assert float(responses[0].headers["x-aigateway-budget-remaining-usd"]) < 5
    assert upstreams["claude"].requests == []
