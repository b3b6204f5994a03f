"""Bad input to the IMAP session: every malformed command gets a tagged BAD (or
NO with an RFC 5530 code), and the session goes on; no input raises out of it.

Transcripts against ImapSession on the real store (imap_real_store.py): the
IMAP issue's "Bad input" list -- unbalanced parentheses, 10,000-deep nesting
in every parser that nests, huge literal counts, bad sequence sets, modified
UTF-7 and UTF-8 mailbox names, commands in the wrong state, NUL bytes.  A
literal over the limit, an over-long line and STARTTLS injection have their
unit transcripts in test_imap_session.py and run against the daemon in
tests/e2e/test_imap_bad_input_e2e.py.
"""

from __future__ import annotations

import re

import pytest
import pytest_twisted

from imap_real_store import RealStoreClient, open_store
from mailserverd.imap import wire
from mailserverd.imap.commands import COMMANDS, State
from mailserverd.limits import MIB

DEEP = 10_000
OPEN, CLOSE = b"(" * DEEP, b")" * DEEP
MESSAGE = b"Subject: hello\r\nFrom: bob@example.test\r\n\r\nbody text\r\n"


@pytest.fixture
def store(tmp_path):
    yield from open_store(tmp_path)


async def selected(store, **limits) -> RealStoreClient:
    """A session with INBOX selected, holding two messages; bad commands don't
    end it (``imap_bad_commands_max`` is raised: each test sends many)."""
    client = RealStoreClient(store, imap_bad_commands_max=1000, **limits)
    await client.login()
    for tag in (b"A1", b"A2"):
        reply = await client.cmd(tag + b" APPEND INBOX {%d+}\r\n" % len(MESSAGE) + MESSAGE)
        assert tag + b" OK" in reply, reply
    assert b"S OK [READ-WRITE]" in await client.cmd(b"S SELECT INBOX")
    return client


async def goes_on(client: RealStoreClient, state: State = State.SELECTED) -> None:
    """The session is open, in ``state``, and answers the next command."""
    assert not client.session.closed
    assert client.session.state is state
    assert (await client.cmd(b"n NOOP")).endswith(b"n OK NOOP completed\r\n")


async def refused(client: RealStoreClient, line: bytes, answer: bytes = b"BAD") -> bytes:
    """Send ``t line``: the one reply is ``t BAD ...`` (or ``answer``), and the
    session goes on in the state it was in. Returns the reply line."""
    state = client.session.state
    reply = await client.cmd(b"t " + line, b"t")
    assert re.fullmatch(rb"t " + answer + rb" [^\r\n]*\r\n", reply), (line[:80], reply)
    await goes_on(client, state)
    return reply


# ------------------------------------------------------- unbalanced parentheses

