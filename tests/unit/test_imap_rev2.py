"""IMAP4rev2 (RFC 9051) and UTF8=ACCEPT (RFC 6855) against the sans-I/O session and the
real LMDB store: ENABLE, UTF-8 and Net-Unicode mailbox names in every command that takes
one, RECENT gone from rev2, APPEND's ``UTF8 (literal8)``, SEARCH CHARSET after UTF8=ACCEPT,
and the RFC 9051 Appendix E items that were already right; plus ArgCursor.literal8."""

from __future__ import annotations

import unicodedata

import pytest
import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st

from mailserverd.imap import mutf7
from mailserverd.imap.commands import append, imap4rev2
from mailserverd.imap.parser import ArgCursor, CommandReader, FramedCommand, ParseError

from imap_real_store import USER, RealStoreClient, created, open_store

PASSWORD = "pw"
RAW = b"Subject: hi\r\n\r\nbody\r\n"
UTF8_RAW = "Subject: Grüße\r\nFrom: jörg@bücher.example\r\n\r\nHallo\r\n".encode("utf-8")


def Client(store) -> RealStoreClient:  # noqa: N802 (reads as the class it makes)
    """A session on the real store whose LOGIN uses this file's PASSWORD."""
    return RealStoreClient(store, PASSWORD)


@pytest.fixture
def store(tmp_path):
    yield from open_store(tmp_path)


async def logged_in(store, *enable: bytes) -> Client:
    client = Client(store)
    assert (await client.c(b'L LOGIN alice@example.test "pw"'))[-1].startswith(b"L OK")
    for name in enable:
        lines = await client.c(b"E ENABLE " + name)
        assert lines == [b"* ENABLED " + name, b"E OK Enabled"], lines
    return client


def quoted(name: str) -> bytes:
    return b'"' + name.encode("utf-8") + b'"'


# ---------------------------------------------------------------- parser: literal8


def test_literal8_takes_any_octet_and_literal_still_refuses_nul():
    cursor = ArgCursor((b"UTF8 (~{3}", b"a\x00b", b")"))
    assert cursor.atom() == b"UTF8"
    cursor.expect_sp()
    cursor.expect_byte(b"(", "(")
    assert cursor.literal8() == b"a\x00b"
    cursor.expect_byte(b")", ")")
    assert cursor.at_end()
    with pytest.raises(ParseError, match="NUL"):
        ArgCursor((b"{3}", b"a\x00b", b"")).literal()


@pytest.mark.parametrize("segments", [
    (b"{3}", b"abc", b""),       # a literal, not a literal8
    (b"~3}", b"abc", b""),       # no "{"
    (b"~{3} x", b"abc", b""),    # the marker does not end the line
    (b"~{3}",),                  # the data is missing
    (b"",),
])
def test_literal8_refuses_what_is_not_one(segments):
    with pytest.raises(ParseError, match="literal8"):
        ArgCursor(segments).literal8()


def test_reader_frames_a_literal8_and_a_non_synchronizing_one():
    reader = CommandReader(1000, lambda first, size, total: True)
    reader.feed(b"a APPEND INBOX UTF8 (~{5+}\r\nhe\x00lo)\r\n")
    event = reader.next_event()
    assert event == FramedCommand((b"a APPEND INBOX UTF8 (~{5+}", b"he\x00lo", b")"))


# ---------------------------------------------------------------- pure rules


@pytest.mark.parametrize("raw,expected", [
    (b"Subject: x\r\n\r\n\xc3\xa9", False),   # 8-bit body only
    (b"Subject: \xc3\xa9\r\n\r\nbody", True),
    (b"Subject: x\n\nbody \xff", False),       # bare LF header end
    (b"Subject: \xff no body", True),          # no empty line: all header
    (b"", False),
])
def test_has_8bit_header(raw, expected):
    assert imap4rev2.has_8bit_header(raw) is expected


