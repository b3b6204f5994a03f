"""A read-only consistency check of a whole store (``mailserverd fsck``).

Checks, per shard, in one read transaction (a consistent snapshot, also
beside a running daemon; it pins the snapshot's pages while it runs):

- every record decodes with the store's own decoders (:mod:`.records`);
- mailbox names and mailbox records point at each other;
- each mailbox's counters (messages, unseen, size) equal what its messages
  add up to; every UID is below UIDNEXT (UIDs are unique: they are keys);
  no message's MODSEQ is above the mailbox's HIGHESTMODSEQ;
- each account's used bytes (the quota counter) and mailbox count;
- the modseq index holds exactly one entry per message, at its MODSEQ;
  vanished UIDs are below UIDNEXT and no longer present;
- blob reference counts equal the messages referring to each blob, every
  referred blob exists, and (``verify_content``) each blob's bytes still hash
  to its id and its facts decode;
- the change log: every record decodes with a known kind, no record and no
  MODSEQ is above the shard's sequence counter.

In meta: every user's shard has its account (with the same address), and
the per-shard user counts. An account on a shard that no user in meta leads
to (left by an interrupted ``user add``) is a note, not a problem: it is
unreachable and harmless.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from mailserverd.store import keys, meta, records, shard
from mailserverd.store.blobs import decode_blob, is_sealed, opener, sealed_blob_id
from mailserverd.store.env import SHARDS_KEY, open_all_readonly

Progress = Callable[[int], None]


@dataclass
class FsckReport:
    """What a check found: ``problems`` (inconsistencies), ``notes`` (harmless), totals."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    totals: Counter = field(default_factory=Counter)


@dataclass
class _Box:
    """A mailbox's record and what its messages add up to."""

    user_id: int
    record: records.MailboxRecord
    messages: int = 0
    unseen: int = 0
    size: int = 0


