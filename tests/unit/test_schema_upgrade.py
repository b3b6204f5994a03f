"""Stores written by earlier schema versions open, upgrade once, and read back the same.

Each ``tests/data/stores/schema-N.tar.gz`` was written by the release that
wrote schema N (``make_store.py`` beside it says how) and holds what it made in
``expected.json``.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
import pytest_twisted
from twisted.logger import globalLogPublisher

from mailserverd.limits import MIB, Limits
from mailserverd.store import keys
from mailserverd.store.env import SCHEMA_KEY, open_env
from mailserverd.store.errors import SchemaMismatch
from mailserverd.store.fsck import check_store
from mailserverd.store.lmdbstore import LMDBStore
from mailserverd.store.migrations import SCHEMA_VERSION, STEPS

STORES = Path(__file__).resolve().parents[1] / "data" / "stores"
ARCHIVES = sorted(STORES.glob("schema-*.tar.gz"))


def test_every_older_schema_has_a_store_and_a_step():
    versions = {int(path.name.split("-")[1].split(".")[0]) for path in ARCHIVES}
    assert versions == set(range(1, SCHEMA_VERSION)), "keep a store of each earlier schema"
    assert set(STEPS) == versions


def unpack(archive: Path, into: Path) -> tuple[Path, dict]:
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    data = into / "data"
    return data, json.loads((data / "expected.json").read_text())


def view(store, expected: dict) -> dict:
    """What the store holds, in the shape make_store.py wrote down."""
    seen = {}
    for user in expected:
        boxes = {}
        for info in store.list_mailboxes(user):
            boxes[info.name] = {
                "uidvalidity": info.uidvalidity, "uidnext": info.uidnext,
                "special_use": info.special_use,
                "messages": [[m.uid, sorted(m.flags), store.read_message(user, m.blob_id).decode()]
                             for m in store.list_messages(user, info.mailbox_id)],
            }
        seen[user] = boxes
    return seen


@pytest.mark.parametrize("archive", ARCHIVES, ids=lambda path: path.name)
@pytest_twisted.ensureDeferred
async def test_an_older_store_is_upgraded_and_reads_the_same(tmp_path, archive):
    data, expected = unpack(archive, tmp_path)
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        for attempt in range(2):  # the second open finds nothing to do
            store = LMDBStore.open(str(data), 2, Limits(store_map_size=8 * MIB))
            store.start()
            try:
                seen = view(store, expected)
                if attempt == 0:
                    assert seen == expected
                # Still writable: a new message gets the next UID.
                result = await store.append("alice@example.test", "INBOX", b"Subject: after\r\n\r\nx\r\n")
                assert result.uid == expected["alice@example.test"]["INBOX"]["uidnext"] + attempt
            finally:
                await store.stop()
    finally:
        globalLogPublisher.removeObserver(events.append)
    upgrades = [event for event in events if event.get("log_format", "").startswith("store-upgraded")]
    assert len(upgrades) == 3, upgrades  # meta and both shards, on the first open only
    assert check_store(str(data)).problems == []


def test_a_newer_schema_is_refused_with_a_clear_message(tmp_path):
    path = str(tmp_path / "env")
    env = open_env(path, 8 * MIB, ("info",), {}, "shard")
    with env.env.begin(write=True, db=env.dbs["info"]) as txn:
        txn.put(SCHEMA_KEY, keys.u64(SCHEMA_VERSION + 1))
    env.close()
    with pytest.raises(SchemaMismatch, match=r"written by a newer version of mailserverd"):
        open_env(path, 8 * MIB, ("info",), {}, "shard")