@pytest.mark.parametrize("name", ["a\x01b", "a\x7fb", "a\x85b", "a\u2028b", "a\u2029b", "\x1f"])
def test_net_unicode_refuses_controls_and_separators(name):
    with pytest.raises(Exception) as raised:
        imap4rev2.check_net_unicode(name)
    assert raised.value.code == "NO" and raised.value.enhanced == "CANNOT"


def test_net_unicode_accepts_letters_and_symbols():
    imap4rev2.check_net_unicode("Entwürfe/日本語/a b&c~")


# ---------------------------------------------------------------- capabilities and ENABLE


@pytest_twisted.ensureDeferred
async def test_capability_lists_rev2_and_utf8_accept_and_enable_turns_them_on(store):
    client = await logged_in(store)
    caps = (await client.c(b"a CAPABILITY"))[0].split()
    assert caps[:4] == [b"*", b"CAPABILITY", b"IMAP4rev1", b"IMAP4rev2"]  # RFC 9051 §6.1.1
    assert b"UTF8=ACCEPT" in caps
    assert not client.session.utf8_names
    assert await client.c(b"b ENABLE imap4rev2 UTF8=Accept") == [
        b"* ENABLED IMAP4rev2 UTF8=ACCEPT", b"b OK Enabled"]
    assert client.session.utf8_names
    assert await client.c(b"c ENABLE IMAP4rev2") == [b"* ENABLED", b"c OK Enabled"]


# ---------------------------------------------------------------- UTF-8 mailbox names


@pytest_twisted.ensureDeferred
async def test_utf8_names_in_create_list_status_append_copy_move_rename_delete(store):
    client = await logged_in(store, b"IMAP4rev2")
    name = "Entwürfe/日本"
    assert created((await client.c(b"a CREATE " + quoted(name)))[-1]) == b"a OK CREATE completed"
    assert store.get_mailbox(USER, name).name == name
    lines = await client.c(b'b LIST "" "*"')
    assert b'* LIST (\\HasNoChildren) "/" ' + quoted(name) in lines
    assert b'* LIST (\\HasChildren) "/" ' + quoted("Entwürfe") in lines
    lines = await client.c(b"c STATUS " + quoted(name) + b" (MESSAGES)")
    assert lines[0] == b"* STATUS " + quoted(name) + b" (MESSAGES 0)"
    lines = await client.c(b"d APPEND " + quoted(name) + b" {%d+}\r\n" % len(RAW) + RAW)
    assert lines[-1].startswith(b"d OK [APPENDUID ")
    assert (await client.c(b"e SELECT INBOX"))[-1].startswith(b"e OK")
    await client.c(b"f APPEND INBOX {%d+}\r\n" % len(RAW) + RAW)
    await client.c(b"f2 APPEND INBOX {%d+}\r\n" % len(RAW) + RAW)
    assert (await client.c(b"g COPY 1 " + quoted(name)))[-1].startswith(b"g OK [COPYUID ")
    lines = await client.c(b"h MOVE 2 " + quoted(name))
    assert lines[0].startswith(b"* OK [COPYUID ") and lines[-1].startswith(b"h OK")
    assert store.get_mailbox(USER, name).messages == 3
    assert (await client.c(b"i RENAME " + quoted(name) + b" " + quoted("Entwürfe/Ελλάδα")))[-1] \
        == b"i OK RENAME completed"
    assert store.get_mailbox(USER, "Entwürfe/Ελλάδα").messages == 3
    assert (await client.c(b"j SUBSCRIBE " + quoted("Entwürfe/Ελλάδα")))[-1].startswith(b"j OK")
    assert b'* LSUB () "/" ' + quoted("Entwürfe/Ελλάδα") in await client.c(b'k LSUB "" "*"')
    assert (await client.c(b"l DELETE " + quoted("Entwürfe/Ελλάδα")))[-1] == b"l OK DELETE completed"
    assert [box.name for box in store.list_mailboxes(USER)].count("Entwürfe/Ελλάδα") == 0


