"""IMAP message commands (STORE, COPY, MOVE, EXPUNGE, CLOSE, UNSELECT, CHECK) as
transcripts against the sans-I/O session, over the real LMDB store."""

from __future__ import annotations


import pytest
import pytest_twisted
from hypothesis import given, settings, strategies as st
from twisted.internet.defer import gatherResults

from mailserverd.imap.commands.copy import number_set
from mailserverd.imap.commands.store import parse_store
from mailserverd.imap.parser import ArgCursor, ParseError
from mailserverd.limits import MIB, Limits

from imap_real_store import USER, RealStoreClient, open_store, seen_before

LIMITS = Limits(store_map_size=32 * MIB)


def message(n: int) -> bytes:
    return b"From: a@example.test\r\nSubject: message %d\r\n\r\nbody %d\r\n" % (n, n)


@pytest.fixture
def store(tmp_path):
    yield from open_store(tmp_path, LIMITS)


class Client(RealStoreClient):
    """The shared real-store client, with a SELECT for these tests."""

    async def select(self, name: bytes = b"INBOX", verb: bytes = b"SELECT") -> bytes:
        await self.login()
        await seen_before(self.store)  # what is there now is not \Recent here
        reply = await self.cmd(b"S " + verb + b" " + name)
        assert b"S OK" in reply, reply
        return reply


async def filled(store, count: int, flags=()) -> None:
    for n in range(1, count + 1):
        await store.append(USER, "INBOX", message(n), flags)


async def selected(store, count: int, flags=()) -> Client:
    """A logged-in client with INBOX selected, holding ``count`` messages with ``flags``."""
    await filled(store, count, flags)
    client = Client(store)
    await client.select()
    return client


def mailbox_flags(store, name="INBOX") -> dict[int, set[str]]:
    box = store.get_mailbox(USER, name)
    return {m.uid: set(m.flags) for m in store.list_messages(USER, box.mailbox_id)}


def lines(reply: bytes) -> list[bytes]:
    return reply.split(b"\r\n")[:-1]


# ---------------------------------------------------------------- number sets


def test_number_set_compresses_runs_and_keeps_order():
    assert number_set([1, 2, 3, 5, 7, 8]) == b"1:3,5,7:8"
    assert number_set([4]) == b"4"
    assert number_set([9, 10, 2]) == b"9:10,2"


# ---------------------------------------------------------------- STORE


@pytest_twisted.ensureDeferred
async def test_store_add_remove_replace_with_fetch_responses(store):
    c = await selected(store, 3)
    assert await c.cmd(b"a STORE 1:2 +FLAGS (\\Seen $Label)") == (
        b"* 1 FETCH (FLAGS (\\Seen $Label))\r\n* 2 FETCH (FLAGS (\\Seen $Label))\r\n"
        b"a OK Store completed\r\n")
    assert await c.cmd(b"b STORE 2 -FLAGS $Label") == b"* 2 FETCH (FLAGS (\\Seen))\r\nb OK Store completed\r\n"
    assert await c.cmd(b"c STORE 3 FLAGS (\\flagged \\DELETED)") == (
        b"* 3 FETCH (FLAGS (\\Deleted \\Flagged))\r\nc OK Store completed\r\n")
    assert mailbox_flags(store) == {1: {"\\Seen", "$Label"}, 2: {"\\Seen"}, 3: {"\\Deleted", "\\Flagged"}}


@pytest_twisted.ensureDeferred
async def test_store_silent_and_unchanged_messages(store):
    c = await selected(store, 2, ["\\Seen"])
    assert await c.cmd(b"a STORE 1:* +FLAGS.SILENT (\\Answered)") == b"a OK Store completed\r\n"
    # no change at all: the current flags are still reported (RFC 3501 §6.4.6)
    assert await c.cmd(b"b STORE 1 +FLAGS (\\Seen)") == (
        b"* 1 FETCH (FLAGS (\\Answered \\Seen))\r\nb OK Store completed\r\n")
    assert await c.cmd(b"c STORE 1 FLAGS ()") == b"* 1 FETCH (FLAGS ())\r\nc OK Store completed\r\n"
    assert mailbox_flags(store) == {1: set(), 2: {"\\Seen", "\\Answered"}}