UNBALANCED = [
    b"FETCH 1 (FLAGS UID", b"FETCH 1 FLAGS)", b"FETCH 1 (FLAGS))", b"FETCH 1 ((FLAGS)",
    b"FETCH 1 (BODY[HEADER.FIELDS (SUBJECT])", b"FETCH 1 (BODY[HEADER.FIELDS SUBJECT)])",
    b"FETCH 1 (FLAGS) (CHANGEDSINCE 1", b"UID FETCH 1 (FLAGS) CHANGEDSINCE 1)",
    b"SEARCH (ALL", b"SEARCH ALL)", b"SEARCH ((ALL)", b"SEARCH (ALL))", b"SEARCH OR (ALL) (SEEN",
    b"SEARCH RETURN (MIN ALL", b"SEARCH RETURN MIN) ALL", b"UID SEARCH (UID 1:*",
    b"STORE 1 +FLAGS (\\Seen", b"STORE 1 +FLAGS \\Seen)", b"STORE 1 +FLAGS ((\\Seen)",
    b"STORE 1 (UNCHANGEDSINCE 5 +FLAGS (\\Seen)", b"UID STORE 1 +FLAGS.SILENT (\\Seen))",
    b"APPEND INBOX (\\Seen {1+}\r\nx", b"APPEND INBOX \\Seen) {1+}\r\nx",
    b"APPEND INBOX ((\\Seen) {1+}\r\nx",
    b'LIST (SUBSCRIBED "" *', b'LIST SUBSCRIBED) "" *', b'LIST ((SUBSCRIBED) "" *',
    b'LIST "" ("a" "b"', b'LIST "" "a" "b")', b'LIST "" * RETURN (CHILDREN',
    b'LIST "" * RETURN CHILDREN)', b'LIST "" * RETURN (STATUS (MESSAGES)',
    b"STATUS INBOX (MESSAGES", b"STATUS INBOX MESSAGES)", b"STATUS INBOX ((MESSAGES)",
    b'ID ("name" "x"', b'ID "name" "x")', b'ID (("name" "x")', b'ID ("name" "x"))',
    b"SORT (DATE UTF-8 ALL", b"SORT DATE) UTF-8 ALL", b"THREAD REFERENCES UTF-8 (ALL",
    b'SETQUOTA "" (STORAGE 100', b"SELECT INBOX (CONDSTORE", b"SELECT INBOX (QRESYNC (1 2)",
]


@pytest_twisted.ensureDeferred
async def test_unbalanced_parentheses_are_bad(store):
    client = await selected(store)
    for line in UNBALANCED:
        await refused(client, line)


# ------------------------------------------------------- 10,000-deep nesting

# Every parser that reads nested or parenthesized input, given 10,000 levels
# (RFC 9051 §9 lets search-key nest without bound; the parsers must not
# recurse once per level, or RecursionError ends in a NO, not a BAD).
#: Search programs: valid however deep, so over our bound NO [LIMIT] (RFC 5530 §3).
DEEP_PROGRAMS = [
    b"SEARCH " + OPEN + b"ALL" + CLOSE,
    b"UID SEARCH " + OPEN + b"ALL" + CLOSE,
    b"SEARCH " + b"NOT " * DEEP + b"ALL",
    b"SEARCH " + b"OR ALL " * DEEP + b"ALL",
    b"SEARCH " + b"OR " * DEEP + b"ALL " * (DEEP + 1),
    b"SEARCH " + b"(NOT " * DEEP + b"ALL" + CLOSE,
    b"SORT (DATE) UTF-8 " + OPEN + b"ALL" + CLOSE,
    b"THREAD REFERENCES UTF-8 " + OPEN + b"ALL" + CLOSE,
]
DEEPLY_NESTED = [
    b"SEARCH RETURN " + OPEN + b"MIN" + CLOSE + b" ALL",
    b"SORT " + OPEN + b"DATE" + CLOSE + b" UTF-8 ALL",
    b"FETCH 1 " + OPEN + b"FLAGS" + CLOSE,
    b"FETCH 1 (BODY[HEADER.FIELDS " + OPEN + b"SUBJECT" + CLOSE + b"])",
    b"FETCH 1 (FLAGS) " + OPEN + b"CHANGEDSINCE 1" + CLOSE,
    b"STORE 1 +FLAGS " + OPEN + b"\\Seen" + CLOSE,
    b"STORE 1 " + OPEN + b"UNCHANGEDSINCE 1" + CLOSE + b" +FLAGS (\\Seen)",
    b"APPEND INBOX " + OPEN + b"\\Seen" + CLOSE + b" {1+}\r\nx",
    b"ID " + OPEN + CLOSE,
    b'ID ("name" ' + OPEN + b'"x"' + CLOSE + b")",
    b'LIST ' + OPEN + b'SUBSCRIBED' + CLOSE + b' "" *',
    b'LIST "" ' + OPEN + b"*" + CLOSE,
    b'LIST "" * RETURN ' + OPEN + b"CHILDREN" + CLOSE,
    b'LIST "" * RETURN (STATUS ' + OPEN + b"MESSAGES" + CLOSE + b")",
    b"STATUS INBOX " + OPEN + b"MESSAGES" + CLOSE,
    b"SELECT INBOX " + OPEN + b"CONDSTORE" + CLOSE,
    b"SELECT INBOX (QRESYNC " + OPEN + b"1 2" + CLOSE + b")",
    b'SETQUOTA "" ' + OPEN + b"STORAGE 1" + CLOSE,
    b"GETQUOTAROOT " + OPEN,
    b"COPY 1 " + OPEN + b"INBOX" + CLOSE,
]


