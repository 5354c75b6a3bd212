"""The dashboard in a real headless Chromium (Playwright), served under ``/ai-gateway``.

An operator logs in, creates a provider on the fake OpenAI upstream, a model with two
deployments, a team and a key; clients call the API with the OpenAI SDK; the operator sees
the traffic in the charts and the log. Also: CSRF refusal, logout, the locked page, no
secret in any page's HTML, and every detail page's numbers against the request log. Every page
is screenshotted into ``tests/screenshots/`` (ignored by git); the detail pages into pytest's
``tmp_path`` and, with ``AIGATEWAY_TEST_SCREENSHOT_DIR=docs/screenshots``, into the docs.
Chromium is Debian's (``apt-get install -y chromium``), never a Playwright download.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from conftest import unavailable
from dashboard_helpers import FLASK_SECRET, TOKEN
from flask import Flask

from flask_aigateway import AIGateway
from flask_aigateway.extension import get_state
from flask_aigateway.services.providers import list_providers

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("AIGATEWAY_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PREFIX = "/ai-gateway"
ROOT = PREFIX + "/dashboard"
SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"
PROVIDER_KEY = "sk-browser-provider-secret-0123456789"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("Playwright is not installed: pip install -e '.[dev]'")
    if not os.access(CHROMIUM, os.X_OK):
        unavailable(f"Chromium not found at {CHROMIUM}: apt-get install -y chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def app_config(app_config: dict[str, Any]) -> dict[str, Any]:
    return {
        **app_config,
        "AIGATEWAY_DASHBOARD_TOKEN": TOKEN,
        "SECRET_KEY": FLASK_SECRET,
        "AIGATEWAY_ROUTE_PREFIX": PREFIX,
        "AIGATEWAY_DASHBOARD_CACHE_SECONDS": 0,
    }


class Operator:
    """A browser tab that records every page it saw, its console errors, and screenshots."""

    def __init__(self, page: Any, base: str) -> None:
        self.page = page
        self.base = base
        self.pages: dict[str, str] = {}
        self.urls: set[str] = set()
        self.errors: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("dialog", lambda dialog: dialog.accept())
        SCREENSHOTS.mkdir(exist_ok=True)

    def _console(self, message: Any) -> None:
        """Record console errors (CSP violations, script errors, failed static files); a
        page answered with a deliberate 4xx status is not one."""
        if message.type != "error":
            return
        source = (message.location or {}).get("url", "")
        if message.text.startswith("Failed to load resource") and "/static/" not in source:
            return
        self.errors.append(f"{message.text} ({source})")

    def settle(self, name: str) -> str:
        """Wait for the page's script, check it is under the prefix, screenshot, record."""
        self.page.wait_for_selector("html[data-ready=true]", state="attached")
        assert self.page.url.startswith(self.base + ROOT), self.page.url
        links = self.page.eval_on_selector_all(
            "a[href], form[action], link[href], script[src]",
            "els => els.map(e => e.getAttribute('href') || e.getAttribute('action')"
            " || e.getAttribute('src'))",
        )
        outside = [link for link in links if not link.startswith(ROOT)]
        assert not outside, f"{name}: links outside {ROOT}: {outside}"
        self.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
        html = self.page.content()
        self.pages[name] = html
        self.urls.add(self.page.url)
        return html  # type: ignore[no-any-return]

    def visit(self, path: str, name: str) -> str:
        self.page.goto(self.base + ROOT + path)
        return self.settle(name)

    def submit(self, name: str, button: str = "form.form button[type=submit]") -> str:
        with self.page.expect_navigation():
            self.page.click(button)
        return self.settle(name)

    def log_in(self) -> None:
        self.page.goto(self.base + ROOT + "/")
        self.settle("01-login")
        self.page.fill("#f-token", TOKEN)
        with self.page.expect_navigation():
            self.page.click("button[type=submit]")
        self.page.wait_for_selector("html[data-ready=true]", state="attached")
        assert self.page.url == self.base + ROOT + "/"


@pytest.fixture
def operator(browser: Any, live_server: Any) -> Iterator[Operator]:
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    tab = Operator(context.new_page(), live_server.url)
    yield tab
    context.close()


