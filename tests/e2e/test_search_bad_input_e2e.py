"""Bad and outsized input to SEARCH, SORT and THREAD against the real daemon,
with the index behind (the search scans) and caught up.

Each input is answered with the right result, or refused with a tagged NO or
BAD that carries the protocol's code ([BADCHARSET], [LIMIT]); the connection
goes on, and the daemon serves a new one afterwards. Covered elsewhere, so
not here: NOT nested 10,000 deep and other deep nesting, literals over
``imap_literal_max``, lines over ``imap_line_max``
(tests/e2e/test_imap_bad_input_e2e.py); SEARCH CHARSET ISO-8859-1 and SORT
CHARSET KOI8-R (test_imap_search_e2e.py, test_imap_sort_e2e.py).
"""

from __future__ import annotations

import random

import pytest

from clients import RawImap, smtp_send
from search_support import IDLE_INDEXER, multiappend, restart_indexed, search_daemon
from test_imap_bad_input_e2e import MESSAGE, goes_on, still_serves

pytestmark = pytest.mark.e2e

MIB = 1 << 20
#: Room for a 10,000-term program on one line, and for a 50 MB body.
LIMITS = IDLE_INDEXER + f"imap_line_max = {MIB}\nmessage_size_max = {60 * MIB}\n"
TERMS = 10_000
PARTS = 5_000
#: A response code of a refusal for an implementation limit (RFC 5530 §3),
#: or for the command's size (RFC 4469 §3 / RFC 7889 TOOBIG).
LIMIT_CODES = (b"[LIMIT]", b"[TOOBIG]")


def big_needle() -> bytes:
    """1 MiB of words (ASCII, so that it is also its own normalised form)."""
    rng = random.Random(3)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 12)))
             for _ in range(5000)]
    return " ".join(rng.choice(words) for _ in range(200_000)).encode()[:MIB]


def many_parts() -> bytes:
    """A message of PARTS text parts, part n saying ``part n marker<n>``."""
    parts = b"".join(b"--p\r\nContent-Type: text/plain\r\n\r\npart %d marker%d\r\n" % (n, n)
                     for n in range(1, PARTS + 1))
    return (b"From: parts@remote.test\r\nSubject: many parts\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=p\r\n\r\n" + parts + b"--p--\r\n")


@pytest.fixture
def daemon(tmp_path):
    """A daemon whose indexer runs only at its start; alice's INBOX holds
    1: MESSAGE, 2: a message holding big_needle(), 3: many_parts()."""
    d = search_daemon(tmp_path / "d", LIMITS)
    d.start()
    multiappend(d, [MESSAGE, b"Subject: big needle\r\n\r\nprefix " + big_needle() + b" suffix\r\n",
                    many_parts()])
    yield d
    if d.proc.poll() is None:
        d.stop()


def selected(daemon) -> RawImap:
    client = RawImap(daemon, timeout=300)
    client.login()
    assert client.command(b"S", b"SELECT INBOX")[-1].startswith(b"S OK")
    return client


def found(responses: list[bytes], name: bytes = b"SEARCH") -> list[int]:
    """The numbers of the one ``* SEARCH``/``* SORT`` response, after checking the tagged OK."""
    assert responses[-1].split(b" ", 2)[1] == b"OK", responses[-1][:200]
    [line] = [response for response in responses if response.startswith(b"* " + name)]
    return [int(number) for number in line.split()[2:]]


def literal(data: bytes) -> bytes:
    """``data`` as a non-synchronizing literal (RFC 7888 LITERAL+)."""
    return b"{%d+}\r\n" % len(data) + data


def refused_with_code(tagged: bytes, codes: tuple[bytes, ...]) -> bool:
    """Whether the tagged reply is a NO or BAD carrying one of the response ``codes``."""
    status, text = tagged.split(b" ", 2)[1:]
    return status in (b"NO", b"BAD") and text.startswith(codes)


# ----------------------------------------------------------------- 10,000 OR terms