@pytest_twisted.ensureDeferred
async def test_deep_nesting_is_bad_in_every_parser(store):
    client = await selected(store, imap_line_max=MIB)  # room for 10,000 levels of OR
    for line in DEEPLY_NESTED:
        await refused(client, line)
    for line in DEEP_PROGRAMS:
        await refused(client, line, rb"NO \[LIMIT\]")


def test_wire_value_parser_and_serializer_take_deep_nesting():
    data = OPEN + b"NIL" + CLOSE
    tree = wire.parse_values(data)
    depth = 0
    while isinstance(tree, list):
        tree, depth = tree[0] if tree else None, depth + 1
    assert depth == DEEP + 1 and tree is None  # the outer list holds the values read
    assert wire.serialize(wire.parse_values(data)[0]) == data
    assert wire.serialize(wire.plain(wire.parse_values(data)[0])) == data  # (== on the trees would recurse)
    for unbalanced in (OPEN + b"NIL" + CLOSE[1:], OPEN[1:] + b"NIL" + CLOSE):
        with pytest.raises(wire.WireParseError):
            wire.parse_values(unbalanced)


def _nested_multipart(depth: int) -> bytes:
    head = b"".join(b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (level, level)
                    for level in range(depth))
    return b"Subject: deep\r\n" + head + b"\r\nleaf text\r\n"


@pytest_twisted.ensureDeferred
async def test_deeply_nested_messages_are_answered(store):
    """MIME nests too: a 10,000-deep multipart and message/rfc822 chain are
    stored and fetched like any message (the stored structure is bounded)."""
    client = await selected(store)
    chain = b"Subject: chain\r\n" + b"Content-Type: message/rfc822\r\n\r\n" * DEEP + b"\r\nleaf\r\n"
    for tag, raw in ((b"D1", _nested_multipart(DEEP)), (b"D2", chain)):
        reply = await client.cmd(tag + b" APPEND INBOX {%d+}\r\n" % len(raw) + raw)
        assert tag + b" OK" in reply, reply
    for item in (b"BODYSTRUCTURE", b"BODY", b"ENVELOPE", b"BODY.PEEK[TEXT]", b"BINARY.SIZE[1]"):
        reply = await client.cmd(b"f UID FETCH 3:4 (" + item + b")")
        assert reply.count(b" FETCH (") == 2 and reply.endswith(b"f OK Fetch completed\r\n"), reply[-300:]
    # A part 10,000 levels down (RFC 9051 §6.4.5 section-part) is a valid
    # section: answered from the bounded stored structure.
    deep_part = b".".join([b"1"] * DEEP)
    for uid in (b"3", b"4"):
        reply = await client.cmd(b"g UID FETCH " + uid + b" (BODY.PEEK[" + deep_part + b"] BODY.PEEK[" + deep_part
                                 + b".MIME])")
        assert reply.startswith(b"* ") and reply.count(b"\r\ng OK Fetch completed\r\n") == 1, reply[-300:]
    assert await client.cmd(b"h SEARCH OR SUBJECT deep SUBJECT chain") == \
        b"* SEARCH 3 4\r\nh OK Search completed\r\n"
    assert await client.cmd(b"i SEARCH TEXT nowhere") == b"* SEARCH\r\ni OK Search completed\r\n"
    await goes_on(client)


# ------------------------------------------------------- huge literal counts

