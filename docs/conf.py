"""Sphinx configuration: ``sphinx-build -W -b html docs docs/_build`` (and ``-b man``)."""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))
sys.path.insert(0, str(HERE.parent))

from mailserverd import __version__  # noqa: E402

project = "mailserverd"
author = "the mailserverd authors"
copyright = "the mailserverd authors"
version = release = __version__
extensions = ["mailserverd_reference"]
exclude_patterns = ["_build"]
root_doc = "index"
html_theme = "alabaster"
man_pages = [
    ("man/mailserverd", "mailserverd", "SMTP, IMAP4 and POP3 mail server", [author], 8),
    ("man/mailserverd.toml", "mailserverd.toml", "mailserverd configuration file", [author], 5),
]