class _ShardCheck:
    """The checks of one shard in one read transaction (see the module docstring)."""

    def __init__(self, name: str, env, report: FsckReport, verify_content: bool, progress: Progress | None,
                 keyring=None):
        self.name, self.env, self.dbs = name, env.env, env.dbs
        self.keyring = keyring
        self.sealed_unverified = 0
        self.report = report
        self.verify_content = verify_content
        self.progress = progress
        self.accounts: dict[int, records.AccountRecord] = {}
        self.boxes: dict[tuple[int, int], _Box] = {}
        self.blob_refs: Counter = Counter()
        self.addresses: dict[int, str] = {}
        self.seq = 0  # the shard's change-log counter, read in run()
        self.message_count = 0

    def problem(self, text: str) -> None:
        self.report.problems.append(f"{self.name}: {text}")

    def where(self, user_id: int, mailbox_id: int | None = None) -> str:
        who = self.addresses.get(user_id, f"user id {user_id}")
        if mailbox_id is None:
            return who
        box = self.boxes.get((user_id, mailbox_id))
        return f"{who} mailbox {box.record.name if box else mailbox_id}"

    def run(self) -> None:
        with self.env.begin() as txn:
            self.seq = shard.last_seq(txn, self.dbs)
            self._accounts(txn)
            self._mailboxes(txn)
            self._messages(txn)
            self._counters()
            self._modseq_index(txn)
            self._vanished(txn)
            self._blobs(txn)
            self._changes(txn)

    def _decoded(self, db_name: str, txn, decode):
        """Yield ``(key, record)`` of a sub-database; a record that does not decode is a problem."""
        for key, value in txn.cursor(db=self.dbs[db_name]):
            try:
                yield key, decode(key, value)
            except Exception as exc:  # any decoder failure is what is being looked for
                self.problem(f"{db_name} record {key.hex()} does not decode: {exc}")

    def _accounts(self, txn) -> None:
        for key, account in self._decoded("accounts", txn, lambda k, v: records.decode_account(v)):
            user_id = keys.read_u64(key)
            self.accounts[user_id] = account
            self.addresses[user_id] = account.address
        self.report.totals["accounts"] += len(self.accounts)

    def _mailboxes(self, txn) -> None:
        names = {}
        for key, value in txn.cursor(db=self.dbs["mbnames"]):
            names[(keys.read_u64(key[:8]), keys.name_from_key(key))] = keys.read_u64(value)
        for key, record in self._decoded("mailboxes", txn, lambda k, v: records.decode_mailbox(v)):
            user_id, mailbox_id = keys.read_u64(key[:8]), keys.read_u64(key[8:16])
            self.boxes[(user_id, mailbox_id)] = _Box(user_id, record)
            if user_id not in self.accounts:
                self.problem(f"mailbox {record.name!r} of user id {user_id} has no account")
            if names.get((user_id, record.name)) != mailbox_id:
                self.problem(f"{self.where(user_id, mailbox_id)}: its name does not lead to it")
            if record.highestmodseq > self.seq:
                self.problem(f"{self.where(user_id, mailbox_id)}: HIGHESTMODSEQ {record.highestmodseq} "
                             f"is above the change-log sequence {self.seq}")
        for (user_id, name), mailbox_id in names.items():
            if (user_id, mailbox_id) not in self.boxes:
                self.problem(f"{self.where(user_id)}: name {name!r} leads to missing mailbox {mailbox_id}")
        self.report.totals["mailboxes"] += len(self.boxes)

    def _messages(self, txn) -> None:
        count = 0
        for key, message in self._decoded("messages", txn, lambda k, v: records.decode_message(
                keys.uid_from_message_key(k), v)):
            count += 1
            user_id, mailbox_id = keys.read_u64(key[:8]), keys.read_u64(key[8:16])
            box = self.boxes.get((user_id, mailbox_id))
            self.blob_refs[message.blob_id] += 1
            if box is None:
                self.problem(f"message UID {message.uid} of {self.where(user_id, mailbox_id)}: no such mailbox")
                continue
            box.messages += 1
            box.unseen += shard.SEEN not in message.flags
            box.size += message.size
            if not 0 < message.uid < box.record.uidnext:
                self.problem(f"{self.where(user_id, mailbox_id)}: UID {message.uid} is not below "
                             f"UIDNEXT {box.record.uidnext}")
            if message.modseq > box.record.highestmodseq:
                self.problem(f"{self.where(user_id, mailbox_id)}: UID {message.uid} has MODSEQ "
                             f"{message.modseq} above HIGHESTMODSEQ {box.record.highestmodseq}")
            if txn.get(keys.modseq_key(user_id, mailbox_id, message.modseq, message.uid),
                       db=self.dbs["modseqs"]) is None:
                self.problem(f"{self.where(user_id, mailbox_id)}: UID {message.uid} is missing from "
                             f"the modseq index at MODSEQ {message.modseq}")
        self.message_count = count
        self.report.totals["messages"] += count

    def _counters(self) -> None:
        used: Counter = Counter()
        mailbox_counts: Counter = Counter()
        for (user_id, mailbox_id), box in self.boxes.items():
            used[user_id] += box.size
            mailbox_counts[user_id] += 1
            for what in ("messages", "unseen", "size"):
                stored, found = getattr(box.record, what), getattr(box, what)
                if stored != found:
                    self.problem(f"{self.where(user_id, mailbox_id)}: {what} counter is {stored}, "
                                 f"its messages add up to {found}")
        for user_id, account in self.accounts.items():
            if account.used_bytes != used[user_id]:
                self.problem(f"{self.where(user_id)}: quota usage is {account.used_bytes} bytes, "
                             f"its messages add up to {used[user_id]}")
            if account.mailbox_count != mailbox_counts[user_id]:
                self.problem(f"{self.where(user_id)}: mailbox count is {account.mailbox_count}, "
                             f"it has {mailbox_counts[user_id]}")

    def _modseq_index(self, txn) -> None:
        entries = txn.stat(self.dbs["modseqs"])["entries"]
        if entries == self.message_count:
            return  # each message has its entry (checked above) and keys are unique: no extra ones
        for key in txn.cursor(db=self.dbs["modseqs"]).iternext(keys=True, values=False):
            user_id, mailbox_id = keys.read_u64(key[:8]), keys.read_u64(key[8:16])
            modseq, uid = keys.split_modseq_key(key)
            message = shard.find_message(txn, self.dbs, user_id, mailbox_id, uid)
            if message is None or message.modseq != modseq:
                self.problem(f"{self.where(user_id, mailbox_id)}: modseq index entry for UID {uid} "
                             f"at MODSEQ {modseq} has no such message")

    def _vanished(self, txn) -> None:
        for key in txn.cursor(db=self.dbs["vanished"]).iternext(keys=True, values=False):
            user_id, mailbox_id = keys.read_u64(key[:8]), keys.read_u64(key[8:16])
            modseq, uid = keys.split_modseq_key(key)
            box = self.boxes.get((user_id, mailbox_id))
            if box is None:
                self.problem(f"vanished UID {uid} of {self.where(user_id, mailbox_id)}: no such mailbox")
            elif uid >= box.record.uidnext or modseq > box.record.highestmodseq:
                self.problem(f"{self.where(user_id, mailbox_id)}: vanished UID {uid} (MODSEQ {modseq}) "
                             f"is beyond UIDNEXT or HIGHESTMODSEQ")
            elif shard.find_message(txn, self.dbs, user_id, mailbox_id, uid) is not None:
                self.problem(f"{self.where(user_id, mailbox_id)}: UID {uid} is both present and vanished")

    def _blobs(self, txn) -> None:
        stored = 0
        for blob_id, value in txn.cursor(db=self.dbs["blobs"]).iternext(keys=True, values=True):
            stored += 1
            data = txn.get(blob_id, db=self.dbs["blobrefs"])
            refs = 1 if data is None else keys.read_u64(data)  # an absent count means 1
            found = self.blob_refs.pop(blob_id, 0)
            if refs != found:
                self.problem(f"blob {blob_id.hex()[:16]}: reference count {refs}, referred to by {found} messages")
            if self.verify_content:
                self._verify_blob(txn, blob_id, value)
        for blob_id, found in self.blob_refs.items():
            self.problem(f"blob {blob_id.hex()[:16]} is missing, {found} messages refer to it")
        for blob_id in txn.cursor(db=self.dbs["blobrefs"]).iternext(keys=True, values=False):
            if txn.get(blob_id, db=self.dbs["blobs"]) is None:
                self.problem(f"blob {blob_id.hex()[:16]} has a reference count but no content")
        self.report.totals["blobs"] += stored
        if self.sealed_unverified:
            self.report.notes.append(f"{self.name}: {self.sealed_unverified} sealed blobs not verified "
                                     "(no master key: fsck reads [encryption] of the config)")

    def _verify_blob(self, txn, blob_id: bytes, value: bytes) -> None:
        if is_sealed(value) and self.keyring is None:
            self.sealed_unverified += 1
            return
        try:
            facts, raw = decode_blob(value, blob_id, opener(txn, self.dbs, self.keyring))
            records.decode_facts(facts)
        except Exception as exc:  # a damaged value is what is being looked for
            self.problem(f"blob {blob_id.hex()[:16]} does not decode: {exc}")
            return
        content_id = hashlib.sha256(raw).digest()
        if is_sealed(value):  # decoded: the user's keys exist
            user_id = keys.read_u64(blob_id[:8])
            content_id = sealed_blob_id(user_id, self.keyring.user_keys(txn, self.dbs, user_id), content_id)
        if content_id != blob_id:
            self.problem(f"blob {blob_id.hex()[:16]}: content does not match its hash (damaged)")
        if self.progress is not None:
            self.progress(len(value))

    def _changes(self, txn) -> None:
        last = 0
        for key, change in self._decoded("changes", txn, lambda k, v: records.decode_change(
                keys.read_u64(k), v)):
            last = change.seq
            if change.kind not in records.CHANGE_KINDS:
                self.problem(f"change {change.seq} has unknown kind {change.kind!r}")
        if last > self.seq:
            self.problem(f"change log reaches sequence {last}, above the shard's counter {self.seq}")