@pytest_twisted.ensureDeferred
async def test_uid_store_reports_uid_and_ignores_missing_uids(store):
    c = await selected(store, 3)
    assert await c.cmd(b"a UID STORE 2,7:9 +FLAGS (\\Flagged)") == (
        b"* 2 FETCH (UID 2 FLAGS (\\Flagged))\r\na OK Store completed\r\n")
    assert await c.cmd(b"b UID STORE 50 +FLAGS (\\Flagged)") == b"b OK Store completed\r\n"


@pytest.mark.parametrize("line, text", [
    (b"a STORE 1 +FLAGS (\\Bogus)", b"a BAD Invalid system flag"),
    (b"a STORE 1 +FLAGS (\\*)", b"a BAD Expected a flag"),
    (b"a STORE 1 XFLAGS (\\Seen)", b"a BAD Expected FLAGS, +FLAGS or -FLAGS"),
    (b"a STORE 1 +FLAGS.LOUD (\\Seen)", b"a BAD Expected FLAGS, +FLAGS or -FLAGS"),
    (b"a STORE 1 +FLAGS", b"a BAD Expected a space between arguments"),
    (b"a STORE 1 +FLAGS (\\Seen", b"a BAD Expected a space between arguments"),
    (b"a STORE 1 +FLAGS (\\Seen) x)", b"a BAD Unexpected extra arguments"),
    (b"a STORE 4 +FLAGS (\\Seen)", b"a BAD Invalid message sequence number"),
    (b"a STORE 1 (FOO 1) +FLAGS (\\Seen)", b"a BAD Unknown or repeated store modifier"),
    (b"a STORE 1 (UNCHANGEDSINCE 1 UNCHANGEDSINCE 2) +FLAGS x", b"a BAD Unknown or repeated store modifier"),
    (b"a STORE 1 (UNCHANGEDSINCE 99999999999999999999) +FLAGS x", b"a BAD Mod-sequence out of range"),
    (b"a STORE 1 () +FLAGS x", b"a BAD Empty store modifier list"),
    (b"a STORE", b"a BAD Expected a space between arguments"),
])
@pytest_twisted.ensureDeferred
async def test_store_bad_syntax(store, line, text):
    c = await selected(store, 3)
    assert await c.cmd(line) == text + b"\r\n"
    assert mailbox_flags(store) == {1: set(), 2: set(), 3: set()}


@pytest_twisted.ensureDeferred
async def test_store_recent_is_ignored(store):
    c = await selected(store, 1)
    assert await c.cmd(b"a STORE 1 +FLAGS (\\Recent \\Seen)") == (
        b"* 1 FETCH (FLAGS (\\Seen))\r\na OK Store completed\r\n")


@pytest_twisted.ensureDeferred
async def test_read_only_mailbox_refuses_changes(store):
    await filled(store, 2, ["\\Deleted"])
    c = Client(store)
    await c.select(verb=b"EXAMINE")
    for line in (b"a STORE 1 +FLAGS (\\Seen)", b"a UID STORE 1 +FLAGS (\\Seen)", b"a EXPUNGE",
                 b"a UID EXPUNGE 1", b"a MOVE 1 Trash", b"a UID MOVE 1 Trash"):
        assert await c.cmd(line) == b"a NO [READ-ONLY] Mailbox is read-only\r\n", line
    # COPY from a read-only mailbox is fine; CLOSE there expunges nothing
    assert (await c.cmd(b"b COPY 1 Trash")).startswith(b"b OK [COPYUID ")
    assert await c.cmd(b"c CLOSE") == b"c OK Close completed\r\n"
    assert mailbox_flags(store) == {1: {"\\Deleted"}, 2: {"\\Deleted"}}


# ---------------------------------------------------------------- CONDSTORE