@pytest_twisted.ensureDeferred
async def test_huge_synchronizing_literal_counts_are_refused(store):
    client = await selected(store)
    for count in (b"99999999999999999999", b"4294967296", b"4294967295", b"9" * 5000):
        assert await refused(client, b"CREATE {%s}" % count) == b"t BAD [TOOBIG] Literal too big\r\n"
        # RFC 7889 §4: a message too big for the mailbox is NO [TOOBIG], not BAD.
        assert await refused(client, b"APPEND INBOX {%s}" % count, b"NO") == \
            b"t NO [TOOBIG] Message too big\r\n"


@pytest_twisted.ensureDeferred
async def test_non_synchronizing_literal_too_big_to_read_closes(store):
    """RFC 7888 §4 choice 2: a literal longer than any can be (RFC 9051 §9
    number64) can never be read past; BYE, and its bytes are never commands."""
    for count in (b"99999999999999999999", b"9" * 5000, b"9223372036854775808"):
        client = await selected(store)
        client.session.data_received(b"t CREATE {%s+}\r\nz LOGOUT\r\n" % count)
        assert client.out.take() == (b"t BAD [TOOBIG] Literal too big\r\n"
                                     b"* BYE Literal sent without waiting for continuation\r\n")
        assert client.session.closed and client.out.events == ["close"]


@pytest_twisted.ensureDeferred
async def test_non_synchronizing_literal_over_the_limits_is_swallowed(store):
    """RFC 7888 §4 choice 1 for a count a client could send (up to number64):
    its bytes are read and dropped, never run, however many there are."""
    client = await selected(store)
    client.session.data_received(b"t CREATE {9223372036854775807+}\r\n")
    assert client.out.take() == b"t BAD [TOOBIG] Literal too big\r\n"
    client.session.data_received(b"z LOGOUT\r\n" * 1000)
    assert client.out.take() == b"" and not client.session.closed


@pytest_twisted.ensureDeferred
async def test_literal_count_with_leading_zeros_is_a_literal(store):
    """number = 1*DIGIT (RFC 3501 §9): any number of leading zeros; the
    literal's bytes are data, never a command."""
    client = await selected(store)
    count = b"0" * 30 + b"8"
    reply = await client.cmd(b"t SEARCH SUBJECT {%s+}\r\nz LOGOUT" % count, b"t")
    assert reply == b"* SEARCH\r\nt OK Search completed\r\n"
    client.session.data_received(b"u SEARCH SUBJECT {%s5}\r\n" % count[:-1])
    assert client.out.take() == b"+ Ready for literal data\r\n"
    reply = await client.cmd(b"hello\r\n", b"u")
    assert reply == b"* SEARCH 1 2\r\nu OK Search completed\r\n"
    await goes_on(client)


@pytest.mark.parametrize("marker", [b"{-1}", b"{-1+}", b"{abc}", b"{}", b"{+}", b"{1++}",
                                    b"{ 1}", b"{1 }", b"{0x10}", b"{1}x", b"{1.5}"])
@pytest_twisted.ensureDeferred
async def test_garbage_literal_markers_are_not_literals(store, marker):
    """Not a literal marker (RFC 3501 §9 literal): the line is the whole
    command, answered BAD; the next line is the next command."""
    client = await selected(store)
    reply = await client.cmd(b"t CREATE " + marker + b"\r\nz NOOP", b"z")
    assert re.fullmatch(rb"t BAD [^\r\n]*\r\nz OK NOOP completed\r\n", reply), reply
    await goes_on(client)


# ------------------------------------------------------- sequence sets

BAD_SEQUENCE_SETS = [b"0", b"4294967296", b"99999999999999999999", b"1:0", b"0:1", b"0:*",
                     b":", b"1:", b":1", b"1,,2", b",1", b"1,", b"-1", b"", b"1:*:2", b"*1",
                     b"1.5", b"$$", b"a"]
