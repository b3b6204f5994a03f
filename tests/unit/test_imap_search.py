"""SEARCH: the program parser, the scan evaluator, and SEARCH / UID SEARCH transcripts
(ESEARCH, SEARCHRES ``$``, MODSEQ, CHARSET, IMAP4rev2), plus the real store's facts."""

from __future__ import annotations

import base64
import datetime

import pytest
import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st

from mailserverd.imap import search
from mailserverd.imap.commands.search import compress_set
from mailserverd.imap.parser import ArgCursor, ParseError, SequenceSet

from imap_real_store import open_store
from imap_fakes import USER, Harness

DAY = 86400
JAN_2 = 1704164645  # 2024-01-02 03:04:05 UTC

PLAIN = (b"From: Bob Smith <bob@example.test>\r\nTo: alice@example.test\r\n"
         b"Cc: =?iso-8859-1?q?J=F6rg?= <joerg@example.test>\r\n"
         b"Subject: =?utf-8?q?Caf=C3=A9?= =?utf-8?b?IG1lbnU=?= today\r\n"
         b"Date: Sun, 31 Dec 2023 23:30:00 -0500\r\nMessage-ID: <plain@example.test>\r\n"
         b"X-Folded: first\r\n second line\r\n\r\nHello plain world\r\n")
MULTIPART = (b"From: carol@example.test\r\nTo: bob@example.test\r\nBcc: secret@example.test\r\n"
             b"Subject: parts\r\nDate: 5 Jan 2024 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
             b"Content-Type: multipart/mixed; boundary=XX\r\n\r\n"
             b"preamble ghost\r\n"
             b"--XX\r\nContent-Type: text/plain; charset=iso-8859-1\r\n"
             b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
             b"Gr=FC=DFe aus K=F6ln, soft=\r\nbreak\r\n"
             b"--XX\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
             + base64.encodebytes("<p>Ünïcödé html</p>".encode()).replace(b"\n", b"\r\n") +
             b"--XX\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
             + base64.encodebytes(b"binary needle here").replace(b"\n", b"\r\n") +
             b"--XX\r\nContent-Type: message/rfc822\r\n\r\n"
             b"Subject: =?utf-8?q?inner_subj=C3=A9t?=\r\nFrom: dave@example.test\r\n\r\ninner body text\r\n"
             b"--XX--\r\n")
NO_DATE = b"From: eve@example.test\r\nSubject: undated\r\n\r\nno date here\r\n"


@pytest.fixture
def h() -> Harness:
    harness = Harness()
    store = harness.store
    store.add_message(USER, "INBOX", PLAIN, flags={"\\Seen", "\\Answered"}, internaldate=JAN_2)
    store.add_message(USER, "INBOX", MULTIPART, flags={"\\Flagged", "$Work"}, internaldate=JAN_2 + DAY)
    store.add_message(USER, "INBOX", NO_DATE, flags={"\\Deleted", "\\Draft"}, internaldate=JAN_2 + 3 * DAY)
    harness.select()
    return harness


def found(harness: Harness, program: bytes, tag: bytes = b"s") -> list[int]:
    """Numbers of ``tag SEARCH program`` (or ``program`` itself when it starts with UID SEARCH)."""
    command = program if program.startswith(b"UID SEARCH ") else b"SEARCH " + program
    reply = harness.c(tag + b" " + command + b"\r\n")
    lines = [line for line in reply.split(b"\r\n") if not line.startswith(b"+ ")]
    assert lines[-2].startswith(tag + b" OK"), reply
    assert lines[0].startswith(b"* SEARCH"), reply
    return [int(word) for word in lines[0].split()[2:]]


def parse(text: bytes) -> search.SearchRequest:
    return search.parse_search(ArgCursor((text,)))


# ----------------------------------------------------------------- parser


def test_parse_builds_the_tree():
    request = parse(b"RETURN (min Count) CHARSET utf-8 OR FROM \"a b\" NOT (SEEN 1:3,*) UID 5:*")
    assert request.options == {"MIN", "COUNT"} and request.charset == "UTF-8"
    every = SequenceSet(((1, 3), (None, None)))
    assert request.key == search.And((
        search.Or(search.EnvelopeText("from", "a b"),
                  search.Not(search.And((search.Flag("\\Seen"), search.SeqSet(every))))),
        search.UidSet(SequenceSet(((5, None),))),
    ))