@pytest_twisted.ensureDeferred
async def test_unchangedsince_modifies_and_reports_modseq(store):
    c = await selected(store, 3)
    box = store.get_mailbox(USER, "INBOX")
    before = {m.uid: m.modseq for m in store.list_messages(USER, box.mailbox_id)}
    # message 2 changes after the client's snapshot
    await store.store_flags(USER, box.mailbox_id, [2], "+", ["$Other"])
    reply = await c.cmd(b"a STORE 1:3 (UNCHANGEDSINCE %d) +FLAGS.SILENT (\\Deleted)" % max(before.values()))
    after = {m.uid: m for m in store.list_messages(USER, box.mailbox_id)}
    # A QRESYNC server sends UID too once CONDSTORE is on (RFC 7162 §3.2.4).
    assert lines(reply) == [
        b"* 1 FETCH (UID 1 MODSEQ (%d))" % after[1].modseq,
        b"* 2 FETCH (UID 2 MODSEQ (%d) FLAGS ($Other))" % after[2].modseq,
        b"* 3 FETCH (UID 3 MODSEQ (%d))" % after[3].modseq,
        b"a OK [MODIFIED 2] Conditional STORE failed",
    ]
    assert "\\Deleted" not in after[2].flags and "\\Deleted" in after[3].flags
    assert "CONDSTORE" in c.session.enabled
    # from now on plain STOREs carry MODSEQ too (RFC 7162 §3.1.3)
    reply = await c.cmd(b"b UID STORE 1 -FLAGS (\\Deleted)")
    modseq = store.get_message(USER, box.mailbox_id, 1).modseq
    assert reply == b"* 1 FETCH (UID 1 MODSEQ (%d) FLAGS ())\r\nb OK Store completed\r\n" % modseq


@pytest_twisted.ensureDeferred
async def test_unchangedsince_zero_always_fails_with_uids_for_uid_store(store):
    c = await selected(store, 2)
    reply = await c.cmd(b"a UID STORE 1:2 (UNCHANGEDSINCE 0) +FLAGS.SILENT ($MDNSent)")
    assert lines(reply)[-1] == b"a OK [MODIFIED 1:2] Conditional STORE failed"
    assert mailbox_flags(store) == {1: set(), 2: set()}


# ---------------------------------------------------------------- COPY / MOVE


@pytest_twisted.ensureDeferred
async def test_copy_and_uid_copy_answer_copyuid(store):
    c = await selected(store, 3, ["\\Seen"])
    trash = store.get_mailbox(USER, "Trash")
    assert await c.cmd(b"a COPY 1,3 Trash") == b"a OK [COPYUID %d 1,3 1:2] Copy completed\r\n" % trash.uidvalidity
    assert await c.cmd(b"b UID COPY 2:* Trash") == b"b OK [COPYUID %d 2:3 3:4] Copy completed\r\n" % trash.uidvalidity
    assert await c.cmd(b"c UID COPY 99 Trash") == b"c OK No messages copied\r\n"
    assert mailbox_flags(store, "Trash") == {uid: {"\\Seen"} for uid in (1, 2, 3, 4)}
    assert len(mailbox_flags(store)) == 3


@pytest_twisted.ensureDeferred
async def test_copy_to_missing_mailbox_is_trycreate(store):
    c = await selected(store, 1)
    assert await c.cmd(b"a COPY 1 Nowhere") == b"a NO [TRYCREATE] Mailbox doesn't exist\r\n"
    assert await c.cmd(b"b MOVE 1 Nowhere") == b"b NO [TRYCREATE] Mailbox doesn't exist\r\n"
    assert len(mailbox_flags(store)) == 1


@pytest_twisted.ensureDeferred
async def test_sequence_copy_of_an_expunged_message_copies_nothing(store):
    c = await selected(store, 2, ["\\Deleted"])
    box = store.get_mailbox(USER, "INBOX")
    await store.expunge(USER, box.mailbox_id, [2])  # another session
    expected = b"a NO [EXPUNGEISSUED] Some of the requested messages no longer exist\r\n"
    assert await c.cmd(b"a COPY 1:2 Trash") == expected
    assert await c.cmd(b"a MOVE 1:2 Trash") == expected
    assert mailbox_flags(store, "Trash") == {}
    # the UID forms skip it
    trash = store.get_mailbox(USER, "Trash")
    assert await c.cmd(b"b UID COPY 1:2 Trash") == (
        b"* 2 EXPUNGE\r\nb OK [COPYUID %d 1 1] Copy completed\r\n" % trash.uidvalidity)


