"""Messages of the LMDB store: append, deliver, copy, move, flags, expunge, changes, quota."""

from __future__ import annotations

import pytest
import pytest_twisted

from mailserverd.limits import MIB, Limits
from mailserverd.store.errors import Expunged, InvalidName, NotFound, OverQuota
from mailserverd.store.lmdbstore import LMDBStore
from mailserverd.store.types import AppendResult, Credentials, ScramSecrets

LIMITS = Limits(store_map_size=32 * MIB)
CREDS = Credentials(bcrypt_hash=b"$2b$04$hash", scram_sha256=ScramSecrets(b"salt", 4096, b"K" * 32, b"S" * 32))
USER = "user@example.com"
# 8-bit, CRLF, a bare LF and a NUL: stored and returned exactly
RAW = b"From: a@b.c\r\nSubject: =?utf-8?q?h=C3=A9?=\r\n\r\nbody \xe9\x00 line\nend\r\n"


def open_store(path, shards=2, limits=LIMITS):
    opened = LMDBStore.open(str(path), shards, limits)
    opened.start()
    return opened


@pytest.fixture
def store(tmp_path):
    opened = open_store(tmp_path / "data")
    pytest_twisted.blockon(opened.add_domain("example.com"))
    pytest_twisted.blockon(opened.add_user(USER, CREDS))
    yield opened
    pytest_twisted.blockon(opened.stop())


async def expect(deferred, error_type):
    with pytest.raises(error_type):
        await deferred


def inbox(store, user=USER):
    return store.get_mailbox(user, "INBOX")


def message(n: int) -> bytes:
    return f"Subject: message {n}\r\n\r\nbody {n}\r\n".encode()


@pytest_twisted.ensureDeferred
async def test_append_stores_the_exact_bytes_and_metadata(store):
    result = await store.append(USER, "inbox", RAW, ["\\seen", "\\RECENT", "$Label"], internaldate=1700000000)
    box = inbox(store)
    assert result == AppendResult(mailbox_id=box.mailbox_id, uidvalidity=box.uidvalidity, uid=1)
    stored = store.get_message(USER, box.mailbox_id, 1)
    assert stored.flags == {"\\Seen", "$Label"}  # \Recent is never stored
    assert stored.internaldate == 1700000000 and stored.size == len(RAW)
    assert store.read_message(USER, stored.blob_id) == RAW
    assert store.read_facts(USER, stored.blob_id)["size"] == len(RAW)
    assert (box.messages, box.unseen, box.size, box.uidnext) == (1, 0, len(RAW), 2)
    assert box.highestmodseq == stored.modseq
    assert store.used_bytes(USER) == len(RAW)


@pytest_twisted.ensureDeferred
async def test_append_refusals_write_nothing(store):
    before = store.last_seq(0) + store.last_seq(1)
    await expect(store.append(USER, "Nope", RAW), NotFound)
    await expect(store.append("nobody@example.com", "INBOX", RAW), NotFound)
    await expect(store.append(USER, "INBOX", RAW, ["\\Bogus"]), InvalidName)
    assert store.last_seq(0) + store.last_seq(1) == before
    with pytest.raises(Expunged):
        store.get_message(USER, inbox(store).mailbox_id, 1)


@pytest_twisted.ensureDeferred
async def test_same_content_is_one_blob_released_by_refcount(store):
    first = await store.append(USER, "INBOX", RAW)
    second = await store.append(USER, "Archive", RAW)
    one = store.get_message(USER, first.mailbox_id, first.uid)
    two = store.get_message(USER, second.mailbox_id, second.uid)
    assert one.blob_id == two.blob_id
    await store.store_flags(USER, first.mailbox_id, [first.uid], "+", ["\\Deleted"])
    assert await store.expunge(USER, first.mailbox_id) == [first.uid]
    assert store.read_message(USER, one.blob_id) == RAW  # still referenced
    await store.store_flags(USER, second.mailbox_id, [second.uid], "+", ["\\Deleted"])
    await store.expunge(USER, second.mailbox_id)
    with pytest.raises(Expunged):
        store.read_message(USER, one.blob_id)
    with pytest.raises(Expunged):
        store.read_facts(USER, one.blob_id)
    assert store.used_bytes(USER) == 0