def chart_total(page: Any, name: str) -> float:
    """The sum of every dataset of a rendered chart."""
    return page.eval_on_selector(  # type: ignore[no-any-return]
        f"canvas[data-chart={name}]",
        "c => c.chart.data.datasets.reduce((s, d) => s + d.data.reduce((a, b) => a + b, 0), 0)",
    )


def test_operator_sets_up_the_gateway_and_sees_its_traffic(
    operator: Operator, live_server: Any, fake_openai: Any, app: Flask
) -> None:
    import openai

    page = operator.page
    fake_openai.require_key = PROVIDER_KEY
    operator.log_in()
    operator.settle("02-overview-empty")

    operator.visit("/providers/new", "03-provider-new")
    page.fill("#f-name", "fake-openai")
    page.select_option("#f-format", "openai")
    page.fill("#f-base_url", fake_openai.base_url)
    page.fill("#f-api_key", PROVIDER_KEY)
    detail = operator.submit("04-provider-detail")
    assert "Provider 'fake-openai' created." in detail and "****6789" in detail

    operator.visit("/models/new", "05-model-new")
    page.fill("#f-alias", "smart")
    page.select_option("#f-strategy", "round-robin")
    page.select_option("#f-provider", "fake-openai")
    page.fill("#f-model", "gpt-4o-mini")
    page.fill("#f-pricing_input", "150")
    page.fill("#f-pricing_output", "600")
    operator.submit("06-model-detail-one-deployment")
    page.click("text=Add deployment")
    operator.settle("07-deployment-new")
    page.select_option("#f-provider", "fake-openai")
    page.fill("#f-model", "gpt-4o-mini-eu")
    page.fill("#f-pricing_input", "200")
    page.fill("#f-pricing_output", "800")
    page.fill("#f-weight", "2")
    operator.submit("08-model-detail")
    assert page.locator("tr[data-deployment]").count() == 2

    operator.visit("/teams/new", "09-team-new")
    page.fill("#f-name", "research")
    page.fill("#f-budget_per_month", "50")
    page.fill("#f-models", "smart")
    operator.submit("10-team-detail-empty")
    page.click("text=Add sub-team")
    operator.settle("10a-sub-team-new")
    assert page.eval_on_selector("#f-parent", "s => s.selectedOptions[0].text") == "research"
    page.fill("#f-name", "research-nlp")
    page.fill("#f-rate_limit", "60")
    sub_team = operator.submit("10b-sub-team-detail")
    assert "research → research-nlp" in sub_team.replace("&gt;", ">")

    operator.visit("/keys/new", "11-key-new")
    page.fill("#f-name", "browser-bot")
    page.select_option("#f-team", label="research")
    page.fill("#f-budget_per_day", "5")
    page.fill("#f-rate_limit", "100")
    operator.submit("12-key-secret")
    secret = page.inner_text("#key-secret").strip()
    assert secret.startswith("aigw_")
    page.reload()
    gone = operator.settle("13-key-secret-gone")
    assert secret not in gone and "no longer available" in gone

    client = openai.OpenAI(
        base_url=live_server.url + PREFIX + "/v1", api_key=secret, max_retries=0, timeout=20
    )
    request_ids = []
    for i in range(5):
        raw = client.chat.completions.with_raw_response.create(
            model="smart", messages=[{"role": "user", "content": f"Hello {i}"}]
        )
        request_ids.append(raw.headers["x-request-id"])
    fake_openai.fail(400, "This prompt is refused.")
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model="smart", messages=[{"role": "user", "content": "refused"}]
        )
    client.close()
    served = {r.json["model"] for r in fake_openai.requests}
    assert served == {"gpt-4o-mini", "gpt-4o-mini-eu"}, "both deployments served"

    overview = operator.visit("/", "14-overview")
    assert re.search(r'data-metric="requests">6<', overview)
    assert chart_total(page, "requests") == 6
    assert chart_total(page, "cost") > 0
    assert page.eval_on_selector("canvas[data-chart=top_models]", "c => c.chart.data.labels") == [
        "smart"
    ]
    for name in ("requests", "cost", "top_models", "top_keys"):
        assert page.get_attribute(f"canvas[data-chart={name}]", "data-rendered") == "true"

    log = operator.visit("/requests", "15-requests")
    assert page.locator("tr[data-request-id]").count() == 6
    for request_id in request_ids:
        assert f'data-request-id="{request_id}"' in log
    assert chart_total(page, "by_outcome") == 6
    page.select_option("#f-status", "error")
    operator.submit("16-requests-errors", "form.filters button[type=submit]")
    assert page.locator("tr[data-request-id]").count() == 1
    page.click("tr[data-request-id] td a")
    entry = operator.settle("17-request-entry")
    assert "This prompt is refused." in entry

    for path, name in [
        ("/usage", "18-usage"),
        ("/models", "19-models"),
        ("/providers", "20-providers"),
        ("/teams", "21-teams"),
        ("/keys", "22-keys"),
    ]:
        operator.visit(path, name)
        if name == "21-teams":
            assert page.locator("span.tree.depth-1").inner_text().endswith("research-nlp")
    page.click("text=browser-bot")
    key_page = operator.settle("23-key-detail")
    assert "research" in key_page and "$5.00" in key_page
    assert (
        page.eval_on_selector(
            "canvas[data-chart=usage]", "c => c.chart.data.datasets[0].data.reduce((a, b) => a + b)"
        )
        == 6
    )
    page.click("a.chip:has-text('research'), dd a:has-text('research')")
    operator.settle("24-team-detail")
    page.click("text=Edit")
    operator.settle("25-team-edit")
    operator.visit("/providers", "20-providers")
    page.click("text=fake-openai")
    provider_page = operator.settle("26a-provider-detail")
    assert re.search(r'data-metric="requests">6<', provider_page)
    usage = page.eval_on_selector(
        "canvas[data-chart=usage]",
        "c => c.chart.data.datasets.map(d => [d.type || 'bar', d.yAxisID || 'y',"
        " d.data.reduce((a, b) => a + b, 0)])",
    )
    assert [u[:2] for u in usage] == [["bar", "y"], ["line", "y1"]]
    assert usage[0][2] == 6 and usage[1][2] > 0
    for name in ("usage", "by_model", "by_key"):
        assert page.get_attribute(f"canvas[data-chart={name}]", "data-rendered") == "true"
    page.click("a.btn:has-text('Edit')")
    edit = operator.settle("26-provider-edit")
    assert 'placeholder="stored: ****6789"' in edit

    for name, html in operator.pages.items():
        assert PROVIDER_KEY not in html, name
        assert TOKEN not in html, name
        if name != "12-key-secret":
            assert secret not in html, name
    for url in sorted(operator.urls):
        raw = page.context.request.get(url).text()
        for value in (PROVIDER_KEY, TOKEN, secret):
            assert value not in raw, url
    assert operator.errors == []