@pytest_twisted.ensureDeferred
async def test_rev1_session_sees_the_same_names_in_modified_utf7(store):
    rev2 = await logged_in(store, b"UTF8=ACCEPT")
    await rev2.c(b"a CREATE " + quoted("Entwürfe"))
    rev1 = await logged_in(store)
    encoded = mutf7.encode("Entwürfe")
    assert encoded == b"Entw&APw-rfe"
    assert b'* LIST (\\HasNoChildren) "/" "Entw&APw-rfe"' in await rev1.c(b'b LIST "" "Entw*"')
    assert (await rev1.c(b'c STATUS "Entw&APw-rfe" (MESSAGES)'))[0] \
        == b'* STATUS "Entw&APw-rfe" (MESSAGES 0)'
    # 8-bit in a rev1 name is not modified UTF-7; "&" in a UTF-8 session is just "&".
    assert (await rev1.c(b"d STATUS " + quoted("Entwürfe") + b" (MESSAGES)"))[-1].startswith(b"d BAD")
    lines = await rev2.c(b'e STATUS "Entw&APw-rfe" (MESSAGES)')
    assert lines[-1] == b"e NO [NONEXISTENT] Mailbox doesn't exist"


@pytest_twisted.ensureDeferred
async def test_invalid_utf8_name_is_bad_and_copy_reads_utf8(store):
    client = await logged_in(store, b"IMAP4rev2")
    assert (await client.c(b'a CREATE "bad\xff\xfe"'))[-1].startswith(b"a BAD")
    assert (await client.c(b'b CREATE "caf\xc3"'))[-1].startswith(b"b BAD")
    await client.c(b"c SELECT INBOX")
    await client.c(b"d APPEND INBOX {%d+}\r\n" % len(RAW) + RAW)
    assert (await client.c(b'e COPY 1 "\xff"'))[-1].startswith(b"e BAD")
    # COPY never creates its target (RFC 9051 §6.4.7, Appendix E item 8).
    assert (await client.c(b"f COPY 1 " + quoted("Ünbekannt")))[-1] \
        == b"f NO [TRYCREATE] Mailbox doesn't exist"


@pytest_twisted.ensureDeferred
async def test_denormalized_names_become_nfc_with_oldname(store):
    client = await logged_in(store, b"IMAP4rev2")
    nfd = unicodedata.normalize("NFD", "Café")
    nfc = "Café"
    assert nfd != nfc
    lines = [created(line) for line in await client.c(b"a CREATE " + quoted(nfd))]
    assert lines == [b'* LIST () "/" ' + quoted(nfc) + b' ("OLDNAME" (' + quoted(nfd) + b"))",
                     b"a OK CREATE completed"]
    assert [box.name for box in store.list_mailboxes(USER)].count(nfc) == 1
    # RFC 9051 §5.1: the denormalized name works in every command.
    assert (await client.c(b"b STATUS " + quoted(nfd) + b" (MESSAGES)"))[0] \
        == b"* STATUS " + quoted(nfc) + b" (MESSAGES 0)"
    assert (await client.c(b"c APPEND " + quoted(nfd) + b" {%d+}\r\n" % len(RAW) + RAW))[-1] \
        .startswith(b"c OK")
    new_nfd = unicodedata.normalize("NFD", "Résumé")
    lines = await client.c(b"d RENAME " + quoted(nfd) + b" " + quoted(new_nfd))
    assert lines == [b'* LIST () "/" ' + quoted("Résumé") + b' ("OLDNAME" (' + quoted(new_nfd) + b"))",
                     b"d OK RENAME completed"]
    assert store.get_mailbox(USER, "Résumé").messages == 1
    lines = await client.c(b"e DELETE " + quoted(new_nfd))
    assert lines == [b'* LIST (\\NonExistent) "/" ' + quoted("Résumé")
                     + b' ("OLDNAME" (' + quoted(new_nfd) + b"))", b"e OK DELETE completed"]
    assert created((await client.c(b"f CREATE " + quoted(nfc)))[0]) == b"f OK CREATE completed"