@pytest.mark.parametrize("text, node", [
    (b"ALL", search.All()),
    (b"OLD", search.Not(search.Recent())),
    (b"NEW", search.And((search.Recent(), search.Not(search.Flag("\\Seen"))))),
    (b"UNDRAFT", search.Not(search.Flag("\\Draft"))),
    (b"KEYWORD $Junk", search.Flag("$Junk")),
    (b"UNKEYWORD foo", search.Not(search.Flag("foo"))),
    (b"LARGER 9223372036854775807", search.SizeKey("larger", 2 ** 63 - 1)),
    (b"SMALLER 0", search.SizeKey("smaller", 0)),
    (b"BEFORE 1-Feb-1994", search.DateKey("internal", "before", datetime.date(1994, 2, 1))),
    (b'SENTON "29-feb-2024"', search.DateKey("sent", "on", datetime.date(2024, 2, 29))),
    (b"SAVEDSINCE 01-Jan-2020", search.DateKey("saved", "since", datetime.date(2020, 1, 1))),
    (b"HEADER Message-ID {5}\r\n<A@B>", search.HeaderText(b"message-id", "<a@b>")),
    (b'BODY "Stra\xc3\x9fe"', search.BodyText("strasse")),
    (b"TEXT \"\"", search.AnyText("")),
    (b"MODSEQ 0", search.ModSeq(0)),
    (b'MODSEQ "/flags/\\\\draft" all 620162338', search.ModSeq(620162338)),
    (b"$", search.Saved()),
    (b"UID $", search.Saved()),
    (b"SAVEDATESUPPORTED", search.SaveDateSupported()),
])
def test_parse_each_key(text, node):
    line, _, data = text.partition(b"\r\n")  # a literal: [line, data, rest of the command]
    segments = (line, data, b"") if data else (line,)
    assert search.parse_search(ArgCursor(segments)).key == search.And((node,))


@pytest.mark.parametrize("text", [
    b"", b"FOO", b"ALL ", b"ALL  SEEN", b"(SEEN", b"()", b"( SEEN)", b"NOT", b"OR SEEN",
    b"FROM", b"FROM caf\xc3\xa9", b'FROM "\xff"', b"BEFORE 30-Feb-2024", b"BEFORE 1-Foo-2024",
    b"BEFORE 1-Jan-24", b'ON "1-Jan-2024', b"LARGER -1", b"LARGER 9223372036854775808",
    b"UID 0", b"UID", b"0", b"1:0", b"$1", b"KEYWORD \\Seen", b"MODSEQ x", b'MODSEQ "/x" all 1',
    b'MODSEQ "/flags/a" any 1', b"RETURN (FOO) ALL", b"RETURN ALL", b"RETURN (MIN)",
    b"CHARSET", b"CHARSET UTF-8", b"HEADER", b"HEADER a",
])
def test_parse_refuses_bad_programs(text):
    with pytest.raises(ParseError):
        parse(text)


def test_return_list_empty_means_all_and_charset_refusal_carries_options():
    assert parse(b"RETURN () ALL").options == {"ALL"}
    with pytest.raises(search.UnsupportedCharset) as refused:
        parse(b"RETURN (SAVE) CHARSET KOI8-R ALL")
    assert refused.value.options == {"SAVE"} and refused.value.charset == "KOI8-R"


def test_nesting_is_bounded():
    depth = search.SEARCH_NESTING_MAX
    parse(b"NOT " * depth + b"ALL")
    parse(b"(" * depth + b"ALL" + b")" * depth)
    for text in (b"NOT " * (depth + 1) + b"ALL", b"(" * (depth + 1) + b"ALL" + b")" * (depth + 1),
                 b"OR " * (depth + 1) + b"ALL" + b" ALL" * (depth + 1)):
        with pytest.raises(search.ProgramTooDeep):  # valid syntax over our limit: NO [LIMIT]
            parse(text)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=80) | st.lists(st.sampled_from(
    [b"NOT", b"OR", b"(", b")", b" ", b"ALL", b"1:*", b"$", b"UID", b"FROM", b'"x"', b"{1}",
     b"RETURN", b"CHARSET", b"UTF-8", b"BEFORE", b"1-Jan-2024", b"MODSEQ", b"5", b"*"]),
    max_size=12).map(b"".join))