@pytest_twisted.ensureDeferred
async def test_blob_outlives_every_reference_but_the_last(store):
    # References come from copies (no content given) and from a delivery to two
    # users of one shard (a new blob referenced twice at once); a count of 1 is
    # implicit in the store, so every path through it is exercised here.
    first = await store.append(USER, "INBOX", RAW)
    await store.copy(USER, first.mailbox_id, [first.uid], "Archive")
    await store.copy(USER, first.mailbox_id, [first.uid], "Trash")
    blob_id = store.get_message(USER, first.mailbox_id, first.uid).blob_id
    for name in ("INBOX", "Archive", "Trash"):
        box = store.get_mailbox(USER, name)
        assert store.read_message(USER, blob_id) == RAW
        await store.store_flags(USER, box.mailbox_id, [1], "+", ["\\Deleted"])
        assert await store.expunge(USER, box.mailbox_id) == [1]
    with pytest.raises(Expunged):
        store.read_message(USER, blob_id)
    other = "b@example.com"
    await store.add_user(other, CREDS)
    same_shard = ["c@example.com", "d@example.com", "e@example.com"]
    for address in same_shard:
        await store.add_user(address, CREDS)
    pair = [a for a in [other, *same_shard] if store.get_user(a).shard == store.get_user(USER).shard][:1]
    assert pair, "least-loaded placement puts another user on this shard"
    results = await store.deliver([USER, *pair], RAW)
    assert all(not isinstance(r, Exception) for r in results.values())
    for address in [USER, *pair]:
        box = inbox(store, address)
        [stored] = store.list_messages(address, box.mailbox_id)
        assert store.read_message(address, stored.blob_id) == RAW
    box = inbox(store)
    await store.store_flags(USER, box.mailbox_id, [2], "+", ["\\Deleted"])
    await store.expunge(USER, box.mailbox_id)
    for address in pair:  # still there for the other recipient
        [stored] = store.list_messages(address, inbox(store, address).mailbox_id)
        assert store.read_message(address, stored.blob_id) == RAW


@pytest_twisted.ensureDeferred
async def test_deliver_to_users_on_several_shards(store):
    others = ["b@example.com", "c@example.com", "d@example.com"]
    for address in others:
        await store.add_user(address, CREDS, quota=50 if address == "d@example.com" else 0)
    assert {store.get_user(a).shard for a in [USER, *others]} == {0, 1}
    results = await store.deliver([USER, "B@example.com", "c@example.com", "d@example.com",
                                   "nobody@example.com", USER], RAW, internaldate=1600000000)
    assert set(results) == {USER, "B@example.com", "c@example.com", "d@example.com", "nobody@example.com"}
    assert isinstance(results["nobody@example.com"], NotFound)
    assert isinstance(results["d@example.com"], OverQuota)  # and the others on its shard still get it
    for address in (USER, "b@example.com", "c@example.com"):
        result = results[address if address != "b@example.com" else "B@example.com"]
        stored = store.get_message(address, result.mailbox_id, result.uid)
        assert store.read_message(address, stored.blob_id) == RAW
        assert stored.internaldate == 1600000000 and inbox(store, address).messages == 1
    assert inbox(store, "d@example.com").messages == 0


@pytest_twisted.ensureDeferred
async def test_copy_keeps_flags_and_reports_copyuid(store):
    for n in range(1, 4):
        await store.append(USER, "INBOX", message(n), ["\\Flagged"] if n == 2 else [])
    source = inbox(store)
    result = await store.copy(USER, source.mailbox_id, [3, 2, 99], "Archive")
    archive = store.get_mailbox(USER, "Archive")
    assert result.uidvalidity == archive.uidvalidity
    assert result.source_uids == (2, 3) and result.dest_uids == (1, 2)
    copied = store.list_messages(USER, archive.mailbox_id)
    assert [m.flags for m in copied] == [{"\\Flagged"}, frozenset()]
    assert [store.read_message(USER, m.blob_id) for m in copied] == [message(2), message(3)]
    assert inbox(store).messages == 3 and archive.messages == 2 and archive.unseen == 2
    assert store.used_bytes(USER) == sum(len(message(n)) for n in (1, 2, 3, 2, 3))
    await expect(store.copy(USER, source.mailbox_id, [1], "Nope"), NotFound)
    empty = await store.copy(USER, source.mailbox_id, [42], "Archive")
    assert empty.source_uids == () and empty.dest_uids == ()