@pytest.mark.parametrize("enable,name", [
    (b"IMAP4rev2", quoted("bell\x07")),
    (b"UTF8=ACCEPT", quoted("next\u0085line")),
    (b"IMAP4rev2", quoted("line\u2028sep")),
    (None, b'"ctl&AAE-x"'),  # U+0001 in modified UTF-7
])
@pytest_twisted.ensureDeferred
async def test_names_that_are_not_net_unicode_are_refused(store, enable, name):
    client = await logged_in(store, *([enable] if enable else []))
    assert (await client.c(b"a CREATE " + name))[-1] \
        == b"a NO [CANNOT] Mailbox names may not contain control characters"
    await client.c(b"b CREATE Fine")
    assert (await client.c(b"c RENAME Fine " + name))[-1].startswith(b"c NO [CANNOT]")
    names = [box.name for box in store.list_mailboxes(USER)]
    assert "Fine" in names
    assert not any(imap4rev2._NOT_NET_UNICODE.search(name) for name in names)


# ---------------------------------------------------------------- RECENT


@pytest_twisted.ensureDeferred
async def test_status_recent_is_bad_in_rev2_only(store):
    rev1 = await logged_in(store)
    assert (await rev1.c(b"a STATUS INBOX (MESSAGES RECENT)"))[0] \
        == b'* STATUS "INBOX" (MESSAGES 0 RECENT 0)'
    rev2 = await logged_in(store, b"IMAP4rev2")
    assert await rev2.c(b"b STATUS INBOX (MESSAGES RECENT)") == [
        b"b BAD STATUS RECENT is not part of IMAP4rev2"]
    assert (await rev2.c(b'c LIST "" "INBOX" RETURN (STATUS (RECENT))'))[-1].startswith(b"c BAD")
    lines = await rev2.c(b'd LIST "" "INBOX" RETURN (STATUS (MESSAGES DELETED SIZE))')
    assert lines[1] == b'* STATUS "INBOX" (MESSAGES 0 DELETED 0 SIZE 0)'  # Appendix E item 3


# ---------------------------------------------------------------- APPEND UTF8 (literal8)


async def fetch_body(client: Client, mailbox: str = "INBOX") -> bytes:
    await client.c(b"s EXAMINE " + quoted(mailbox))
    lines = await client.c(b"f FETCH * BODY.PEEK[]")
    return b"\r\n".join(lines)


@pytest_twisted.ensureDeferred
async def test_append_utf8_literal8_after_enable_utf8_accept(store):
    client = await logged_in(store, b"UTF8=ACCEPT")
    lines = await client.c(b"a APPEND INBOX (\\Seen) UTF8 (~{%d}\r\n" % len(UTF8_RAW) + UTF8_RAW + b")")
    assert lines[0].startswith(b"+ ") and lines[-1].startswith(b"a OK [APPENDUID ")
    lines = await client.c(b"b APPEND INBOX utf8 (~{%d+}\r\n" % len(UTF8_RAW) + UTF8_RAW + b")")
    assert lines[-1].startswith(b"b OK [APPENDUID ")
    messages = store.list_messages(USER, store.get_mailbox(USER, "INBOX").mailbox_id)
    assert [tuple(m.flags) for m in messages] == [("\\Seen",), ()]
    assert all(store.read_message(USER, m.blob_id) == UTF8_RAW for m in messages)


@pytest_twisted.ensureDeferred
async def test_8bit_headers_need_utf8_accept_or_rev2(store):
    rev1 = await logged_in(store)
    # RFC 6855 §4: NO for 8-bit header fields unless UTF8=ACCEPT is enabled, in either form.
    assert (await rev1.c(b"a APPEND INBOX {%d+}\r\n" % len(UTF8_RAW) + UTF8_RAW))[-1] \
        == b"a NO [CANNOT] 8-bit header fields need ENABLE UTF8=ACCEPT"
    assert (await rev1.c(b"b APPEND INBOX UTF8 (~{%d+}\r\n" % len(UTF8_RAW) + UTF8_RAW + b")"))[-1] \
        .startswith(b"b NO [CANNOT]")
    body_8bit = b"Subject: x\r\n\r\nGr\xc3\xbc\xc3\x9fe\r\n"
    assert (await rev1.c(b"c APPEND INBOX {%d+}\r\n" % len(body_8bit) + body_8bit))[-1] \
        .startswith(b"c OK")  # an 8-bit body was always fine
    rev2 = await logged_in(store, b"IMAP4rev2")
    # RFC 9051 §6.3.12: 8-bit characters are permitted in the message.
    assert (await rev2.c(b"d APPEND INBOX {%d+}\r\n" % len(UTF8_RAW) + UTF8_RAW))[-1].startswith(b"d OK")
    assert store.get_mailbox(USER, "INBOX").messages == 2


