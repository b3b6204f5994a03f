"""CONDSTORE / QRESYNC (RFC 7162) and sessions seeing each other's changes, as
transcripts of two sans-I/O sessions over one real LMDB store."""

from __future__ import annotations

import re

import pytest
import pytest_twisted

from mailserverd.imap.commands.condstore import parse_fetch_modifiers, parse_select_params
from mailserverd.imap.parser import ArgCursor, ParseError
from mailserverd.limits import MIB, Limits

from imap_real_store import USER, RealStoreClient, open_store, seen_before



def message(n: int) -> bytes:
    return b"From: a@example.test\r\nSubject: message %d\r\n\r\nbody %d\r\n" % (n, n)


@pytest.fixture
def store(tmp_path):
    yield from open_store(tmp_path, Limits(store_map_size=32 * MIB))


class Client(RealStoreClient):
    """The shared real-store client, with a SELECT for these tests."""

    async def select(self, line: bytes = b"S SELECT INBOX", *extensions: str) -> bytes:
        await self.login(*extensions)
        await seen_before(self.store)  # what is there now is not \Recent here
        reply = await self.cmd(line)
        assert re.search(rb"(?m)^S OK", reply), reply
        return reply


async def fill(store, count: int, flags=()) -> None:
    for n in range(1, count + 1):
        await store.append(USER, "INBOX", message(n), flags)


def inbox(store):
    return store.get_mailbox(USER, "INBOX")


def modseq_of(store, uid: int) -> int:
    return store.get_message(USER, inbox(store).mailbox_id, uid).modseq


# ---------------------------------------------------------------- other sessions' changes


@pytest_twisted.ensureDeferred
async def test_noop_reports_new_and_expunged_messages(store):
    await fill(store, 3)
    c1, c2 = Client(store), Client(store)
    await c1.select()
    await c2.select()
    assert await c2.cmd(b"a UID STORE 2 +FLAGS.SILENT (\\Deleted)") == b"a OK Store completed\r\n"
    assert (await c2.cmd(b"b EXPUNGE")).startswith(b"* 2 EXPUNGE\r\n")
    await fill(store, 2)
    assert await c1.cmd(b"n NOOP") == b"* 2 EXPUNGE\r\n* 4 EXISTS\r\n* 2 RECENT\r\nn OK NOOP completed\r\n"
    assert c1.session.selected.uids == [1, 3, 4, 5]
    assert await c1.cmd(b"m NOOP") == b"m OK NOOP completed\r\n"


@pytest_twisted.ensureDeferred
async def test_flag_changes_of_another_session_are_reported_once(store):
    await fill(store, 2)
    c1, c2 = Client(store), Client(store)
    await c1.select()
    await c2.select()
    await c2.cmd(b"a STORE 2 +FLAGS (\\Flagged $Work)")
    assert await c1.cmd(b"n NOOP") == b"* 2 FETCH (FLAGS (\\Flagged $Work))\r\nn OK NOOP completed\r\n"
    assert await c1.cmd(b"n NOOP") == b"n OK NOOP completed\r\n"
    # The session's own change was answered by its STORE: not reported again.
    assert await c2.cmd(b"n NOOP") == b"n OK NOOP completed\r\n"


@pytest_twisted.ensureDeferred
async def test_unsolicited_fetch_carries_uid_and_modseq_once_condstore_is_on(store):
    await fill(store, 2)
    c1, c2 = Client(store), Client(store)
    await c1.select(b"S SELECT INBOX (CONDSTORE)")
    await c2.select()
    await c2.cmd(b"a STORE 1 +FLAGS (\\Seen)")
    # RFC 7162 §3.2.4: UID and MODSEQ in every unsolicited FETCH.
    assert await c1.cmd(b"n NOOP") == (b"* 1 FETCH (UID 1 FLAGS (\\Seen) MODSEQ (%d))\r\n"
                                       b"n OK NOOP completed\r\n" % modseq_of(store, 1))


@pytest_twisted.ensureDeferred
async def test_imap4rev2_unsolicited_fetch_has_uid(store):
    await fill(store, 1)
    c1, c2 = Client(store), Client(store)
    await c1.select(b"S SELECT INBOX", "IMAP4REV2")
    await c2.select()
    await c2.cmd(b"a STORE 1 +FLAGS (\\Answered)")
    assert await c1.cmd(b"n NOOP") == b"* 1 FETCH (UID 1 FLAGS (\\Answered))\r\nn OK NOOP completed\r\n"


