"""IMAP search with the search index, end to end: the same answers whether the
index has caught up or not, substring semantics, expunged messages never
returned, and a long search that does not stop the server.

A mailbox of varied messages -- every message of ../shared/testdata/mime,
and generated ones with encoded-word subjects in several charsets,
quoted-printable and base64 bodies, ISO-8859-1, KOI8-R, Shift_JIS and UTF-8
bodies, HTML only, attachments with file names, binary garbage and broken
MIME -- delivered over SMTP and APPEND, searched with imaplib over implicit
TLS: SEARCH, UID SEARCH, ESEARCH (RFC 4731), SAVE (RFC 5182), SORT and
THREAD (RFC 5256) with every text key. The daemon's indexer runs only when
the daemon starts (``search_index_interval`` of an hour), so right after
delivery every text key is answered by a scan of the unindexed tail, and
after a restart (and a lag of 0 on the metrics endpoint) by the index.
"""

from __future__ import annotations

import base64
import quopri
import random
import re

import pytest

import readiness
from clients import RawImap, smtp_send
from conftest import require_shared
from search_support import (ALICE, IDLE_INDEXER, index_lag, login, multiappend, restart_indexed, search_daemon,
                            untagged, wait_indexed)

pytestmark = pytest.mark.e2e


# ----------------------------------------------------------------- the corpus

def _encoded_word(text: str, charset: str) -> str:
    """``text`` as one RFC 2047 "B" encoded word in ``charset``."""
    return f"=?{charset}?B?{base64.b64encode(text.encode(charset)).decode()}?="


def _message(number: int, name: str, subject: str, body: bytes, *,
             content_type: str = "text/plain; charset=us-ascii", encoding: str = "7bit",
             sender: str = "Sender <sender@remote.test>", extra: str = "") -> bytes:
    """A message with a Message-ID of ``name`` and a Date ``number`` hours into 2024."""
    head = (f"From: {sender}\r\nTo: Alice <alice@example.test>\r\nSubject: {subject}\r\n"
            f"Date: Mon, 1 Jan 2024 {number % 24:02d}:00:00 +0000\r\n"
            f"Message-ID: <{name}@search.test>\r\n{extra}MIME-Version: 1.0\r\n"
            f"Content-Type: {content_type}\r\nContent-Transfer-Encoding: {encoding}\r\n\r\n")
    return head.encode("ascii") + body


def _qp(text: str, charset: str) -> bytes:
    return quopri.encodestring(text.encode(charset)).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _b64(data: bytes) -> bytes:
    return base64.encodebytes(data).replace(b"\n", b"\r\n")


