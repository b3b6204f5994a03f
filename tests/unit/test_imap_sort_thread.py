"""SORT, THREAD (RFC 5256, RFC 5957) and QUOTA (RFC 9208): the pure algorithms,
transcripts against the session (FakeMailStore for SORT/THREAD), and QUOTA over
the real LMDB store."""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass

import pytest
import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st

from mailserverd.imap import sortkeys, threading
from mailserverd.imap.sortkeys import SortCriterion, base_subject, collation_key
from mailserverd.limits import MIB, Limits

from imap_fakes import USER, Harness
from imap_real_store import PASSWORD, open_store
from test_imap_messages import Client  # an ImapSession on the real store

# ------------------------------------------------------------- base subject


@pytest.mark.parametrize("subject, base, reply", [
    ("hello", "hello", False),
    ("Re: hello", "hello", True),
    ("RE: [list] Re: Fwd: hi (fwd)", "hi", True),
    ("re [blob]: y", "y", True),
    ("Fw: x", "x", True),
    ("[fwd: Re: test]", "test", True),
    ("[PATCH] fix", "fix", False),  # a blob with text after it goes (step 4)
    ("[a]", "[a]", False),  # ... but not when nothing would remain
    ("[a] [b]", "[b]", False),
    ("  Re:   spaced\tout  ", "spaced out", True),
    ("hello (FWD)", "hello", True),
    ("Ref: z", "Ref: z", False),  # "ref" is not "re"
    ("Re: Re: Re:", "", True),
    ("", "", False),
])
def test_base_subject_follows_rfc5256_2_1(subject, base, reply):
    assert base_subject(subject) == (base, reply)


_SUBJECT_TEXT = st.text(alphabet=st.sampled_from(list("reRfwdFWD:[]() \tab\u00e9x")), max_size=40)


@settings(max_examples=400, deadline=None)
@given(_SUBJECT_TEXT | st.text(max_size=40))
def test_base_subject_is_a_fixed_point(subject):
    base, _ = base_subject(subject)
    assert base_subject(base) == (base, False)  # nothing left to remove
    assert base == base.strip(" ") and "  " not in base and "\t" not in base


@settings(max_examples=400, deadline=None)
@given(_SUBJECT_TEXT)
def test_a_reply_prefix_changes_only_the_reply_flag(subject):
    base, _ = base_subject(subject)
    assert base_subject("Re: " + subject) == (base, True)
    assert base_subject("Fwd: " + subject + " (fwd)") == (base, True)


def test_collation_is_unicode_casemap():
    assert collation_key("Hello") == collation_key("hELLO")
    assert collation_key("\u01c6") == collation_key("\u01c4") == collation_key("\u01c5")  # dž, DŽ, Dž
    assert collation_key("straße") != collation_key("STRASSE")  # simple mappings only: ß stays
    assert collation_key("é") == collation_key("E\u0301")  # decomposed form
    assert collation_key("") < collation_key("a") < collation_key("B") < collation_key("c")


def test_sent_date_is_utc_and_falls_back_to_internaldate():
    # RFC 5256 §2.2's own example
    assert sortkeys.sent_time(b"31 Dec 2000 16:01:33 -0800", 5) == calendar.timegm((2001, 1, 1, 0, 1, 33))
    assert sortkeys.sent_time(b"Mon, 1 Jan 2001 00:01:33 XYZZY", 5) == calendar.timegm((2001, 1, 1, 0, 1, 33))
    assert sortkeys.sent_time(None, 5) == 5
    assert sortkeys.sent_time(b"not a date at all", 7) == 7


def test_message_ids_are_normalized():
    # RFC 5256 §3: quoting must not make two spellings of one id differ.
    assert sortkeys.message_ids(b'<"01KF8JCEOCBS0045PS"@xxx.yyy.com>') == [b"01KF8JCEOCBS0045PS@xxx.yyy.com"]
    assert sortkeys.message_ids(b"<a@b>\r\n <c@d> junk <nope> <@x>") == [b"a@b", b"c@d"]
    assert sortkeys.message_ids(None) == []


def test_address_sort_values():
    run = {"cat": [[b"=?utf-8?q?J=C3=B6rg?=", None, b"joerg", b"example.test"], [None, None, b"z", b"y"]]}
    assert sortkeys.address_mailbox([run]) == "joerg"
    assert sortkeys.address_display([run]) == "Jörg"  # RFC 5957 §3: decoded display name
    bare = {"cat": [[None, None, b"bob", b"example.test"]]}
    assert sortkeys.address_display([bare]) == "bob@example.test"
    assert sortkeys.address_display(None) == sortkeys.address_mailbox(None) == ""


