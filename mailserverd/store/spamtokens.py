"""The spam classifier's training in a shard environment (kept for mailserverd.delivery.bayes).

Two sub-databases (names in env.SHARD_DBS), both per user:

- ``spamtokens``: (user id, token hash) -> (times seen in spam, times seen
  in ham), two big-endian u32. A token hash is 8 bytes of BLAKE2b of the
  token (:func:`mailserverd.delivery.bayes.token_hash`): fixed-size keys, and
  no message words stored as text.
- ``spamtrained``: (user id) -> (spam messages, ham messages) trained, and
  (user id, blob id) -> ``b"s"`` or ``b"h"``: what each message was last
  trained as, so that moving a message back out of Junk first takes back its
  spam training (a message counts once, in the class it was last put in).

Encrypted at rest (store/sealing.py), a token hash is stored as its keyed
name under the row owner's data key (the shard's own key for the site
model, owner 0), so the rows cannot be matched against a dictionary's hashes.

User id 0 is the site-wide model: every training of every user of the shard
is added to it too (the classifier sums it over the shards). An account's
removal deletes its own records; what it added to the site model stays.
The ``info`` key ``spam_seq`` is the change-log position the trainer has
followed, written in the same transaction as the training it caused.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Iterable

from mailserverd.store import keys, shard

#: The user id of the site-wide model (real user ids start at 1).
SITE_USER_ID = 0
SPAM, HAM = "spam", "ham"
SPAM_SEQ_KEY = b"spam_seq"
_LABELS = {SPAM: b"s", HAM: b"h"}
_TOKEN_KEY = struct.Struct(">Q8s")
_COUNTS = struct.Struct(">II")
_U32_MAX = 0xFFFFFFFF


@dataclass
class ModelCounts:
    """What a model knows of some tokens: messages trained per class, and
    ``tokens`` {token hash: (spam count, ham count)} for the tokens it has seen."""

    nspam: int = 0
    nham: int = 0
    tokens: dict[bytes, tuple[int, int]] = field(default_factory=dict)

    def add(self, other: "ModelCounts") -> None:
        """Add ``other``'s counts to these (the site model summed over shards)."""
        self.nspam += other.nspam
        self.nham += other.nham
        for token, (spam, ham) in other.tokens.items():
            mine = self.tokens.get(token, (0, 0))
            self.tokens[token] = (mine[0] + spam, mine[1] + ham)


def spam_seq(txn, dbs) -> int:
    """The change-log position the shard's trainer has followed (0: none)."""
    data = txn.get(SPAM_SEQ_KEY, db=dbs["info"])
    return 0 if data is None else keys.read_u64(data)


def _token_key(user_keys, user_id: int, token: bytes) -> bytes:
    """The ``spamtokens`` key of a token hash: as it is, or sealed its keyed name."""
    return _TOKEN_KEY.pack(user_id, token if user_keys is None else user_keys.term(b"spam:" + token, 8))


def read_counts(txn, dbs, user_id: int, hashes: Iterable[bytes], keyring=None) -> ModelCounts:
    """The model of ``user_id`` (or SITE_USER_ID) for the tokens ``hashes``
    (sealed rows read with ``keyring``'s keys)."""
    counts = ModelCounts()
    totals = txn.get(keys.user_prefix(user_id), db=dbs["spamtrained"])
    if totals is not None:
        counts.nspam, counts.nham = _COUNTS.unpack(totals)
    user_keys = None if keyring is None else keyring.user_keys(txn, dbs, user_id)
    if keyring is not None and user_keys is None:
        return counts  # sealed, and never trained: no token rows
    db = dbs["spamtokens"]
    for token in hashes:
        data = txn.get(_token_key(user_keys, user_id, token), db=db)
        if data is not None:
            counts.tokens[token] = _COUNTS.unpack(data)
    return counts


def token_count(txn, dbs, user_id: int) -> int:
    """How many distinct tokens the model of ``user_id`` holds (a scan: for stats only)."""
    return sum(1 for _ in shard._scan(txn, dbs["spamtokens"], keys.user_prefix(user_id)))


def trained_label(txn, dbs, user_id: int, blob_id: bytes) -> str | None:
    """What the user last trained the message ``blob_id`` as (SPAM, HAM), or None."""
    data = txn.get(keys.user_prefix(user_id) + blob_id, db=dbs["spamtrained"])
    return None if data is None else (SPAM if data == _LABELS[SPAM] else HAM)


# ---------------------------------------------------------------- writing (writer thread)


def apply_training(w, examples: Iterable[tuple[int, bytes, str, Iterable[bytes]]],
                   upto_seq: int | None = None, removed_users: Iterable[int] = ()) -> int:
    """Train on ``examples`` and, unless None, move ``spam_seq`` to ``upto_seq``;
    returns how many examples changed a model.

    ``removed_users`` (first) lose their records. Each example is ``(user id,
    blob id, SPAM or HAM, token hashes)``: a message already trained in that
    class is skipped (replaying a batch changes nothing); one trained in the
    other class has that training taken back first. The user's model and the
    site model change alike. Counts never go below 0 or above 2**32-1.
    """
    for user_id in removed_users:
        prefix = keys.user_prefix(user_id)
        shard.delete_range(w, "spamtokens", prefix)
        shard.delete_range(w, "spamtrained", prefix)
    token_deltas: dict[tuple[int, bytes], list[int]] = {}
    total_deltas: dict[int, list[int]] = {}
    changed = 0
    for user_id, blob_id, label, hashes in examples:
        trained_key = keys.user_prefix(user_id) + blob_id
        before = w.txn.get(trained_key, db=w.dbs["spamtrained"])
        if before == _LABELS[label]:
            continue
        w.txn.put(trained_key, _LABELS[label], db=w.dbs["spamtrained"])
        column = 0 if label == SPAM else 1
        delta = [0, 0]
        delta[column] = 1
        if before is not None:
            delta[1 - column] = -1
        for owner in (user_id, SITE_USER_ID):
            _add(total_deltas.setdefault(owner, [0, 0]), delta)
            for token in set(hashes):
                _add(token_deltas.setdefault((owner, token), [0, 0]), delta)
        changed += 1
    _merge(w, [(keys.user_prefix(user), delta) for user, delta in total_deltas.items()])
    owner_keys = {owner: None if w.keyring is None else w.keyring.user_keys_for_writing(w.txn, w.dbs, owner)
                  for owner in total_deltas}
    _merge(w, [(_token_key(owner_keys[user], user, token), delta)
               for (user, token), delta in token_deltas.items()], "spamtokens")
    if upto_seq is not None:
        w.txn.put(SPAM_SEQ_KEY, keys.u64(upto_seq), db=w.dbs["info"])
    return changed


def _add(into: list[int], delta: list[int]) -> None:
    into[0] += delta[0]
    into[1] += delta[1]


def _merge(w, deltas: list[tuple[bytes, list[int]]], db_name: str = "spamtrained") -> None:
    """Add each delta to the (spam, ham) pair under its key, in key order; a
    pair that reaches (0, 0) is deleted."""
    db = w.dbs[db_name]
    for key, (spam, ham) in sorted(deltas):
        stored = w.txn.get(key, db=db)
        old_spam, old_ham = (0, 0) if stored is None else _COUNTS.unpack(stored)
        new = (min(max(old_spam + spam, 0), _U32_MAX), min(max(old_ham + ham, 0), _U32_MAX))
        if new == (0, 0):
            w.txn.delete(key, db=db)
        else:
            w.txn.put(key, _COUNTS.pack(*new), db=db)
