"""The store's claim of new messages (claim_recent), its boundary in the mailbox
record, and that the boundary survives a restart and old records."""

from __future__ import annotations

import pytest
import pytest_twisted

from mailserverd.limits import MIB, Limits
from mailserverd.store import records
from mailserverd.store.errors import NotFound
from mailserverd.store.lmdbstore import LMDBStore

from imap_real_store import CREDS, USER

LIMITS = Limits(store_map_size=32 * MIB)


def message(n: int) -> bytes:
    return b"Subject: message %d\r\n\r\nbody %d\r\n" % (n, n)


def started(path) -> LMDBStore:
    opened = LMDBStore.open(str(path), 1, LIMITS)
    opened.start()
    return opened


@pytest.fixture
def data_dir(tmp_path):
    return tmp_path / "data"


@pytest.fixture
def store(data_dir):
    opened = started(data_dir)
    pytest_twisted.blockon(opened.add_domain("example.test"))
    pytest_twisted.blockon(opened.add_user(USER, CREDS))
    yield opened
    pytest_twisted.blockon(opened.stop())


def inbox(store):
    return store.get_mailbox(USER, "INBOX")


@pytest_twisted.ensureDeferred
async def test_each_uid_is_claimed_once(store):
    box = inbox(store)
    assert box.first_recent_uid == 1
    assert await store.claim_recent(USER, box.mailbox_id) == range(1, 1)  # nothing there yet
    for n in range(3):
        await store.append(USER, "INBOX", message(n))
    assert store.count_messages_from(USER, box.mailbox_id, inbox(store).first_recent_uid) == 3
    assert await store.claim_recent(USER, box.mailbox_id) == range(1, 4)
    assert inbox(store).first_recent_uid == 4
    assert store.count_messages_from(USER, box.mailbox_id, 4) == 0
    assert await store.claim_recent(USER, box.mailbox_id) == range(4, 4)
    await store.deliver([USER], message(9))
    assert await store.claim_recent(USER, box.mailbox_id) == range(4, 5)


@pytest_twisted.ensureDeferred
async def test_claims_made_together_share_out_the_uids(store):
    """Claims queued in one writer batch each get their own UIDs, none twice."""
    box = inbox(store)
    for n in range(5):
        await store.append(USER, "INBOX", message(n))
    first = store.claim_recent(USER, box.mailbox_id)
    appended = store.append(USER, "INBOX", message(6))
    second = store.claim_recent(USER, box.mailbox_id)
    third = store.claim_recent(USER, box.mailbox_id)
    assert [await first, await second, await third] == [range(1, 6), range(6, 7), range(7, 7)]
    assert (await appended).uid == 6


@pytest_twisted.ensureDeferred
async def test_claiming_changes_no_modseq_and_logs_nothing(store):
    box = inbox(store)
    await store.append(USER, "INBOX", message(1))
    before = inbox(store)
    last = store.last_seq(0)
    await store.claim_recent(USER, box.mailbox_id)
    after = inbox(store)
    assert after.highestmodseq == before.highestmodseq and store.last_seq(0) == last
    assert (after.messages, after.unseen, after.uidnext) == (before.messages, before.unseen, before.uidnext)


@pytest_twisted.ensureDeferred
async def test_copies_and_moves_land_unclaimed(store):
    """RFC 3501 §6.4.7: copies SHOULD be recent in the destination: they are new
    there, for whoever claims the destination next."""
    source = inbox(store)
    for n in range(2):
        await store.append(USER, "INBOX", message(n))
    await store.claim_recent(USER, source.mailbox_id)
    archive = store.get_mailbox(USER, "Archive")
    await store.copy(USER, source.mailbox_id, [1], "Archive")
    await store.move(USER, source.mailbox_id, [2], "Archive")
    assert await store.claim_recent(USER, archive.mailbox_id) == range(1, 3)
    assert await store.claim_recent(USER, source.mailbox_id) == range(3, 3)


@pytest_twisted.ensureDeferred
async def test_claim_of_a_missing_mailbox_fails(store):
    with pytest.raises(NotFound):
        await store.claim_recent(USER, 999)
    with pytest.raises(NotFound):
        await store.claim_recent("nobody@example.test", 1)


@pytest_twisted.ensureDeferred
async def test_the_boundary_survives_a_restart(data_dir, store):
    for n in range(2):
        await store.append(USER, "INBOX", message(n))
    mailbox_id = inbox(store).mailbox_id
    assert await store.claim_recent(USER, mailbox_id) == range(1, 3)
    await store.append(USER, "INBOX", message(3))
    await store.stop()

    reopened = started(data_dir)
    try:
        assert inbox(reopened).first_recent_uid == 3
        assert await reopened.claim_recent(USER, mailbox_id) == range(3, 4)  # only the unclaimed one
        assert await reopened.claim_recent(USER, mailbox_id) == range(4, 4)
    finally:
        await reopened.stop()
    # the fixture's stop() of the first store is a no-op now


def test_a_record_written_before_the_boundary_was_kept_has_nothing_recent():
    """Old mailbox records have no ``first_recent``: their mail predates the
    claims, so it counts as claimed (an upgrade makes no old mail new)."""
    new = records.MailboxRecord("INBOX", 7, 42, 99, 41, 3, 1000, None, ["$Work"], first_recent_uid=40)
    assert records.decode_mailbox(records.encode_mailbox(new)) == new
    old = records.pack({"name": "INBOX", "uidvalidity": 7, "uidnext": 42, "highestmodseq": 99,
                        "messages": 41, "unseen": 3, "size": 1000, "special_use": None})
    decoded = records.decode_mailbox(old)
    assert decoded.first_recent_uid == 42 and decoded.keywords == []
    assert decoded.info(5, True).first_recent_uid == 42
