"""IMAP mailbox commands against the sans-I/O session and the real LMDB store:
CREATE, DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE, LIST (RFC 5258, 5819, 6154), LSUB,
NAMESPACE, STATUS; plus the pure pattern matcher and argument parser."""

from __future__ import annotations


import pytest
import pytest_twisted
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailserverd.imap.commands.list import NamePattern, parse_list
from mailserverd.imap.parser import ArgCursor, ParseError
from mailserverd.limits import Limits

from imap_real_store import USER, RealStoreClient, created, open_store

PASSWORD = "pw"
RAW = b"Subject: hi\r\n\r\nbody\r\n"


def Client(store) -> RealStoreClient:  # noqa: N802 (reads as the class it makes)
    """A session on the real store whose LOGIN uses this file's PASSWORD."""
    return RealStoreClient(store, PASSWORD)


@pytest.fixture
def store(tmp_path):
    yield from open_store(tmp_path)


async def logged_in(store) -> Client:
    client = Client(store)
    assert (await client.c(b'L LOGIN alice@example.test "pw"'))[-1].startswith(b"L OK")
    return client


def list_lines(lines: list[bytes]) -> list[bytes]:
    return [line for line in lines if line.startswith((b"* LIST", b"* LSUB", b"* STATUS"))]


# ---------------------------------------------------------------- pure parts


@pytest.mark.parametrize("pattern,name,expected", [
    ("*", "a/b/c", True),
    ("%", "a", True),
    ("%", "a/b", False),
    ("a/%", "a/b", True),
    ("a/%", "a/b/c", False),
    ("a*", "a/b/c", True),
    ("a%c", "abc", True),
    ("a%c", "a/c", False),
    ("inbox", "INBOX", True),
    ("Inbox/%", "INBOX/x", True),
    ("inboxes", "INBOXES", False),
    ("*b*b*b*b*b*b*b*b*b*b*b*b*c", "b" * 300, False),  # no backtracking blow-up
    ("%*%", "x/y", True),
    ("", "", True),
])
def test_name_pattern(pattern, name, expected):
    assert NamePattern(pattern).matches(name) is expected


def parse(line: bytes):
    class Session:
        utf8_names = False
    return parse_list(Session(), ArgCursor((line,)))


def test_parse_list_extended_forms():
    request = parse(b' (SUBSCRIBED RECURSIVEMATCH) "" ("a" b%) RETURN (CHILDREN STATUS (MESSAGES SIZE))')
    assert request.extended and request.select == {"SUBSCRIBED", "RECURSIVEMATCH"}
    assert request.patterns == ["a", "b%"] and request.returns == {"CHILDREN", "STATUS"}
    assert request.status_items == ["MESSAGES", "SIZE"]
    basic = parse(b' "" *')
    assert not basic.extended and basic.patterns == ["*"]


@pytest.mark.parametrize("line", [
    b' (RECURSIVEMATCH) "" *',        # RFC 5258 §3.1: needs a base option
    b' (REMOTE RECURSIVEMATCH) "" *',
    b' (BOGUS) "" *',                 # unknown options are BAD
    b' "" * RETURN (BOGUS)',
    b' "" * RETURN (STATUS ())',
    b' "" * RETURN (STATUS (FOO))',
    b' "" * EXTRA (x)',
    b' "" ',
    b' "" * junk',
    b' "&Jjo" *',                    # bad modified UTF-7
])
def test_parse_list_refuses(line):
    with pytest.raises(ParseError):
        parse(line)


# ---------------------------------------------------------------- LIST / LSUB