def test_forged_csrf_token_is_refused_and_changes_nothing(operator: Operator, app: Flask) -> None:
    operator.log_in()
    operator.visit("/providers/new", "27-provider-new-forged")
    page = operator.page
    page.fill("#f-name", "forged")
    page.eval_on_selector(
        "form.form input[name=csrf_token]", "input => { input.value = 'forged'; }"
    )
    with page.expect_navigation() as navigation:
        page.click("form.form button[type=submit]")
    assert navigation.value.status == 400
    page.screenshot(path=str(SCREENSHOTS / "28-csrf-refused.png"), full_page=True)
    assert "This form has expired" in page.content()
    assert list_providers(get_state(app)) == []


def test_logout_ends_the_session(operator: Operator) -> None:
    operator.log_in()
    operator.visit("/keys", "22-keys")
    with operator.page.expect_navigation():
        operator.page.click("text=Log out")
    assert operator.page.url == operator.base + ROOT + "/login"
    operator.page.goto(operator.base + ROOT + "/providers")
    assert operator.page.url.startswith(operator.base + ROOT + "/login?next=")
    assert operator.errors == []


def test_locked_dashboard_says_how_to_configure_it(
    browser: Any, app_config: dict[str, Any], tmp_path: Path
) -> None:
    from servers import LiveServer

    locked = Flask("locked", instance_path=str(tmp_path / "instance"))
    locked.config.update({k: v for k, v in app_config.items() if k != "AIGATEWAY_DASHBOARD_TOKEN"})
    AIGateway(locked)
    server = LiveServer(locked)
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        page = context.new_page()
        response = page.goto(server.url + ROOT + "/")
        assert response.status == 503
        assert "AIGATEWAY_DASHBOARD_TOKEN" in page.inner_text("body")
        page.screenshot(path=str(SCREENSHOTS / "00-locked.png"), full_page=True)
    finally:
        context.close()
        server.stop()
        get_state(locked).close()