@pytest_twisted.ensureDeferred
async def test_move_expunges_the_source_in_the_same_transaction(store):
    for n in range(1, 4):
        await store.append(USER, "INBOX", message(n))
    source = inbox(store)
    used = store.used_bytes(USER)
    result = await store.move(USER, source.mailbox_id, [1, 3], "Trash")
    assert result.source_uids == (1, 3) and result.dest_uids == (1, 2)
    assert [m.uid for m in store.list_messages(USER, source.mailbox_id)] == [2]
    changes = store.changes_since(USER, source.mailbox_id, source.highestmodseq)
    assert changes.vanished == (1, 3)
    assert store.get_mailbox(USER, "Trash").messages == 2
    assert store.used_bytes(USER) == used


@pytest_twisted.ensureDeferred
async def test_move_within_one_mailbox_renumbers(store):
    await store.append(USER, "INBOX", message(1))
    box = inbox(store)
    result = await store.move(USER, box.mailbox_id, [1], "INBOX")
    assert result.dest_uids == (2,)
    assert [m.uid for m in store.list_messages(USER, box.mailbox_id)] == [2]
    assert inbox(store).messages == 1


@pytest_twisted.ensureDeferred
async def test_store_flags_modes_counters_and_modseq(store):
    for n in range(1, 4):
        await store.append(USER, "INBOX", message(n))
    box_id = inbox(store).mailbox_id
    added = await store.store_flags(USER, box_id, [1, 2], "+", ["\\Seen", "Work"])
    assert [m.uid for m in added.changed] == [1, 2] and added.failed == ()
    assert added.changed[0].modseq == added.changed[1].modseq == inbox(store).highestmodseq
    assert inbox(store).unseen == 1
    same = await store.store_flags(USER, box_id, [1], "+", ["\\Seen"])
    assert same.changed == ()  # nothing changed: no new MODSEQ
    removed = await store.store_flags(USER, box_id, [2], "-", ["Work"])
    assert removed.changed[0].flags == {"\\Seen"}
    assert removed.changed[0].modseq > added.changed[0].modseq
    replaced = await store.store_flags(USER, box_id, [1, 3], "=", ["\\Answered"])
    assert {m.uid: m.flags for m in replaced.changed} == {1: {"\\Answered"}, 3: {"\\Answered"}}
    assert inbox(store).unseen == 2
    with pytest.raises(ValueError):
        await store.store_flags(USER, box_id, [1], "?", ["\\Seen"])


@pytest_twisted.ensureDeferred
async def test_unchangedsince_refuses_messages_changed_later(store):
    for n in range(1, 3):
        await store.append(USER, "INBOX", message(n))
    box_id = inbox(store).mailbox_id
    first = store.get_message(USER, box_id, 1)
    await store.store_flags(USER, box_id, [2], "+", ["\\Flagged"])  # uid 2 now newer than first.modseq... 
    second = store.get_message(USER, box_id, 2)
    result = await store.store_flags(USER, box_id, [1, 2], "+", ["\\Seen"], unchanged_since=first.modseq)
    assert result.failed == (2,)  # RFC 7162 §3.1.3
    assert [m.uid for m in result.changed] == [1]
    assert store.get_message(USER, box_id, 2) == second
    zero = await store.store_flags(USER, box_id, [1], "+", ["X"], unchanged_since=0)
    assert zero.failed == (1,) and zero.changed == ()


@pytest_twisted.ensureDeferred
async def test_expunge_all_deleted_or_only_a_uid_subset(store):
    for n in range(1, 6):
        await store.append(USER, "INBOX", message(n))
    box_id = inbox(store).mailbox_id
    await store.store_flags(USER, box_id, [1, 2, 4], "+", ["\\Deleted"])
    assert await store.expunge(USER, box_id, [2, 3, 4]) == [2, 4]
    assert [m.uid for m in store.list_messages(USER, box_id)] == [1, 3, 5]
    assert await store.expunge(USER, box_id) == [1]
    assert await store.expunge(USER, box_id) == []
    box = inbox(store)
    assert (box.messages, box.unseen, box.uidnext) == (2, 2, 6)
    assert box.size == len(message(3)) + len(message(5))