def generated() -> list[tuple[str, bytes]]:
    """``(name, message)`` of the generated messages, in delivery order."""
    garbage = bytes(random.Random(5).choice([b for b in range(1, 256) if b not in (10, 13)])
                    for _ in range(3000))
    garbage = b"\r\n".join(garbage[i:i + 70] for i in range(0, len(garbage), 70))
    made = [
        ("plain", "Quokka picnic on Saturday",
         b"Bring the XYLOPHONE and the zanzibarian spices.\r\nMeet at noon.\r\n",
         dict(sender='"Quentin Quokka" <quentin@remote.test>',
              extra='Cc: "Carla Capybara" <carla@remote.test>\r\nX-Tag: alpha-omega\r\n')),
        ("reply", "Re: Quokka picnic on Saturday", b"I will bring the xylophones.\r\n",
         dict(sender="carla@remote.test",
              extra="In-Reply-To: <plain@search.test>\r\nReferences: <plain@search.test>\r\n")),
        ("reply2", "RE: Re: quokka picnic on saturday", b"count me in\r\n",
         dict(extra="References: <plain@search.test> <reply@search.test>\r\n")),
        ("utf8-subject", _encoded_word("Grüße aus Köln – Straße", "utf-8"), b"see the subject\r\n", {}),
        ("latin1-subject", "=?ISO-8859-1?Q?Caf=E9_cr=E8me_br=FBl=E9e?=", b"dessert\r\n", {}),
        ("koi8-subject", _encoded_word("Привет из Москвы", "koi8-r"), b"greetings\r\n", {}),
        ("sjis-subject", _encoded_word("東京タワーの夜景", "shift_jis"), b"night view\r\n", {}),
        ("qp-latin1", "road",
         _qp("Die Straße nach Köln ist lang.\nÄrger über Öl.\n", "iso-8859-1"),
         dict(content_type="text/plain; charset=iso-8859-1", encoding="quoted-printable")),
        ("b64-utf8", "greek", _b64("Ωμέγα and naïve résumé café\n".encode()),
         dict(content_type="text/plain; charset=utf-8", encoding="base64")),
        ("koi8-body", "pangram",
         "Съешь же ещё этих мягких французских булок\r\n".encode("koi8-r"),
         dict(content_type="text/plain; charset=koi8-r", encoding="8bit")),
        ("sjis-body", "meeting", "東京で会いましょう。よろしくお願いします。\r\n".encode("shift_jis"),
         dict(content_type="text/plain; charset=shift_jis", encoding="8bit")),
        ("utf8-body", "unicode", "Ünïcödé façade ﬁnancial ＦＵＬＬＷＩＤＴＨ\r\n".encode(),
         dict(content_type="text/plain; charset=utf-8", encoding="8bit")),
        ("html-only", "markup",
         b"<html><head><style>p {color: red}</style></head><body><p>Hel<b>lo</b> "
         b"Wom<i>bat</i> &amp; &eacute;t&eacute;</p></body></html>\r\n",
         dict(content_type="text/html; charset=utf-8")),
        ("attachment", "the report",
         b"--b1\r\nContent-Type: text/plain\r\n\r\nsee the attached kangaroo report\r\n"
         b"--b1\r\nContent-Type: application/pdf; name=\"kangaroo-report.pdf\"\r\n"
         b"Content-Disposition: attachment; filename=\"kangaroo-report.pdf\"\r\n"
         b"Content-Transfer-Encoding: base64\r\n\r\n" + _b64(b"%PDF-1.4 binary \x00\xff\xfe") +
         b"--b1\r\nContent-Type: text/plain; charset=utf-8\r\n"
         b"Content-Disposition: attachment; filename*=UTF-8''%C3%BCbersicht.txt\r\n\r\n"
         b"platypus notes inside\r\n--b1--\r\n",
         dict(content_type='multipart/mixed; boundary="b1"')),
        ("binary-garbage", "noise",
         b"--g\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
         + garbage + b"\r\n--g\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
         b"wallaby \xff\xfe\xc3 invalid utf-8\r\n--g--\r\n",
         dict(content_type="multipart/mixed; boundary=g", encoding="8bit")),
        ("broken-boundary", "broken one",
         b"--other\r\nContent-Type: text/plain\r\n\r\nechidna\r\n--other\r\n",
         dict(content_type="multipart/mixed; boundary=declared")),
        ("broken-multipart", "broken two", b"dingo text without any boundary\r\n",
         dict(content_type="multipart/alternative")),
        ("broken-encoding", "=?bogus-charset?Q?numbat?= =?utf-8?B?SGVsbG8",
         b"--c\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n"
         b"!!not base64 at all\x80\r\nd29tYm",
         dict(content_type="multipart/mixed; boundary=c")),
        ("bcc", "hidden copy", b"nothing to see\r\n",
         dict(extra='Bcc: "Betty Bilby" <betty@remote.test>\r\n'
                    'Cc: one@remote.test, "Tom Tasmanian" <tom@remote.test>\r\n')),
        ("long-token", "long word", b"supercalifragilistic" * 12 + b" expialidocious\r\n", {}),
    ]
    return [(name, _message(number, name, subject, body, **options))
            for number, (name, subject, body, options) in enumerate(made)]


def shared_messages() -> list[tuple[str, bytes]]:
    """Every message of ../shared/testdata/mime, CRLF-normalised (its README)."""
    directory = require_shared() / "testdata" / "mime"
    return [(path.name, re.sub(rb"\r?\n", b"\r\n", path.read_bytes()))
            for path in sorted(directory.glob("*.eml"))]


#: Generated messages with 8-bit content sent by APPEND (the rest go over SMTP).
APPENDED = {"binary-garbage", "koi8-body", "sjis-body", "utf8-body"}


def deliver_corpus(daemon) -> dict[str, int]:
    """Deliver the corpus to alice's INBOX; ``{name: uid}`` (UIDs 1, 2, ... in order)."""
    names = []
    by_smtp = [(name, raw) for name, raw in generated() if name not in APPENDED]
    for name, raw in by_smtp:
        smtp_send(daemon, raw)
        names.append(name)
    by_append = [(name, raw) for name, raw in generated() if name in APPENDED] + shared_messages()
    multiappend(daemon, [raw for _, raw in by_append])
    names += [name for name, _ in by_append]
    return {name: uid for uid, name in enumerate(names, 1)}