@pytest_twisted.ensureDeferred
async def test_list_basic_with_children_and_special_use(store):
    client = await logged_in(store)
    assert created((await client.c(b"a CREATE Work/Reports/2024"))[-1]) == b"a OK CREATE completed"
    lines = list_lines(await client.c(b'b LIST "" *'))
    assert lines == [
        b'* LIST (\\HasNoChildren) "/" "INBOX"',
        b'* LIST (\\HasNoChildren \\Archive) "/" "Archive"',
        b'* LIST (\\HasNoChildren \\Drafts) "/" "Drafts"',
        b'* LIST (\\HasNoChildren \\Junk) "/" "Junk"',
        b'* LIST (\\HasNoChildren \\Sent) "/" "Sent"',
        b'* LIST (\\HasNoChildren \\Trash) "/" "Trash"',
        b'* LIST (\\HasChildren) "/" "Work"',
        b'* LIST (\\HasChildren) "/" "Work/Reports"',
        b'* LIST (\\HasNoChildren) "/" "Work/Reports/2024"',
    ]
    assert list_lines(await client.c(b'c LIST "Work/" %')) == [b'* LIST (\\HasChildren) "/" "Work/Reports"']
    assert list_lines(await client.c(b'd LIST "" inbox')) == [b'* LIST (\\HasNoChildren) "/" "INBOX"']
    assert await client.c(b'e LIST "" ""') == [b'* LIST (\\Noselect) "/" ""', b"e OK LIST completed"]
    assert await client.c(b'f LIST "" nothing*') == [b"f OK LIST completed"]


@pytest_twisted.ensureDeferred
async def test_deleted_parent_is_a_hole_listed_only_by_percent(store):
    # RFC 9051 §6.3.5 second example: LIST * omits the hole, LIST % shows it.
    client = await logged_in(store)
    await client.c(b"a CREATE foo/bar")
    assert (await client.c(b"b DELETE foo"))[-1] == b"b OK DELETE completed"
    star = list_lines(await client.c(b'c LIST "" *'))
    assert b'* LIST (\\HasNoChildren) "/" "foo/bar"' in star
    assert not any(line.endswith(b'"foo"') for line in star)
    percent = list_lines(await client.c(b'd LIST "" %'))
    assert b'* LIST (\\Noselect \\HasChildren) "/" "foo"' in percent
    # The extended syntax (and IMAP4rev2) says \NonExistent instead.
    extended = list_lines(await client.c(b'e LIST "" (%)'))
    assert b'* LIST (\\NonExistent \\HasChildren) "/" "foo"' in extended
    assert list_lines(await client.c(b'f LIST () "" f% RETURN (STATUS (MESSAGES))')) == [
        b'* LIST (\\NonExistent \\HasChildren) "/" "foo"']  # no STATUS for a missing mailbox


@pytest_twisted.ensureDeferred
async def test_list_subscribed_recursivematch_childinfo(store):
    # RFC 5258 §5 example 8-ish: a subscribed child below an unsubscribed parent.
    client = await logged_in(store)
    await client.c(b"a CREATE Fruit/Apple")
    await client.c(b"b CREATE Fruit/Banana")
    assert (await client.c(b"c SUBSCRIBE Fruit/Banana"))[-1] == b"c OK SUBSCRIBE completed"
    await client.c(b"d CREATE Gone")
    await client.c(b"e SUBSCRIBE Gone")
    await client.c(b"f DELETE Gone")  # the subscription outlives the mailbox
    lines = list_lines(await client.c(b'g LIST (SUBSCRIBED) "" *'))
    assert b'* LIST (\\HasNoChildren \\Subscribed) "/" "Fruit/Banana"' in lines
    assert b'* LIST (\\NonExistent \\HasNoChildren \\Subscribed) "/" "Gone"' in lines
    assert not any(b'"Fruit"' in line or b"Apple" in line for line in lines)
    lines = list_lines(await client.c(b'h LIST (SUBSCRIBED RECURSIVEMATCH) "" %'))
    assert b'* LIST (\\HasChildren) "/" "Fruit" ("CHILDINFO" ("SUBSCRIBED"))' in lines
    assert b'* LIST (\\HasNoChildren \\Subscribed \\Sent) "/" "Sent"' in lines
    # With "*" the child matches itself: no redundant CHILDINFO (RFC 9051 §6.3.9.6).
    lines = list_lines(await client.c(b'i LIST (SUBSCRIBED RECURSIVEMATCH) "" *'))
    assert not any(b"CHILDINFO" in line for line in lines)
    lines = list_lines(await client.c(b'j LIST "" Fruit/* RETURN (SUBSCRIBED CHILDREN)'))
    assert lines == [b'* LIST (\\HasNoChildren) "/" "Fruit/Apple"',
                     b'* LIST (\\HasNoChildren \\Subscribed) "/" "Fruit/Banana"']
    assert (await client.c(b"k UNSUBSCRIBE Gone"))[-1] == b"k OK UNSUBSCRIBE completed"
    assert (await client.c(b"l UNSUBSCRIBE Gone"))[-1] == b"l OK UNSUBSCRIBE completed"
    assert (await client.c(b"m SUBSCRIBE Nowhere"))[-1].startswith(b"m NO [NONEXISTENT]")