# ------------------------------------------------------ sorting and threads


@dataclass
class Msg:
    """What SORT and THREAD read of a message, given directly."""

    seq: int
    subject: str = ""
    sent: int = 0
    message_id: bytes | None = None
    refs: tuple[bytes, ...] = ()
    size: int = 0

    @property
    def number(self) -> int:
        return self.seq

    @property
    def subject_key(self) -> str:
        return collation_key(base_subject(self.subject)[0])

    @property
    def is_reply(self) -> bool:
        return base_subject(self.subject)[1]

    def references(self) -> list[bytes]:
        return list(self.refs)

    def sort_value(self, key: str):
        return {"SUBJECT": self.subject_key, "DATE": self.sent, "SIZE": self.size}[key]


def sort_numbers(messages, *criteria) -> list[int]:
    return [message.seq for message in sortkeys.sort_messages(messages, criteria)]


def test_sort_like_the_rfc_example_with_reverse_on_one_criterion():
    messages = [Msg(1, "b", 1), Msg(2, "Re: b", 1), Msg(3, "a", 2), Msg(4, "A", 1), Msg(5, "[fwd: a]", 3)]
    # RFC 5256 §3: "A283 SORT (SUBJECT REVERSE DATE) UTF-8 ALL" -> "* SORT 5 3 4 1 2"
    assert sort_numbers(messages, SortCriterion("SUBJECT"), SortCriterion("DATE", True)) == [5, 3, 4, 1, 2]
    # REVERSE does not reverse the implicit sequence-number criterion
    assert sort_numbers(messages, SortCriterion("SUBJECT", True)) == [1, 2, 3, 4, 5]
    assert sort_numbers(messages, SortCriterion("DATE", True)) == [5, 3, 1, 2, 4]


def thread_line(algorithm: str, messages) -> bytes:
    return threading.format_threads(threading.ALGORITHMS[algorithm](messages))


def test_references_builds_the_rfc_thread_response_example():
    # RFC 5256 §4: "* THREAD (2)(3 6 (4 23)(44 7 96))"
    parent = {6: 3, 4: 6, 23: 4, 44: 6, 7: 44, 96: 7}
    numbers = [2, 3, 4, 6, 7, 23, 44, 96]

    def refs(number):
        chain = []
        while number in parent:
            number = parent[number]
            chain.insert(0, b"%d@x" % number)
        return tuple(chain)

    sent = {2: 1, 3: 2, 6: 3, 4: 4, 23: 5, 44: 6, 7: 7, 96: 8}
    messages = [Msg(n, "other" if n == 2 else "Re: topic", sent[n], b"%d@x" % n, refs(n)) for n in numbers]
    messages[1].subject = "topic"
    assert thread_line("REFERENCES", messages) == b"THREAD (2)(3 6 (4 23)(44 7 96))"


def test_references_keeps_a_missing_parent_as_a_dummy():
    # RFC 5256 §4: "* THREAD ((3)(5))": siblings under a message not searched
    messages = [Msg(3, "one", 1, b"3@x", (b"gone@x",)), Msg(5, "two", 2, b"5@x", (b"gone@x",))]
    assert thread_line("REFERENCES", messages) == b"THREAD ((3)(5))"
    # one child of a dummy at the root is promoted
    assert thread_line("REFERENCES", messages[:1]) == b"THREAD (3)"


def test_references_merges_threads_by_subject():
    original = Msg(1, "hello", 1, b"1@x")
    reply = Msg(2, "Re: hello", 2, b"2@x")  # no References, but a reply by subject
    assert thread_line("REFERENCES", [original, reply]) == b"THREAD (1 2)"
    twin = Msg(2, "Hello", 2, b"2@x")  # same subject, neither a reply: siblings under a dummy
    assert thread_line("REFERENCES", [original, twin]) == b"THREAD ((1)(2))"
    blank = [Msg(1, "", 1, b"1@x"), Msg(2, "", 2, b"2@x")]  # empty subjects are never merged
    assert thread_line("REFERENCES", blank) == b"THREAD (1)(2)"