@pytest.fixture
def delivered(tmp_path):
    """A daemon whose indexer is idle after its start, and alice's INBOX full of
    the corpus: ``(daemon, {name: uid})``."""
    daemon = search_daemon(tmp_path / "d", IDLE_INDEXER)
    daemon.start()
    uids = deliver_corpus(daemon)
    yield daemon, uids
    if daemon.proc.poll() is None:
        daemon.stop()


# ----------------------------------------------------------------- asking

def ask(imap, *command: str, needle: str | None = None, uid: bool = True) -> tuple[str, list]:
    """Send ``[UID] command [needle as a UTF-8 literal]``: (typ, data) as imaplib gives them."""
    if needle is not None:
        imap.literal = needle.encode("utf-8")
    if uid:
        return imap.uid(*command)
    typ, data = imap._simple_command(*command)
    return imap._untagged_response(typ, data, command[0])


def numbers(reply: tuple[str, list]) -> tuple[int, ...]:
    typ, data = reply
    assert typ == "OK", data
    return tuple(int(word) for word in data[0].split())


def text_search(imap, key: str, needle: str) -> tuple[int, ...]:
    """UIDs that ``UID SEARCH CHARSET UTF-8 key needle`` finds."""
    return numbers(ask(imap, "SEARCH", "CHARSET", "UTF-8", *key.split(), needle=needle))


def esearch(imap, options: str, key: str, needle: str, uid: bool = True) -> bytes:
    """The ESEARCH response to ``[UID] SEARCH RETURN (options) CHARSET UTF-8 key
    needle``, without its ``(TAG ...)`` correlator (RFC 4731 §3.1)."""
    imap.literal = needle.encode("utf-8")
    args = ("SEARCH", "RETURN", f"({options})", "CHARSET", "UTF-8", *key.split())
    typ, data = imap._simple_command("UID", *args) if uid else imap._simple_command(*args)
    assert typ == "OK", data
    [response] = untagged(imap, "ESEARCH")
    return re.sub(rb'^\(TAG "[^"]*"\) ?', b"", response)


KEYS = ("BODY", "TEXT", "SUBJECT", "FROM", "TO", "CC", "BCC", "HEADER X-Tag", "HEADER Subject")
NEEDLES = (
    "xylophone", "XYLO", "anzibar", "the xylo", "n spices", "picnic", "c on sat", "quentin@remote",
    "capybara", "tasmanian", "bilby", "alpha-omega", "a-om", "köln", "STRASSE", "ärger über",
    "crème brûlée", "привет", "французских", "ЕЩЁ", "タワー", "会いましょう", "ωμέγα", "financial",
    "fullwidth", "façade", "été", "wombat", "kangaroo report", "platypus", "wallaby", "echidna",
    "dingo", "numbat", "fragilisticsupercali", "日本語", "テスト", "star trek", "", "e", ".", "@",
    "re:", "no such text anywhere",
)
#: Needles whose results are also sorted and threaded.
ORDERED_NEEDLES = ("picnic", "xylophone", "e", "", "köln", "re:")


def battery(imap) -> dict[str, object]:
    """Every answer of the selected mailbox that must not depend on the index:
    each text key with each needle, ESEARCH, SAVE, SORT and THREAD."""
    answers: dict[str, object] = {}
    for key in KEYS:
        for needle in NEEDLES:
            answers[f"UID SEARCH {key} {needle!r}"] = text_search(imap, key, needle)
    for needle in NEEDLES[::3]:
        answers[f"SEARCH TEXT {needle!r}"] = numbers(
            ask(imap, "SEARCH", "CHARSET", "UTF-8", "TEXT", needle=needle, uid=False))
        answers[f"ESEARCH BODY {needle!r}"] = esearch(imap, "MIN MAX COUNT ALL", "BODY", needle)
        answers[f"UID SEARCH OR/NOT {needle!r}"] = numbers(ask(
            imap, "SEARCH", "CHARSET", "UTF-8", "OR", "SUBJECT", "picnic", "NOT", "FROM", needle=needle))
    for needle in ORDERED_NEEDLES:
        answers[f"SAVE {needle!r}"] = saved(imap, "TEXT", needle)
        for criterion in ("(SUBJECT)", "(REVERSE DATE)", "(FROM ARRIVAL)", "(SIZE)"):
            answers[f"UID SORT {criterion} {needle!r}"] = numbers(
                ask(imap, "SORT", criterion, "UTF-8", "TEXT", needle=needle))
        for algorithm in ("REFERENCES", "ORDEREDSUBJECT"):
            typ, data = ask(imap, "THREAD", algorithm, "UTF-8", "TEXT", needle=needle)
            assert typ == "OK", data
            answers[f"UID THREAD {algorithm} {needle!r}"] = data
    return answers


