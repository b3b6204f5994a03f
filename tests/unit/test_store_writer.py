"""The store's writer threads: group commit, durability ordering, failures, full map, stop."""

from __future__ import annotations

import threading
import time

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import DeferredList
from twisted.internet.task import deferLater

from mailserverd.limits import MIB, Limits
from mailserverd.store.errors import OverQuota, StoreTemporaryError
from mailserverd.store.lmdbstore import LMDBStore
from mailserverd.store.types import AppendResult, Credentials, ScramSecrets

CREDS = Credentials(bcrypt_hash=b"$2b$04$hash", scram_sha256=ScramSecrets(b"salt", 4096, b"K" * 32, b"S" * 32))
USER = "user@example.com"


def open_store(path, **limits):
    opened = LMDBStore.open(str(path), 1, Limits(**{"store_map_size": 64 * MIB, **limits}))
    opened.start()
    return opened


@pytest.fixture
def make_store(tmp_path):
    """Open a started one-shard store with one user; stopped at teardown."""
    opened = []

    async def make(**limits):
        store = open_store(tmp_path / f"data{len(opened)}", **limits)
        opened.append(store)
        await store.add_domain("example.com")
        await store.add_user(USER, CREDS)
        return store

    yield make
    for store in opened:
        pytest_twisted.blockon(store.stop())


