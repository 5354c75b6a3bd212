"""The README's generated parts stay true to the code."""

from __future__ import annotations

import re
from pathlib import Path

from flask_aigateway.providers.anthropic import PARAMETERS
from flask_aigateway.providers.openai import PARAMETERS as OPENAI_PARAMETERS
from flask_aigateway.providers.parameters import render_markdown

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_parameter_table_is_the_generated_one():
    generated = render_markdown({"openai": OPENAI_PARAMETERS, "anthropic": PARAMETERS})
    expected = generated[generated.index("- **passed**") :]
    match = re.search(
        r"<!-- parameters:start -->\n(.*?)<!-- parameters:end -->", README.read_text(), re.S
    )
    assert match, "README.md lost its parameter table markers"
    assert match.group(1) == expected, "README parameter table is stale: regenerate it"


def test_readme_holds_the_two_quick_start_commands():
    text = README.read_text()
    assert "make run" in text
    assert "make test" in text