def saved(imap, key: str, needle: str) -> tuple[int, ...]:
    """``SEARCH RETURN (SAVE) key needle`` (no answer: RFC 5182 §2.4), then the
    UIDs of ``$`` by ``UID SEARCH $``."""
    imap.literal = needle.encode("utf-8")
    typ, data = imap._simple_command("SEARCH", "RETURN", "(SAVE)", "CHARSET", "UTF-8", key)
    assert typ == "OK", data
    assert untagged(imap, "ESEARCH") == []
    return numbers(imap.uid("SEARCH", "$"))


# ----------------------------------------------------------------- what the RFC decides

#: ``(key, needle): names`` found, exactly. RFC 9051 §6.4.4: a substring match
#: ("AT" finds "DATE"), not a word match, case-insensitive; decoded text
#: (encoded words, transfer encodings, charsets) is what is compared.
EXACT = {
    ("BODY", "xylophone"): {"plain", "reply"},
    ("BODY", "XYLO"): {"plain", "reply"},
    ("BODY", "lophones"): {"reply"},
    ("BODY", "anzibar"): {"plain"},  # inside "zanzibarian"
    ("BODY", "the xylo"): {"plain", "reply"},
    ("BODY", "n spices"): {"plain"},  # the end of one word and the start of the next
    ("BODY", "ons spices"): set(),
    ("SUBJECT", "PICNIC"): {"plain", "reply", "reply2"},
    ("SUBJECT", "c on sat"): {"plain", "reply", "reply2"},
    ("SUBJECT", "re: re:"): {"reply2"},
    ("FROM", "quokka"): {"plain"},
    ("FROM", "uentin@rem"): {"plain"},
    ("CC", "capybara"): {"plain"},
    ("CC", "tasmanian"): {"bcc"},
    ("TO", "tasmanian"): set(),
    ("BCC", "bilby"): {"bcc"},
    ("BCC", "quokka"): set(),
    ("HEADER X-Tag", "a-om"): {"plain"},
    ("HEADER X-Tag", ""): {"plain"},  # RFC 9051 §6.4.4: the field is there, whatever it holds
    ("HEADER In-Reply-To", "plain@"): {"reply"},
    ("TEXT", "x-tag: alpha"): {"plain"},
    ("TEXT", "zanzibarian spices"): {"plain"},
    ("SUBJECT", "köln"): {"utf8-subject"},
    ("SUBJECT", "KÖLN – STRASSE"): {"utf8-subject"},  # ß folds to ss
    ("SUBJECT", "café crème"): {"latin1-subject"},
    ("SUBJECT", "привет из"): {"koi8-subject"},
    ("SUBJECT", "タワー"): {"sjis-subject"},
    ("BODY", "strasse nach köln"): {"qp-latin1"},
    ("BODY", "ärger über öl"): {"qp-latin1"},
    ("BODY", "ΩΜΈΓΑ"): {"b64-utf8"},
    ("BODY", "naïve résumé"): {"b64-utf8"},
    ("BODY", "ЕЩЁ ЭТИХ"): {"koi8-body"},
    ("BODY", "会いましょう"): {"sjis-body"},
    ("BODY", "façade financial"): {"utf8-body"},  # NFKC: the ﬁ ligature is "fi"
    ("BODY", "fullwidth"): {"utf8-body"},
    ("BODY", "wombat"): {"html-only"},
    ("BODY", "été"): {"html-only"},  # character references resolved
    ("BODY", "kangaroo report"): {"attachment"},
    ("BODY", "platypus notes"): {"attachment"},
    ("BODY", "wallaby"): {"binary-garbage"},
    ("SUBJECT", "numbat"): {"broken-encoding"},
    ("BODY", "fragilisticsupercali"): {"long-token"},
    ("BODY", "istic expiali"): {"long-token"},
    ("TEXT", "no such text anywhere"): set(),
}
#: ``(key, needle): names`` among those found (the testdata may hold more).
AMONG = {
    ("SUBJECT", "日本語"): {"japanese.eml"},
    ("BODY", "テスト"): {"japanese.eml"},
    ("SUBJECT", "star trek"): {"startrek.eml"},
    ("BODY", "live long and prosper"): {"startrek.eml"},
    ("BODY", "m2 body"): {"multipart-digest.eml"},
    ("BODY", "specifier should be: 3.1"): {"rfc2060.eml"},
    ("TEXT", "subject: submsg"): {"multipart-digest.eml"},
}