@pytest.mark.parametrize("tail", [
    b"UTF8 ~{4+}\r\nSubj",            # no parentheses
    b"UTF8 ({4+}\r\nSubj)",           # a literal, not a literal8
    b"UTF8 (~{4+}\r\nSubj",           # not closed
    b"UTF9 (~{4+}\r\nSubj)",
])
@pytest_twisted.ensureDeferred
async def test_malformed_utf8_append_is_bad(store, tail):
    client = await logged_in(store, b"UTF8=ACCEPT")
    assert (await client.c(b"a APPEND INBOX " + tail))[-1].startswith(b"a BAD")
    assert store.get_mailbox(USER, "INBOX").messages == 0
    assert (await client.c(b"b NOOP"))[-1] == b"b OK NOOP completed"  # still in sync


# ---------------------------------------------------------------- SEARCH


@pytest_twisted.ensureDeferred
async def test_search_charset_is_bad_after_utf8_accept_but_not_in_plain_rev2(store):
    rev2 = await logged_in(store, b"IMAP4rev2")
    await rev2.c(b"a APPEND INBOX {%d+}\r\n" % len(RAW) + RAW)
    await rev2.c(b"b SELECT INBOX")
    # RFC 9051 §6.4.4: SEARCH answers with ESEARCH (Appendix E item 4).
    assert (await rev2.c(b"c SEARCH CHARSET UTF-8 SUBJECT hi"))[0] == b'* ESEARCH (TAG "c") ALL 1'
    utf8 = await logged_in(store, b"UTF8=ACCEPT")
    await utf8.c(b"d SELECT INBOX")
    assert (await utf8.c(b"e SEARCH CHARSET UTF-8 SUBJECT hi"))[-1] \
        == b"e BAD SEARCH CHARSET is not allowed after ENABLE UTF8=ACCEPT"
    assert (await utf8.c(b'f SEARCH SUBJECT "h\xc3\xafi"'))[-1] == b"f OK Search completed"


# ---------------------------------------------------------------- Appendix E items already right


@pytest_twisted.ensureDeferred
async def test_rev2_session_walkthrough_of_folded_in_extensions(store):
    client = await logged_in(store, b"IMAP4rev2")
    assert (await client.c(b"a NAMESPACE"))[0] == b'* NAMESPACE (("" "/")) NIL NIL'  # item 2
    await client.c(b"b APPEND INBOX {%d+}\r\n" % len(RAW) + RAW)
    await client.c(b"b2 APPEND INBOX {%d+}\r\n" % len(RAW) + RAW)
    await client.c(b"c SELECT INBOX")
    # Item 21: FETCH responses caused by STORE carry UID; item 15: $Junk etc. are keywords.
    lines = await client.c(b"d STORE 1 +FLAGS ($Junk $Phishing $MDNSent $Forwarded \\Deleted)")
    assert lines[0].startswith(b"* 1 FETCH (") and b"UID 1" in lines[0] and b"$Junk" in lines[0]
    assert (await client.c(b"e STATUS INBOX (DELETED SIZE)"))[0] \
        == b'* STATUS "INBOX" (DELETED 1 SIZE %d)' % (2 * len(RAW))  # item 3
    # UIDPLUS UID EXPUNGE (item 2), then MOVE's COPYUID in an untagged OK (item 7).
    assert (await client.c(b"f UID EXPUNGE 1"))[0] == b"* 1 EXPUNGE"
    await client.c(b"g CREATE Archive")
    lines = await client.c(b"h UID MOVE 2 Archive")
    assert lines[0] == b"* OK [COPYUID %d 2 1] Moved" % store.get_mailbox(USER, "Archive").uidvalidity
    assert lines[1] == b"* 1 EXPUNGE"
    # Items 17, 19: CHECK and LSUB are gone from rev2 but kept for rev1 clients.
    assert (await client.c(b"i CHECK"))[-1] == b"i OK Check completed"
    assert (await client.c(b'j LSUB "" "*"'))[-1].startswith(b"j OK")
    assert (await client.c(b"k UNSELECT"))[-1].startswith(b"k OK")
    # Items 9 (CLOSED) to 12 are SELECT's: see test_select_sends_list_and_closed.