@pytest_twisted.ensureDeferred
async def test_sequence_move_of_many_messages_with_one_expunged_moves_nothing(store):
    await gatherResults([store.append(USER, "INBOX", message(n)) for n in range(40)])
    c = Client(store)
    await c.select()
    box = store.get_mailbox(USER, "INBOX")
    await store.store_flags(USER, box.mailbox_id, [33], "+", ["\\Deleted"])
    await store.expunge(USER, box.mailbox_id)  # another session
    assert await c.cmd(b"a MOVE 1:40 Trash") == (
        b"a NO [EXPUNGEISSUED] Some of the requested messages no longer exist\r\n")
    assert mailbox_flags(store, "Trash") == {} and len(mailbox_flags(store)) == 39


@pytest_twisted.ensureDeferred
async def test_move_sends_copyuid_then_expunges(store):
    c = await selected(store, 4)
    archive = store.get_mailbox(USER, "Archive")
    assert lines(await c.cmd(b"a MOVE 2:3 Archive")) == [
        b"* OK [COPYUID %d 2:3 1:2] Moved" % archive.uidvalidity,
        b"* 3 EXPUNGE",
        b"* 2 EXPUNGE",
        b"a OK Move completed",
    ]
    assert c.session.selected.uids == [1, 4]
    assert lines(await c.cmd(b"b UID MOVE 4 Archive")) == [
        b"* OK [COPYUID %d 4 3] Moved" % archive.uidvalidity,
        b"* 2 EXPUNGE",
        b"b OK Move completed",
    ]
    assert sorted(mailbox_flags(store)) == [1]
    assert sorted(mailbox_flags(store, "Archive")) == [1, 2, 3]
    assert await c.cmd(b"c UID MOVE 2:3 Archive") == b"c OK No messages moved\r\n"


@pytest_twisted.ensureDeferred
async def test_move_into_the_selected_mailbox(store):
    c = await selected(store, 1)
    inbox = store.get_mailbox(USER, "INBOX")
    assert lines(await c.cmd(b"a MOVE 1 INBOX")) == [
        b"* OK [COPYUID %d 1 2] Moved" % inbox.uidvalidity,
        b"* 1 EXPUNGE",
        b"* 1 EXISTS",
        b"* 1 RECENT",  # this session is the first told of the moved message
        b"a OK Move completed",
    ]
    assert c.session.selected.uids == [2]


@pytest_twisted.ensureDeferred
async def test_move_under_qresync_sends_vanished_and_highestmodseq(store):
    c = await selected(store, 3)
    c.session.enabled.add("QRESYNC")  # what ENABLE QRESYNC does
    reply = lines(await c.cmd(b"a MOVE 1:2 Junk"))
    modseq = store.get_mailbox(USER, "INBOX").highestmodseq
    assert reply[1:] == [b"* VANISHED 1:2", b"a OK [HIGHESTMODSEQ %d] Move completed" % modseq]


# ---------------------------------------------------------------- EXPUNGE / CLOSE / UNSELECT / CHECK


@pytest_twisted.ensureDeferred
async def test_expunge_reports_highest_first(store):
    c = await selected(store, 5)
    await c.cmd(b"a STORE 2,4:5 +FLAGS.SILENT (\\Deleted)")
    assert await c.cmd(b"b EXPUNGE") == b"* 5 EXPUNGE\r\n* 4 EXPUNGE\r\n* 2 EXPUNGE\r\nb OK Expunge completed\r\n"
    assert sorted(mailbox_flags(store)) == [1, 3]
    assert await c.cmd(b"c EXPUNGE") == b"c OK Expunge completed\r\n"


@pytest_twisted.ensureDeferred
async def test_uid_expunge_only_the_named_uids(store):
    c = await selected(store, 4, ["\\Deleted"])
    assert await c.cmd(b"a UID EXPUNGE 2:3,9") == b"* 3 EXPUNGE\r\n* 2 EXPUNGE\r\na OK Expunge completed\r\n"
    assert sorted(mailbox_flags(store)) == [1, 4]
    assert await c.cmd(b"b UID EXPUNGE 50") == b"b OK Expunge completed\r\n"
    assert (await c.cmd(b"c UID EXPUNGE")).startswith(b"c BAD ")
    assert (await c.cmd(b"d EXPUNGE 1")).startswith(b"d BAD ")