def _cards(page: Any) -> dict[str, str]:
    """The summary cards of the page as shown: metric name -> text."""
    return page.eval_on_selector_all(  # type: ignore[no-any-return]
        "[data-metric]", "els => Object.fromEntries(els.map(e => [e.dataset.metric, e.innerText]))"
    )


def _breakdown(page: Any, group: str) -> dict[str, list[str]]:
    """A breakdown table as shown: row key (``data-row``) -> the text of its cells."""
    return page.eval_on_selector_all(  # type: ignore[no-any-return]
        f"section[data-breakdown={group}] tbody tr",
        "trs => Object.fromEntries(trs.map(tr => [tr.dataset.row,"
        " [...tr.querySelectorAll('td')].map(td => td.textContent.trim())]))",
    )


def _expected_cards(rows: list[Any]) -> dict[str, str]:
    from flask_aigateway.dashboard import formatting as fmt

    errors = sum(1 for r in rows if r.status_code >= 400)
    return {
        "requests": fmt.number(len(rows)),
        "tokens": fmt.number(sum(r.prompt_tokens + r.completion_tokens for r in rows)),
        "cost": fmt.money(sum((r.cost for r in rows), Decimal(0))),
        "errors": fmt.number(errors),
        "error_rate": fmt.percent(errors / len(rows) if rows else None),
    }


def _expected_groups(rows: list[Any], attr: str) -> dict[str, list[str]]:
    """(requests, tokens, cost, errors) per value of ``attr`` as the breakdown tables show
    them, counted from the request log itself."""
    from flask_aigateway.dashboard import formatting as fmt

    groups: dict[str, list[Any]] = {}
    for r in rows:
        slot = groups.setdefault(getattr(r, attr) or "", [0, 0, Decimal(0), 0])
        slot[0] += 1
        slot[1] += r.prompt_tokens + r.completion_tokens
        slot[2] += r.cost
        slot[3] += int(r.status_code >= 400)
    return {
        k: [fmt.number(n), fmt.number(t), fmt.exact_money(c), fmt.number(e)]
        for k, (n, t, c, e) in groups.items()
    }


