"""Dashboard security: fail closed, token login and its cookie, throttling, CSRF, logout, host
auth, the route prefix, response headers and the host's own templates."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from dashboard_helpers import FLASK_SECRET, TOKEN, csrf_from, login, submit, text
from flask import Flask, redirect
from sqlalchemy import func, select
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from flask_aigateway import AIGateway
from flask_aigateway.dashboard import security
from flask_aigateway.errors import ConfigError
from flask_aigateway.extension import get_state
from flask_aigateway.models import Provider


@pytest.fixture
def app_config(app_config: dict[str, Any]) -> dict[str, Any]:
    return {**app_config, "AIGATEWAY_DASHBOARD_TOKEN": TOKEN, "SECRET_KEY": FLASK_SECRET}


def make_app(tmp_path: Path, config: dict[str, Any], **options: Any) -> Flask:
    app = Flask("dashboard_host", instance_path=str(tmp_path / "instance"))
    app.config.update(config)
    AIGateway(app, **options)
    return app


@pytest.fixture
def closing() -> Any:
    apps: list[Flask] = []
    yield apps.append
    for app in apps:
        get_state(app).close()


def allow_all() -> bool:
    """A host auth callable named by dotted path in a test."""
    return True


def provider_count(app: Flask) -> int:
    with get_state(app).session() as session:
        return int(session.scalar(select(func.count()).select_from(Provider)) or 0)


def test_refuses_to_serve_without_a_token_or_host_auth(
    app_config: dict[str, Any], tmp_path: Path, closing: Any
) -> None:
    config = {k: v for k, v in app_config.items() if k != "AIGATEWAY_DASHBOARD_TOKEN"}
    app = make_app(tmp_path, config)
    closing(app)
    client = app.test_client()
    for path in ("/dashboard/", "/dashboard/login", "/dashboard/keys"):
        response = client.get(path)
        assert response.status_code == 503
        assert "AIGATEWAY_DASHBOARD_TOKEN" in text(response)
        assert "AIGATEWAY_DASHBOARD_AUTH" in text(response)
    assert client.post("/dashboard/login", data={"token": ""}).status_code == 503
    assert client.post("/dashboard/providers/new", data={"name": "x"}).status_code == 503
    assert provider_count(app) == 0
    with client.get("/dashboard/static/dashboard.css") as static:
        assert static.status_code == 200


def test_refuses_to_serve_without_a_signing_secret(
    app_config: dict[str, Any], tmp_path: Path, closing: Any
) -> None:
    config = {
        k: v for k, v in app_config.items() if k not in ("SECRET_KEY", "AIGATEWAY_SECRET_KEY")
    }
    app = make_app(tmp_path, config)
    closing(app)
    response = app.test_client().get("/dashboard/login")
    assert response.status_code == 503
    assert "SECRET_KEY" in text(response)


def test_gateway_secret_signs_sessions_when_the_host_has_no_secret_key(
    app_config: dict[str, Any], tmp_path: Path, closing: Any
) -> None:
    config = {k: v for k, v in app_config.items() if k != "SECRET_KEY"}
    app = make_app(tmp_path, config)
    closing(app)
    client = app.test_client()
    login(client)
    assert client.get("/dashboard/keys").status_code == 200


def test_pages_redirect_to_login_and_login_opens_a_cookie_session(client: Any) -> None:
    response = client.get("/dashboard/keys?status=active")
    assert response.status_code == 303
    assert response.headers["Location"].endswith(
        "/dashboard/login?next=/dashboard/keys?status%3Dactive"
    )

    page = client.get("/dashboard/login?next=/dashboard/keys")
    assert 'type="password"' in text(page)
    response = client.post(
        "/dashboard/login",
        data={"token": TOKEN, "csrf_token": csrf_from(text(page)), "next": "/dashboard/keys"},
    )
    assert response.status_code == 303
    assert response.headers["Location"] == "/dashboard/keys"
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("aigw_dashboard=")
    assert "HttpOnly" in cookie and "Path=/dashboard" in cookie and "SameSite=Lax" in cookie
    assert TOKEN not in cookie and TOKEN not in response.headers["Location"]
    assert client.get("/dashboard/keys").status_code == 200


def test_wrong_token_is_refused_without_echoing_it(client: Any) -> None:
    page = client.get("/dashboard/login")
    response = client.post(
        "/dashboard/login",
        data={"token": "not-the-token-9876", "csrf_token": csrf_from(text(page))},
    )
    assert response.status_code == 401
    assert "not the dashboard token" in text(response)
    assert "not-the-token-9876" not in text(response)
    assert client.get("/dashboard/").status_code == 303


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example/x",
        "https://evil.example/dashboard/",
        "/elsewhere",
        "/dashboard/../admin",
        "/dashboard/%2e%2e/x",
    ],
)
def test_login_never_redirects_outside_the_dashboard(client: Any, target: str) -> None:
    page = client.get("/dashboard/login")
    response = client.post(
        "/dashboard/login",
        data={"token": TOKEN, "csrf_token": csrf_from(text(page)), "next": target},
    )
    assert response.headers["Location"] == "/dashboard/"


def test_login_itself_needs_the_csrf_token(client: Any) -> None:
    client.get("/dashboard/login")
    response = client.post("/dashboard/login", data={"token": TOKEN})
    assert response.status_code == 400
    assert "CSRF" in text(response)
    assert client.get("/dashboard/").status_code == 303


def test_failed_logins_are_throttled_per_client_address(client: Any) -> None:
    """Five failures (AIGATEWAY_THROTTLE_DASHBOARD_LOGIN's default '5 per 5 minutes') lock the
    address out, the right token included; another address is not affected."""
    csrf = csrf_from(text(client.get("/dashboard/login")))
    for _ in range(5):
        assert (
            client.post("/dashboard/login", data={"token": "wrong", "csrf_token": csrf}).status_code
            == 401
        )
    locked = client.post("/dashboard/login", data={"token": TOKEN, "csrf_token": csrf})
    assert locked.status_code == 429
    assert 0 < int(locked.headers["Retry-After"]) <= 300
    assert f"Try again in {locked.headers['Retry-After']} seconds" in text(locked)
    assert "Too many failed logins" in text(locked)
    assert client.get("/dashboard/").status_code == 303

    elsewhere = client.application.test_client()
    environ = {"REMOTE_ADDR": "10.9.8.7"}
    page = elsewhere.get("/dashboard/login", environ_base=environ)
    response = elsewhere.post(
        "/dashboard/login",
        environ_base=environ,
        data={"token": TOKEN, "csrf_token": csrf_from(text(page))},
    )
    assert response.status_code == 303


def test_a_successful_login_clears_the_address_failures(client: Any) -> None:
    csrf = csrf_from(text(client.get("/dashboard/login")))
    wrong = {"token": "wrong", "csrf_token": csrf}
    for _ in range(4):
        assert client.post("/dashboard/login", data=wrong).status_code == 401
    right = client.post("/dashboard/login", data={"token": TOKEN, "csrf_token": csrf})
    assert right.status_code == 303
    again = client.application.test_client()  # same address, no session
    wrong = {"token": "wrong", "csrf_token": csrf_from(text(again.get("/dashboard/login")))}
    statuses = [again.post("/dashboard/login", data=wrong).status_code for _ in range(6)]
    assert statuses == [401] * 5 + [429]


@pytest.mark.parametrize("setting", ["", None])
def test_login_throttle_can_be_turned_off(
    app_config: dict[str, Any], tmp_path: Path, closing: Any, setting: Any
) -> None:
    app = make_app(tmp_path, {**app_config, "AIGATEWAY_THROTTLE_DASHBOARD_LOGIN": setting})
    closing(app)
    client = app.test_client()
    csrf = csrf_from(text(client.get("/dashboard/login")))
    wrong = {"token": "wrong", "csrf_token": csrf}
    assert {client.post("/dashboard/login", data=wrong).status_code for _ in range(8)} == {401}
    ok = client.post("/dashboard/login", data={"token": TOKEN, "csrf_token": csrf})
    assert ok.status_code == 303


def test_csrf_refusal_changes_nothing(client: Any, app: Flask) -> None:
    csrf = login(client)
    form = {"name": "sneaky", "format": "openai", "enabled": "1"}
    missing = client.post("/dashboard/providers/new", data=form)
    assert missing.status_code == 400
    assert "CSRF check failed" in text(missing)
    forged = client.post("/dashboard/providers/new", data={**form, "csrf_token": csrf + "x"})
    assert forged.status_code == 400
    header = client.post("/dashboard/providers/new", data=form, headers={"X-CSRF-Token": "guess"})
    assert header.status_code == 400
    assert provider_count(app) == 0
    assert submit(client, "/dashboard/providers/new", csrf, **form).status_code == 303
    assert provider_count(app) == 1


def test_csrf_token_of_another_session_is_refused(app: Flask) -> None:
    first, second = app.test_client(), app.test_client()
    login(first)
    other_csrf = login(second)
    response = submit(first, "/dashboard/providers/new", other_csrf, name="p", format="openai")
    assert response.status_code == 400
    assert provider_count(app) == 0


def test_logout_ends_the_session_and_needs_post(client: Any) -> None:
    csrf = login(client)
    assert client.get("/dashboard/logout").status_code == 405
    response = submit(client, "/dashboard/logout", csrf)
    assert response.status_code == 303
    assert response.headers["Location"] == "/dashboard/login"
    assert client.get("/dashboard/").status_code == 303


def test_changing_the_token_ends_existing_sessions(client: Any, app: Flask) -> None:
    login(client)
    get_state(app).settings["AIGATEWAY_DASHBOARD_TOKEN"] = "a-new-token-0000000000"
    assert client.get("/dashboard/").status_code == 303


def test_forged_cookie_is_ignored(client: Any) -> None:
    client.set_cookie("aigw_dashboard", "gAAAAABforged", path="/dashboard")
    assert client.get("/dashboard/").status_code == 303


def test_route_prefix_applies_to_every_link_form_redirect_and_cookie(
    app_config: dict[str, Any], tmp_path: Path, closing: Any
) -> None:
    app = make_app(tmp_path, app_config, AIGATEWAY_ROUTE_PREFIX="/ai-gateway")
    closing(app)
    client = app.test_client()
    assert client.get("/dashboard/").status_code == 404
    response = client.get("/ai-gateway/dashboard/")
    assert response.headers["Location"].startswith("/ai-gateway/dashboard/login")
    page = client.get("/ai-gateway/dashboard/login")
    response = client.post(
        "/ai-gateway/dashboard/login", data={"token": TOKEN, "csrf_token": csrf_from(text(page))}
    )
    assert response.headers["Location"] == "/ai-gateway/dashboard/"
    assert "Path=/ai-gateway/dashboard" in response.headers["Set-Cookie"]
    for path in (
        "/ai-gateway/dashboard/",
        "/ai-gateway/dashboard/keys",
        "/ai-gateway/dashboard/providers/new",
        "/ai-gateway/dashboard/requests",
    ):
        body = text(client.get(path))
        urls = re.findall(r'(?:href|action|src)="([^"]*)"', body)
        assert urls
        for url in urls:
            assert url.startswith("/ai-gateway/dashboard"), (path, url)


@pytest.mark.parametrize("mount", ["", "/mnt"])
@pytest.mark.parametrize("prefix", ["", "/gw"])
def test_login_returns_to_the_deep_link_under_a_mount_and_a_route_prefix(
    app_config: dict[str, Any], tmp_path: Path, closing: Any, mount: str, prefix: str
) -> None:
    """Under a WSGI mount (SCRIPT_NAME) the login redirect dropped ``next``: the deep link
    left out the mount that the check of ``next`` expects."""
    app = make_app(tmp_path, {**app_config, "AIGATEWAY_ROUTE_PREFIX": prefix})
    closing(app)
    if mount:
        app.wsgi_app = DispatcherMiddleware(Flask("host"), {mount: app.wsgi_app})
    client = app.test_client()
    root = f"{mount}{prefix}/dashboard"
    response = client.get(f"{root}/keys?status=active")
    assert response.status_code == 303
    assert response.headers["Location"] == f"{root}/login?next={root}/keys?status%3Dactive"

    page = client.get(response.headers["Location"])
    assert f'name="next" value="{root}/keys?status=active"' in text(page)
    response = client.post(
        f"{root}/login",
        data={
            "token": TOKEN,
            "csrf_token": csrf_from(text(page)),
            "next": f"{root}/keys?status=active",
        },
    )
    assert response.status_code == 303
    assert response.headers["Location"] == f"{root}/keys?status=active"
    assert client.get(response.headers["Location"]).status_code == 200


def test_host_auth_callable_decides_and_csrf_still_applies(
    app_config: dict[str, Any], tmp_path: Path, closing: Any
) -> None:
    allowed = {"value": False}
    config = {k: v for k, v in app_config.items() if k != "AIGATEWAY_DASHBOARD_TOKEN"}
    app = make_app(tmp_path, config, AIGATEWAY_DASHBOARD_AUTH=lambda: allowed["value"])
    closing(app)
    client = app.test_client()
    assert client.get("/dashboard/").status_code == 403
    allowed["value"] = True
    page = client.get("/dashboard/providers/new")
    assert page.status_code == 200
    assert "Log out" not in text(page)
    assert client.get("/dashboard/login").headers["Location"] == "/dashboard/"
    assert (
        client.post("/dashboard/providers/new", data={"name": "p", "format": "openai"}).status_code
        == 400
    )
    assert (
        submit(
            client, "/dashboard/providers/new", csrf_from(text(page)), name="p", format="openai"
        ).status_code
        == 303
    )
    assert provider_count(app) == 1


def test_host_auth_may_answer_with_its_own_redirect(
    app_config: dict[str, Any], tmp_path: Path, closing: Any
) -> None:
    app = make_app(tmp_path, app_config, AIGATEWAY_DASHBOARD_AUTH=lambda: redirect("/host-login"))
    closing(app)
    response = app.test_client().get("/dashboard/keys")
    assert (response.status_code, response.headers["Location"]) == (302, "/host-login")


def test_host_auth_by_dotted_path(app_config: dict[str, Any], tmp_path: Path, closing: Any) -> None:
    app = make_app(tmp_path, app_config, AIGATEWAY_DASHBOARD_AUTH="test_dashboard:allow_all")
    closing(app)
    assert security.host_auth(get_state(app)) is allow_all
    assert app.test_client().get("/dashboard/keys").status_code == 200
    with pytest.raises(ConfigError, match="cannot be imported"):
        make_app(
            tmp_path / "other", app_config, AIGATEWAY_DASHBOARD_AUTH="no_such_module_here:allow"
        )


def test_host_auth_returning_something_else_fails_closed(
    app_config: dict[str, Any], tmp_path: Path, closing: Any
) -> None:
    app = make_app(tmp_path, app_config, AIGATEWAY_DASHBOARD_AUTH=lambda: "yes")
    closing(app)
    response = app.test_client().get("/dashboard/")
    assert response.status_code == 500
    assert "must return True" in text(response)


def test_security_headers(client: Any) -> None:
    login(client)
    response = client.get("/dashboard/keys")
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Cache-Control"] == "no-store"
    assert "<script>" not in text(response)
    assert re.search(r"<[^>]*\son[a-z]+\s*=", text(response)) is None, "inline event handler"
    assert re.search(r"<[^>]*\sstyle\s*=", text(response)) is None, "inline style"


def test_unmatched_dashboard_paths_carry_the_security_headers(client: Any) -> None:
    """An unknown dashboard page and a wrong method are refused by routing before the
    blueprint is known; they carry the dashboard's headers all the same (the host's paths
    are left alone)."""
    token = login(client)
    unknown, wrong = client.get("/dashboard/nope"), client.get("/dashboard/keys/x/revoke")
    assert (unknown.status_code, wrong.status_code) == (404, 405)
    assert wrong.headers["Allow"] == "POST, OPTIONS"
    for response in (unknown, wrong):
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["Cache-Control"] == "no-store"
    # Unsafe methods too, logged in or not (no CSRF form to expire, no page to log into).
    for method in ("DELETE", "PUT", "POST"):
        wrong = client.open("/dashboard/keys", method=method)
        assert (wrong.status_code, wrong.headers["Allow"]) == (405, "GET, HEAD, OPTIONS")
    options = client.options("/dashboard/keys")
    assert (options.status_code, options.headers["Allow"]) == (204, "GET, HEAD, OPTIONS")
    assert submit(client, "/dashboard/logout", token).status_code == 303
    assert client.delete("/dashboard/keys").status_code == 405
    assert client.get("/dashboard/nope").status_code == 404
    host = client.get("/not-the-dashboard")
    assert host.status_code == 404 and "Content-Security-Policy" not in host.headers


def test_host_templates_win_and_the_host_loader_is_untouched(
    app_config: dict[str, Any], tmp_path: Path, closing: Any
) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "base.html").write_text("host base")
    (templates / "login.html").write_text("host login")
    app = Flask(
        "dashboard_host", instance_path=str(tmp_path / "instance"), template_folder=str(templates)
    )
    app.config.update(app_config)

    @app.get("/host")
    def host_page() -> str:
        from flask import render_template

        return render_template("base.html") + "|" + render_template("login.html")

    AIGateway(app)
    closing(app)
    assert app.template_folder == str(templates)
    client = app.test_client()
    assert text(client.get("/host")) == "host base|host login"
    assert "Log in to the dashboard" in text(client.get("/dashboard/login"))