def test_references_survives_loops_duplicates_and_missing_ids():
    messages = [
        Msg(1, "a", 1, b"1@x", (b"2@x",)),
        Msg(2, "b", 2, b"2@x", (b"1@x",)),  # a loop: 2 may not become 1's child and parent
        Msg(3, "c", 3, b"1@x", ()),  # a duplicate id: a node of its own
        Msg(4, "d", 4, None, (b"3@x", b"4@x")),  # no id; references itself through a dummy
        Msg(5, "e", 5, b"5@x", (b"5@x",)),  # references only itself
    ]
    line = thread_line("REFERENCES", messages)
    assert sorted(int(n) for n in re.findall(rb"\d+", line)) == [1, 2, 3, 4, 5]
    assert line == b"THREAD (2 1)(3)(4)(5)"


def test_references_handles_a_very_deep_chain():
    depth = 5000  # deeper than Python's recursion limit
    messages = [Msg(n, "Re: long", n, b"%d@x" % n, (b"%d@x" % (n - 1),) if n > 1 else ()) for n in range(1, depth + 1)]
    line = thread_line("REFERENCES", messages)
    assert line == b"THREAD (" + b" ".join(b"%d" % n for n in range(1, depth + 1)) + b")"


def test_ordered_subject():
    messages = [Msg(1, "b", 5), Msg(2, "a", 3), Msg(3, "Re: a", 1), Msg(4, "c", 2), Msg(5, "Re: a", 2), Msg(6, "b", 4)]
    # threads: a = [3, 5, 2] (by date), b = [6, 1], c = [4]; sorted by first date: a(1), c(2), b(4)
    assert thread_line("ORDEREDSUBJECT", messages) == b"THREAD (3 (5)(2))(4)(6 1)"
    assert thread_line("ORDEREDSUBJECT", []) == b"THREAD"


# thread-list grammar (RFC 5256 §5), checked by a tiny recursive-descent reader
def _thread_list(data: bytes, pos: int) -> int:
    assert data[pos:pos + 1] == b"(", (data, pos)
    pos += 1
    if data[pos:pos + 1] == b"(":
        count = 0
        while data[pos:pos + 1] == b"(":
            pos = _thread_list(data, pos)
            count += 1
        assert count >= 2, data  # thread-nested = 2*thread-list
    else:
        match = re.compile(rb"[1-9][0-9]*(?: [1-9][0-9]*)*").match(data, pos)
        pos = match.end()
        if data[pos:pos + 2] == b" (":
            pos += 1
            count = 0
            while data[pos:pos + 1] == b"(":
                pos = _thread_list(data, pos)
                count += 1
            assert count >= 2, data
    assert data[pos:pos + 1] == b")", (data, pos)
    return pos + 1


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 12), st.lists(st.integers(0, 12), max_size=4),
                          st.sampled_from(["x", "Re: x", "y", "Fwd: y", ""]), st.integers(0, 5)),
                min_size=0, max_size=12))
def test_every_thread_response_is_well_formed_and_names_each_message_once(specs):
    messages = [Msg(seq, subject, sent, b"%d@x" % own, tuple(b"%d@x" % ref for ref in refs))
                for seq, (own, refs, subject, sent) in enumerate(specs, 1)]
    for algorithm in ("REFERENCES", "ORDEREDSUBJECT"):
        line = thread_line(algorithm, messages)
        body = line[len(b"THREAD "):]
        pos = 0
        while pos < len(body):
            pos = _thread_list(body, pos)
        assert sorted(int(n) for n in re.findall(rb"\d+", body)) == list(range(1, len(messages) + 1))


# -------------------------------------------------------------- transcripts

MAIL = [
    (b"From: Zed <zed@example.test>\r\nTo: bob@example.test\r\nSubject: Re: lunch\r\n"
     b"Date: Tue, 2 Jan 2024 10:00:00 +0000\r\nMessage-ID: <b@x>\r\nReferences: <a@x>\r\n\r\nok\r\n"),
    (b"From: =?utf-8?q?=C3=81lvaro?= <al@example.test>\r\nTo: carol@example.test\r\nSubject: lunch\r\n"
     b"Date: Mon, 1 Jan 2024 10:00:00 +0000\r\nMessage-ID: <a@x>\r\n\r\nwhere?\r\n"),
    (b"From: beth@example.test\r\nTo: alice@example.test\r\nCc: dan@example.test\r\nSubject: agenda\r\n"
     b"Date: Wed, 3 Jan 2024 10:00:00 +0100\r\nMessage-ID: <c@x>\r\n\r\nitems and a longer body\r\n"),
]


@pytest.fixture
def h() -> Harness:
    harness = Harness()
    for n, raw in enumerate(MAIL):
        harness.store.add_message(USER, "INBOX", raw, internaldate=1704067200 + (3 - n) * 86400)
    harness.select()
    return harness


