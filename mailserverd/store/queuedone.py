"""What became of queued messages that left the queue: their final entries, kept a while.

The queue deletes a message once every recipient is delivered or bounced;
before that, in the same transaction, :func:`record` keeps its final entries
in ``qdone`` (key: queue id; value: the finish time in unix ms and the
encoded entries), so that the HTTP gateway's status endpoint can still say
"delivered" or "bounced" afterwards. ``qdonetimes`` (key: u64 finish ms +
queue id) lets :func:`record` forget the oldest ones, a few per write, once
they are older than ``queue_done_retention``. Messages removed by the
operator are not recorded: nothing was delivered.
"""

from __future__ import annotations

from mailserverd.store import keys, records
from mailserverd.store.types import QUEUE_FINAL, QueueEntry

DBS = ("qdone", "qdonetimes")
#: Expired records removed per write (bounded work; the rest go with the next ones).
PRUNE_STEP = 16


def record(work, queue_id: str, entries: list[QueueEntry], now_ms: int, retention_ms: int) -> None:
    """Keep ``entries`` (all of ``queue_id``'s) if every one is final; prune old records.
    ``retention_ms`` 0 keeps nothing."""
    if retention_ms <= 0 or not entries or not all(entry.state in QUEUE_FINAL for entry in entries):
        return
    ident = keys.queue_id_key(queue_id)
    value = records.pack([now_ms, [[entry.index, records.encode_queue_entry(entry)] for entry in entries]])
    work.txn.put(ident, value, db=work.dbs["qdone"])
    work.txn.put(keys.u64(now_ms) + ident, b"", db=work.dbs["qdonetimes"])
    _prune(work, now_ms - retention_ms)


def _prune(work, before_ms: int) -> None:
    cursor = work.txn.cursor(db=work.dbs["qdonetimes"])
    expired = []
    if cursor.first():
        for key in cursor.iternext(values=False):
            key = bytes(key)
            if len(expired) >= PRUNE_STEP or keys.read_u64(key[:8]) >= before_ms:
                break
            expired.append(key)
    for key in expired:
        work.txn.delete(key, db=work.dbs["qdonetimes"])
        work.txn.delete(key[8:], db=work.dbs["qdone"])


def read(txn, dbs, queue_id: str) -> list[QueueEntry]:
    """The final entries kept for ``queue_id`` ([] when none or forgotten)."""
    data = txn.get(keys.queue_id_key(queue_id), db=dbs["qdone"])
    if data is None:
        return []
    _, stored = records.unpack(bytes(data))
    return [records.decode_queue_entry(queue_id, index, encoded) for index, encoded in stored]
