"""\\Recent for IMAP4rev1 sessions (RFC 3501 §2.3.2) over the real LMDB store:
one session per message, SELECT claims and EXAMINE does not, RECENT after new
EXISTS, FETCH/STORE FLAGS, SEARCH RECENT/NEW/OLD, STATUS RECENT, and none of
it after ENABLE IMAP4rev2 (RFC 9051 Appendix E item 12)."""

from __future__ import annotations

import re

import pytest
import pytest_twisted

from mailserverd.imap.commands.recent import RecentUids
from mailserverd.limits import MIB, Limits

from imap_real_store import USER, RealStoreClient, open_store, seen_before


def message(n: int) -> bytes:
    return b"From: a@example.test\r\nSubject: message %d\r\n\r\nbody %d\r\n" % (n, n)


@pytest.fixture
def store(tmp_path):
    yield from open_store(tmp_path, Limits(store_map_size=32 * MIB))


async def fill(store, count: int, flags=(), mailbox: str = "INBOX") -> None:
    for n in range(1, count + 1):
        await store.append(USER, mailbox, message(n), flags)


async def client(store, *extensions: str) -> RealStoreClient:
    c = RealStoreClient(store)
    await c.login(*extensions)
    return c


def recent_line(reply: list[bytes]) -> list[bytes]:
    return [line for line in reply if line.endswith(b" RECENT")]


def flags_by_seq(reply: list[bytes]) -> dict[int, bytes]:
    found = (re.match(rb"\* (\d+) FETCH \(.*FLAGS \(([^)]*)\)", line) for line in reply)
    return {int(m.group(1)): m.group(2) for m in found if m}


# ---------------------------------------------------------------- RecentUids


def test_recent_uids_merge_and_count():
    uids = RecentUids()
    assert 1 not in uids and uids.count_in([1, 2, 3]) == 0
    uids.add(range(5, 8))
    uids.add(range(0))  # nothing
    uids.add(range(10, 12))
    assert [uid in uids for uid in (4, 5, 7, 8, 9, 10, 11, 12)] == [
        False, True, True, False, False, True, True, False]
    uids.add(range(8, 10))  # joins both neighbours
    assert uids._starts == [5] and uids._stops == [12]
    uids.add(range(1, 3))
    uids.add(range(20, 30))
    assert uids.count_in([1, 2, 3, 4, 5, 11, 12, 19, 25, 29, 30]) == 6
    uids.add(range(2, 26))  # covers several
    assert uids._starts == [1] and uids._stops == [30]


# ---------------------------------------------------------------- SELECT / EXAMINE


@pytest_twisted.ensureDeferred
async def test_only_the_first_select_gets_recent(store):
    await fill(store, 2)
    first, second = await client(store), await client(store)
    reply = await first.c(b"s SELECT INBOX")
    assert recent_line(reply) == [b"* 2 RECENT"] and reply[-1].startswith(b"s OK [READ-WRITE]")
    assert flags_by_seq(await first.c(b"f FETCH 1:* FLAGS")) == {1: b"\\Recent", 2: b"\\Recent"}
    reply = await second.c(b"s SELECT INBOX")
    assert recent_line(reply) == [b"* 0 RECENT"]
    assert flags_by_seq(await second.c(b"f FETCH 1:* FLAGS")) == {1: b"", 2: b""}
    # selecting again does not give them back: they were this session's for that SELECT only
    assert recent_line(await first.c(b"t SELECT INBOX")) == [b"* 0 RECENT"]


@pytest_twisted.ensureDeferred
async def test_examine_shows_recent_without_claiming(store):
    """RFC 3501 §6.3.2: EXAMINE causes no loss of \\Recent (Dovecot shows them)."""
    await fill(store, 2)
    await seen_before(store)
    await fill(store, 1)
    examiner = await client(store)
    reply = await examiner.c(b"e EXAMINE INBOX")
    assert recent_line(reply) == [b"* 1 RECENT"] and reply[-1].startswith(b"e OK [READ-ONLY]")
    assert flags_by_seq(await examiner.c(b"f FETCH 1:* FLAGS")) == {1: b"", 2: b"", 3: b"\\Recent"}
    assert (await examiner.c(b"g SEARCH RECENT"))[0] == b"* SEARCH 3"
    assert recent_line(await (await client(store)).c(b"e EXAMINE INBOX")) == [b"* 1 RECENT"]
    selector = await client(store)
    assert recent_line(await selector.c(b"s SELECT INBOX")) == [b"* 1 RECENT"]
    assert recent_line(await (await client(store)).c(b"e EXAMINE INBOX")) == [b"* 0 RECENT"]


# ---------------------------------------------------------------- new messages


