"""The spam trainer: follows each shard's change log and learns from the user's moves.

A user who moves (or copies) a message into Junk says it is spam; out of
Junk into another mailbox, that it is ham. The store's change log shows
both: the ``append`` record of a copy or move names its ``source`` mailbox
(store/records.py). The trainer reads the log from the position it has
followed (``spam_seq``, written in the same transaction as the training it
caused, store/spamtokens.py), so a restart resumes where it stopped and a
message is never counted twice; MOVE itself is not touched, and moves made
by any process (IMAP, the CLI, another node's replica) train alike.

Batches are built in a thread of a pool of its own (reading and decoding
messages is CPU work that must stay off the reactor) and committed through
the shard's writer like every other write (:class:`~mailserverd.logfollower.LogFollower`).
"""

from __future__ import annotations

from mailserverd.delivery.bayes import message_hashes
from mailserverd.delivery.local import JUNK
from mailserverd.logfollower import LogFollower, changes_after
from mailserverd.store.spamtokens import HAM, SPAM

POOL_NAME = "spam-train"


def is_junk(mailbox) -> bool:
    """Whether a mailbox (MailboxInfo, or None when gone) is the user's Junk:
    special-use ``\\Junk`` (RFC 6154 §2) or the name delivery files spam under."""
    return mailbox is not None and (mailbox.special_use == "\\Junk" or mailbox.name.lower() == JUNK.lower())


def _label(store, shard_number: int, change, mailboxes: dict) -> str | None:
    """SPAM for a copy into Junk from elsewhere, HAM for one out of Junk, else None
    (also when either mailbox is gone: what the user meant is no longer known)."""
    found = []
    for mailbox_id in (change.mailbox_id, change.data["source"]):
        key = (change.user_id, mailbox_id)
        if key not in mailboxes:
            mailboxes[key] = store.find_mailbox(shard_number, change.user_id, mailbox_id)
        if mailboxes[key] is None:
            return None
        found.append(is_junk(mailboxes[key]))
    into_junk, from_junk = found
    if into_junk == from_junk:
        return None
    return SPAM if into_junk else HAM


def build_batch(store, shard_number: int, after_seq: int, limits):
    """The next training batch of shard ``shard_number`` after ``after_seq``:
    ``(upto_seq, examples, removed_users)`` for store.write_spam_training, or
    None when the log has nothing new. At most ``limits.spam_train_batch``
    examples; messages over ``spam_message_max`` are left out. Runs on any thread.
    """
    batch_max = limits.spam_train_batch
    examples: list[tuple] = []
    removed: list[int] = []
    mailboxes: dict = {}
    upto = after_seq
    for change in changes_after(store, shard_number, after_seq):
        upto = change.seq
        if change.kind == "account-delete":
            examples = [example for example in examples if example[0] != change.user_id]
            removed.append(change.user_id)
        elif change.kind == "append" and "source" in change.data:
            label = _label(store, shard_number, change, mailboxes)
            for blob_id in change.data["blob_ids"] if label else ():
                content = store.read_content(shard_number, blob_id)
                hashes = None if content is None else message_hashes(
                    content[0], content[1], limits.spam_tokens_max, limits.spam_message_max)
                if hashes is not None:  # None: gone since, or too large to learn from
                    examples.append((change.user_id, blob_id, label, hashes))
        if len(examples) >= batch_max:
            break
    if upto == after_seq:
        return None
    return upto, examples, removed


class SpamTrainer(LogFollower):
    """Keeps every shard's spam models in step with its users' moves (see the
    module docstring); ``trained`` counts the examples that changed a model."""

    interval = "spam_train_interval"
    pool_name = POOL_NAME

    def __init__(self, store, limits, reactor):
        super().__init__(store, limits, reactor)
        self.trained = 0

    def position(self, shard_number: int) -> int:
        return self.store.spam_seq(shard_number)

    def build_batch(self, shard_number: int, after_seq: int):
        return build_batch(self.store, shard_number, after_seq, self.limits)

    def commit(self, shard_number: int, batch):
        upto, examples, removed = batch
        written = self.store.write_spam_training(shard_number, examples, upto, removed)
        return written.addCallback(self._count)

    def _count(self, changed: int) -> None:
        self.trained += changed