def test_every_detail_page_matches_the_request_log(
    browser: Any, live_server: Any, upstreams: dict[str, Any], app: Flask, tmp_path: Path
) -> None:
    """Three keys in two teams (and one without) call three aliases on two providers through
    real HTTP; every detail page (provider, model, key, team) and the filtered request log
    show cards and breakdowns that match the request log, and each page is screenshotted at
    1280x800 into ``tmp_path`` (and into ``$AIGATEWAY_TEST_SCREENSHOT_DIR`` when set: that is
    how ``docs/screenshots/`` is made)."""
    import shutil

    import requests
    from sqlalchemy import select

    from flask_aigateway.models import ModelAlias, Provider, RequestLog
    from flask_aigateway.services.keys import create_key
    from flask_aigateway.services.models import create_model
    from flask_aigateway.services.teams import create_team

    state = get_state(app)
    create_model(
        state,
        alias="gpt-mini",
        provider="fake-openai",
        model="gpt-4o-mini-2",
        pricing_input="3",
        pricing_output="6",
    )
    science = create_team(state, name="Data Science")
    platform = create_team(state, name="Platform")
    front, front_secret = create_key(state, name="Frontend App 🚀", team="Data Science")
    batch, batch_secret = create_key(state, name="nightly batch", team="Platform")
    solo, solo_secret = create_key(state, name="solo")
    fake_openai, fake_anthropic = upstreams["gpt"], upstreams["claude"]
    url = live_server.url + PREFIX + "/v1/chat/completions"
    for secret, model, tokens, status in (
        (front_secret, "gpt", (1200, 300), 200),
        (front_secret, "gpt", (800, 90), 200),
        (front_secret, "claude", (500, 500), 200),
        (front_secret, "gpt-mini", (40, 4), 200),
        (batch_secret, "gpt-mini", (20000, 2000), 200),
        (batch_secret, "gpt-mini", (15000, 1000), 200),
        (batch_secret, "gpt", (0, 0), 400),
        (solo_secret, "claude", (70, 7), 200),
        (solo_secret, "gpt", (90, 9), 200),
    ):
        fake = fake_anthropic if model == "claude" else fake_openai
        if status == 200:
            fake.reply(text="ok", prompt_tokens=tokens[0], completion_tokens=tokens[1])
        else:
            fake.fail(status, "This prompt is refused.")
        response = requests.post(
            url,
            headers={"Authorization": f"Bearer {secret}"},
            json={"model": model, "messages": [{"role": "user", "content": "Hi"}]},
            timeout=20,
        )
        assert response.status_code == status, response.text
    with state.session() as session:
        log = list(session.scalars(select(RequestLog)))
        provider_id = session.scalar(select(Provider.id).where(Provider.name == "fake-openai"))
        gpt_id = session.scalar(select(ModelAlias.id).where(ModelAlias.alias == "gpt"))
    assert len(log) == 9

    shots = tmp_path / "screenshots"
    shots.mkdir()
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    operator = Operator(context.new_page(), live_server.url)
    page = operator.page
    seen: list[str] = []

    def visit(path: str, name: str) -> None:
        operator.visit(path, name)
        page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
        seen.append(name)

    def check(rows: list[Any], groups: dict[str, str]) -> None:
        cards = _cards(page)
        assert {k: cards[k] for k in _expected_cards(rows)} == _expected_cards(rows)
        for group, attr in groups.items():
            shown = {k: v[-4:] for k, v in _breakdown(page, group).items()}
            assert shown == _expected_groups(rows, attr), group
        for canvas in page.locator("canvas[data-chart]").all():
            assert canvas.get_attribute("data-rendered") == "true"

    try:
        operator.log_in()
        visit(f"/providers/{provider_id}", "detail-provider")
        mine = [r for r in log if r.provider == "fake-openai"]
        check(mine, {"model": "alias", "key": "key_id"})
        assert page.locator("section[data-section=recent] tr[data-request-id]").count() == 7

        visit(f"/models/{gpt_id}", "detail-model")
        mine = [r for r in log if r.alias == "gpt"]
        check(mine, {"key": "key_id", "team": "team_id"})
        assert set(_breakdown(page, "key")) == {front.id, batch.id, solo.id}
        deployments = {k: v[3:] for k, v in _breakdown(page, "deployment").items()}
        (deployment,) = {r.deployment_id for r in mine}
        errors = sum(1 for r in mine if r.status_code >= 400)
        expected = _expected_groups(mine, "deployment_id")[deployment]
        assert deployments == {
            deployment: [
                expected[0],
                expected[3],
                f"{100 * errors / len(mine):.1f}%",
                expected[1],
                expected[2],
            ]
        }

        visit(f"/keys/{front.id}", "detail-key")
        mine = [r for r in log if r.key_id == front.id]
        check(mine, {"model": "alias"})
        assert page.locator("section[data-section=limits]").count() == 1

        visit(f"/teams/{science.id}", "detail-team")
        mine = [r for r in log if r.team_id == science.id]
        check(mine, {"model": "alias", "provider": "provider", "key": "key_id"})

        visit(f"/teams/{platform.id}", "detail-team-platform")
        check([r for r in log if r.team_id == platform.id], {"model": "alias"})

        visit(f"/requests?provider=fake-openai&team={science.id}", "request-log-filtered")
        mine = [r for r in log if r.provider == "fake-openai" and r.team_id == science.id]
        check(mine, {"model": "alias"})
        assert page.locator("tr[data-request-id]").count() == len(mine) == 3

        visit("/requests?model=gpt&status=error", "request-log-errors")
        mine = [r for r in log if r.alias == "gpt" and r.status_code >= 400]
        check(mine, {"key": "key_id"})
        assert set(_breakdown(page, "key")) == {batch.id}
        assert operator.errors == []
    finally:
        context.close()
    assert seen and all((shots / f"{name}.png").stat().st_size > 10_000 for name in seen)
    target = os.environ.get("AIGATEWAY_TEST_SCREENSHOT_DIR")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        for name in seen:
            shutil.copy(shots / f"{name}.png", Path(target) / f"{name}.png")