@pytest_twisted.ensureDeferred
async def test_a_delivery_is_recent_in_the_session_told_of_it(store):
    c = await client(store)
    await c.c(b"s SELECT INBOX")
    await store.deliver([USER], message(1))
    # RFC 3501 §7.3.2: RECENT after EXISTS, and before the tagged reply.
    assert await c.cmd(b"n NOOP") == b"* 1 EXISTS\r\n* 1 RECENT\r\nn OK NOOP completed\r\n"
    assert await c.cmd(b"f FETCH 1 FLAGS") == b"* 1 FETCH (FLAGS (\\Recent))\r\nf OK Fetch completed\r\n"
    assert recent_line(await (await client(store)).c(b"s SELECT INBOX")) == [b"* 0 RECENT"]
    await store.deliver([USER], message(2))
    assert await c.cmd(b"n NOOP") == b"* 2 EXISTS\r\n* 2 RECENT\r\nn OK NOOP completed\r\n"


@pytest_twisted.ensureDeferred
async def test_two_selected_sessions_never_share_a_new_message(store):
    one, two = await client(store), await client(store)
    await one.c(b"s SELECT INBOX")
    await two.c(b"s SELECT INBOX")
    await fill(store, 3)
    # Both sessions look at once: their claims race in the store's writer.
    one.session.data_received(b"n NOOP\r\n")
    two.session.data_received(b"n NOOP\r\n")
    replies = [await one.cmd(b"m NOOP"), await two.cmd(b"m NOOP")]
    counts = [int(re.search(rb"\* (\d) RECENT", reply).group(1)) for reply in replies]
    assert sorted(counts) == [0, 3], replies
    for c in (one, two):
        assert c.session.selected.uids == [1, 2, 3]
    flags = [flags_by_seq(await c.c(b"f FETCH 1:* FLAGS")) for c in (one, two)]
    assert sorted(flags, key=lambda found: found[1]) == [
        {1: b"", 2: b"", 3: b""}, {1: b"\\Recent", 2: b"\\Recent", 3: b"\\Recent"}]


@pytest_twisted.ensureDeferred
async def test_an_examined_mailbox_shows_new_messages_recent_but_leaves_them(store):
    examiner = await client(store)
    await examiner.c(b"e EXAMINE INBOX")
    await fill(store, 1)
    assert await examiner.cmd(b"n NOOP") == b"* 1 EXISTS\r\n* 1 RECENT\r\nn OK NOOP completed\r\n"
    selector = await client(store)
    assert recent_line(await selector.c(b"s SELECT INBOX")) == [b"* 1 RECENT"]
    await fill(store, 1)
    # the selector is told first and claims it: the examiner's next message is not recent
    assert await selector.cmd(b"n NOOP") == b"* 2 EXISTS\r\n* 2 RECENT\r\nn OK NOOP completed\r\n"
    assert await examiner.cmd(b"n NOOP") == b"* 2 EXISTS\r\n* 1 RECENT\r\nn OK NOOP completed\r\n"


@pytest_twisted.ensureDeferred
async def test_idle_sends_recent_after_exists(store):
    c = await client(store)
    await c.c(b"s SELECT INBOX")
    c.session.data_received(b"i IDLE\r\n")
    assert c.out.take() == b"+ idling\r\n"
    await store.deliver([USER], message(1))

    def pushed(data: bytes) -> bool:
        c.session.ctx.clock.advance(0)  # the push runs on the session's clock (no poll comes due)
        return data == b"* 1 EXISTS\r\n* 1 RECENT\r\n"

    assert await c.wait_for(pushed), bytes(c.out.data)
    c.out.take()
    assert await c.cmd(b"DONE", tag=b"i") == b"i OK IDLE terminated\r\n"


@pytest_twisted.ensureDeferred
async def test_append_copy_and_move_are_recent_for_the_next_selector(store):
    """RFC 3501 §6.3.11 (APPEND) and §6.4.7 (COPY SHOULD set \\Recent in the copy)."""
    c = await client(store)
    await fill(store, 2)
    await c.c(b"s SELECT INBOX")
    assert (await c.c(b"a COPY 1 Archive"))[-1].startswith(b"a OK [COPYUID")
    assert (await c.c(b"b MOVE 2 Archive"))[-1].startswith(b"b OK")
    literal = message(3)
    assert (await c.c(b"c APPEND Archive {%d+}\r\n%s" % (len(literal), literal)))[-1].startswith(
        b"c OK [APPENDUID")
    assert (await c.c(b"d STATUS Archive (MESSAGES RECENT)"))[0] == b'* STATUS "Archive" (MESSAGES 3 RECENT 3)'
    other = await client(store)
    assert recent_line(await other.c(b"s SELECT Archive")) == [b"* 3 RECENT"]
    # APPEND into the selected mailbox: this session is the one told, so it is recent here
    reply = await other.cmd(b"c APPEND Archive {%d+}\r\n%s" % (len(literal), literal), tag=b"c")
    assert reply.startswith(b"* 4 EXISTS\r\n* 4 RECENT\r\nc OK [APPENDUID")


# ---------------------------------------------------------------- FLAGS, STORE, SEARCH, STATUS