SEQUENCE_COMMANDS = [b"FETCH %s FLAGS", b"UID FETCH %s FLAGS", b"STORE %s +FLAGS (\\Flagged)",
                     b"UID STORE %s +FLAGS (\\Flagged)", b"COPY %s INBOX", b"UID COPY %s INBOX",
                     b"MOVE %s INBOX", b"UID MOVE %s INBOX", b"UID EXPUNGE %s", b"SEARCH %s",
                     b"SEARCH UID %s", b"SEARCH NOT %s"]


@pytest_twisted.ensureDeferred
async def test_bad_sequence_sets_are_bad(store):
    client = await selected(store)
    for template in SEQUENCE_COMMANDS:
        for sequence_set in BAD_SEQUENCE_SETS:
            await refused(client, template % sequence_set)
    # RFC 3501 §9 seq-number: a number above the message count is invalid.
    await refused(client, b"FETCH 3 FLAGS")
    await refused(client, b"FETCH 1:4294967295 FLAGS")
    flags = await client.cmd(b"f FETCH 1:* (FLAGS)")
    assert b"\\Flagged" not in flags  # nothing above was carried out


@pytest_twisted.ensureDeferred
async def test_edge_sequence_sets_that_are_valid(store):
    client = await selected(store)
    # "*:*" is the last message (RFC 3501 §9 seq-range: "*" may be on both sides).
    assert await client.cmd(b"a FETCH *:* (UID)") == b"* 2 FETCH (UID 2)\r\na OK Fetch completed\r\n"
    assert await client.cmd(b"b UID FETCH *:* (UID)") == b"* 2 FETCH (UID 2)\r\nb OK Fetch completed\r\n"
    assert await client.cmd(b"c SEARCH *:*") == b"* SEARCH 2\r\nc OK Search completed\r\n"
    assert (await client.cmd(b"d FETCH 2:1 (UID)")).startswith(b"* 1 FETCH (UID 1)\r\n* 2 FETCH (UID 2)\r\n")
    # UIDs that no message has are no error (RFC 3501 §6.4.8), up to 2^32-1.
    assert await client.cmd(b"e UID FETCH 4294967295 (UID)") == b"e OK Fetch completed\r\n"
    assert (await client.cmd(b"f UID FETCH 2:4294967295 (UID)")) == \
        b"* 2 FETCH (UID 2)\r\nf OK Fetch completed\r\n"
    await goes_on(client)


# ------------------------------------------------------- mailbox names

@pytest_twisted.ensureDeferred
async def test_modified_utf7_names_round_trip(store):
    """RFC 3501 §5.1.3, with its own example name (less its leading "~", which
    names another user's mailboxes by RFC 2342's convention and is refused:
    test_access_control_e2e.py); "&-" is "&"."""
    client = await selected(store)
    for name in (b"peter/mail/&U,BTFw-/&ZeVnLIqe-", b"&-", b"a&-b", b"&Jjo-"):
        assert b"c OK" in await client.cmd(b'c CREATE "' + name + b'"')
        listed = await client.cmd(b'l LIST "" "' + name + b'"')
        assert b' "/" "' + name + b'"\r\n' in listed, listed
    utf8 = RealStoreClient(store)
    await utf8.login()
    assert b"e OK" in await utf8.cmd(b"e ENABLE UTF8=ACCEPT")
    listed = await utf8.cmd(b'l LIST "" *')
    for name in ("peter/mail/台北/日本語", "&", "a&b", "☺"):  # RFC 6855 §3: UTF-8 quoted strings
        assert b' "/" "' + name.encode() + b'"\r\n' in listed, (name, listed)


INVALID_MUTF7 = [b"&Jjo", b"&", b"a&b", b"&ZeVnLIqe", b"&AGE-", b"&AGEAYQ-", b"&Jjo,-", b"&2D0-",
                 b"&-&Jjo", b"caf\xc3\xa9", b"\xff\xfe"]
