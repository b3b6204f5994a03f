"""Rebuilding a user's search index (mailserverd.search.rebuild) on a real store.

Mail is delivered to two users on one shard, indexed by the real indexer and
partly expunged (which leaves postings naming removed docs behind); one
user's index is then rebuilt. Its searches must answer as the scan does, its
postings must name as many docnos as a fresh index of the same messages does
(a third user's, who got copies of them), and the other user's index records
must not change. A rebuild taken one write at a
time, with deliveries, expunges and the live indexer between its writes,
must answer correctly after every one of them.
"""

from __future__ import annotations

import dataclasses
import random

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred

from mailserverd.imap import search
from mailserverd.limits import KIB, MIB, Limits
from mailserverd.search.index import CLASSES
from mailserverd.search.indexer import Indexer
from mailserverd.search.query import search_indexed
from mailserverd.search.rebuild import UserRebuild
from mailserverd.search.text import normalise
from mailserverd.store import keys
from mailserverd.store.searchindex import SEARCH_DBS

from imap_real_store import CREDS, USER, open_store
from test_search_index import make_message

OTHER = "bob@example.test"
COPIES = "carol@example.test"  # alice's messages still there once the expunges are indexed
TEXT_MAX = 64 * KIB
LIMITS = Limits(store_map_size=128 * MIB, search_text_max=TEXT_MAX, search_index_batch=9,
                search_rebuild_chunk=4, search_compact_chunk=7)


def _keys() -> list[search.Key]:
    """SEARCH keys of every kind the index answers: single runs, two-word
    phrases, candidates to check, record keys, and their combinations."""
    text = [search.BodyText(normalise(word)) for word in ("alpha", "köln", "STRASSE", "the", "日本", "x")]
    text += [search.AnyText(normalise("meeting alpha")), search.AnyText(normalise("report.pdf")),
             search.EnvelopeText("subject", normalise("beta")), search.EnvelopeText("from", normalise("u3@")),
             search.HeaderText(b"x-tag", normalise("gamma")), search.BodyText(normalise("alpha beta"))]
    return text + [search.Not(text[0]), search.Or(text[1], search.Flag("\\Seen")),
                   search.And((text[2], search.Not(text[3])))]


def _disagreements(store, user: str) -> list:
    """The (mailbox, key, scanned, indexed) of every key whose index answer differs from the scan's."""
    found = []
    for box in store.list_mailboxes(user):
        infos = store.list_messages(user, box.mailbox_id)
        if not infos:
            continue
        uids = [info.uid for info in infos]
        scope = search.SearchScope(store, user, count=len(uids), max_uid=uids[-1])
        for key in _keys():
            scanned = [info.uid for _, info in search.search_messages(key, list(enumerate(infos, 1)), scope)]
            for direct_max in (0, 5):
                answer = search_indexed(key, box.mailbox_id, uids, scope, direct_max)
                indexed = [info.uid for _, info in answer]
                if indexed != scanned:
                    found.append((box.name, key, scanned, indexed))
    return found


def _records(store, user: str) -> dict[str, list]:
    """Every index record of ``user``, raw, per sub-database."""
    user_id = store.get_user(user).user_id
    env = store._shard_envs[store.get_user(user).shard]
    prefix = keys.user_prefix(user_id)
    with env.env.begin() as txn:
        found = {}
        for name in SEARCH_DBS:
            cursor = txn.cursor(db=env.dbs[name])
            cursor.set_range(prefix)
            found[name] = [(bytes(k), bytes(v)) for k, v in cursor if k.startswith(prefix)]
    return found


def _indexed_docs(store, user: str) -> dict[tuple[int, int], int]:
    """``{(mailbox id, uid): docno}`` of every message the user's index holds."""
    boxes = [box.mailbox_id for box in store.list_mailboxes(user)]
    return store.read_search_index(user, lambda reader: {
        (mailbox_id, uid): docno for mailbox_id in boxes for uid, docno in reader.mailbox_docs(mailbox_id)})


def _indexed_uids(store, user: str) -> dict[str, int]:
    """``{mailbox name: indexed UID}`` of the user's mailboxes."""
    boxes = store.list_mailboxes(user)
    return store.read_search_index(user, lambda reader: {box.name: reader.indexed_uid(box.mailbox_id)
                                                         for box in boxes})


def _posting_counts(store, user: str) -> tuple[int, int]:
    """(docnos the user's postings name, those naming no doc)."""
    return store.read_search_index(user, lambda reader: reader.posting_counts(CLASSES.values()))


async def _copy_mail(store, source: str, target: str) -> int:
    """Append every message of ``source`` to the same mailbox of ``target``; returns how many."""
    copied = 0
    for box in store.list_mailboxes(source):
        for info in store.list_messages(source, box.mailbox_id):
            await store.append(target, box.name, store.read_message(source, info.blob_id))
            copied += 1
    return copied


async def _expunge(store, user: str, mailbox: str, uids: list[int]) -> None:
    box = store.get_mailbox(user, mailbox)
    await store.store_flags(user, box.mailbox_id, uids, "+", ["\\Deleted"])
    await store.expunge(user, box.mailbox_id)


async def _deliver(store, user: str, mailbox: str, rng: random.Random, numbers) -> None:
    for number in numbers:
        flags = ["\\Seen"] if number % 3 else []
        await store.append(user, mailbox, make_message(rng, number), flags)


