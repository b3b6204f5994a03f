"""Sphinx directives that write reference text from the code itself, never a copy of it.

``.. mailserverd-config::`` renders every table and key of the configuration
from :mod:`mailserverd.config` (each field's ``doc``, default and table) and
every ``[limits]`` entry from :data:`mailserverd.limits.LIMIT_SPECS`.
``.. mailserverd-cli::`` renders the command line from ``cli.build_parser()``.
``.. mailserverd-metrics::`` renders every metric of :data:`mailserverd.metrics.METRIC_SPECS`.
"""

from __future__ import annotations

import argparse
from dataclasses import MISSING, fields
from pathlib import Path

from docutils import nodes
from docutils.parsers.rst import Directive
from docutils.statemachine import StringList
from sphinx.util.nodes import nested_parse_with_titles


def _default_text(spec) -> str:
    if spec.default is not MISSING:
        value = spec.default
    elif spec.default_factory is not MISSING:
        return "(computed at start)"
    else:
        return "(required)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "(none)"
    if isinstance(value, (str, Path)):
        return f'"{value}"'
    if isinstance(value, tuple):
        return "[" + ", ".join(f'"{item}"' for item in value) + "]"
    return str(value)


def config_lines() -> list[str]:
    """The configuration reference as reStructuredText lines."""
    from mailserverd import config
    from mailserverd.limits import LIMIT_SPECS

    lines: list[str] = []
    tables = [(name, schema, f"[{name}]") for name, schema in config._TABLES.items()]
    tables.insert(2, ("listener", config.ListenerConfig, "[[listener]]"))
    for name, schema, title in tables:
        lines += [f"``{title}``", "~" * (len(title) + 4), ""]
        summary = (schema.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
        summary = summary.removeprefix(f"``{title}``:").strip()  # the heading says it
        summary = summary[:1].upper() + summary[1:]
        lines += [summary, ""]
        for spec in fields(schema):
            doc = spec.metadata.get("doc", "")
            default = _default_text(spec)
            if name == "listener" and spec.name == "port":
                default = "the kind's IANA port (25, 587, 465, 143, 993, 110, 995)"
            lines += [f"``{spec.name}``", f"   {doc} Default: ``{default}``." if doc
                      else f"   Default: ``{default}``.", ""]
    title = "[limits]"
    lines += [f"``{title}``", "~" * (len(title) + 4), "",
              "Every size, count and time the server enforces; a value outside its bounds "
              "stops the start.", ""]
    for spec in LIMIT_SPECS:
        lines += [f"``{spec.name}``",
                  f"   {spec.doc} Default: ``{spec.default}`` {spec.unit}; "
                  f"from {spec.minimum} to {spec.maximum}.", ""]
    return lines


def _subcommands(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                yield name, helps.get(name) or "", sub


def cli_lines() -> list[str]:
    """Every subcommand of ``mailserverd``, with its usage and help."""
    from mailserverd.cli import build_parser

    lines: list[str] = []

    def walk(parser, prefix: str, help_text: str) -> None:
        subs = list(_subcommands(parser))
        if not subs or prefix == "mailserverd":
            if prefix != "mailserverd":
                usage = " ".join(parser.format_usage().split())
                usage = usage.removeprefix("usage: ")
                lines.extend([f"``{usage}``", f"   {help_text or parser.description or ''}", ""])
        for name, text, sub in subs:
            walk(sub, f"{prefix} {name}", text or help_text)

    walk(build_parser(), "mailserverd", "")
    return lines


def metrics_lines() -> list[str]:
    """Every exported metric: its name, type, labels and meaning."""
    from mailserverd.metrics import METRIC_SPECS

    kinds = {"counter": "counter", "gauge": "gauge", "histogram": "histogram",
             "sampled": "gauge, read at each scrape"}
    lines: list[str] = []
    for spec in METRIC_SPECS:
        labels = ", ".join(f"``{label}``" for label in spec.labels) or "none"
        lines += [f"``{spec.exported}``",
                  f"   *{kinds[spec.kind]}*; labels: {labels}. {spec.doc}", ""]
    return lines


class _Generated(Directive):
    has_content = False
    make_lines = staticmethod(lambda: [])

    def run(self):
        container = nodes.container()
        nested_parse_with_titles(self.state, StringList(self.make_lines(), source="(generated)"),
                                 container)
        return container.children


class ConfigReference(_Generated):
    make_lines = staticmethod(config_lines)


class CliReference(_Generated):
    make_lines = staticmethod(cli_lines)


class MetricsReference(_Generated):
    make_lines = staticmethod(metrics_lines)


def setup(app):
    app.add_directive("mailserverd-config", ConfigReference)
    app.add_directive("mailserverd-cli", CliReference)
    app.add_directive("mailserverd-metrics", MetricsReference)
    return {"parallel_read_safe": True, "version": "1"}