def reply_lines(harness, line: bytes) -> list[bytes]:
    return harness.c(line + b"\r\n").split(b"\r\n")[:-1]


@pytest.mark.parametrize("command, answer", [
    (b"SORT (SUBJECT) UTF-8 ALL", b"* SORT 3 1 2"),  # one base subject: mailbox order
    (b"SORT (SUBJECT DATE) US-ASCII ALL", b"* SORT 3 2 1"),
    (b"SORT (DATE) UTF-8 ALL", b"* SORT 2 1 3"),
    (b"SORT (REVERSE ARRIVAL) UTF-8 ALL", b"* SORT 1 2 3"),
    (b"SORT (ARRIVAL) UTF-8 ALL", b"* SORT 3 2 1"),
    (b"SORT (SIZE) UTF-8 ALL", b"* SORT 1 2 3"),
    (b"SORT (FROM) UTF-8 ALL", b"* SORT 2 3 1"),  # al, beth, zed
    (b"SORT (DISPLAYFROM) UTF-8 ALL", b"* SORT 2 3 1"),  # Álvaro (decoded), beth@..., Zed
    (b"SORT (TO) UTF-8 ALL", b"* SORT 3 1 2"),
    (b"SORT (CC REVERSE DATE) UTF-8 ALL", b"* SORT 1 2 3"),  # no Cc collates first
    (b"sort (subject) utf-8 FROM beth", b"* SORT 3"),
    (b'SORT (SUBJECT) "UTF-8" TEXT "not in mailbox"', b"* SORT"),
    (b"UID SORT (DATE) UTF-8 2:3", b"* SORT 2 3"),
    (b"THREAD REFERENCES UTF-8 ALL", b"* THREAD (2 1)(3)"),
    (b"THREAD ORDEREDSUBJECT UTF-8 ALL", b"* THREAD (2 1)(3)"),
    (b"UID THREAD REFERENCES UTF-8 NOT 3", b"* THREAD (2 1)"),
    (b"THREAD REFERENCES UTF-8 SUBJECT nothing", b"* THREAD"),
])
def test_sort_and_thread_transcripts(h, command, answer):
    lines = reply_lines(h, b"t " + command)
    assert lines[0] == answer, lines
    assert lines[-1].startswith(b"t OK"), lines


@pytest.mark.parametrize("command, status", [
    (b"SORT (SUBJECT) ALL", b"NO [BADCHARSET (US-ASCII UTF-8)]"),  # the charset is mandatory
    (b"SORT (SUBJECT)", b"BAD"),
    (b"SORT () UTF-8 ALL", b"BAD"),
    (b"SORT (BOGUS) UTF-8 ALL", b"BAD"),
    (b"SORT (REVERSE) UTF-8 ALL", b"BAD"),
    (b"SORT (REVERSE REVERSE DATE) UTF-8 ALL", b"BAD"),
    (b"SORT SUBJECT UTF-8 ALL", b"BAD"),
    (b"SORT (SUBJECT) UTF-8", b"BAD"),
    (b"SORT (SUBJECT) UTF-8 NOSUCHKEY", b"BAD"),
    (b"SORT (SUBJECT) KOI8-R ALL", b"NO [BADCHARSET (US-ASCII UTF-8)]"),
    (b"SORT", b"BAD"),
    (b"THREAD", b"BAD"),
    (b"THREAD REFERENCES", b"BAD"),
    (b"THREAD REFERENCES UTF-8", b"BAD"),
    (b"THREAD MAGIC UTF-8 ALL", b"NO"),
    (b"THREAD REFERENCES BIG5 ALL", b"NO [BADCHARSET (US-ASCII UTF-8)]"),
])
def test_bad_sort_and_thread_commands(h, command, status):
    lines = reply_lines(h, b"t " + command)
    assert lines == [lines[-1]] and lines[-1].startswith(b"t " + status + b" "), lines


def test_sort_and_thread_need_a_selected_mailbox():
    harness = Harness()
    harness.login()
    for command in (b"SORT (DATE) UTF-8 ALL", b"UID THREAD REFERENCES UTF-8 ALL"):
        assert harness.c(b"t " + command + b"\r\n") == b"t BAD No mailbox selected\r\n"


def test_sort_uses_the_saved_search_result(h):
    assert reply_lines(h, b"s SEARCH RETURN (SAVE) FROM zed")[-1].startswith(b"s OK")
    assert reply_lines(h, b"t SORT (DATE) UTF-8 OR $ FROM beth")[0] == b"* SORT 1 3"