def check_rfc_answers(imap, uid_of: dict[str, int], gone: set[str] = frozenset()) -> None:
    """The answers the RFCs decide (EXACT, AMONG, ESEARCH, SAVE, SORT, THREAD),
    for the messages of ``uid_of`` except those ``gone``."""
    def uids(names):
        return tuple(sorted(uid_of[name] for name in names if name not in gone))

    for (key, needle), names in EXACT.items():
        assert text_search(imap, key, needle) == uids(names), (key, needle)
    for (key, needle), names in AMONG.items():
        assert set(uids(names)) <= set(text_search(imap, key, needle)), (key, needle)
    everything = uids(uid_of)
    assert text_search(imap, "BODY", "") == everything  # the empty string is in every text
    assert text_search(imap, "TEXT", "") == everything
    picnic = uids(["plain", "reply", "reply2"])
    if gone:
        return
    # RFC 4731 §3.1 on the UIDs; the sequence numbers are the UIDs here (nothing expunged).
    low, high = min(picnic), max(picnic)
    assert esearch(imap, "MIN MAX COUNT ALL", "SUBJECT", "picnic") == \
        b"UID MIN %d MAX %d COUNT 3 ALL %d:%d" % (low, high, low, high)
    assert esearch(imap, "COUNT", "BODY", "no such text anywhere", uid=False) == b"COUNT 0"
    assert saved(imap, "SUBJECT", "picnic") == picnic
    assert numbers(imap.uid("SEARCH", "$", "BODY", "xylophone")) == uids(["plain", "reply"])
    # RFC 5256 §3: the base subject is the same, so DATE decides; the thread
    # follows References, or with ORDEREDSUBJECT hangs the later ones under the first.
    assert numbers(ask(imap, "SORT", "(REVERSE DATE)", "UTF-8", "SUBJECT", needle="picnic")) == picnic[::-1]
    assert numbers(ask(imap, "SORT", "(SUBJECT)", "UTF-8", "SUBJECT", needle="picnic")) == picnic
    one, two, _ = picnic
    assert ask(imap, "THREAD", "REFERENCES", "UTF-8", "SUBJECT", needle="picnic") == \
        ("OK", [b"(%d %d %d)" % picnic])
    assert ask(imap, "THREAD", "ORDEREDSUBJECT", "UTF-8", "SUBJECT", needle="picnic") == \
        ("OK", [b"(%d (%d)(%d))" % picnic])
    assert ask(imap, "THREAD", "REFERENCES", "UTF-8", "BODY", needle="bring the") == \
        ("OK", [b"(%d %d)" % (one, two)])


# ----------------------------------------------------------------- the tests

def test_answers_are_the_same_before_and_after_the_index_catches_up(delivered):
    daemon, uid_of = delivered
    assert sum(index_lag(daemon).values()) > 0  # delivered after the indexer's only round
    imap = login(daemon)
    assert numbers(imap.uid("SEARCH", "ALL")) == tuple(range(1, len(uid_of) + 1))
    check_rfc_answers(imap, uid_of)
    scanned = battery(imap)
    imap.logout()

    restart_indexed(daemon)
    imap = login(daemon)
    check_rfc_answers(imap, uid_of)
    indexed = battery(imap)
    imap.logout()
    different = {question: (scanned[question], indexed[question])
                 for question in scanned if scanned[question] != indexed[question]}
    assert not different


EXPUNGED = ("plain", "koi8-body", "html-only", "binary-garbage", "japanese.eml", "long-token")
TAIL = _message(99, "tail-xylophone", "Re: Quokka picnic on Saturday",
                "one more XYLOPHONE, from Köln\r\n".encode(),
                content_type="text/plain; charset=utf-8", encoding="8bit")