NAME_COMMANDS = [b'CREATE "%s"', b'DELETE "%s"', b'RENAME INBOX "%s"', b'RENAME "%s" x',
                 b'SELECT "%s"', b'EXAMINE "%s"', b'STATUS "%s" (MESSAGES)', b'SUBSCRIBE "%s"',
                 b'UNSUBSCRIBE "%s"', b'LIST "" "%s"', b'LIST "%s" *', b'LSUB "" "%s"',
                 b'COPY 1 "%s"', b'MOVE 1 "%s"', b'GETQUOTAROOT "%s"',
                 b'APPEND "%s" {1+}\r\nx']


@pytest_twisted.ensureDeferred
async def test_invalid_modified_utf7_names_are_bad(store):
    """RFC 3501 §5.1.3: "&" starts base64 that "-" must end, printable ASCII
    is never encoded, and 8-bit bytes are not modified UTF-7 (RFC 6855 §3
    allows UTF-8 only after ENABLE UTF8=ACCEPT)."""
    client = await selected(store)
    for template in NAME_COMMANDS:
        for name in INVALID_MUTF7:
            state = client.session.state
            reply = await refused(client, template % name)
            assert b"Mailbox name" in reply or b"UTF-7" in reply or b"UTF-8" in reply, reply
            assert client.session.state is state


@pytest_twisted.ensureDeferred
async def test_utf8_names_after_enable(store):
    client = RealStoreClient(store, imap_bad_commands_max=1000)
    await client.login()
    assert b"e OK" in await client.cmd(b"e ENABLE UTF8=ACCEPT")
    assert b"c OK" in await client.cmd('c CREATE "Café/日本語"'.encode())
    # RFC 6855 §3: the names are UTF-8 now, so "&" is just "&" and "&-" two characters.
    assert b"d OK" in await client.cmd(b'd CREATE "&-"')
    listed = await client.cmd(b'l LIST "" *')
    assert ' "/" "Café/日本語"\r\n'.encode() in listed, listed
    assert b' "/" "&-"\r\n' in listed, listed
    for name in (b"\xff\xfe", b"caf\xc3", b"\xc0\xaf", b"\xed\xa0\x80"):  # not UTF-8
        await refused(client, b'CREATE "' + name + b'"', b"(?:BAD|NO)")
    await goes_on(client, State.AUTHENTICATED)
    legacy = RealStoreClient(store)
    await legacy.login()
    listed = await legacy.cmd(b'l LIST "" *')
    assert b' "/" "Caf&AOk-/&ZeVnLIqe-"\r\n' in listed, listed
    assert b' "/" "&--"\r\n' in listed, listed  # "&" and "-"


@pytest_twisted.ensureDeferred
async def test_names_with_nul_cr_lf_are_bad(store):
    client = await selected(store)
    for line in (b'CREATE "a\x00b"', b"CREATE a\x00b", b"CREATE {3+}\r\na\x00b",
                 b"CREATE {3+}\r\na\rb", b"CREATE {3+}\r\na\nb", b"CREATE {2+}\r\n\r\n",
                 b'SELECT "IN\x00BOX"', b"SELECT {6+}\r\nINBOX\n", b'RENAME INBOX "x\x00"'):
        await refused(client, line)
    listed = await client.cmd(b'l LIST "" *')
    assert b"\x00" not in listed and listed.count(b"\r\n") == listed.count(b"\n")


# ------------------------------------------------------- commands in the wrong state