# ------------------------------------------------------------ quota (real store)


@pytest.fixture
def store(tmp_path):
    yield from open_store(tmp_path, Limits(store_map_size=32 * MIB))


async def logged_in(store) -> Client:
    client = Client(store)
    assert b"L OK" in await client.cmd(b"L LOGIN " + USER.encode() + b' "' + PASSWORD.encode() + b'"')
    return client


@pytest_twisted.ensureDeferred
async def test_quota_of_an_account_without_limit(store):
    client = await logged_in(store)
    assert await client.cmd(b"q GETQUOTAROOT INBOX") == (
        b'* QUOTAROOT "INBOX" ""\r\n* QUOTA "" ()\r\nq OK Getquotaroot completed\r\n')
    assert await client.cmd(b'q GETQUOTA ""') == b'* QUOTA "" ()\r\nq OK Getquota completed\r\n'


@pytest_twisted.ensureDeferred
async def test_quota_reports_storage_in_kib_and_refuses_appends_over_it(store):
    await store.set_quota(USER, 10 * 1024)
    await store.append(USER, "INBOX", b"Subject: x\r\n\r\n" + b"y" * 3000 + b"\r\n")
    used = store.used_bytes(USER) // 1024
    client = await logged_in(store)
    # the mailbox need not exist (RFC 9208 §4.1.2); its name comes back as the client wrote it
    assert await client.cmd(b"q GETQUOTAROOT &AOk-t&AOk-") == (
        b'* QUOTAROOT "&AOk-t&AOk-" ""\r\n* QUOTA "" (STORAGE %d 10)\r\nq OK Getquotaroot completed\r\n' % used)
    assert b'* QUOTA "" (STORAGE 2 10)' in await client.cmd(b'q GETQUOTA ""')
    big = b"Subject: big\r\n\r\n" + b"z" * 9000 + b"\r\n"
    reply = await client.cmd(b"a APPEND INBOX {%d+}\r\n" % len(big) + big)
    assert reply == b"a NO [OVERQUOTA] Quota exceeded\r\n"  # RFC 9208 §4.3.1


@pytest.mark.parametrize("command, reply", [
    (b'GETQUOTA "other"', b"q NO [NONEXISTENT] No such quota root"),
    (b"GETQUOTA", b"q BAD"),
    (b'GETQUOTA "" extra', b"q BAD"),
    (b"GETQUOTAROOT", b"q BAD"),
    (b'SETQUOTA "" (STORAGE 512)', b"q NO [NOPERM]"),
    (b'SETQUOTA "" ()', b"q NO [NOPERM]"),
    (b'SETQUOTA "" (STORAGE)', b"q BAD"),
    (b'SETQUOTA "" (STORAGE 99999999999999999999)', b"q BAD"),
    (b'SETQUOTA ""', b"q BAD"),
])
@pytest_twisted.ensureDeferred
async def test_quota_refusals(store, command, reply):
    client = await logged_in(store)
    answer = await client.cmd(b"q " + command)
    assert answer.startswith(reply) and answer.count(b"\r\n") == 1, answer


def test_quota_commands_need_login():
    harness = Harness()
    assert harness.c(b'q GETQUOTA ""\r\n') == b"q BAD Log in first\r\n"


_ARG_WORDS = st.sampled_from([b"(", b")", b" ", b"SUBJECT", b"REVERSE", b"DATE", b"UTF-8", b"ALL", b"REFERENCES",
                              b"ORDEREDSUBJECT", b'"x"', b"1:*", b"$", b"NOT", b"OR", b"\xff", b"{1}", b"*"])


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([b"SORT", b"UID SORT", b"THREAD", b"UID THREAD", b"SETQUOTA", b"GETQUOTA"]),
       st.lists(_ARG_WORDS, max_size=10))
def test_malformed_commands_get_a_reply_never_an_internal_error(verb, words):
    harness = Harness()
    harness.store.add_message(USER, "INBOX", MAIL[0])
    harness.select()
    reply = harness.c(b"f " + verb + b" " + b"".join(words) + b"\r\n")
    if reply.startswith(b"+ "):  # a literal announced: send one byte and end the line
        reply = harness.c(b"x\r\n")
    assert re.search(rb"(?:\A|\r\n)f (?:OK|NO|BAD) ", reply), reply
    assert b"Internal error" not in reply, reply