@pytest_twisted.ensureDeferred
async def test_select_helpers_list_recent_unseen(store):
    """The pieces SELECT/EXAMINE use for RFC 9051 §6.3.2 (items 10, 11, 12)."""
    rev1 = await logged_in(store)
    assert (await rev1.c(b"a CREATE Sent/2024"))[-1].startswith(b"a OK")
    assert store.get_mailbox(USER, "Sent").special_use == "\\Sent"
    await rev1.c(b"c SELECT INBOX")
    info = store.get_mailbox(USER, "Sent/2024")
    assert imap4rev2.selected_list_response(rev1.session, info) == b""
    assert imap4rev2.sends_recent(rev1.session) and imap4rev2.sends_unseen_code(rev1.session)
    rev2 = await logged_in(store, b"IMAP4rev2")
    await rev2.c(b"d SELECT INBOX")
    assert imap4rev2.selected_list_response(rev2.session, info) \
        == b'* LIST (\\HasNoChildren) "/" "Sent/2024"\r\n'
    sent = [box for box in store.list_mailboxes(USER) if box.name == "Sent"][0]
    assert imap4rev2.selected_list_response(rev2.session, sent) \
        == b'* LIST (\\HasChildren \\Sent) "/" "Sent"\r\n'
    assert not imap4rev2.sends_recent(rev2.session) and not imap4rev2.sends_unseen_code(rev2.session)
    nfd = unicodedata.normalize("NFD", "Sent/Café")
    await rev2.c(b"e CREATE " + quoted(nfd))
    cafe = store.get_mailbox(USER, "Sent/Café")
    assert imap4rev2.selected_list_response(rev2.session, cafe, nfd) == (
        b'* LIST (\\HasNoChildren) "/" ' + quoted("Sent/Café")
        + b' ("OLDNAME" (' + quoted(nfd) + b'))\r\n')


@pytest_twisted.ensureDeferred
async def test_select_sends_list_and_closed(store):
    client = await logged_in(store, b"IMAP4rev2")
    await client.c(b"a CREATE " + quoted("Entwürfe"))
    await client.c(b"b SELECT INBOX")
    lines = await client.c(b"c EXAMINE " + quoted("Entwürfe"))
    assert lines[0].startswith(b"* OK [CLOSED]")  # item 9
    assert b'* LIST (\\HasNoChildren) "/" ' + quoted("Entwürfe") in lines
    assert not any(b"RECENT" in line or b"[UNSEEN" in line for line in lines)
    assert lines[-1].startswith(b"c OK [READ-ONLY]")


_APPEND_PREFIXES = (b"", b" ", b" UTF8 (~{3}", b" UTF8 (", b" utf8 ~", b" (\\Seen) UTF8 (~{",
                    b" {3}", b" ~{3+}", b' "01-Jan-2024 00:00:00 +0000" UTF8 (~{2}')


@given(st.sampled_from(_APPEND_PREFIXES), st.lists(st.binary(max_size=12), min_size=1, max_size=5))
@settings(max_examples=500, deadline=None)
def test_append_message_parsing_raises_only_parse_errors(prefix, parts):
    # Odd-length tuples are what the reader frames (line, literal, line, ...).
    segments = (prefix + parts[0],) + tuple(parts[1:])
    if len(segments) % 2 == 0:
        segments = segments + (b")",)
    try:
        append.parse_messages(ArgCursor(segments))
    except ParseError:
        pass