# Arguments that would be right in the right state: only the state is wrong.
_ARGUMENTS = {
    "LOGIN": b' alice@example.test "alice secret"', "AUTHENTICATE": b" PLAIN",
    "SELECT": b" INBOX", "EXAMINE": b" INBOX", "CREATE": b" x", "DELETE": b" x",
    "RENAME": b" x y", "SUBSCRIBE": b" INBOX", "UNSUBSCRIBE": b" INBOX", "LIST": b' "" *',
    "LSUB": b' "" *', "XLIST": b' "" *', "STATUS": b" INBOX (MESSAGES)", "ENABLE": b" CONDSTORE",
    "GETQUOTA": b' ""', "GETQUOTAROOT": b" INBOX", "SETQUOTA": b' "" (STORAGE 1)',
    "FETCH": b" 1 FLAGS", "UID FETCH": b" 1 FLAGS", "STORE": b" 1 +FLAGS (\\Seen)",
    "UID STORE": b" 1 +FLAGS (\\Seen)", "COPY": b" 1 INBOX", "UID COPY": b" 1 INBOX",
    "MOVE": b" 1 INBOX", "UID MOVE": b" 1 INBOX", "UID EXPUNGE": b" 1", "SEARCH": b" ALL",
    "UID SEARCH": b" ALL", "SORT": b" (DATE) UTF-8 ALL", "UID SORT": b" (DATE) UTF-8 ALL",
    "THREAD": b" REFERENCES UTF-8 ALL", "UID THREAD": b" REFERENCES UTF-8 ALL",
    "ID": b" NIL",
}


async def _wrong_state_commands_are_bad(client: RealStoreClient, state: State) -> int:
    """Send every command of the table not valid in ``state``; each is BAD and
    changes nothing. Returns how many were sent."""
    assert client.session.state is state
    sent = 0
    for name, spec in sorted(COMMANDS.items()):
        if state in spec.states:
            continue
        await refused(client, name.encode() + _ARGUMENTS.get(name, b""))
        sent += 1
    return sent


@pytest_twisted.ensureDeferred
async def test_every_command_in_a_state_it_is_not_valid_in_is_bad(store):
    client = RealStoreClient(store, imap_bad_commands_max=1000)
    unauthenticated = await _wrong_state_commands_are_bad(client, State.NOT_AUTHENTICATED)
    await client.login()
    authenticated = await _wrong_state_commands_are_bad(client, State.AUTHENTICATED)
    assert b"S OK" in await client.cmd(b"S SELECT INBOX")
    selected_state = await _wrong_state_commands_are_bad(client, State.SELECTED)
    # The table's states: e.g. FETCH is not valid before SELECT, LOGIN only before login.
    assert unauthenticated > authenticated >= selected_state >= 3
    assert (await client.cmd(b"z LOGOUT")).endswith(b"z OK Logout completed\r\n")
    client.session.data_received(b"y NOOP\r\n")  # LOGOUT state: nothing is read any more
    assert client.out.take() == b"" and client.session.state is State.LOGOUT


# ------------------------------------------------------- NUL bytes

NUL_LINES = [b"a NO\x00OP", b"a NOOP\x00", b"a NOOP \x00", b"a FETCH 1\x00 FLAGS",
             b"a FETCH 1 (FL\x00AGS)", b"a FETCH \x001 FLAGS", b'a SEARCH SUBJECT "x\x00y"',
             b"a SEARCH SUBJECT {3+}\r\nx\x00y", b"a SEARCH SUBJECT x\x00y",
             b"a STORE 1 +FLAGS (\\Se\x00en)", b'a ID ("n\x00" "v")', b"a UID\x00 FETCH 1 FLAGS"]


@pytest_twisted.ensureDeferred
async def test_nul_bytes_in_a_command_line_are_bad(store):
    """RFC 3501 §9: NUL is no CHAR (and no CHAR8 in a literal)."""
    client = await selected(store)
    for line in NUL_LINES:
        reply = await client.cmd(line, b"a")
        assert re.fullmatch(rb"a BAD [^\r\n]*\r\n", reply), (line, reply)
        await goes_on(client)
    for line in (b"\x00", b"\x00a NOOP", b"a\x00 NOOP", b"\x00\x00\x00 \x00"):
        reply = await client.cmd(line, b"*")
        assert reply == b"* BAD Missing or invalid tag\r\n", (line, reply)
        await goes_on(client)
    flags = await client.cmd(b"f FETCH 1:* (FLAGS)")
    assert b"\\Seen" not in flags