def or_program() -> bytes:
    """``OR SUBJECT k0 OR SUBJECT k1 ... SUBJECT "bad input"``: TERMS keys, found in message 1 only."""
    return b"".join(b"OR SUBJECT k%d " % n for n in range(TERMS - 1)) + b'SUBJECT "bad input"'


OR_COMMANDS = {
    b"SEARCH": (b"SEARCH ", b"SEARCH"),
    b"UID SEARCH": (b"UID SEARCH ", b"SEARCH"),
    b"SORT": (b"SORT (SUBJECT) UTF-8 ", b"SORT"),
    b"THREAD": (b"THREAD REFERENCES UTF-8 ", b"THREAD"),
}


def test_ten_thousand_or_terms_are_answered_or_refused_with_limit(daemon):
    client = selected(daemon)
    program = or_program()
    replies = {command: client.command(b"t", prefix + program) for command, (prefix, _) in OR_COMMANDS.items()}
    client.close()
    for command, responses in replies.items():
        if responses[-1].startswith(b"t OK"):
            name = OR_COMMANDS[command][1]
            [line] = [response for response in responses if response.startswith(b"* " + name)]
            assert line in (b"* SEARCH 1", b"* SORT 1", b"* THREAD (1)"), line
        else:
            assert refused_with_code(responses[-1], LIMIT_CODES), (command, responses[-1])


def test_ten_thousand_or_terms_leave_session_saved_result_and_daemon_intact(daemon):
    client = selected(daemon)
    program = or_program()
    for prefix, _name in OR_COMMANDS.values():
        tagged = client.command(b"t", prefix + program)[-1]
        assert tagged.split(b" ", 2)[1] in (b"OK", b"NO", b"BAD"), tagged
    # RFC 5182 §2.1: a BAD leaves $ as it was, a NO empties it, an OK sets it.
    assert client.command(b"s", b'SEARCH RETURN (SAVE) SUBJECT "big needle"')[-1].startswith(b"s OK")
    tagged = client.command(b"t", b"UID SEARCH RETURN (SAVE) " + program)[-1]
    expected = {b"OK": [1], b"NO": [], b"BAD": [2]}[tagged.split(b" ", 2)[1]]
    assert found(client.command(b"u", b"UID SEARCH $")) == expected, tagged
    goes_on(client)
    client.close()
    still_serves(daemon)


# ----------------------------------------------------------------- charsets and 8-bit strings

def test_unsupported_charsets_are_no_badcharset_everywhere(daemon):
    client = selected(daemon)
    badcharset = b"NO [BADCHARSET (US-ASCII UTF-8)] "
    for line in (b"THREAD REFERENCES KOI8-R ALL", b"UID THREAD ORDEREDSUBJECT ISO-2022-JP ALL",
                 b"UID SORT (ARRIVAL) Shift_JIS ALL", b'SEARCH CHARSET "" ALL',
                 b"SEARCH CHARSET " + literal(b"KOI8-R") + b" ALL",
                 b"UID SEARCH RETURN (COUNT) CHARSET X-UNKNOWN-8BIT SUBJECT bad"):
        assert client.command(b"t", line)[-1].startswith(b"t " + badcharset), line
    # RFC 5182 §2.1: a NO to a SEARCH with SAVE empties $.
    assert client.command(b"s", b"SEARCH RETURN (SAVE) ALL")[-1].startswith(b"s OK")
    assert found(client.command(b"u", b"SEARCH $")) == [1, 2, 3]
    refused = client.command(b"t", b"SEARCH RETURN (SAVE) CHARSET KOI8-R ALL")[-1]
    assert refused.startswith(b"t " + badcharset), refused
    assert found(client.command(b"u", b"SEARCH $")) == []
    # Charset names are case-insensitive (RFC 2978 §2.3), and may be quoted.
    assert found(client.command(b"c", b'SEARCH CHARSET "utf-8" SUBJECT needle')) == [2]
    goes_on(client)
    client.close()
    still_serves(daemon)