def test_parser_raises_only_its_own_errors(data):
    try:
        parse(data)
    except (ParseError, search.UnsupportedCharset):
        pass


def test_decode_header_value():
    decode = search.decode_header_value
    assert decode(b"=?utf-8?q?a_b?= =?utf-8?b?Yw==?=\r\n  d") == "a bc  d"
    assert decode(b"x =?ISO-8859-1*de?Q?J=F6rg?= y") == "x Jörg y"
    assert decode(b"=?bogus?q?abc?=") == "abc"  # unknown charset: bytes as UTF-8
    assert decode(b"=?utf-8?b?not base64!?=") == "=?utf-8?b?not base64!?="
    assert decode(b"caf\xc3\xa9 \xe9") == "caf\xc3\xa9 \xe9".encode("latin-1").decode("latin-1")
    assert decode(b"caf\xc3\xa9") == "café"
    assert decode(b"=?rot13?q?abc?=") == "abc"  # not a text codec: left undecoded


def test_compress_set():
    assert compress_set([1]) == b"1"
    assert compress_set([1, 2, 3, 5, 7, 8]) == b"1:3,5,7:8"


# ------------------------------------------------------------ transcripts


@pytest.mark.parametrize("program, numbers", [
    (b"ALL", [1, 2, 3]),
    (b"SEEN", [1]), (b"UNSEEN", [2, 3]), (b"ANSWERED", [1]), (b"UNANSWERED", [2, 3]),
    (b"FLAGGED", [2]), (b"UNFLAGGED", [1, 3]), (b"DELETED", [3]), (b"UNDELETED", [1, 2]),
    (b"DRAFT", [3]), (b"UNDRAFT", [1, 2]), (b"KEYWORD $work", [2]), (b"UNKEYWORD $WORK", [1, 3]),
    (b"RECENT", []), (b"NEW", []), (b"OLD", [1, 2, 3]),
    (b"2", [2]), (b"2:*", [2, 3]), (b"*", [3]), (b"1,3", [1, 3]), (b"4:5", []), (b"UID 3:2", [2, 3]),
    (b"UID *", [3]), (b"UID 9:*", [3]),
    (b"LARGER %d" % len(MULTIPART), []), (b"LARGER %d" % (len(MULTIPART) - 1), [2]),
    (b"SMALLER %d" % len(NO_DATE), []), (b"SMALLER %d" % (len(NO_DATE) + 1), [3]),
    (b"NOT SEEN", [2, 3]), (b"OR SEEN DELETED", [1, 3]), (b"OR (SEEN ANSWERED) 2", [1, 2]),
    (b"SEEN FLAGGED", []), (b"(UNSEEN) (UNDELETED)", [2]),
    # INTERNALDATE days (UTC): 2024-01-02, 01-03, 01-05
    (b"ON 3-Jan-2024", [2]), (b"BEFORE 3-Jan-2024", [1]), (b"SINCE 3-Jan-2024", [2, 3]),
    (b'SINCE "2-Jan-2024"', [1, 2, 3]), (b"SAVEDON 5-Jan-2024", [3]), (b"SAVEDATESUPPORTED", []),
    # Date: fields, in their own zone: 2023-12-31, 2024-01-05; none -> internal date 2024-01-05
    (b"SENTON 31-Dec-2023", [1]), (b"SENTBEFORE 1-Jan-2024", [1]), (b"SENTSINCE 5-Jan-2024", [2, 3]),
    (b"SENTON 5-Jan-2024", [2, 3]),
])
def test_search_keys(h, program, numbers):
    assert found(h, program) == numbers


