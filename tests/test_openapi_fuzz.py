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


@pytest.mark.timeout(300)
def test_schemathesis_finds_no_5xx_and_no_schema_violation(
    live_server: Any, api_key: str, upstreams: dict[str, Any]
) -> None:
    schema = schemathesis.openapi.from_url(live_server.url + "/v1/openapi.json")
    base_url = live_server.url + "/v1"
    headers = {"Authorization": f"Bearer {api_key}"}
    session = requests.Session()
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 14
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=MAX_EXAMPLES,
                deadline=None,
                derandomize=True,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def fuzz(case: Any) -> None:
                case.call_and_validate(
                    base_url=base_url,
                    session=session,
                    headers=headers,
                    checks=CHECKS,
                    timeout=20,
                )

            try:
                fuzz()
            except Unsatisfiable:
                # An operation with no parameters and no body has no invalid request to make.
                assert mode is GenerationMode.NEGATIVE, operation.label
    session.close()
