"""Backup, restore and fsck on real LMDB stores in temporary directories."""

from __future__ import annotations

import json
import os

import pytest
import pytest_twisted
from twisted.internet import defer

from imap_real_store import CREDS
from mailserverd.limits import MIB, Limits
from mailserverd.store import keys, shard
from mailserverd.store.backup import MANIFEST_NAME, BackupError, backup_store, restore_store
from mailserverd.store.fsck import check_store
from mailserverd.store.lmdbstore import LMDBStore

LIMITS = Limits(store_map_size=32 * MIB)
USERS = ("ann@example.com", "ben@example.com", "cat@example.com")


def message(n: int) -> bytes:
    return f"Subject: message {n}\r\nMessage-ID: <{n}@example.com>\r\n\r\nbody {n}\r\n".encode()


async def populate(store) -> None:
    """Users on both shards with appends, flags, a copy, an expunge and a deleted mailbox."""
    await store.add_domain("example.com")
    for user in USERS:
        await store.add_user(user, CREDS)
    for n in range(12):
        await store.append(USERS[n % 3], "INBOX", message(n), ["\\Seen"] if n % 2 else ["$Label"], 1700000000 + n)
    ann = store.get_mailbox(USERS[0], "INBOX")
    await store.copy(USERS[0], ann.mailbox_id, [1, 2], "Archive")
    await store.store_flags(USERS[0], ann.mailbox_id, [1], "+", ["\\Deleted"])
    await store.expunge(USERS[0], ann.mailbox_id)
    await store.create_mailbox(USERS[1], "Projects/Old")
    await store.append(USERS[1], "Projects/Old", message(99), [], 1700000099)
    await store.delete_mailbox(USERS[1], "Projects/Old")
    await store.deliver(list(USERS), message(100))  # one blob, referenced per shard


class StoreDir:
    """A populated store's data dir, opened only while a test reads or writes it
    (an LMDB environment is opened once per process: backup and fsck open their own)."""

    def __init__(self, path):
        self.data_dir = str(path)

    def open(self) -> LMDBStore:
        opened = LMDBStore.open(self.data_dir, 2, LIMITS)
        opened.start()
        return opened

    async def run(self, work):
        """``work(store)`` (may return a Deferred) with the store open; returns its result."""
        opened = self.open()
        try:
            return await defer.maybeDeferred(work, opened)
        finally:
            await opened.stop()


@pytest.fixture
def store(tmp_path):
    made = StoreDir(tmp_path / "data")
    pytest_twisted.blockon(defer.ensureDeferred(made.run(lambda opened: defer.ensureDeferred(populate(opened)))))
    return made


def snapshot(store) -> dict:
    """Everything a client could see of every user's mail."""
    seen = {}
    for user in USERS:
        for box in store.list_mailboxes(user):
            seen[(user, box.name)] = (box.uidvalidity, box.uidnext, box.messages, box.unseen, box.size, [
                (m.uid, sorted(m.flags), m.internaldate, store.read_message(user, m.blob_id))
                for m in store.list_messages(user, box.mailbox_id)])
    return seen


async def change(store: StoreDir, user: str, apply) -> None:
    """Write one raw change through the user's shard writer (to corrupt a store on purpose)."""
    def work(opened):
        account = opened.get_user(user)
        return opened.shard_writers[account.shard].submit(lambda w: apply(w, account.user_id))

    await store.run(work)


def test_a_store_in_use_passes_fsck(store):
    report = check_store(store.data_dir)
    assert report.problems == [] and report.notes == []
    assert report.totals["users"] == 3 and report.totals["messages"] == 16


@pytest_twisted.ensureDeferred
async def test_backup_restores_the_same_mail_and_passes_fsck(store, tmp_path):
    manifest = backup_store(store.data_dir, str(tmp_path / "backup"))
    assert [e["name"] for e in manifest["environments"]] == ["meta", "shard-00", "shard-01"]
    assert [e["seq"] for e in manifest["environments"][1:]] == await store.run(
        lambda opened: [opened.last_seq(0), opened.last_seq(1)])
    on_disk = json.loads((tmp_path / "backup" / MANIFEST_NAME).read_text())
    assert on_disk == manifest and on_disk["shards"] == 2
    assert not [n for n in os.listdir(tmp_path) if ".partial" in n]
    before = await store.run(snapshot)
    restore_store(str(tmp_path / "backup"), str(tmp_path / "restored"))
    assert check_store(str(tmp_path / "restored")).problems == []
    assert await StoreDir(tmp_path / "restored").run(snapshot) == before


