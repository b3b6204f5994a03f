"""Schema upgrades: what opening a store written by an older version does to it.

Each environment's ``info`` sub-database keeps the schema version it was
written with (env.py). Opening one with an older version runs every step from
that version up to :data:`SCHEMA_VERSION` in the same write transaction that
records the new version, so an upgrade is all or nothing and running it twice
does nothing the second time. A newer version is refused (env.py).

Kept in step with the stores under tests/data/stores/: each earlier schema
has a small store written by the release that wrote it, which a test opens,
upgrades and reads back (tests/unit/test_schema_upgrade.py). Add the store
for the current schema there *before* changing it.
"""

from __future__ import annotations

from typing import Callable

#: Version of the layout of the environments this code reads and writes.
SCHEMA_VERSION = 3


def _v1_to_v2(txn, dbs: dict, what: str) -> None:
    """Schema 2 added sub-databases (the search index, the spam classifier's
    tokens, the HTTP gateway's tokens and messages: opening creates them
    empty), ``first_recent`` in mailbox records and ``source`` in the change
    records of copies and moves (records.py: both decode from older records
    without them: no mailbox gets recent messages, no old move trains the
    spam filter). No record needs rewriting."""


def _v2_to_v3(txn, dbs: dict, what: str) -> None:
    """Schema 3 added the ``datakeys`` sub-database of encryption at rest
    (opening creates it empty) and sealed blobs (a blob format of their own,
    keyed by user); blobs written before stay readable as they are."""


#: ``from_version -> step``: the step takes ``(txn, dbs, what)`` and must
#: leave the environment valid for ``from_version + 1``.
STEPS: dict[int, Callable] = {1: _v1_to_v2, 2: _v2_to_v3}


def upgrade(txn, dbs: dict, version: int, what: str) -> list[int]:
    """Run the steps from ``version`` to SCHEMA_VERSION in ``txn``; return the
    versions passed through (``[1]`` for 1 -> 2). Raises KeyError for a version
    with no step (the caller refuses the store)."""
    passed = []
    while version < SCHEMA_VERSION:
        STEPS[version](txn, dbs, what)
        passed.append(version)
        version += 1
    return passed
