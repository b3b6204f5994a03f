"""``mailserverd index status`` and ``index rebuild`` against a running daemon.

Mail is appended over IMAP, indexed by the daemon's own indexer (its lag
watched on the metrics endpoint), partly expunged, and indexed again: the
index then still holds postings of the expunged messages. ``index status``
must show that, per shard, per user and per mailbox; ``index rebuild`` must
clear them while the daemon runs, and IMAP searches must answer the same
before and after.
"""

from __future__ import annotations

import re

import pytest

from clients import smtp_send
from search_support import ALICE, BOB, login, multiappend, search_daemon, wait_indexed

pytestmark = pytest.mark.e2e

FRUIT = ["apple", "kiwi", "mango"]


def _parts(number: int) -> dict[str, str]:
    return {"FROM": f"Sender <sender{number}@remote.test>", "SUBJECT": f"note {number} {FRUIT[number % 3]}",
            "BODY": f"a basket of {FRUIT[number % 3]} and {FRUIT[(number + 1) % 3]} juice"}


def _message(number: int) -> bytes:
    parts = _parts(number)
    return (f"From: {parts['FROM']}\r\nTo: alice@example.test\r\nSubject: {parts['SUBJECT']}\r\n"
            f"Message-ID: <n{number}@cli.test>\r\n\r\n{parts['BODY']}\r\n").encode()


#: Text searches: (IMAP key, the needle), each needle in one part of the messages.
SEARCHES = [("BODY", "kiwi"), ("SUBJECT", "mango"), ("BODY", "apple and"), ("BODY", "kiwi juice"),
            ("FROM", "sender1"), ("BODY", "nothing")]


def _expected(numbers: list[int]) -> dict[tuple, list[int]]:
    """The sequence numbers each of SEARCHES must find in a mailbox of these messages."""
    return {(key, needle): [seq for seq, number in enumerate(numbers, 1) if needle in _parts(number)[key]]
            for key, needle in SEARCHES}


def _searches(daemon) -> dict[tuple, list[int]]:
    """What SEARCHES answer over IMAP in alice's INBOX."""
    imap = login(daemon)
    found = {}
    for key, needle in SEARCHES:
        typ, data = imap.search(None, key, f'"{needle}"')
        assert typ == "OK", data
        found[(key, needle)] = [int(word) for word in data[0].split()]
    imap.logout()
    return found


def _row(text: str, first: str) -> list[str]:
    """The columns of the one line of ``text`` whose first column is ``first``."""
    [line] = [line for line in text.splitlines() if line.split()[:1] == [first]]
    return line.split()


def test_status_shows_the_index_and_rebuild_clears_what_expunges_left(tmp_path):
    daemon = search_daemon(tmp_path / "d")
    daemon.start()
    multiappend(daemon, [_message(number) for number in range(12)])
    smtp_send(daemon, _message(99), rcpt=BOB)
    wait_indexed(daemon)
    imap = login(daemon)
    assert imap.store("2,5,9", "+FLAGS", "\\Deleted")[0] == "OK"
    assert imap.expunge()[0] == "OK"
    imap.logout()
    wait_indexed(daemon)
    kept = [number for number in range(12) if number + 1 not in (2, 5, 9)]
    expected = _expected(kept)
    assert _searches(daemon) == expected and expected[("FROM", "sender1")] == [8, 9]

    overall = daemon.cli("index", "status").stdout
    assert overall.splitlines()[0].split() == "shard indexed seq last seq lag index bytes".split()
    for shard in ("00", "01"):
        _, indexed, last, lag, size = _row(overall, shard)
        assert int(last) - int(indexed) == int(lag) and int(size) > 0
    assert _row(overall, ALICE)[1:4] == ["9", "9", "0"] and _row(overall, BOB)[1:4] == ["1", "1", "0"]

    detail = daemon.cli("index", "status", ALICE).stdout
    assert _row(detail, "INBOX")[1:] == ["9", "12", "12", "0"]
    assert _row(detail, "Sent")[1:] == ["0", "0", "0", "0"]
    assert BOB not in detail
    named, stale = map(int, re.search(r"^postings: (\d+) docnos, (\d+) of them of removed messages",
                                      detail, re.M).groups())
    assert 0 < stale < named
    size, mail = map(int, re.search(r"^index records: (\d+) bytes \(.*\) for (\d+) bytes of mail",
                                    detail, re.M).groups())
    assert size > 0 and mail == sum(len(_message(number)) for number in kept)

    rebuilt = daemon.cli("index", "rebuild", ALICE)
    # Every docno named before is cleared: the expunged messages' and the replaced old entries'.
    assert rebuilt.stdout == (f"{ALICE}: 9 of 9 indexed messages re-indexed, "
                              f"{named} stale posting entries cleared\n")
    detail = daemon.cli("index", "status", ALICE).stdout
    assert re.search(rf"^postings: {named - stale} docnos, 0 of them of removed messages", detail, re.M)
    assert _row(detail, "INBOX")[1:] == ["9", "12", "12", "0"]
    assert _searches(daemon) == expected

    missing = daemon.cli("index", "rebuild", "nobody@example.test", check=False)
    assert missing.returncode == 1 and "no such user: nobody@example.test" in missing.stderr
    everyone = daemon.cli("index", "rebuild")
    assert [line.split(":")[0] for line in everyone.stdout.splitlines()] == sorted([ALICE, BOB])
    assert _searches(daemon) == expected
    daemon.stop()