@pytest_twisted.ensureDeferred
async def test_store_cannot_set_or_clear_recent(store):
    """RFC 3501 §2.3.2: \\Recent cannot be altered by the client; §6.4.6: FLAGS
    replaces the flags other than \\Recent. A \\Recent in the list is ignored."""
    await fill(store, 2)
    await seen_before(store)
    await fill(store, 1)
    c = await client(store)
    await c.c(b"s SELECT INBOX")
    assert await c.cmd(b"a STORE 3 FLAGS (\\Seen)") == (
        b"* 3 FETCH (FLAGS (\\Recent \\Seen))\r\na OK Store completed\r\n")
    assert await c.cmd(b"b STORE 3 -FLAGS (\\Recent \\Seen)") == (
        b"* 3 FETCH (FLAGS (\\Recent))\r\nb OK Store completed\r\n")
    assert await c.cmd(b"c STORE 1 +FLAGS (\\Recent)") == (
        b"* 1 FETCH (FLAGS ())\r\nc OK Store completed\r\n")
    box = store.get_mailbox(USER, "INBOX")
    assert all("\\Recent" not in m.flags for m in store.list_messages(USER, box.mailbox_id))


@pytest_twisted.ensureDeferred
async def test_search_recent_new_and_old(store):
    await fill(store, 1, ["\\Seen"])
    await seen_before(store)
    await store.append(USER, "INBOX", message(2), ["\\Seen"])
    await store.append(USER, "INBOX", message(3))
    c = await client(store)
    assert recent_line(await c.c(b"s SELECT INBOX")) == [b"* 2 RECENT"]
    for program, found in ((b"RECENT", b" 2 3"), (b"NEW", b" 3"), (b"OLD", b" 1"),
                           (b"NOT OLD", b" 2 3"), (b"OR NEW OLD", b" 1 3"), (b"RECENT SEEN", b" 2"),
                           (b"UID 1:2 NEW", b"")):
        assert (await c.c(b"a SEARCH " + program))[0] == b"* SEARCH" + found, program
    assert (await c.c(b"b SORT (SUBJECT) UTF-8 RECENT"))[0] == b"* SORT 2 3"
    await fill(store, 1)
    assert await c.cmd(b"n NOOP") == b"* 4 EXISTS\r\n* 3 RECENT\r\nn OK NOOP completed\r\n"
    assert (await c.c(b"c UID SEARCH NEW"))[0] == b"* SEARCH 3 4"


@pytest_twisted.ensureDeferred
async def test_status_recent_counts_what_no_one_has_claimed(store):
    """RFC 3501 §6.3.10: STATUS MUST NOT take \\Recent away; for the selected
    mailbox it tells the session's own count, as Dovecot does."""
    await fill(store, 2)
    watcher = await client(store)
    status = b"t STATUS INBOX (MESSAGES RECENT)"
    assert (await watcher.c(status))[0] == b'* STATUS "INBOX" (MESSAGES 2 RECENT 2)'
    assert (await watcher.c(status))[0] == b'* STATUS "INBOX" (MESSAGES 2 RECENT 2)'
    assert (await watcher.c(b'l LIST "" INBOX RETURN (STATUS (RECENT))'))[1] == (
        b'* STATUS "INBOX" (RECENT 2)')
    selector = await client(store)
    assert recent_line(await selector.c(b"s SELECT INBOX")) == [b"* 2 RECENT"]
    assert (await selector.c(status))[0] == b'* STATUS "INBOX" (MESSAGES 2 RECENT 2)'
    assert (await watcher.c(status))[0] == b'* STATUS "INBOX" (MESSAGES 2 RECENT 0)'
    await fill(store, 1)
    assert (await watcher.c(status))[0] == b'* STATUS "INBOX" (MESSAGES 3 RECENT 1)'


# ---------------------------------------------------------------- IMAP4rev2


@pytest_twisted.ensureDeferred
async def test_imap4rev2_sessions_see_no_recent_and_claim_nothing(store):
    await fill(store, 2)
    rev2 = await client(store, "IMAP4REV2")
    reply = await rev2.c(b"s SELECT INBOX")
    assert not any(b"RECENT" in line for line in reply) and reply[-1].startswith(b"s OK")
    assert b"\\Recent" not in await rev2.cmd(b"f FETCH 1:* FLAGS")
    assert b"\\Recent" not in await rev2.cmd(b"g STORE 1 +FLAGS (\\Seen)")
    for program in (b"RECENT", b"NEW", b"OLD", b"NOT OLD", b"OR SEEN RECENT"):
        assert (await rev2.c(b"a SEARCH " + program))[-1] == (
            b"a BAD SEARCH RECENT, NEW and OLD are not part of IMAP4rev2"), program
    assert (await rev2.c(b"b SORT (DATE) UTF-8 NEW"))[-1].startswith(b"b BAD")
    await fill(store, 1)
    assert await rev2.cmd(b"n NOOP") == b"* 3 EXISTS\r\nn OK NOOP completed\r\n"
    # nothing was taken: an IMAP4rev1 session still gets them all
    assert recent_line(await (await client(store)).c(b"s SELECT INBOX")) == [b"* 3 RECENT"]