@pytest_twisted.ensureDeferred
async def test_qresync_reports_vanished_instead_of_expunge(store):
    await fill(store, 4)
    c1, c2 = Client(store), Client(store)
    await c1.select(b"S SELECT INBOX", "QRESYNC")
    await c2.select()
    await c2.cmd(b"a STORE 2:3 +FLAGS.SILENT (\\Deleted)")
    await c2.cmd(b"b EXPUNGE")
    assert await c1.cmd(b"n NOOP") == b"* VANISHED 2:3\r\nn OK NOOP completed\r\n"
    assert c1.session.selected.uids == [1, 4]


@pytest_twisted.ensureDeferred
async def test_expunges_wait_while_sequence_numbers_are_in_use(store):
    await fill(store, 3)
    c1, c2 = Client(store), Client(store)
    await c1.select()
    await c2.select()
    await c2.cmd(b"a STORE 1 +FLAGS.SILENT (\\Deleted)")
    await c2.cmd(b"b EXPUNGE")
    await fill(store, 1)
    # RFC 3501 §7.4.1: during a command using sequence numbers, no EXPUNGE.
    c1.session.report_mailbox_changes(expunges_allowed=False)
    # RECENT follows once the claim of message 4 is written (no command waits for it here).
    assert await c1.wait_for(lambda data: data == b"* 4 EXISTS\r\n* 1 RECENT\r\n")
    c1.out.take()
    assert c1.session.selected.uids == [1, 2, 3, 4]
    assert await c1.cmd(b"f FETCH 1 UID") == (
        b"f NO [EXPUNGEISSUED] Some of the requested messages no longer exist\r\n")
    assert await c1.cmd(b"n NOOP") == b"* 1 EXPUNGE\r\nn OK NOOP completed\r\n"
    assert c1.session.selected.uids == [2, 3, 4]


@pytest_twisted.ensureDeferred
async def test_message_added_and_removed_between_reports_is_not_mentioned(store):
    await fill(store, 1)
    c1, c2 = Client(store), Client(store)
    await c1.select()
    await c2.select()
    await fill(store, 1)
    assert (await c2.cmd(b"n NOOP")).startswith(b"* 2 EXISTS\r\n")
    await c2.cmd(b"a UID STORE 2 +FLAGS.SILENT (\\Deleted)")
    await c2.cmd(b"b UID EXPUNGE 2")
    assert await c1.cmd(b"n NOOP") == b"n OK NOOP completed\r\n"


# ---------------------------------------------------------------- SELECT / EXAMINE


@pytest_twisted.ensureDeferred
async def test_select_condstore_sends_highestmodseq_and_enables(store):
    await fill(store, 2)
    c = Client(store)
    plain = await c.select(b"S EXAMINE INBOX")
    assert b"HIGHESTMODSEQ" not in plain
    assert "CONDSTORE" not in c.session.enabled
    reply = await c.cmd(b"T SELECT INBOX (CONDSTORE)")
    highest = inbox(store).highestmodseq
    assert reply.startswith(b"* OK [CLOSED] Previous mailbox closed\r\n")
    assert b"* OK [HIGHESTMODSEQ %d] " % highest in reply
    assert reply.endswith(b"T OK [READ-WRITE] Select completed\r\n")
    assert "CONDSTORE" in c.session.enabled
    # Once on, every SELECT/EXAMINE sends it (RFC 7162 §3.1.2.1).
    assert b"* OK [HIGHESTMODSEQ %d] " % highest in await c.cmd(b"U EXAMINE INBOX")


@pytest.mark.parametrize("params,error", [
    (b" ()", b"Empty SELECT parameter list"),
    (b" (BOGUS)", b"Unknown or repeated SELECT parameter"),
    (b" (CONDSTORE CONDSTORE)", b"Unknown or repeated SELECT parameter"),
    (b" (CONDSTORE", b"Expected a space between arguments"),
    (b" CONDSTORE", b"Expected '('"),
    (b" (QRESYNC (1 0))", b"Mod-sequence out of range"),
    (b" (QRESYNC (0 5))", b"Expected a non-zero number"),
    (b" (QRESYNC (1 5 1:* (1:* 3)))", b"'*' is not allowed in sequence match data"),
    (b" (QRESYNC (1 5 1:9 (1:2 3)))", b"Sequence match data of unequal length"),
    (b" (QRESYNC (1 99999999999999999999))", b"Mod-sequence out of range"),
    (b" (QRESYNC (1 5) x)", b"Unknown or repeated SELECT parameter"),
])
def test_select_parameter_syntax(params, error):
    with pytest.raises(ParseError) as raised:
        parse_select_params(ArgCursor((params,)))
    assert str(raised.value).encode() == error


