"""Crash safety of the search index: kill -9 while mail is delivered, appended
and expunged and the indexer is working through a backlog; after a restart
and a clean stop the index agrees with the store.

Opened directly in this process, for every mailbox of every user: the index
holds each message up to the mailbox's indexed UID exactly once (its map and
its segment maps name each one once, and nothing else), the indexed UID
covers the whole mailbox, the index answers a set of SEARCH programs exactly
as a full scan does, every message acknowledged (250 after DATA, or a tagged
OK to APPEND) is found, and no message whose expunge was acknowledged is.
"""

from __future__ import annotations

import asyncio
import imaplib
import os
import random
import threading

import pytest

from conftest import wait_for
from e2e.search_support import ALICE, BOB, login, multiappend, search_daemon, wait_indexed
from mailserverd.imap import search
from mailserverd.limits import Limits
from mailserverd.search.query import search_indexed
from mailserverd.search.text import normalise
from mailserverd.store.lmdbstore import LMDBStore
from mailserverd.store.searchindex import SEGMENT_DOCS
from test_kill9 import load_and_kill

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

SHARDS = 2
#: Small batches: many index commits, so that the kill lands between and inside them.
LIMITS = "connections_per_ip_max = 1000\nsearch_index_batch = 7\n"
BACKLOG = 300  # alice's INBOX; bob gets a third of it
KEPT = "Kept"  # a mailbox the IMAP load creates and appends to
WORDS = ("kestrel", "osprey", "Merlin", "harrier", "Köln", "straße", "東京", "ptarmigan", "owl")


def backlog_message(tag: str, n: int) -> bytes:
    rng = random.Random(f"{tag}-{n}")
    body = "\r\n".join(" ".join(rng.choice(WORDS) for _ in range(10)) for _ in range(30))
    return (f"From: <{tag}@remote.test>\r\nSubject: {tag} {n} {rng.choice(WORDS)}\r\n"
            f"Message-ID: <{tag}-{n}@crash.test>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
            f"{body}\r\n").encode()


class ImapLoad(threading.Thread):
    """Until the daemon dies under it: APPENDs to alice's mailbox KEPT, and expunges
    the backlog in alice's INBOX from UID 1 up, one message at a time.
    ``appended`` and ``expunged`` hold what got its tagged OK; ``working`` is
    set once the first of each did."""

    def __init__(self, daemon):
        super().__init__(name="imap-load", daemon=True)
        self.daemon_under_test = daemon
        self.appended: list[int] = []
        self.expunged: list[int] = []
        self.working = threading.Event()

    def run(self) -> None:
        try:
            imap = login(self.daemon_under_test)
            assert imap.create(KEPT)[0] == "OK"
            for n in range(1, BACKLOG):
                if imap.append(KEPT, None, None, backlog_message("kept", n))[0] == "OK":
                    self.appended.append(n)
                if imap.uid("STORE", str(n), "+FLAGS.SILENT", "(\\Deleted)")[0] == "OK" \
                        and imap.uid("EXPUNGE", str(n))[0] == "OK":
                    self.expunged.append(n)
                if self.appended and self.expunged:
                    self.working.set()
        except (imaplib.IMAP4.abort, imaplib.IMAP4.error, OSError):
            pass  # killed under us: the command in flight was not acknowledged


def queries() -> list[search.Key]:
    """Programs with text keys of every kind the index answers differently."""
    def text(kind, needle, *extra):
        return kind(*extra, normalise(needle))

    return [
        text(search.BodyText, "osprey"), text(search.BodyText, "erlin harr"),
        text(search.BodyText, "KÖLN STRASSE"), text(search.BodyText, "東京"),
        text(search.BodyText, "crash test line 299 of message 1"),
        text(search.AnyText, "message-id: <crash-"), text(search.EnvelopeText, "crash 1", "subject"),
        text(search.EnvelopeText, "load@", "from"), text(search.HeaderText, "-4", b"message-id"),
        search.Not(text(search.BodyText, "owl")),
        search.Or(text(search.EnvelopeText, "kept", "subject"), text(search.BodyText, " of ")),
        search.And((text(search.BodyText, "ptarmigan"), search.Not(text(search.EnvelopeText, "7", "subject")))),
    ]


def found_uids(store, user: str, mailbox_id: int, uids: list[int], key: search.Key, direct_max: int):
    """``(index's answer, scan's answer)``: the ``(seq, uid)`` pairs ``key`` matches."""
    infos = store.list_messages(user, mailbox_id)
    scope = search.SearchScope(store, user, count=len(uids), max_uid=uids[-1] if uids else 0)
    scanned = search.search_messages(key, list(enumerate(infos, 1)), scope)
    indexed = search_indexed(key, mailbox_id, uids, scope, direct_max)
    return [(seq, info.uid) for seq, info in indexed], [(seq, info.uid) for seq, info in scanned]