@pytest.mark.parametrize("program, numbers", [
    (b"FROM smith", [1]), (b"FROM BOB@EXAMPLE.TEST", [1]), (b"FROM dave", []),
    (b"TO bob", [2]), (b'CC "j\xc3\xb6rg"', [1]), (b'CC "J\xc3\x96RG <joerg@"', [1]),
    (b"BCC secret", [2]), (b"BCC bob", []),
    (b'SUBJECT "caf\xc3\xa9 menu today"', [1]), (b"SUBJECT parts", [2]), (b"SUBJECT inner", []),
    (b"SUBJECT \"\"", [1, 2, 3]),
    (b"HEADER X-Folded \"first second\"", [1]), (b"HEADER x-folded \"\"", [1]),
    (b"HEADER Message-ID <plain@", [1]), (b"HEADER Content-Type mixed", [2]),
    (b"BODY world", [1]), (b"BODY smith", []),  # BODY: no header field
    (b'BODY "gr\xc3\xbc\xc3\x9fe aus k\xc3\xb6ln"', [2]),  # quoted-printable, Latin-1
    (b'BODY "GRUSSE"', []), (b"BODY softbreak", [2]),  # a soft line break joins
    (b'BODY "\xc3\xbcn\xc3\xafc\xc3\xb6d\xc3\xa9 HTML"', [2]),  # base64 UTF-8
    (b"BODY needle", []),  # application/octet-stream is not searched
    (b"BODY ghost", []),  # nor the preamble
    (b'BODY "inner subj\xc3\xa9t"', [2]), (b'BODY "inner body"', [2]),  # message/rfc822: header and body
    (b"TEXT smith", [1]), (b"TEXT world", [1]), (b"TEXT message-id", [1]),
    (b'TEXT "k\xc3\xb6ln"', [2]), (b"TEXT undated", [3]),
    (b"CHARSET US-ASCII FROM carol", [2]), (b'CHARSET utf-8 BODY "K\xc3\x96LN"', [2]),
    (b"BODY {5}\r\nk\xc3\xb6ln", [2]),
])
def test_text_keys_match_decoded_text(h, program, numbers):
    assert found(h, program) == numbers


def test_uid_search_answers_uids(h):
    h.store.remove_message(USER, "INBOX", 1)
    # As if its EXPUNGE had been reported (the fake store has no change log;
    # reporting is tested on the real store in test_imap_condstore.py).
    h.session.selected.uids.remove(1)
    assert found(h, b"UID SEARCH ALL") == [2, 3]
    assert found(h, b"ALL") == [1, 2]
    assert found(h, b"UID SEARCH 1") == [2]
    assert found(h, b"UID SEARCH UID 1") == []


def test_message_expunged_elsewhere_is_left_out(h):
    h.store.remove_message(USER, "INBOX", 2)  # not yet reported to this session
    assert found(h, b"ALL") == [1, 3]


def test_esearch_results(h):
    assert h.c(b't1 SEARCH RETURN (MIN MAX COUNT ALL) UNSEEN\r\n') == (
        b'* ESEARCH (TAG "t1") MIN 2 MAX 3 COUNT 2 ALL 2:3\r\nt1 OK Search completed\r\n')
    assert h.c(b't2 UID SEARCH RETURN () OR 1 3\r\n') == (
        b'* ESEARCH (TAG "t2") UID ALL 1,3\r\nt2 OK Search completed\r\n')
    assert h.c(b't3 SEARCH RETURN (MIN MAX ALL COUNT) KEYWORD none\r\n') == (
        b'* ESEARCH (TAG "t3") COUNT 0\r\nt3 OK Search completed\r\n')
    assert h.c(b't4 SEARCH RETURN (MAX) ALL\r\n') == b'* ESEARCH (TAG "t4") MAX 3\r\nt4 OK Search completed\r\n'


def test_imap4rev2_answers_with_esearch(h):
    h.session.enabled = {"IMAP4REV2"}
    assert h.c(b"r SEARCH SEEN\r\n") == b'* ESEARCH (TAG "r") ALL 1\r\nr OK Search completed\r\n'
    assert h.c(b"r UID SEARCH DRAFT SEEN\r\n") == b'* ESEARCH (TAG "r") UID\r\nr OK Search completed\r\n'
    assert h.c(b"r SEARCH RETURN (COUNT) ALL\r\n") == b'* ESEARCH (TAG "r") COUNT 3\r\nr OK Search completed\r\n'


