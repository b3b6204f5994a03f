"""The ``store`` fixture of the transcript tests (imported by each test module).

The IMAP replay runs ImapSession on the real store client of the IMAP unit
tests (tests/unit/imap_real_store.py), which these tests share. Not a
conftest.py: the tests import ``conftest`` (tests/conftest.py) by name, and a
second module of that name beside it would shadow it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The unit tests' shared clients are imported from their directory, as the
# unit tests themselves do (pytest puts a test file's directory on the path).
UNIT = str(Path(__file__).resolve().parents[1] / "unit")
if UNIT not in sys.path:
    sys.path.insert(0, UNIT)

from imap_real_store import open_store  # noqa: E402


@pytest.fixture
def store(tmp_path):
    """A started real LMDB store holding alice@example.test."""
    yield from open_store(tmp_path)