def index_holdings(store, user: str, mailbox_id: int):
    """``(indexed UID, UIDs of the map's entries, UIDs the segment maps name)``
    of one mailbox, each list with repeats kept."""
    def read(reader):
        mapped = []
        for uid, docno in reader.mailbox_docs(mailbox_id):
            doc = reader.doc(docno)
            assert doc is not None and tuple(doc[:2]) == (mailbox_id, uid), (uid, docno, doc)
            mapped.append(uid)
        named = []
        for segment in range(reader.next_docno() // SEGMENT_DOCS + 1):
            named += reader.members(segment, (1 << SEGMENT_DOCS) - 1, mailbox_id)
        return reader.indexed_uid(mailbox_id), mapped, named

    return store.read_search_index(user, read)


def check_mailbox(store, user: str, mailbox_id: int) -> list[int]:
    """Check the index of one mailbox against the store; its UIDs."""
    uids = store.list_uids(user, mailbox_id)
    indexed_uid, mapped, named = index_holdings(store, user, mailbox_id)
    assert not uids or indexed_uid >= uids[-1], (user, mailbox_id, indexed_uid, uids[-1])
    assert mapped == uids, (user, mailbox_id, sorted(set(mapped) ^ set(uids)))
    assert sorted(named) == uids, (user, mailbox_id, "the segment maps name these otherwise")
    for key in queries():
        for direct_max in (0, Limits().search_verify_direct_max):
            indexed, scanned = found_uids(store, user, mailbox_id, uids, key, direct_max)
            assert indexed == scanned, (user, mailbox_id, key, direct_max)
    return uids


def found_by_message_id(store, user: str, mailbox_id: int, message_id: str) -> int:
    uids = store.list_uids(user, mailbox_id)
    key = search.HeaderText(b"message-id", normalise(f"<{message_id}>"))
    indexed, scanned = found_uids(store, user, mailbox_id, uids, key, 0)
    assert indexed == scanned, message_id
    return len(indexed)


def log_writers(daemon) -> set[int]:
    """The running processes whose stderr is the daemon's log (from /proc)."""
    found = set()
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.readlink(f"/proc/{entry}/fd/2") != str(daemon.log_path):
                continue
            with open(f"/proc/{entry}/stat") as stat:
                zombie = stat.read().rsplit(")", 1)[1].split()[0] == "Z"
        except OSError:
            continue
        if not zombie:
            found.add(int(entry))
    return found


def unindexed(daemon) -> int:
    """Change-log records the index lacks, over all shards, read from the store (daemon stopped)."""
    store = LMDBStore.open(str(daemon.data_dir), SHARDS, Limits())
    try:
        return sum(store.last_seq(n) - store.search_seq(n) for n in range(SHARDS))
    finally:
        store.close()


def test_kill9_while_indexing_leaves_an_index_that_agrees_with_the_store(tmp_path):
    daemon = search_daemon(tmp_path / "d", LIMITS, shards=SHARDS)
    daemon.start()
    multiappend(daemon, [backlog_message("pre", n) for n in range(1, BACKLOG + 1)])
    multiappend(daemon, [backlog_message("bob", n) for n in range(1, BACKLOG // 3 + 1)], user=BOB)
    imap_load = ImapLoad(daemon)
    imap_load.start()
    wait_for(lambda: imap_load.working.is_set() or not imap_load.is_alive(), timeout=120,
             what="the IMAP load to get going")
    assert imap_load.working.is_set(), "the IMAP load stopped before it got going"
    acked = asyncio.run(load_and_kill(daemon))
    # A parse or index worker outlives the kill until its request is done, and
    # may then write to the log it shares with the daemon (a BrokenPipeError
    # traceback). The restarted daemon's log is to be its own.
    wait_for(lambda: not log_writers(daemon), timeout=120, what="the killed daemon's workers to exit")
    imap_load.join(timeout=120)
    assert not imap_load.is_alive()
    assert unindexed(daemon) > 0, "the kill came after the indexer had caught up"

    daemon.start()  # same data dir
    wait_indexed(daemon, SHARDS)
    daemon.stop()

    store = LMDBStore.open(str(daemon.data_dir), SHARDS, Limits())
    try:
        mailboxes = {user: {box.name: box.mailbox_id for box in store.list_mailboxes(user)}
                     for user in (ALICE, BOB)}
        for user, boxes in mailboxes.items():
            for mailbox_id in boxes.values():
                check_mailbox(store, user, mailbox_id)
        inbox, kept = mailboxes[ALICE]["INBOX"], mailboxes[ALICE][KEPT]
        for n in acked:
            assert found_by_message_id(store, ALICE, inbox, f"crash-{n}@remote.test") == 1, n
        for n in imap_load.appended:
            assert found_by_message_id(store, ALICE, kept, f"kept-{n}@crash.test") == 1, n
        for n in imap_load.expunged:
            assert found_by_message_id(store, ALICE, inbox, f"pre-{n}@crash.test") == 0, n
        for n in range(max(imap_load.expunged, default=0) + 2, BACKLOG + 1):
            assert found_by_message_id(store, ALICE, inbox, f"pre-{n}@crash.test") == 1, n
    finally:
        store.close()
    assert len(acked) >= 60 and imap_load.appended, (len(acked), imap_load.appended)