def test_select_parameters_parse():
    params = parse_select_params(ArgCursor((b" (CONDSTORE QRESYNC (67890007 90060115194045000 "
                                            b"41:211,214:541 (5,7 41,43)))",)))
    assert params.condstore
    assert params.qresync.uidvalidity == 67890007
    assert params.qresync.modseq == 90060115194045000
    assert list(params.qresync.known_uids.bounds(0)) == [(41, 211), (214, 541)]
    assert params.qresync.seq_match == ((5, 41), (7, 43))
    assert parse_select_params(ArgCursor((b" (QRESYNC (1 2 (1 5)))",))).qresync.seq_match == ((1, 5),)


@pytest_twisted.ensureDeferred
async def test_qresync_select_needs_enable(store):
    c = Client(store)
    await c.login()
    assert await c.cmd(b"S SELECT INBOX (QRESYNC (1 1))") == b"S BAD QRESYNC needs ENABLE QRESYNC first\r\n"
    assert c.session.selected is None


async def _qresync_setup(store):
    """Five messages; the client's cache is as of ``known``; then 2 and 4 expunged,
    3 flagged. Returns (uidvalidity, known modseq)."""
    await fill(store, 5)
    known = inbox(store).highestmodseq
    other = Client(store)
    await other.select()
    await other.cmd(b"a UID STORE 2,4 +FLAGS.SILENT (\\Deleted)")
    await other.cmd(b"b UID EXPUNGE 2,4")
    await other.cmd(b"c UID STORE 3 +FLAGS.SILENT ($Done)")
    return inbox(store).uidvalidity, known


@pytest_twisted.ensureDeferred
async def test_qresync_select_reports_vanished_earlier_and_changed_flags(store):
    uidvalidity, known = await _qresync_setup(store)
    c = Client(store)
    reply = await c.select(b"S SELECT INBOX (QRESYNC (%d %d))" % (uidvalidity, known), "QRESYNC")
    lines = reply.split(b"\r\n")
    assert b"* 3 EXISTS" in lines
    assert b"* OK [HIGHESTMODSEQ %d] Highest mailbox mod-sequence" % inbox(store).highestmodseq in lines
    tail = lines[lines.index(b"* VANISHED (EARLIER) 2,4"):]
    assert tail == [b"* VANISHED (EARLIER) 2,4",
                    b"* 2 FETCH (UID 3 FLAGS ($Done) MODSEQ (%d))" % modseq_of(store, 3),
                    b"S OK [READ-WRITE] Select completed", b""]
    # Nothing is reported again afterwards.
    assert await c.cmd(b"n NOOP") == b"n OK NOOP completed\r\n"


@pytest_twisted.ensureDeferred
async def test_qresync_select_known_uids_seq_match_and_uidvalidity(store):
    uidvalidity, known = await _qresync_setup(store)
    c = Client(store)
    await c.login("QRESYNC")
    reply = await c.cmd(b"S EXAMINE INBOX (QRESYNC (%d %d 1:3))" % (uidvalidity, known))
    assert b"* VANISHED (EARLIER) 2\r\n* 2 FETCH (UID 3 " in reply
    # Seq-match: the client knows message 2 is UID 3, so no expunge at or below 3.
    reply = await c.cmd(b"T EXAMINE INBOX (QRESYNC (%d %d 1:5 (1:2 1,3)))" % (uidvalidity, known))
    assert b"* VANISHED (EARLIER) 4\r\n* 2 FETCH (UID 3 " in reply
    # Another UIDVALIDITY: the rest is ignored (RFC 7162 §3.2.5).
    reply = await c.cmd(b"U EXAMINE INBOX (QRESYNC (%d %d))" % (uidvalidity + 1, known))
    assert b"VANISHED" not in reply and b"FETCH" not in reply
    assert reply.endswith(b"U OK [READ-ONLY] Examine completed\r\n")


# ---------------------------------------------------------------- FETCH


@pytest_twisted.ensureDeferred
async def test_fetch_modseq_item_enables_condstore(store):
    await fill(store, 2)
    c = Client(store)
    await c.select()
    assert await c.cmd(b"f FETCH 1:2 (MODSEQ)") == (
        b"* 1 FETCH (MODSEQ (%d))\r\n* 2 FETCH (MODSEQ (%d))\r\nf OK Fetch completed\r\n"
        % (modseq_of(store, 1), modseq_of(store, 2)))
    assert "CONDSTORE" in c.session.enabled