@pytest_twisted.ensureDeferred
async def test_list_special_use_selection_and_create_use(store):
    client = await logged_in(store)
    assert created((await client.c(b"a CREATE Spam (USE (\\junk))"))[-1]) == b"a OK CREATE completed"
    lines = list_lines(await client.c(b'b LIST (SPECIAL-USE) "" * RETURN (SPECIAL-USE)'))
    assert b'* LIST (\\HasNoChildren \\Junk) "/" "Spam"' in lines
    assert len(lines) == 6 and not any(b'"INBOX"' in line for line in lines)
    assert (await client.c(b"c CREATE X (USE (\\Bogus))"))[-1].startswith(b"c NO [USEATTR]")
    assert (await client.c(b"d CREATE X (USE (\\Sent \\Trash))"))[-1].startswith(b"d NO [USEATTR]")
    assert (await client.c(b"e CREATE X (FOO (1))"))[-1].startswith(b"e BAD")
    assert created((await client.c(b"f CREATE X (USE ())"))[-1]) == b"f OK CREATE completed"
    assert list_lines(await client.c(b'g LIST "" X')) == [b'* LIST (\\HasNoChildren) "/" "X"']


@pytest_twisted.ensureDeferred
async def test_list_status_returns_status_after_each_list(store):
    client = await logged_in(store)
    await store.append(USER, "INBOX", RAW, ["\\Deleted"])
    await store.append(USER, "INBOX", RAW, ["\\Seen"])
    lines = list_lines(await client.c(b'a LIST "" (INBOX Drafts) RETURN (STATUS (MESSAGES UNSEEN SIZE DELETED))'))
    assert lines == [
        b'* LIST (\\HasNoChildren) "/" "INBOX"',
        b'* STATUS "INBOX" (MESSAGES 2 UNSEEN 1 SIZE %d DELETED 1)' % (2 * len(RAW)),
        b'* LIST (\\HasNoChildren \\Drafts) "/" "Drafts"',
        b'* STATUS "Drafts" (MESSAGES 0 UNSEEN 0 SIZE 0 DELETED 0)',
    ]


@pytest_twisted.ensureDeferred
async def test_lsub(store):
    client = await logged_in(store)
    await client.c(b"a CREATE news/comp/mail")
    await client.c(b"b SUBSCRIBE news/comp/mail")
    assert list_lines(await client.c(b'c LSUB "" news/*')) == [b'* LSUB () "/" "news/comp/mail"']
    # RFC 3501 §6.3.9: a level above a subscribed name, itself unsubscribed: \Noselect.
    assert list_lines(await client.c(b'd LSUB "" news/%')) == [b'* LSUB (\\Noselect) "/" "news/comp"']
    assert list_lines(await client.c(b'e LSUB "" *'))[0] == b'* LSUB () "/" "INBOX"'
    assert (await client.c(b'f LSUB (SUBSCRIBED) "" *'))[-1].startswith(b"f BAD")


# ---------------------------------------------------------------- CREATE / DELETE / RENAME


@pytest_twisted.ensureDeferred
async def test_create_delete_errors(store):
    client = await logged_in(store)
    assert (await client.c(b"a CREATE inbox"))[-1].startswith(b"a NO [ALREADYEXISTS]")
    assert (await client.c(b"b CREATE Sent"))[-1].startswith(b"b NO [ALREADYEXISTS]")
    assert created((await client.c(b"c CREATE Dir/"))[-1]) == b"c OK CREATE completed"
    assert store.get_mailbox(USER, "Dir").name == "Dir"
    assert (await client.c(b'd CREATE "a*b"'))[-1].startswith(b"d NO [CANNOT]")
    assert (await client.c(b"e DELETE INBOX"))[-1].startswith(b"e NO [CANNOT]")
    assert (await client.c(b"f DELETE Nope"))[-1].startswith(b"f NO [NONEXISTENT]")
    assert (await client.c(b"g CREATE"))[-1].startswith(b"g BAD")
    assert (await client.c(b"h DELETE a b"))[-1].startswith(b"h BAD")
    assert (await client.c(b"i CREATE &AGE-"))[-1].startswith(b"i BAD")  # encoded ASCII: not canonical