def test_modseq_is_reported(h):
    # The fake store's MODSEQ of a message is its UID.
    assert h.c(b"m SEARCH MODSEQ 2\r\n") == b"* SEARCH 2 3 (MODSEQ 3)\r\nm OK Search completed\r\n"
    assert h.c(b"m SEARCH MODSEQ 9\r\n") == b"* SEARCH\r\nm OK Search completed\r\n"
    assert h.c(b"m SEARCH SEEN\r\n") == b"* SEARCH 1\r\nm OK Search completed\r\n"
    # RFC 4731 §3.2: MIN alone -> that message's; with COUNT -> all found.
    assert h.c(b"m SEARCH RETURN (MIN) MODSEQ 1\r\n") == (
        b'* ESEARCH (TAG "m") MIN 1 MODSEQ 1\r\nm OK Search completed\r\n')
    assert h.c(b"m SEARCH RETURN (MIN COUNT) MODSEQ 1\r\n") == (
        b'* ESEARCH (TAG "m") MIN 1 COUNT 3 MODSEQ 3\r\nm OK Search completed\r\n')
    assert h.c(b"m SEARCH RETURN (COUNT) MODSEQ 7\r\n") == (
        b'* ESEARCH (TAG "m") COUNT 0\r\nm OK Search completed\r\n')


def test_badcharset_and_bad_syntax(h):
    assert h.c(b"c SEARCH CHARSET ISO-8859-1 FROM x\r\n") == (
        b"c NO [BADCHARSET (US-ASCII UTF-8)] Unsupported charset\r\n")
    assert h.c(b"c SEARCH FROM\r\n").startswith(b"c BAD ")
    assert h.c(b"c SEARCH SEEN garbage\r\n") == b"c BAD Unknown search key\r\n"
    assert h.c(b"c UID SEARCH\r\n").startswith(b"c BAD ")
    assert not h.closed


def test_search_needs_a_selected_mailbox():
    harness = Harness()
    assert harness.c(b"a SEARCH ALL\r\n") == b"a BAD Log in first\r\n"
    harness.login()
    assert harness.c(b"a SEARCH ALL\r\n") == b"a BAD No mailbox selected\r\n"


# ------------------------------------------------------------ SEARCHRES $


def test_save_alone_sends_no_esearch_and_dollar_follows_messages(h):
    assert h.c(b"a SEARCH RETURN (SAVE) UNSEEN\r\n") == b"a OK Search completed\r\n"
    assert found(h, b"$") == [2, 3]
    assert found(h, b"UID SEARCH UID $") == [2, 3]
    assert found(h, b"NOT $") == [1]
    # A UID SEARCH's result names the same messages in a sequence context.
    h.c(b"b UID SEARCH RETURN (SAVE) 3\r\n")
    assert found(h, b"$") == [3]
    # Expunged messages leave the saved result (RFC 9051 §6.4.4.1).
    h.store.remove_message(USER, "INBOX", 1)
    h.session.selected.uids.remove(1)  # as if reported (the fake store has no change log)
    assert found(h, b"$") == [2]  # UID 3 is now message 2


def test_save_with_min_max_keeps_only_those(h):
    assert h.c(b"a SEARCH RETURN (SAVE MIN) ALL\r\n") == (
        b'* ESEARCH (TAG "a") MIN 1\r\na OK Search completed\r\n')
    assert found(h, b"$") == [1]
    h.c(b"a SEARCH RETURN (SAVE MIN MAX) ALL\r\n")
    assert found(h, b"$") == [1, 3]
    h.c(b"a SEARCH RETURN (SAVE MAX COUNT) ALL\r\n")
    assert found(h, b"$") == [1, 2, 3]
    h.c(b"a SEARCH RETURN (SAVE MIN) KEYWORD nothing\r\n")
    assert found(h, b"$") == []


def test_saved_result_survives_bad_and_plain_search_but_not_no(h):
    h.c(b"a SEARCH RETURN (SAVE) SEEN\r\n")
    assert h.c(b"b SEARCH RETURN (SAVE) FOO\r\n").startswith(b"b BAD")
    h.c(b"c SEARCH DELETED\r\n")
    h.c(b"c SEARCH CHARSET KOI8-R ALL\r\n")  # NO without SAVE: unchanged
    assert found(h, b"$") == [1]
    assert h.c(b"d SEARCH RETURN (SAVE) CHARSET KOI8-R ALL\r\n").startswith(b"d NO [BADCHARSET")
    assert found(h, b"$") == []