@pytest_twisted.ensureDeferred
async def test_expunge_under_qresync_is_vanished(store):
    c = await selected(store, 3, ["\\Deleted"])
    c.session.enabled.add("QRESYNC")
    reply = await c.cmd(b"a EXPUNGE")
    modseq = store.get_mailbox(USER, "INBOX").highestmodseq
    assert reply == b"* VANISHED 1:3\r\na OK [HIGHESTMODSEQ %d] Expunge completed\r\n" % modseq


@pytest_twisted.ensureDeferred
async def test_expunge_also_reports_other_sessions_changes(store):
    c = await selected(store, 3, ["\\Deleted"])
    box = store.get_mailbox(USER, "INBOX")
    await store.expunge(USER, box.mailbox_id, [1])  # another session
    await store.append(USER, "INBOX", message(9))
    assert await c.cmd(b"a UID EXPUNGE 3") == (
        b"* 3 EXPUNGE\r\n* 1 EXPUNGE\r\n* 2 EXISTS\r\n* 1 RECENT\r\na OK Expunge completed\r\n")


@pytest_twisted.ensureDeferred
async def test_close_expunges_silently_and_deselects(store):
    c = await selected(store, 3)
    await c.cmd(b"a STORE 2 +FLAGS.SILENT (\\Deleted)")
    assert await c.cmd(b"b CLOSE") == b"b OK Close completed\r\n"
    assert sorted(mailbox_flags(store)) == [1, 3]
    assert await c.cmd(b"c NOOP") == b"c OK NOOP completed\r\n"
    assert await c.cmd(b"d CLOSE") == b"d BAD No mailbox selected\r\n"
    assert await c.cmd(b"e STORE 1 +FLAGS (\\Seen)") == b"e BAD No mailbox selected\r\n"


@pytest_twisted.ensureDeferred
async def test_unselect_keeps_deleted_messages(store):
    c = await selected(store, 2, ["\\Deleted"])
    assert (await c.cmd(b"a UNSELECT x")).startswith(b"a BAD ")
    assert await c.cmd(b"b UNSELECT") == b"b OK Unselect completed\r\n"
    assert c.session.selected is None
    assert sorted(mailbox_flags(store)) == [1, 2]
    assert await c.cmd(b"c UNSELECT") == b"c BAD No mailbox selected\r\n"


@pytest_twisted.ensureDeferred
async def test_check_reports_changes(store):
    c = await selected(store, 1)
    await store.append(USER, "INBOX", message(2))
    assert await c.cmd(b"a CHECK") == b"* 2 EXISTS\r\n* 1 RECENT\r\na OK Check completed\r\n"


# ---------------------------------------------------------------- parser properties


@given(st.lists(st.integers(1, 60), unique=True).map(sorted).filter(bool))
def test_number_set_expands_back_to_its_numbers(numbers):
    expanded = []
    for part in number_set(numbers).split(b","):
        low, _, high = part.partition(b":")
        expanded.extend(range(int(low), int(high or low) + 1))
    assert expanded == numbers


_STORE_WORDS = st.sampled_from([b" ", b"1", b"*", b":", b",", b"(", b")", b"+FLAGS", b"-FLAGS.SILENT",
                                b"FLAGS", b"UNCHANGEDSINCE", b"\\Seen", b"\\", b"$kw", b"0", b"\"",
                                b"99999999999999999999", b"\\*", b"{3}", b"\xff", b"\x00"])


@settings(max_examples=400, deadline=None)
@given(st.lists(_STORE_WORDS, max_size=12).map(b"".join))
def test_store_arguments_parse_or_raise_parse_error_only(tail):
    try:
        request = parse_store(ArgCursor((tail,)))
    except ParseError:
        return
    assert request.mode in "+-=" and all(isinstance(flag, str) for flag in request.flags)