@pytest_twisted.ensureDeferred
async def test_rename_moves_children_and_inbox_messages(store):
    client = await logged_in(store)
    await client.c(b"a CREATE Old/Child")
    await store.append(USER, "INBOX", RAW)
    assert (await client.c(b"b RENAME Old New/Place"))[-1] == b"b OK RENAME completed"
    names = [info.name for info in store.list_mailboxes(USER)]
    assert "New/Place/Child" in names and "New" in names and "Old" not in names
    assert (await client.c(b"c RENAME INBOX Saved"))[-1] == b"c OK RENAME completed"
    assert store.get_mailbox(USER, "INBOX").messages == 0
    assert store.get_mailbox(USER, "Saved").messages == 1
    assert (await client.c(b"d RENAME Nope X"))[-1].startswith(b"d NO [NONEXISTENT]")
    assert (await client.c(b"e RENAME Saved Sent"))[-1].startswith(b"e NO [ALREADYEXISTS]")
    assert (await client.c(b"f RENAME Sent Sent/sub"))[-1].startswith(b"f NO [CANNOT]")


@pytest_twisted.ensureDeferred
async def test_rename_selected_mailbox_keeps_selection(store):
    client = await logged_in(store)
    await client.c(b"a CREATE Box")
    await client.c(b"b SELECT Box")
    assert (await client.c(b"c RENAME Box Crate"))[-1] == b"c OK RENAME completed"
    assert client.session.selected.name == "Crate"


# ---------------------------------------------------------------- STATUS / NAMESPACE


