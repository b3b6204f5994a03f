"""The documentation builds without a warning, and its references are written from the code."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.mark.parametrize("builder", ["html", "man"])
def test_docs_build_without_warnings(tmp_path, builder):
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-E", "-W", "--keep-going", "-q", "-b", builder,
         str(DOCS), str(tmp_path / builder)],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    if builder == "html":  # the metric reference is written from the code
        from mailserverd.metrics import METRIC_SPECS
        page = (tmp_path / builder / "monitoring.html").read_text()
        for spec in METRIC_SPECS:
            assert spec.exported in page, spec.exported


def test_man_pages_hold_the_generated_references(tmp_path):
    subprocess.run([sys.executable, "-m", "sphinx", "-E", "-q", "-b", "man", str(DOCS),
                    str(tmp_path)], check=True, capture_output=True, timeout=300)
    config_page = (tmp_path / "mailserverd.toml.5").read_text()
    from mailserverd import config
    from mailserverd.limits import LIMIT_SPECS
    for schema in list(config._TABLES.values()) + [config.ListenerConfig]:
        for spec in fields(schema):
            assert spec.name.replace("_", "\\_") in config_page or spec.name in config_page, spec.name
    for spec in LIMIT_SPECS:
        assert spec.name.replace("_", "\\_") in config_page or spec.name in config_page, spec.name
    command_page = (tmp_path / "mailserverd.8").read_text()
    for command in ("serve", "check\\-config", "user add", "alias add"):
        assert command in command_page, command