async def _setup(store, indexer, rng) -> None:
    """Two users' mail, indexed, then partly expunged; alice's copied to carol; all
    that indexed; then alice's unindexed tail."""
    await _deliver(store, USER, "INBOX", rng, range(24))
    await _deliver(store, USER, "Sent", rng, range(100, 106))
    await _deliver(store, OTHER, "INBOX", rng, range(200, 210))
    await indexer.catch_up()
    await _expunge(store, USER, "INBOX", [2, 3, 5, 8, 13, 21])
    await _expunge(store, USER, "Sent", [1])
    await _expunge(store, OTHER, "INBOX", [4, 7])
    assert await _copy_mail(store, USER, COPIES) == 18 + 5
    await indexer.catch_up()
    await _deliver(store, USER, "INBOX", rng, range(24, 28))


@pytest.fixture
def indexed(tmp_path):
    """Two users' mail, indexed, partly expunged since (the indexer has followed
    that), and a few of alice's messages delivered after the last indexing."""
    opened = open_store(tmp_path, LIMITS)
    store = next(opened)
    pytest_twisted.blockon(store.add_user(OTHER, CREDS))
    pytest_twisted.blockon(store.add_user(COPIES, CREDS))
    rng = random.Random(11)
    indexer = Indexer(store, LIMITS, reactor)
    pytest_twisted.blockon(ensureDeferred(_setup(store, indexer, rng)))
    yield store, indexer, rng
    pytest_twisted.blockon(indexer.stop())
    try:
        next(opened)
    except StopIteration:
        pass


def test_the_fixture_leaves_postings_of_removed_messages(indexed):
    store, _, _ = indexed
    named, stale = _posting_counts(store, USER)
    fresh, none = _posting_counts(store, COPIES)
    assert stale > 0 and none == 0 and named == stale + fresh
    assert not _disagreements(store, USER)


@pytest_twisted.ensureDeferred
async def test_rebuild_renews_every_entry_and_clears_what_names_removed_messages(indexed):
    store, _, _ = indexed
    before = _indexed_docs(store, USER)
    indexed_uids = _indexed_uids(store, USER)
    other = _records(store, OTHER)
    progress: list[int] = []

    rebuild = UserRebuild(store, USER, LIMITS)
    assert rebuild.total == len(before) == 18 + 5
    await rebuild.run(progress.append)

    assert rebuild.replaced == rebuild.done == sum(progress) == len(before)
    assert progress == [4, 4, 4, 4, 2, 4, 1]  # INBOX's 18, then Sent's 5, four a write
    after = _indexed_docs(store, USER)
    assert set(after) == set(before)  # the same messages: not the tail (the indexer's), no removed one
    assert all(after[message] >= rebuild.start_docno > before[message] for message in before)
    assert _indexed_uids(store, USER) == indexed_uids
    named, stale = _posting_counts(store, USER)
    assert rebuild.cleared > 0 and stale == 0
    assert named == _posting_counts(store, COPIES)[0]
    assert not _disagreements(store, USER)
    assert _records(store, OTHER) == other
    assert not _disagreements(store, OTHER)


@pytest_twisted.ensureDeferred
async def test_a_second_rebuild_renews_again_and_clears_the_first_ones_old_docs(indexed):
    store, _, _ = indexed
    await UserRebuild(store, USER, LIMITS).run()
    again = await UserRebuild(store, USER, LIMITS).run()
    assert again.replaced == len(_indexed_docs(store, USER)) and again.cleared > 0  # the first one's old docs
    assert _posting_counts(store, USER)[1] == 0
    assert not _disagreements(store, USER)


@pytest_twisted.ensureDeferred
async def test_writes_between_the_rebuilds_steps_never_make_a_search_miss(indexed):
    store, indexer, rng = indexed
    # Larger compaction chunks than the other tests': every step is followed by searches.
    rebuild = UserRebuild(store, USER, dataclasses.replace(LIMITS, search_compact_chunk=400))
    planned = _indexed_docs(store, USER)
    expunged: set[tuple[str, int]] = set()
    number, steps = 300, 0
    while not rebuild.finished:
        more = await rebuild.step()
        steps += 1
        assert not _disagreements(store, USER), f"after step {steps}"
        await _deliver(store, USER, "INBOX", rng, [number])
        await _deliver(store, OTHER, "INBOX", rng, [number + 1])
        number += 2
        inbox = store.get_mailbox(USER, "INBOX")
        old = [info.uid for info in store.list_messages(USER, inbox.mailbox_id)]
        if steps % 2:  # one the rebuild is yet to reach or has done, in turn
            uid = old[steps % len(old)]
            await _expunge(store, USER, "INBOX", [uid])
            expunged.add(("INBOX", uid))
        if steps % 3:
            await indexer.catch_up()
        assert not _disagreements(store, USER), f"after the writes following step {steps}"
        assert more == (not rebuild.finished)
    await indexer.catch_up()
    assert steps > 7 and not _disagreements(store, USER) and not _disagreements(store, OTHER)
    inbox_id = store.get_mailbox(USER, "INBOX").mailbox_id
    after = _indexed_docs(store, USER)
    for (mailbox_id, uid), docno in planned.items():
        if mailbox_id == inbox_id and ("INBOX", uid) in expunged:
            assert (mailbox_id, uid) not in after
        else:
            assert after[(mailbox_id, uid)] >= rebuild.start_docno > docno