def test_eight_bit_strings_in_a_us_ascii_search(daemon):
    client = selected(daemon)
    assert client.command(b"a", b"APPEND INBOX " + literal(
        b"Subject: accents\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nun caf\xc3\xa9 noir\r\n"))[-1] \
        .startswith(b"a OK")
    assert client.command(b"n", b"NOOP")[-1].startswith(b"n OK")
    # Not UTF-8 (Latin-1 octets): nothing can be searched for; refused.
    for line in (b"SEARCH CHARSET US-ASCII BODY " + literal(b"caf\xe9"), b"SEARCH BODY " + literal(b"caf\xe9"),
                 b"SEARCH TEXT " + literal(b"\xff\xfe\x80")):
        tagged = client.command(b"t", line)[-1]
        assert tagged.startswith((b"t BAD ", b"t NO ")), (line, tagged)
        goes_on(client)
    # UTF-8 octets labelled US-ASCII: refused, or searched as the UTF-8 they are.
    for line in (b"SEARCH CHARSET US-ASCII BODY " + literal("café".encode()), "SEARCH BODY \"café\"".encode()):
        responses = client.command(b"t", line)
        if responses[-1].startswith(b"t OK"):
            assert found(responses) == [4], line
        else:
            assert responses[-1].startswith((b"t BAD ", b"t NO ")), (line, responses[-1])
        goes_on(client)
    client.close()
    still_serves(daemon)


# ----------------------------------------------------------------- big strings, many parts, a 50 MB body

def _big_answers(client: RawImap) -> None:
    """What the 1 MiB needle and the many-part message must find."""
    needle = big_needle()
    assert found(client.command(b"t", b"SEARCH CHARSET UTF-8 BODY " + literal(needle))) == [2]
    assert found(client.command(b"t", b"SEARCH TEXT " + literal(b"prefix " + needle[:-1]))) == [2]
    assert found(client.command(b"t", b"SEARCH BODY " + literal(needle[:-1] + b"#"))) == []
    assert found(client.command(b"t", b"SEARCH SUBJECT " + literal(needle))) == []
    assert found(client.command(b"t", b"SEARCH HEADER X-Nothing " + literal(b"z" * MIB))) == []
    assert found(client.command(b"t", b"UID SORT (SIZE) UTF-8 BODY " + literal(needle[-100:])), b"SORT") == [2]
    assert found(client.command(b"t", b"SEARCH BODY marker%d" % PARTS)) == [3]
    assert found(client.command(b"t", b'SEARCH BODY "part 2500 marker2500"')) == [3]
    assert found(client.command(b"t", b"SEARCH BODY marker%d" % (PARTS + 1))) == []


def test_a_megabyte_needle_and_five_thousand_parts(daemon):
    client = selected(daemon)
    _big_answers(client)  # scanned: the indexer ran only before they came
    goes_on(client)
    client.close()
    restart_indexed(daemon)
    client = selected(daemon)
    _big_answers(client)
    goes_on(client)
    client.close()
    still_serves(daemon)


def fifty_megabytes() -> bytes:
    lines = b"".join(b"line %d of a fifty megabyte body, filler filler filler filler\r\n" % n
                     for n in range(800_000))
    return (b"From: big@remote.test\r\nTo: alice@example.test\r\nSubject: huge body\r\n\r\n"
            + lines + b"the very end marker\r\n")


@pytest.mark.slow
def test_a_fifty_megabyte_body(daemon):
    message = fifty_megabytes()
    assert len(message) > 50 * 1000 * 1000
    smtp_send(daemon, message)
    for phase in ("scanned", "indexed"):
        client = selected(daemon)
        assert found(client.command(b"t", b'SEARCH BODY "very end marker"')) == [4], phase
        assert found(client.command(b"t", b'SEARCH TEXT "line 799999 of a fifty"')) == [4], phase
        assert found(client.command(b"t", b'SEARCH BODY "line 800000 of"')) == [], phase
        assert found(client.command(b"t", b"SEARCH SUBJECT huge")) == [4], phase
        assert found(client.command(b"t", b"SEARCH LARGER 50000000 NOT BODY zebra")) == [4], phase
        goes_on(client)
        client.close()
        if phase == "scanned":
            restart_indexed(daemon)
    still_serves(daemon)

