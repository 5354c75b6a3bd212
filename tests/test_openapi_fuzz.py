"""schemathesis against a live gateway: every /v1 operation of ``/v1/openapi.json``, fuzzed
with bounded, derandomized examples (valid and invalid), answers no 5xx, a documented status
and content type, and a body that matches its documented schema."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable

schemathesis = pytest.importorskip("schemathesis")

from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

pytestmark = pytest.mark.slow

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
MAX_EXAMPLES = 25


def with_model(case: Any, alias: str) -> Any:
    """The case with a configured alias as its body's model (when the body is an object)."""
    if isinstance(case.body, dict):
        case.body = {**case.body, "model": alias}
    return case


@pytest.mark.timeout(300)
def test_schemathesis_finds_no_5xx_and_no_schema_violation(
    live_server: Any, api_key: str, upstreams: dict[str, Any]
) -> None:
    schema = schemathesis.openapi.from_url(live_server.url + "/v1/openapi.json")
    base_url = live_server.url + "/v1"
    headers = {"Authorization": f"Bearer {api_key}"}
    session = requests.Session()
    operations = [result.ok() for result in schema.get_all_operations()]
    seen: set[tuple[str, int]] = set()
    assert len(operations) >= 14
    for operation in operations:
        strategies = [
            (mode, operation.as_strategy(generation_mode=mode))
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        ]
        if operation.method.upper() == "POST":
            # Random model names stop at 404; with a real alias the fuzzed body goes upstream.
            alias = "claude" if "/messages" in operation.path else "gpt"
            strategies.append(
                (
                    GenerationMode.POSITIVE,
                    operation.as_strategy().map(lambda case, a=alias: with_model(case, a)),
                )
            )
        for mode, strategy in strategies:

            @given(case=strategy)
            @settings(
                max_examples=MAX_EXAMPLES,
                deadline=None,
                derandomize=True,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def fuzz(case: Any) -> None:
                response = case.call_and_validate(
                    base_url=base_url,
                    session=session,
                    headers=headers,
                    checks=CHECKS,
                    timeout=20,
                )
                seen.add((case.operation.label, response.status_code))

            try:
                fuzz()
            except Unsatisfiable:
                # An operation with no parameters and no body has no invalid request to make.
                assert mode is GenerationMode.NEGATIVE, operation.label
    session.close()
    # The fuzz went past validation: fuzzed bodies reached the upstreams and were answered.
    for label in ("POST /chat/completions", "POST /messages", "POST /responses"):
        assert (label, 200) in seen, sorted(seen)