async def until(predicate, timeout=20.0):
    """Poll ``predicate`` on the reactor until it holds (fails after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await deferLater(reactor, 0.002, lambda: None)


class WriterGate:
    """Holds a writer thread inside an operation so that later writes pile up in one batch."""

    def __init__(self, writer):
        self.writer = writer
        self.release = threading.Event()
        self.entered = threading.Event()
        self.done = writer.submit(self._hold)

    def _hold(self, _work):
        self.entered.set()
        self.release.wait(10)

    async def open_when_queued(self, count):
        await until(lambda: self.entered.is_set() and self.writer.queued() >= count)
        self.release.set()
        await self.done


def message(n: int, size: int = 0) -> bytes:
    return f"Subject: {n}\r\n\r\n".encode() + b"x" * size + f"{n}\r\n".encode()


async def settle(deferreds):
    """Outcome of each Deferred: its result or its exception."""
    results = await DeferredList(deferreds, consumeErrors=True)
    return [value if ok else value.value for ok, value in results]


@pytest_twisted.ensureDeferred
async def test_500_concurrent_appends_all_land_with_dense_unique_uids(make_store):
    store = await make_store()
    outcomes = await settle([store.append(USER, "INBOX", message(n)) for n in range(500)])
    assert sorted(result.uid for result in outcomes) == list(range(1, 501))
    box = store.get_mailbox(USER, "INBOX")
    assert box.messages == 500 and box.uidnext == 501
    stored = {store.read_message(USER, m.blob_id) for m in store.list_messages(USER, box.mailbox_id)}
    assert stored == {message(n) for n in range(500)}
    writer = store.shard_writers[0]
    assert writer.commits < writer.ops_committed  # group commit happened


@pytest_twisted.ensureDeferred
async def test_no_caller_hears_of_its_write_before_the_commit(make_store):
    store = await make_store()
    writer = store.shard_writers[0]
    committed_uids: set[int] = set()
    writer.after_commit = lambda outcomes: committed_uids.update(
        value.uid for ok, value in outcomes if ok and isinstance(value, AppendResult))
    early = []

    def check(result):
        if result.uid not in committed_uids:
            early.append(result.uid)
        return result

    gate = WriterGate(writer)
    await until(gate.entered.is_set)  # the gate alone in its batch; later writes queue up
    commits_before = writer.commits
    deferreds = [store.append(USER, "INBOX", message(n)).addCallback(check) for n in range(200)]
    await gate.open_when_queued(200)
    results = await settle(deferreds)
    assert early == []
    assert sorted(r.uid for r in results) == list(range(1, 201))
    # the gate's batch, then one batch for all 200 (batch_max defaults to 256)
    assert writer.commits - commits_before == 2


@pytest_twisted.ensureDeferred
async def test_each_commit_reports_its_batch_size_and_duration(make_store):
    store = await make_store()
    writer = store.shard_writers[0]
    observed: list[tuple[int, float]] = []
    writer.observe_batch = lambda count, elapsed: observed.append((count, elapsed))
    gate = WriterGate(writer)
    await until(gate.entered.is_set)  # the gate alone in its batch; later writes queue up
    deferreds = [store.append(USER, "INBOX", message(n)) for n in range(50)]
    await gate.open_when_queued(50)
    await settle(deferreds)
    await until(lambda: len(observed) == 2)  # reported after the callers were answered
    assert [count for count, _ in observed] == [1, 50]
    assert all(elapsed > 0 for _, elapsed in observed)


@pytest_twisted.ensureDeferred
async def test_an_op_failing_in_a_batch_leaves_the_others_committed(make_store):
    store = await make_store()
    await store.set_quota(USER, 1000)
    writer = store.shard_writers[0]
    gate = WriterGate(writer)
    await until(gate.entered.is_set)  # the gate alone in its batch; later writes queue up
    sizes = [300, 400, 400, 100, 200]  # the third and the fifth go over the quota
    deferreds = [store.append(USER, "INBOX", message(n, size)) for n, size in enumerate(sizes)]
    await gate.open_when_queued(len(sizes))
    outcomes = await settle(deferreds)
    assert [type(o).__name__ for o in outcomes] == [
        "AppendResult", "AppendResult", "OverQuota", "AppendResult", "OverQuota"]
    assert [o.uid for o in outcomes if not isinstance(o, OverQuota)] == [1, 2, 3]
    box = store.get_mailbox(USER, "INBOX")
    assert box.messages == 3 and box.uidnext == 4
    assert store.used_bytes(USER) == box.size


@pytest_twisted.ensureDeferred
async def test_writes_to_one_shard_apply_in_call_order(make_store):
    store = await make_store()
    # big messages take longer to parse; the order must still be the call order
    deferreds = [store.append(USER, "INBOX", message(n, 200_000 if n % 3 == 0 else 0)) for n in range(30)]
    outcomes = await settle(deferreds)
    assert [o.uid for o in outcomes] == list(range(1, 31))


@pytest_twisted.ensureDeferred
async def test_full_map_fails_the_write_writes_nothing_and_the_store_keeps_working(make_store):
    store = await make_store(store_map_size=2 * MIB)
    box = store.get_mailbox(USER, "INBOX")
    seq = store.last_seq(0)
    with pytest.raises(StoreTemporaryError, match="full"):
        await store.append(USER, "INBOX", message(0, 3 * MIB))
    assert store.get_mailbox(USER, "INBOX") == box and store.last_seq(0) == seq
    assert store.used_bytes(USER) == 0
    small = await store.append(USER, "INBOX", message(1))
    assert small.uid == 1
    # the big write in the middle of a batch: the others still commit, in order
    gate = WriterGate(store.shard_writers[0])
    await until(gate.entered.is_set)  # the gate alone in its batch; later writes queue up
    deferreds = [store.append(USER, "INBOX", message(2)),
                 store.append(USER, "INBOX", message(3, 3 * MIB)),
                 store.append(USER, "INBOX", message(4))]
    await gate.open_when_queued(3)
    first, big, last = await settle(deferreds)
    assert isinstance(big, StoreTemporaryError)
    assert (first.uid, last.uid) == (2, 3)
    box = store.get_mailbox(USER, "INBOX")
    assert box.messages == 3 and box.size == sum(len(message(n)) for n in (1, 2, 4))
    assert [c.kind for c in store.read_changes(0, seq)] == ["append"] * 3
    assert [store.read_message(USER, m.blob_id) for m in store.list_messages(USER, box.mailbox_id)] == [
        message(1), message(2), message(4)]


@pytest_twisted.ensureDeferred
async def test_a_full_queue_refuses_at_once(make_store):
    store = await make_store(store_queue_max=5)
    gate = WriterGate(store.shard_writers[0])
    await until(gate.entered.is_set)  # the gate alone in its batch; later writes queue up
    deferreds = [store.append(USER, "INBOX", message(n)) for n in range(5)]
    with pytest.raises(StoreTemporaryError, match="busy"):
        await store.append(USER, "INBOX", message(99))
    await gate.open_when_queued(5)
    assert all(not isinstance(o, Exception) for o in await settle(deferreds))


@pytest_twisted.ensureDeferred
async def test_batch_max_one_commits_once_per_write(tmp_path):
    store = LMDBStore.open(str(tmp_path / "data"), 1, Limits(store_map_size=64 * MIB), batch_max=1)
    store.start()
    try:
        await store.add_domain("example.com")
        await store.add_user(USER, CREDS)
        writer = store.shard_writers[0]
        before = writer.commits
        await settle([store.append(USER, "INBOX", message(n)) for n in range(20)])
        assert writer.commits - before == 20
    finally:
        await store.stop()


@pytest_twisted.ensureDeferred
async def test_stop_drains_queued_writes_and_refuses_new_ones(tmp_path):
    path = tmp_path / "data"
    store = open_store(path)
    await store.add_domain("example.com")
    await store.add_user(USER, CREDS)
    deferreds = [store.append(USER, "INBOX", message(n)) for n in range(50)]
    stopped = store.stop()
    with pytest.raises(StoreTemporaryError):
        await store.append(USER, "INBOX", message(99))
    outcomes = await settle(deferreds)
    await stopped
    assert sorted(o.uid for o in outcomes) == list(range(1, 51))
    store = open_store(path)
    try:
        assert store.get_mailbox(USER, "INBOX").messages == 50
    finally:
        await store.stop()


@pytest_twisted.ensureDeferred
async def test_appends_and_other_writes_mixed_in_one_batch_keep_every_counter_exact(make_store):
    # Appends keep account and mailbox records in a per-batch cache; every other
    # operation in the same batch must still see (and update) the current ones.
    store = await make_store()
    await store.add_user("other@example.com", CREDS)
    first = await store.append(USER, "INBOX", message(0, 100))
    writer = store.shard_writers[0]
    gate = WriterGate(writer)
    await until(gate.entered.is_set)
    inbox = first.mailbox_id
    deferreds = [
        store.append(USER, "INBOX", message(1, 200)),
        store.store_flags(USER, inbox, [1], "+", ["\\Deleted", "\\Seen"]),
        store.append(USER, "INBOX", message(2, 300), flags=["\\Seen"]),
        store.expunge(USER, inbox),
        store.deliver([USER, "other@example.com"], message(3, 400)),
        store.rename_mailbox(USER, "Archive", "Archive2"),
        store.append(USER, "Archive2", message(4, 500)),
        store.append(USER, "INBOX", message(5, 600)),
    ]
    await gate.open_when_queued(len(deferreds))
    outcomes = await settle(deferreds)
    assert not [o for o in outcomes if isinstance(o, Exception)], outcomes
    assert writer.commits >= 2 and outcomes[6].uid == 1
    box = store.get_mailbox(USER, "INBOX")
    kept = [message(n, size) for n, size in ((1, 200), (2, 300), (3, 400), (5, 600))]
    assert [store.read_message(USER, m.blob_id) for m in store.list_messages(USER, inbox)] == kept
    assert (box.messages, box.uidnext, box.size) == (4, 6, sum(len(m) for m in kept))
    assert box.unseen == 3  # message 2 arrived \Seen
    archive = store.get_mailbox(USER, "Archive2")
    assert (archive.messages, archive.size) == (1, len(message(4, 500)))
    assert store.used_bytes(USER) == box.size + archive.size
    other = store.get_mailbox("other@example.com", "INBOX")
    assert other.messages == 1 and store.used_bytes("other@example.com") == other.size
    modseqs = [m.modseq for m in store.list_messages(USER, inbox)]
    assert modseqs == sorted(modseqs) and len(set(modseqs)) == len(modseqs)