def test_saved_result_is_reset_by_select(h):
    h.c(b"a SEARCH RETURN (SAVE) ALL\r\n")
    assert found(h, b"$") == [1, 2, 3]
    h.c(b"s SELECT INBOX\r\n")
    assert found(h, b"$") == []


def test_store_failure_answers_no_and_empties_saved_result(h):
    from mailserverd.store.errors import StoreTemporaryError

    h.c(b"a SEARCH RETURN (SAVE) SEEN\r\n")
    h.store.read_error = StoreTemporaryError("disk")
    assert h.c(b"b SEARCH RETURN (SAVE) BODY x\r\n").startswith(b"b NO [UNAVAILABLE]")
    h.store.read_error = None
    assert found(h, b"$") == []


# ------------------------------------------------------ evaluator laws

_SIMPLE_KEYS = st.sampled_from([
    search.All(), search.Flag("\\Seen"), search.Flag("\\Flagged"), search.Flag("$Work"),
    search.SizeKey("larger", len(PLAIN)), search.SizeKey("smaller", len(MULTIPART)),
    search.SeqSet(SequenceSet(((2, None),))), search.UidSet(SequenceSet(((1, 1), (3, 3)))),
    search.DateKey("internal", "since", datetime.date(2024, 1, 3)), search.Recent(),
    search.EnvelopeText("from", "bob"), search.BodyText("world"),
])
_KEYS = st.recursive(_SIMPLE_KEYS, lambda inner: st.one_of(
    inner.map(search.Not),
    st.tuples(inner, inner).map(lambda pair: search.Or(*pair)),
    st.lists(inner, min_size=1, max_size=3).map(lambda keys: search.And(tuple(keys))),
), max_leaves=8)


@settings(max_examples=150, deadline=None)
@given(left=_KEYS, right=_KEYS)
def test_not_complements_and_or_unites(left, right):
    harness = Harness()
    harness.store.add_message(USER, "INBOX", PLAIN, flags={"\\Seen"}, internaldate=JAN_2)
    harness.store.add_message(USER, "INBOX", MULTIPART, flags={"\\Flagged", "$Work"}, internaldate=JAN_2 + DAY)
    harness.store.add_message(USER, "INBOX", NO_DATE, internaldate=JAN_2 + 3 * DAY)
    messages = [(seq, info) for seq, info in enumerate(harness.store.list_messages(USER, 1), 1)]
    scope = search.SearchScope(harness.store, USER, count=3, max_uid=3)

    def run(key):
        return {seq for seq, _ in search.search_messages(key, messages, scope)}

    everything = {1, 2, 3}
    assert run(search.Not(left)) == everything - run(left)
    assert run(search.Or(left, right)) == run(left) | run(right)
    assert run(search.And((left, right))) == run(left) & run(right)


# ------------------------------------------------------------ real store



@pytest.fixture
def real_store(tmp_path):
    yield from open_store(tmp_path)


@pytest_twisted.ensureDeferred
async def test_text_search_on_the_real_stores_facts(real_store):
    """The stored facts (msgpack round trip) drive the same walk as fresh ones."""
    await real_store.append(USER, "INBOX", PLAIN, ["\\Seen"], internaldate=JAN_2)
    await real_store.append(USER, "INBOX", MULTIPART, internaldate=JAN_2 + DAY)
    box = real_store.get_mailbox(USER, "INBOX")
    messages = list(enumerate(real_store.list_messages(USER, box.mailbox_id), 1))
    scope = search.SearchScope(real_store, USER, count=2, max_uid=2)

    def run(text: bytes) -> list[int]:
        request = parse(text)
        return [seq for seq, _ in search.search_messages(request.key, messages, scope)]

    assert run(b'BODY "k\xc3\xb6ln"') == [2]
    assert run(b'BODY "inner subj\xc3\xa9t"') == [2]
    assert run(b'BODY "\xc3\xbcn\xc3\xafc\xc3\xb6d\xc3\xa9"') == [2]
    assert run(b"CC joerg SEEN") == [1]
    assert run(b"BCC secret") == [2]
    assert run(b"SENTON 31-Dec-2023") == [1]
    assert run(b"HEADER x-folded second") == [1]
    assert run(b"UNSEEN MODSEQ 1") == [2]
