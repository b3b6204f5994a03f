"""import_folders against a real store: a read error part way, and re-running is safe."""

from __future__ import annotations

import pytest
import pytest_twisted

from imap_real_store import USER, open_store
from mailserverd.migration.transfer import ImportFolder, ImportStopped, import_folders


@pytest.fixture
def store(tmp_path):
    yield from open_store(tmp_path)


def source(broken: set[int]):
    """Five messages, two of them equal (same bytes and date); those in ``broken`` fail to read."""
    items = list(range(5))

    def load(n):
        if n in broken:
            raise OSError(5, "Input/output error")
        same = n in (3, 4)
        return (b"Subject: %d\r\n\r\nbody\r\n" % (3 if same else n), {"\\Seen"} if n == 1 else set(),
                1700000000 + (3 if same else n))

    return ImportFolder("Imported/2020", items, load, lambda n: f"message {n}")


def stored(store) -> list[tuple]:
    box = store.get_mailbox(USER, "Imported/2020")
    return [(store.read_message(USER, m.blob_id), sorted(m.flags), m.internaldate)
            for m in store.list_messages(USER, box.mailbox_id)]


@pytest_twisted.ensureDeferred
async def test_a_read_error_stops_with_exact_counts_and_a_rerun_adds_only_the_rest(store):
    with pytest.raises(ImportStopped) as stopped:
        await import_folders(store, USER, [source({2})], batch_max=1, bytes_max=1 << 20)
    message = str(stopped.value)
    assert message.startswith("cannot read message 2: Input/output error; 2 of 5 messages were imported")
    assert "Re-running the same import is safe" in message
    assert len(stored(store)) == 2
    result = await import_folders(store, USER, [source(set())], batch_max=64, bytes_max=1 << 20)
    assert (result.done, result.skipped, result.mailboxes) == (3, 2, 0)
    assert [internaldate for _, _, internaldate in stored(store)] == [
        1700000000, 1700000001, 1700000002, 1700000003, 1700000003]  # both equal copies kept
    again = await import_folders(store, USER, [source(set())], batch_max=64, bytes_max=1 << 20)
    assert (again.done, again.skipped) == (0, 5)
    assert stored(store)[1][1] == ["\\Seen"]
    assert "Imported/2020" in store.list_subscriptions(USER)


@pytest_twisted.ensureDeferred
async def test_a_refused_message_stops_the_import(store):
    await store.set_quota(USER, 30)
    with pytest.raises(ImportStopped, match="the store refused a message: .*quota.*; 1 of 5 messages"):
        await import_folders(store, USER, [source(set())], batch_max=64, bytes_max=1 << 20)