@pytest_twisted.ensureDeferred
async def test_status_items(store):
    client = await logged_in(store)
    await store.append(USER, "INBOX", RAW, ["\\Seen"])
    await store.append(USER, "INBOX", RAW)
    info = store.get_mailbox(USER, "INBOX")
    lines = await client.c(b"a STATUS inbox (MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN SIZE "
                           b"HIGHESTMODSEQ APPENDLIMIT DELETED messages)")
    assert lines == [
        b'* STATUS "INBOX" (MESSAGES 2 RECENT 2 UIDNEXT 3 UIDVALIDITY %d UNSEEN 1 SIZE %d '
        b'HIGHESTMODSEQ %d APPENDLIMIT %d DELETED 0)'
        % (info.uidvalidity, 2 * len(RAW), info.highestmodseq, Limits().message_size_max),
        b"a OK STATUS completed",
    ]
    big = b"Subject: big\r\n\r\n" + b"x" * 5000 + b"\r\n"
    await store.append(USER, "INBOX", big, ["\\Deleted"])
    lines = await client.c(b"g STATUS INBOX (DELETED DELETED-STORAGE)")
    # RFC 9208 §4.2.3: in the STORAGE resource's units of 1024 octets.
    assert lines[0] == b'* STATUS "INBOX" (DELETED 1 DELETED-STORAGE %d)' % (len(big) // 1024)
    assert (await client.c(b"b STATUS INBOX (BOGUS)"))[-1].startswith(b"b BAD")
    assert (await client.c(b"c STATUS INBOX ()"))[-1].startswith(b"c BAD")
    assert (await client.c(b"d STATUS INBOX MESSAGES"))[-1].startswith(b"d BAD")
    assert (await client.c(b"e STATUS Nope (MESSAGES)"))[-1].startswith(b"e NO [NONEXISTENT]")


@pytest_twisted.ensureDeferred
async def test_namespace_and_state_checks(store):
    client = Client(store)
    assert (await client.c(b"a LIST \"\" *"))[-1] == b"a BAD Log in first"
    assert (await client.c(b'L LOGIN alice@example.test "pw"'))[-1].startswith(b"L OK")
    assert await client.c(b"b NAMESPACE") == [b'* NAMESPACE (("" "/")) NIL NIL', b"b OK NAMESPACE completed"]
    assert (await client.c(b"c NAMESPACE x"))[-1].startswith(b"c BAD")


# ---------------------------------------------------------------- names: modified UTF-7 and UTF-8


@pytest_twisted.ensureDeferred
async def test_modified_utf7_and_utf8_names(store):
    client = await logged_in(store)
    # "Entwürfe" in modified UTF-7 (RFC 3501 §5.1.3), and "&" as "&-".
    assert created((await client.c(b"a CREATE Entw&APw-rfe"))[-1]) == b"a OK CREATE completed"
    assert created((await client.c(b'b CREATE "R&-D"'))[-1]) == b"b OK CREATE completed"
    assert {"Entwürfe", "R&D"} <= {info.name for info in store.list_mailboxes(USER)}
    assert list_lines(await client.c(b'c LIST "" Entw*')) == [b'* LIST (\\HasNoChildren) "/" "Entw&APw-rfe"']
    assert (await client.c(b"d STATUS R&-D (MESSAGES)"))[0] == b'* STATUS "R&-D" (MESSAGES 0)'
    assert (await client.c("e CREATE \"Bücher\"".encode()))[-1].startswith(b"e BAD")  # 8-bit in rev1
    client.session.enabled.add("UTF8=ACCEPT")  # what ENABLE UTF8=ACCEPT does (RFC 6855 §3)
    assert list_lines(await client.c(b'f LIST "" Entw*')) == ['* LIST (\\HasNoChildren) "/" "Entwürfe"'.encode()]
    assert created((await client.c("g CREATE \"Bücher\"".encode()))[-1]) == b"g OK CREATE completed"
    assert (await client.c(b'h STATUS "R&D" (MESSAGES)'))[0] == b'* STATUS "R&D" (MESSAGES 0)'
    # RFC 9051 §6.3.4: a name not in NFC is created in NFC, and OLDNAME says so.
    decomposed = "Cafe\u0301".encode()
    lines = await client.c(b'i CREATE "' + decomposed + b'"')
    assert [created(line) for line in lines] == ['* LIST () "/" "Café" ("OLDNAME" ("Cafe\u0301"))'.encode(),
                                                 b"i OK CREATE completed"]
    assert (await client.c(b'j CREATE "\xff"'))[-1].startswith(b"j BAD")


@pytest_twisted.ensureDeferred
async def test_imap4rev2_holes_are_nonexistent_in_basic_list(store):
    client = await logged_in(store)
    await client.c(b"a CREATE foo/bar")
    await client.c(b"b DELETE foo")
    client.session.enabled.add("IMAP4REV2")  # RFC 9051 §7.3.1: \NonExistent is core in rev2
    assert b'* LIST (\\NonExistent \\HasChildren) "/" "foo"' in list_lines(await client.c(b'c LIST "" %'))


# ---------------------------------------------------------------- bad input


@pytest_twisted.ensureDeferred
async def test_malformed_mailbox_commands_get_bad(store):
    client = await logged_in(store)
    for line in (b"a LIST", b'a LIST ""', b'a LIST ( "" *', b'a LIST (SUBSCRIBED "" *',
                 b'a LIST "" (a', b'a LIST "" * RETURN', b'a LIST "" * RETURN (STATUS', b"a STATUS",
                 b"a STATUS INBOX (", b"a STATUS INBOX (MESSAGES", b"a CREATE x (USE", b"a CREATE x (USE (x))",
                 b"a RENAME a", b"a SUBSCRIBE", b"a UNSUBSCRIBE a b", b'a LSUB "" * x', b"a LSUB",
                 b'a LIST "" "\\q"', b"a CREATE  x", b"a DELETE \"unclosed"):
        reply = await client.c(line)
        assert reply[-1].startswith(b"a BAD"), (line, reply)
        client.session._bad_commands = 0  # keep the session open for the next line
    # A literal pattern is a pattern like any other (RFC 3501 §9 list-mailbox).
    client.session.data_received(b'b LIST "" {5}\r\n')
    assert client.out.take() == b"+ Ready for literal data\r\n"
    assert list_lines(await client.c(b"INBOX", tag=b"b")) == [b'* LIST (\\HasNoChildren) "/" "INBOX"']


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=60))
def test_parse_list_raises_only_parse_error(data):
    for extended in (True, False):
        try:
            parse_list(type("S", (), {"utf8_names": False})(), ArgCursor((b" " + data,)), extended)
        except ParseError:
            pass