@pytest_twisted.ensureDeferred
async def test_changes_since_reports_changed_and_vanished(store):
    for n in range(1, 5):
        await store.append(USER, "INBOX", message(n))
    box_id = inbox(store).mailbox_id
    mark = inbox(store).highestmodseq
    await store.store_flags(USER, box_id, [2], "+", ["\\Seen"])
    await store.store_flags(USER, box_id, [3], "+", ["\\Deleted"])
    await store.expunge(USER, box_id)
    await store.append(USER, "INBOX", message(5))
    changes = store.changes_since(USER, box_id, mark)
    assert [m.uid for m in changes.changed] == [2, 5]
    assert changes.vanished == (3,)
    assert changes.highestmodseq == inbox(store).highestmodseq
    everything = store.changes_since(USER, box_id, 0)
    assert [m.uid for m in everything.changed] == [1, 2, 4, 5]
    assert store.changes_since(USER, box_id, changes.highestmodseq).changed == ()


@pytest_twisted.ensureDeferred
async def test_change_log_records_every_mutation_kind(store):
    shard = store.get_user(USER).shard
    user_id = store.get_user(USER).user_id
    start = store.last_seq(shard)
    appended = await store.append(USER, "INBOX", RAW, ["\\Seen"], internaldate=1500000000)
    await store.store_flags(USER, appended.mailbox_id, [1], "+", ["\\Deleted"])
    await store.expunge(USER, appended.mailbox_id)
    created = await store.create_mailbox(USER, "Box")
    await store.rename_mailbox(USER, "Box", "Box2")
    await store.subscribe(USER, "Box2", True)
    await store.delete_mailbox(USER, "Box2")
    log = store.read_changes(shard, start)
    blob_id = store.read_changes(shard, start, limit=1)[0].data["blob_ids"][0]
    assert [(c.kind, c.user_id, c.mailbox_id) for c in log] == [
        ("append", user_id, appended.mailbox_id),
        ("flags", user_id, appended.mailbox_id),
        ("expunge", user_id, appended.mailbox_id),
        ("mailbox-create", user_id, created.mailbox_id),
        ("mailbox-rename", user_id, created.mailbox_id),
        ("subscribe", user_id, created.mailbox_id),
        ("mailbox-delete", user_id, created.mailbox_id),
    ]
    assert [c.seq for c in log] == list(range(start + 1, start + 8))
    assert log[0].data == {"uids": [1], "blob_ids": [blob_id], "sizes": [len(RAW)],
                           "flags": [["\\Seen"]], "internaldates": [1500000000]}
    assert log[1].data == {"uids": [1], "flags": [["\\Deleted", "\\Seen"]]}
    assert log[2].data == {"uids": [1]}
    assert log[3].data == {"name": "Box", "uidvalidity": created.uidvalidity, "special_use": None}
    assert log[4].data == {"old": "Box", "new": "Box2"}
    assert log[5].data == {"name": "Box2", "subscribed": True}
    assert log[6].data == {"name": "Box2"}
    assert len(store.read_changes(shard, start, limit=3)) == 3
    await store.remove_user(USER)
    last = store.read_changes(shard, start + 7)
    assert [(c.kind, c.data) for c in last] == [("account-delete", {"address": USER})]


@pytest_twisted.ensureDeferred
async def test_modseqs_only_grow(store):
    box_id = inbox(store).mailbox_id
    seen = []
    for n in range(1, 6):
        await store.append(USER, "INBOX", message(n))
        seen.append(inbox(store).highestmodseq)
        await store.store_flags(USER, box_id, [n], "+", ["\\Seen"])
        seen.append(store.get_message(USER, box_id, n).modseq)
    assert seen == sorted(seen) and len(set(seen)) == len(seen)