@pytest_twisted.ensureDeferred
async def test_fetch_changedsince_returns_only_changed_messages(store):
    await fill(store, 3)
    since = inbox(store).highestmodseq
    c = Client(store)
    await c.select()
    await c.cmd(b"a STORE 2 +FLAGS (\\Flagged)")
    assert await c.cmd(b"f FETCH 1:* (FLAGS) (CHANGEDSINCE %d)" % since) == (
        b"* 2 FETCH (FLAGS (\\Flagged) MODSEQ (%d))\r\nf OK Fetch completed\r\n" % modseq_of(store, 2))
    assert "CONDSTORE" in c.session.enabled
    assert await c.cmd(b"g UID FETCH 1:* (FLAGS) (CHANGEDSINCE %d)" % modseq_of(store, 2)) == (
        b"g OK Fetch completed\r\n")


@pytest_twisted.ensureDeferred
async def test_uid_fetch_vanished(store):
    await fill(store, 4)
    since = inbox(store).highestmodseq
    c1, c2 = Client(store), Client(store)
    await c1.select(b"S SELECT INBOX", "QRESYNC")
    await c2.select()
    await c2.cmd(b"a UID STORE 1,4 +FLAGS.SILENT (\\Deleted)")
    await c2.cmd(b"b UID EXPUNGE 1")
    await c2.cmd(b"c UID STORE 3 +FLAGS.SILENT ($X)")
    await c1.cmd(b"n NOOP")  # UID 1's VANISHED; UIDs 3 and 4's flags
    await c2.cmd(b"d UID EXPUNGE 4")  # not yet reported to c1
    reply = await c1.cmd(b"f UID FETCH 1:* (FLAGS) (CHANGEDSINCE %d VANISHED)" % since)
    # VANISHED (EARLIER) first, only for UIDs the session no longer has; the
    # FETCHes; then other changes (UID 4's plain VANISHED) before the OK.
    assert reply == (b"* VANISHED (EARLIER) 1\r\n"
                     b"* 2 FETCH (UID 3 FLAGS ($X) MODSEQ (%d))\r\n"
                     b"* VANISHED 4\r\n"
                     b"f OK Fetch completed\r\n" % modseq_of(store, 3))


@pytest.mark.parametrize("line,reply", [
    (b"f FETCH 1 FLAGS (CHANGEDSINCE 1 VANISHED)", b"f BAD VANISHED is only allowed with UID FETCH"),
    (b"f UID FETCH 1 FLAGS (VANISHED)", b"f BAD VANISHED needs CHANGEDSINCE"),
    (b"f UID FETCH 1 FLAGS (CHANGEDSINCE 1 VANISHED)", b"f BAD VANISHED needs ENABLE QRESYNC first"),
    (b"f FETCH 1 FLAGS (CHANGEDSINCE 0)", b"f BAD Mod-sequence out of range"),
    (b"f FETCH 1 FLAGS (CHANGEDSINCE 1 CHANGEDSINCE 2)", b"f BAD Unknown or repeated FETCH modifier"),
    (b"f FETCH 1 FLAGS (BOGUS)", b"f BAD Unknown or repeated FETCH modifier"),
    (b"f FETCH 1 FLAGS ()", b"f BAD Empty FETCH modifier list"),
    (b"f FETCH 1 FLAGS (CHANGEDSINCE 1) x", b"f BAD Unexpected extra arguments"),
    (b"f FETCH 1 FLAGS X", b"f BAD Unexpected extra arguments"),
])
@pytest_twisted.ensureDeferred
async def test_fetch_modifier_errors(store, line, reply):
    await fill(store, 1)
    c = Client(store)
    await c.select()
    assert await c.cmd(line) == reply + b"\r\n"


def test_fetch_modifiers_parse():
    modifiers = parse_fetch_modifiers(ArgCursor((b" (vanished changedsince 9223372036854775807)",)))
    assert (modifiers.changedsince, modifiers.vanished) == (2 ** 63 - 1, True)


@pytest_twisted.ensureDeferred
async def test_fetch_setting_seen_reports_uid_and_modseq_under_condstore(store):
    await fill(store, 1)
    c = Client(store)
    await c.select(b"S SELECT INBOX (CONDSTORE)")
    reply = await c.cmd(b"f FETCH 1 BODY[TEXT]")
    assert reply == (b"* 1 FETCH (BODY[TEXT] {8}\r\nbody 1\r\n FLAGS (\\Seen) UID 1 MODSEQ (%d))\r\n"
                     b"f OK Fetch completed\r\n" % modseq_of(store, 1))
    # Its own \Seen change is not reported again as another session's.
    assert await c.cmd(b"n NOOP") == b"n OK NOOP completed\r\n"