def _check_meta(txn, env, shard_count: int, checks: list[_ShardCheck], report: FsckReport) -> None:
    """Users against their shards' accounts, and the per-shard user counts.

    ``txn`` was begun before the shards' snapshots: a user it holds was
    complete (add_user makes the account first) before any shard was read.
    """
    placed: Counter = Counter()
    reached: set[tuple[int, int]] = set()
    for key, value in txn.cursor(db=env.dbs["users"]):
        try:
            user = records.decode_user(value)
        except Exception as exc:  # any decoder failure is what is being looked for
            report.problems.append(f"meta: user record {key!r} does not decode: {exc}")
            continue
        report.totals["users"] += 1
        if not 0 <= user.shard < shard_count:
            report.problems.append(f"meta: {user.address} is on shard {user.shard}, which does not exist")
            continue
        placed[user.shard] += 1
        reached.add((user.shard, user.user_id))
        account = checks[user.shard].accounts.get(user.user_id)
        if account is None or account.address != user.address:
            report.problems.append(f"meta: {user.address} has no account on shard {user.shard:02d}")
    counts = meta.shard_user_counts(txn, env.dbs, shard_count)
    for number, count in enumerate(counts):
        if count != placed[number]:
            report.problems.append(f"meta: shard {number:02d} is counted with {count} users, has {placed[number]}")
    for number, check in enumerate(checks):
        for user_id, account in check.accounts.items():
            if (number, user_id) not in reached:
                report.notes.append(f"{check.name}: account {account.address} (id {user_id}) is not "
                                    f"reachable from meta (left by an interrupted user add or remove)")


def check_store(data_dir: str, verify_content: bool = True, progress: Progress | None = None,
                keyring=None) -> FsckReport:
    """Check the store in ``data_dir`` (read-only; see the module docstring).

    ``progress(n)`` is called as n bytes of blob content are verified; sealed
    blobs are opened with ``keyring`` (without one, left unverified, in a note).
    Raises StoreError/SchemaMismatch when the store cannot be opened at all.
    """
    report = FsckReport()
    opened = open_all_readonly(data_dir)
    try:
        meta_env = opened[0][2]
        with meta_env.env.begin() as txn:
            shard_count = keys.read_u64(txn.get(SHARDS_KEY, db=meta_env.dbs["info"]))
            checks = [_ShardCheck(name, env, report, verify_content, progress, keyring)
                      for name, _, env in opened if name.startswith("shard-")]
            for check in checks:
                check.run()
            _check_meta(txn, meta_env, shard_count, checks, report)
    finally:
        for _, _, env in opened:
            env.close()
    return report