def test_restore_refuses_a_non_empty_dir_a_damaged_or_incomplete_backup(store, tmp_path):
    backup = tmp_path / "backup"
    backup_store(store.data_dir, str(backup))
    target = tmp_path / "target"
    target.mkdir()
    (target / "something").write_text("x")
    with pytest.raises(BackupError, match="not empty"):
        restore_store(str(backup), str(target))
    assert os.listdir(target) == ["something"]
    shard_file = backup / "shards" / "01" / "data.mdb"
    data = bytearray(shard_file.read_bytes())
    data[5000] ^= 0xFF
    shard_file.write_bytes(bytes(data))
    with pytest.raises(BackupError, match="checksum"):
        restore_store(str(backup), str(tmp_path / "fresh"))
    assert os.listdir(tmp_path / "fresh") == []  # nothing left that could be opened as a store
    (backup / MANIFEST_NAME).unlink()
    with pytest.raises(BackupError, match="incomplete"):
        restore_store(str(backup), str(tmp_path / "other"))


def test_backup_refuses_a_target_that_is_not_empty(store, tmp_path):
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "file").write_text("x")
    with pytest.raises(BackupError, match="not empty"):
        backup_store(store.data_dir, str(tmp_path / "used"))


def bump_counter(w, user_id):
    box_id = shard.mailbox_id_by_name(w.txn, w.dbs, user_id, "INBOX")
    box = shard.get_mailbox(w.txn, w.dbs, user_id, box_id)
    box.unseen += 1
    shard.put_mailbox(w, user_id, box_id, box)


def lower_uidnext(w, user_id):
    box_id = shard.mailbox_id_by_name(w.txn, w.dbs, user_id, "INBOX")
    box = shard.get_mailbox(w.txn, w.dbs, user_id, box_id)
    box.uidnext = 2
    shard.put_mailbox(w, user_id, box_id, box)


def drop_modseq_entry(w, user_id):
    box_id = shard.mailbox_id_by_name(w.txn, w.dbs, user_id, "INBOX")
    first = shard.list_messages(w.txn, w.dbs, user_id, box_id)[0]
    w.txn.delete(keys.modseq_key(user_id, box_id, first.modseq, first.uid), db=w.dbs["modseqs"])


def add_blob_ref(w, user_id):
    box_id = shard.mailbox_id_by_name(w.txn, w.dbs, user_id, "INBOX")
    first = shard.list_messages(w.txn, w.dbs, user_id, box_id)[0]
    w.txn.put(first.blob_id, keys.u64(5), db=w.dbs["blobrefs"])


def grow_usage(w, user_id):
    account = shard.get_account(w.txn, w.dbs, user_id)
    account.used_bytes += 10
    shard.put_account(w, user_id, account)


def damage_blob(w, user_id):
    box_id = shard.mailbox_id_by_name(w.txn, w.dbs, user_id, "INBOX")
    first = shard.list_messages(w.txn, w.dbs, user_id, box_id)[0]
    stored = bytearray(w.txn.get(first.blob_id, db=w.dbs["blobs"]))
    stored[-3] ^= 0x20
    w.txn.put(first.blob_id, bytes(stored), db=w.dbs["blobs"])


def bad_record(w, user_id):
    w.txn.put(keys.change_key(10**6), b"\x09garbage", db=w.dbs["changes"])


@pytest.mark.parametrize("corrupt, found", [
    (bump_counter, "ben@example.com mailbox INBOX: unseen counter is 4, its messages add up to 3"),
    (lower_uidnext, "UID 2 is not below UIDNEXT 2"),
    (drop_modseq_entry, "missing from the modseq index"),
    (add_blob_ref, "reference count 5, referred to by 1 messages"),
    (grow_usage, "quota usage is"),
    (damage_blob, "content does not match its hash"),
    (bad_record, "does not decode"),
])
@pytest_twisted.ensureDeferred
async def test_fsck_finds_a_corruption(store, corrupt, found):
    await change(store, USERS[1], corrupt)
    problems = check_store(store.data_dir).problems
    assert any(found in p for p in problems), problems


@pytest_twisted.ensureDeferred
async def test_fsck_of_a_deleted_user_in_meta_only(store):
    """A user whose shard side is gone (a removal interrupted between its steps)."""
    from mailserverd.store import mailboxes

    await change(store, USERS[2], lambda w, user_id: mailboxes.remove_account(w, user_id, USERS[2]))
    shard_number = await store.run(lambda opened: opened.get_user(USERS[2]).shard)
    problems = check_store(store.data_dir).problems
    assert problems == [f"meta: {USERS[2]} has no account on shard {shard_number:02d}"]