@pytest_twisted.ensureDeferred
async def test_uids_are_never_reused_across_expunge_and_reopen(tmp_path):
    path = tmp_path / "data"
    store = open_store(path)
    await store.add_domain("example.com")
    await store.add_user(USER, CREDS)
    for n in range(1, 4):
        await store.append(USER, "INBOX", message(n))
    box_id = inbox(store).mailbox_id
    await store.store_flags(USER, box_id, [2, 3], "+", ["\\Deleted"])
    await store.expunge(USER, box_id)
    assert (await store.append(USER, "INBOX", message(4))).uid == 4
    await store.store_flags(USER, box_id, [4], "+", ["\\Deleted"])
    await store.expunge(USER, box_id)
    last_seq = store.last_seq(store.get_user(USER).shard)
    await store.stop()
    store = open_store(path)
    try:
        assert inbox(store).uidnext == 5
        assert (await store.append(USER, "INBOX", message(5))).uid == 5
        assert [m.uid for m in store.list_messages(USER, box_id)] == [1, 5]
        assert store.get_message(USER, box_id, 5).modseq > last_seq
    finally:
        await store.stop()


@pytest_twisted.ensureDeferred
async def test_quota_exact_boundary(store):
    await store.set_quota(USER, 100)
    await store.append(USER, "INBOX", b"x" * 60)
    box = inbox(store)
    seq = store.last_seq(store.get_user(USER).shard)
    await expect(store.append(USER, "INBOX", b"y" * 41), OverQuota)
    assert inbox(store) == box and store.last_seq(store.get_user(USER).shard) == seq  # nothing written
    await store.append(USER, "INBOX", b"z" * 40)  # exactly at the quota
    assert store.used_bytes(USER) == 100
    await expect(store.append(USER, "INBOX", b"!"), OverQuota)
    await expect(store.copy(USER, box.mailbox_id, [1], "Archive"), OverQuota)
    moved = await store.move(USER, box.mailbox_id, [1], "Archive")  # a move adds nothing
    assert moved.dest_uids == (1,)
    await store.set_quota(USER, 0)  # unlimited
    await store.append(USER, "INBOX", b"w" * 1000)


@pytest_twisted.inlineCallbacks
def test_uids_first_unseen_and_keywords_without_reading_every_message(store):
    """SELECT's needs: UIDs from the keys, the first unseen message, the keyword list."""
    for number in range(6):
        flags = ["\\Seen"] if number in (0, 1, 3) else []
        yield store.append(USER, "INBOX", b"Subject: %d\r\n\r\nx\r\n" % number, flags + (["$Work"] if number == 2 else []))
    box = store.get_mailbox(USER, "INBOX")
    assert store.list_uids(USER, box.mailbox_id) == [1, 2, 3, 4, 5, 6]
    assert store.first_unseen_uid(USER, box.mailbox_id) == 3
    assert box.keywords == ("$Work",)
    yield store.store_flags(USER, box.mailbox_id, [3, 5, 6], "+", ["\\Seen", "Later"])
    assert store.first_unseen_uid(USER, box.mailbox_id) is None and store.get_mailbox(USER, "INBOX").unseen == 0
    yield store.store_flags(USER, box.mailbox_id, [2], "-", ["\\Seen"])
    assert store.first_unseen_uid(USER, box.mailbox_id) == 2
    assert store.get_mailbox(USER, "INBOX").keywords == ("$Work", "Later")
    yield store.expunge(USER, box.mailbox_id, None)
    other = store.get_mailbox(USER, "Trash")
    assert store.list_uids(USER, other.mailbox_id) == [] and store.first_unseen_uid(USER, other.mailbox_id) is None


@pytest_twisted.inlineCallbacks
def test_first_unseen_when_the_oldest_or_everything_is_unseen(store):
    for flags in ([], ["\\Seen"], []):
        yield store.append(USER, "Archive", b"Subject: a\r\n\r\nx\r\n", flags)
    box = store.get_mailbox(USER, "Archive")
    assert store.first_unseen_uid(USER, box.mailbox_id) == 1  # the oldest is unseen itself
    yield store.store_flags(USER, box.mailbox_id, [1], "+", ["\\Seen"])
    assert store.first_unseen_uid(USER, box.mailbox_id) == 3
    yield store.store_flags(USER, box.mailbox_id, [1, 2, 3], "-", ["\\Seen"])
    assert store.first_unseen_uid(USER, box.mailbox_id) == 1  # all unseen: from the counters