def expunge(imap, uids: list[int]) -> None:
    """UID STORE \\Deleted, then UID EXPUNGE (RFC 4315 §2.1) of exactly ``uids``."""
    uid_set = ",".join(map(str, uids))
    assert imap.uid("STORE", uid_set, "+FLAGS.SILENT", "(\\Deleted)")[0] == "OK"
    typ, data = imap.uid("EXPUNGE", uid_set)
    assert typ == "OK", data


def test_expunged_messages_are_never_returned(delivered):
    daemon, uid_of = delivered
    restart_indexed(daemon)
    imap = login(daemon)
    before = battery(imap)
    gone = {uid_of[name] for name in EXPUNGED}
    expunge(imap, sorted(gone))

    def without_gone(answers):
        return {question: tuple(uid for uid in answer if uid not in gone)
                for question, answer in answers.items()
                if question.startswith(("UID SEARCH", "UID SORT", "SAVE"))}

    # The index still holds them (its expunge record is not indexed yet); this
    # session's view does not, nor does a new session's.
    other = login(daemon)
    for client in (imap, other):
        expunged = without_gone(battery(client))
        assert expunged == without_gone(before)
        check_rfc_answers(client, uid_of, gone=set(EXPUNGED))
    other.logout()
    assert sum(index_lag(daemon).values()) > 0

    # Past the index: found from the unindexed tail, with the expunged still left out.
    smtp_send(daemon, TAIL)
    tail = len(uid_of) + 1
    imap.noop()  # RFC 9051 §7.4.1: the new message enters the session's view
    assert text_search(imap, "BODY", "xylophone") == (uid_of["reply"], tail)
    assert text_search(imap, "BODY", "KÖLN") == (uid_of["qp-latin1"], tail)
    with_tail = battery(imap)
    imap.logout()
    assert not any(uid in gone for answer in without_gone(with_tail).values() for uid in answer)

    restart_indexed(daemon)  # the expunge and the tail are indexed now
    imap = login(daemon)
    assert battery(imap) == with_tail
    imap.logout()


# ----------------------------------------------------------------- a long search

LONG_MAILBOX = 3000
#: Keys of the long search: each reads every message's whole body (no word
#: character to narrow by, found in none, so NOT keeps every message).
LONG_KEYS = 60
WORDS = ("wattle", "billabong", "jumbuck", "swagman", "coolibah", "tucker", "bag", "waltzing", "matilda")


def long_mailbox() -> list[bytes]:
    rng = random.Random(11)
    messages = []
    for number in range(LONG_MAILBOX):
        body = b"".join(b" ".join(rng.choice(WORDS).encode() for _ in range(12)) + b" -- %d\r\n" % line
                        for line in range(100))
        messages.append(b"From: load@remote.test\r\nSubject: load %d\r\n\r\n" % number + body)
    return messages


def _nothing_to_read(client: RawImap) -> bool:
    readable = readiness.readable([client.sock], 0)
    return not readable and not client.sock.pending() and not client.buffer


@pytest.mark.slow
def test_a_long_search_does_not_stop_other_connections(tmp_path):
    daemon = search_daemon(tmp_path / "d")
    daemon.start()
    multiappend(daemon, long_mailbox())
    wait_indexed(daemon)
    searching = RawImap(daemon, timeout=600)
    searching.login(ALICE)
    assert searching.command(b"S", b"SELECT INBOX")[-1].startswith(b"S OK")
    program = b" ".join(b'NOT BODY "#%s#"' % (b"-" * n) for n in range(1, LONG_KEYS + 1))
    searching.send(b"L SEARCH " + program + b"\r\n")

    # While it runs, another connection logs in, selects and fetches.
    other = RawImap(daemon)
    other.login(ALICE)
    answered = [other.command(b"a", b"NOOP")[-1], other.command(b"b", b"SELECT INBOX")[-1],
                other.command(b"c", b"FETCH 7 (UID FLAGS)")[-1], other.command(b"d", b"NOOP")[-1]]
    assert [reply.split(b" ", 2)[1] for reply in answered] == [b"OK"] * 4, answered
    assert _nothing_to_read(searching), "the long search finished before the other connection's commands"

    # The long search ends with the right answer: every message.
    responses = searching.until_tagged(b"L")
    assert responses[-1].startswith(b"L OK"), responses[-1]
    assert responses[0] == b"* SEARCH " + b" ".join(b"%d" % n for n in range(1, LONG_MAILBOX + 1))
    for client in (searching, other):
        client.close()
    daemon.stop()
