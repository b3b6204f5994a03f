"""Encryption at rest (store/sealing.py): nothing of a message readable in the
raw LMDB files, everything still read back through the store; wrong, missing
and loosely kept master keys refused; damage found; crypto-erase; dedup
within one user only."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import lmdb
import pytest
import pytest_twisted

from mailserverd.limits import MIB, Limits
from mailserverd.store.fsck import check_store
from mailserverd.store.lmdbstore import LMDBStore
from mailserverd.store.errors import Damaged, MasterKeyError
from mailserverd.store.sealing import (
    Keyring, MasterKey, load_keyring, new_master_key, read_master_key_credential, read_master_key_file)
from mailserverd.store.types import Credentials, ScramSecrets

LIMITS = Limits(store_map_size=32 * MIB)
CREDS = Credentials(bcrypt_hash=b"$2b$04$hash", scram_sha256=ScramSecrets(b"salt", 4096, b"K" * 32, b"S" * 32))
ALICE, BOB = "alice@example.com", "bob@example.com"
MARKER_SUBJECT = b"Xyzzy-subject-marker-4711"
MARKER_BODY = b"plugh-body-marker-0815"
RAW = (b"From: carol@example.org\r\nTo: alice@example.com\r\nSubject: " + MARKER_SUBJECT +
       b"\r\nMessage-ID: <m1@example.org>\r\n\r\n" + MARKER_BODY + b" and more text\r\n")


def open_store(path: Path, keyring) -> LMDBStore:
    opened = LMDBStore.open(str(path), 2, LIMITS, keyring=keyring)
    opened.start()
    return opened


def raw_files(data_dir: Path) -> bytes:
    return b"".join(path.read_bytes() for path in data_dir.rglob("*.mdb"))


@pytest.fixture
def master():
    return MasterKey(new_master_key())


@pytest.fixture
def sealed(tmp_path, master):
    store = open_store(tmp_path / "data", Keyring(master))
    pytest_twisted.blockon(store.add_domain("example.com"))
    for user in (ALICE, BOB):
        pytest_twisted.blockon(store.add_user(user, CREDS))
    yield store
    pytest_twisted.blockon(store.stop())


def inbox_messages(store, user):
    box = store.get_mailbox(user, "INBOX")
    return list(store.list_messages(user, box.mailbox_id))


@pytest_twisted.ensureDeferred
async def test_nothing_of_a_message_is_readable_on_disk_yet_all_reads_back(tmp_path, sealed):
    await sealed.deliver([ALICE, BOB], RAW)
    await sealed.stop()
    on_disk = raw_files(tmp_path / "data")
    assert MARKER_SUBJECT not in on_disk and MARKER_BODY not in on_disk
    assert b"m1@example.org" not in on_disk and b"carol@example.org" not in on_disk


@pytest_twisted.ensureDeferred
async def test_sealed_messages_and_facts_read_back(sealed):
    await sealed.deliver([ALICE], RAW)
    message, = inbox_messages(sealed, ALICE)
    assert sealed.read_message(ALICE, message.blob_id) == RAW
    facts = sealed.read_facts(ALICE, message.blob_id)
    assert facts["size"] == len(RAW)
    assert MARKER_SUBJECT.decode() in repr(facts)  # the envelope is in the facts


@pytest_twisted.ensureDeferred
async def test_dedup_holds_within_a_user_and_not_across_users(sealed):
    await sealed.deliver([ALICE, BOB], RAW)
    await sealed.deliver([ALICE], RAW)
    alice, bob = inbox_messages(sealed, ALICE), inbox_messages(sealed, BOB)
    assert alice[0].blob_id == alice[1].blob_id  # one blob for the user's two copies
    assert alice[0].blob_id != bob[0].blob_id  # each user's own, named by their own key
    assert sealed.read_message(BOB, bob[0].blob_id) == RAW


@pytest_twisted.ensureDeferred
async def test_reopening_needs_the_same_master_key(tmp_path, sealed, master):
    await sealed.deliver([ALICE], RAW)
    await sealed.stop()
    await opens_only_with(tmp_path / "data", master)


async def opens_only_with(data_dir: Path, master: MasterKey) -> None:
    """The store in ``data_dir`` is refused with another master key or none,
    and reads alice's one message back with ``master``."""
    with pytest.raises(MasterKeyError, match="another master key"):
        LMDBStore.open(str(data_dir), 2, LIMITS, keyring=Keyring(MasterKey(new_master_key())))
    with pytest.raises(MasterKeyError, match="encrypted at rest: configure its master key"):
        LMDBStore.open(str(data_dir), 2, LIMITS)
    again = open_store(data_dir, Keyring(master))
    try:
        message, = inbox_messages(again, ALICE)
        assert again.read_message(ALICE, message.blob_id) == RAW
    finally:
        await again.stop()


@pytest_twisted.ensureDeferred
async def test_a_damaged_sealed_blob_is_refused_and_the_rest_still_reads(tmp_path, sealed, master):
    await sealed.deliver([ALICE], RAW)
    await sealed.deliver([ALICE], RAW.replace(b"m1@", b"m2@"))
    first, second = inbox_messages(sealed, ALICE)
    await sealed.stop()
    shard_dir = next(path for path in (tmp_path / "data" / "shards").iterdir()
                     if first.blob_id in _blob_keys(path))
    env = lmdb.open(str(shard_dir), max_dbs=32)
    with env.begin(write=True) as txn:
        blobs = env.open_db(b"blobs", txn=txn)
        value = bytearray(txn.get(first.blob_id, db=blobs))
        value[-1] ^= 0x01  # one bit of the message's tag
        txn.put(first.blob_id, bytes(value), db=blobs)
    env.close()
    again = open_store(tmp_path / "data", Keyring(master))
    try:
        with pytest.raises(Damaged):
            again.read_message(ALICE, first.blob_id)
        assert again.read_message(ALICE, second.blob_id) == RAW.replace(b"m1@", b"m2@")
    finally:
        await again.stop()
    report = check_store(str(tmp_path / "data"), keyring=Keyring(master))
    assert len(report.problems) == 1 and "does not decode" in report.problems[0]
    unkeyed = check_store(str(tmp_path / "data"))
    assert not unkeyed.problems and any("sealed blobs not verified" in note for note in unkeyed.notes)


def _blob_keys(shard_dir: Path) -> set[bytes]:
    return set(_blobs_of(shard_dir))


def _blobs_of(shard_dir: Path) -> dict[bytes, bytes]:
    env = lmdb.open(str(shard_dir), max_dbs=32, readonly=True)
    try:
        with env.begin() as txn:
            return {bytes(key): bytes(value)
                    for key, value in txn.cursor(db=env.open_db(b"blobs", txn=txn, create=False))}
    finally:
        env.close()


def blob_values(store) -> dict[bytes, bytes]:
    """Every stored blob of the open store's shards, as it is on disk."""
    found: dict[bytes, bytes] = {}
    for env in store._shard_envs:
        with env.env.begin() as txn:
            found.update((bytes(key), bytes(value)) for key, value in txn.cursor(db=env.dbs["blobs"]))
    return found


def data_keys(store) -> int:
    """How many data keys the store's shards hold."""
    count = 0
    for env in store._shard_envs:
        with env.env.begin() as txn:
            count += sum(1 for key, _ in txn.cursor(db=env.dbs["datakeys"]) if len(key) == 8)
    return count


@pytest_twisted.ensureDeferred
async def test_removing_a_user_destroys_its_data_key(sealed, master):
    await sealed.deliver([ALICE, BOB], RAW)
    assert data_keys(sealed) == 2
    bob_message, = inbox_messages(sealed, BOB)
    await sealed.remove_user(BOB)
    assert data_keys(sealed) == 1  # alice's only
    message, = inbox_messages(sealed, ALICE)
    assert sealed.read_message(ALICE, message.blob_id) == RAW
    with pytest.raises(Exception):
        sealed.read_message(BOB, bob_message.blob_id)


@pytest_twisted.ensureDeferred
async def test_a_plain_store_takes_encryption_on_and_reads_both(tmp_path, master):
    plain = open_store(tmp_path / "data", None)
    await plain.add_domain("example.com")
    await plain.add_user(ALICE, CREDS)
    await plain.deliver([ALICE], RAW)
    await plain.stop()
    sealed = open_store(tmp_path / "data", Keyring(master))
    try:
        await sealed.deliver([ALICE], RAW)
        old, new = inbox_messages(sealed, ALICE)
        assert old.blob_id != new.blob_id and len(new.blob_id) == 40
        assert sealed.read_message(ALICE, old.blob_id) == sealed.read_message(ALICE, new.blob_id) == RAW
    finally:
        await sealed.stop()
    assert not check_store(str(tmp_path / "data"), keyring=Keyring(master)).problems


# --- the master key's file and credential


def test_a_key_file_readable_by_others_is_refused(tmp_path):
    path = tmp_path / "master.key"
    path.write_bytes(base64.b64encode(new_master_key()) + b"\n")
    path.chmod(0o644)
    with pytest.raises(MasterKeyError, match="readable by its owner only"):
        read_master_key_file(str(path))
    path.chmod(0o400)
    assert len(read_master_key_file(str(path))) == 32


@pytest.mark.parametrize("content", [b"", b"short", base64.b64encode(b"x" * 31), b"not base64 at all!" * 3])
def test_a_key_file_without_a_key_is_refused(tmp_path, content):
    path = tmp_path / "master.key"
    path.write_bytes(content)
    path.chmod(0o400)
    with pytest.raises(MasterKeyError, match="32 random bytes"):
        read_master_key_file(str(path))


def test_a_missing_key_file_says_so(tmp_path):
    with pytest.raises(MasterKeyError, match="No such file"):
        load_keyring(master_key_file=str(tmp_path / "absent.key"))
    assert load_keyring() is None


def test_the_key_comes_from_a_systemd_credential(tmp_path):
    key = new_master_key()
    (tmp_path / "master.key").write_bytes(key)
    assert read_master_key_credential("master.key", {"CREDENTIALS_DIRECTORY": str(tmp_path)}) == key
    with pytest.raises(MasterKeyError, match="CREDENTIALS_DIRECTORY"):
        read_master_key_credential("master.key", {})
    with pytest.raises(MasterKeyError, match="No such file"):
        read_master_key_credential("other.key", {"CREDENTIALS_DIRECTORY": str(tmp_path)})


def test_a_wrapped_data_key_opens_only_for_its_user_and_master():
    master = MasterKey(os.urandom(32))
    wrapped = master.wrap(b"k" * 32, 7)
    assert master.unwrap(wrapped, 7) == b"k" * 32
    with pytest.raises(MasterKeyError):
        master.unwrap(wrapped, 8)
    with pytest.raises(MasterKeyError):
        MasterKey(os.urandom(32)).unwrap(wrapped, 7)


# --- rotation


@pytest_twisted.ensureDeferred
async def test_rotation_rewraps_the_data_keys_and_retires_the_old_master(tmp_path, sealed, master):
    await sealed.deliver([ALICE, BOB], RAW)
    sealed_before = blob_values(sealed)
    new = MasterKey(new_master_key())
    assert await sealed.rewrap_data_keys(new) == 2
    # A process still holding the old key makes no data key the new one cannot open.
    await sealed.add_user("carol@example.com", CREDS)
    refused = (await sealed.deliver(["carol@example.com"], RAW))["carol@example.com"]
    assert isinstance(refused, MasterKeyError) and refused.temporary  # the sender retries
    await sealed.stop()
    with pytest.raises(MasterKeyError, match="another master key"):
        LMDBStore.open(str(tmp_path / "data"), 2, LIMITS, keyring=Keyring(master))
    # cut short and run again: shards already under the new key are left as they are
    again = open_store(tmp_path / "data", Keyring(master, rotating_to=new))
    assert await again.rewrap_data_keys(new) == 0
    await again.stop()
    rotated = open_store(tmp_path / "data", Keyring(new))
    try:
        for user in (ALICE, BOB):
            message, = inbox_messages(rotated, user)
            assert rotated.read_message(user, message.blob_id) == RAW
        assert blob_values(rotated) == sealed_before  # no message was encrypted again
    finally:
        await rotated.stop()


# --- backup and restore


@pytest_twisted.ensureDeferred
async def test_a_backup_holds_sealed_data_and_restoring_needs_the_master_key(tmp_path, sealed, master):
    from mailserverd.store.backup import backup_store, restore_store

    await sealed.deliver([ALICE], RAW)
    await sealed.stop()
    backup_store(str(tmp_path / "data"), str(tmp_path / "backup"))
    backed_up = b"".join(path.read_bytes() for path in (tmp_path / "backup").rglob("*") if path.is_file())
    assert MARKER_BODY not in backed_up and MARKER_SUBJECT not in backed_up
    restore_store(str(tmp_path / "backup"), str(tmp_path / "restored"))
    await opens_only_with(tmp_path / "restored", master)


# --- the outbound queue


@pytest_twisted.ensureDeferred
async def test_the_queue_seals_what_it_holds(tmp_path, master):
    from mailserverd.store.queuestore import QueueStore
    from mailserverd.store.types import QueuedMessage, QueueEntry

    queue = QueueStore.open(str(tmp_path), LIMITS, keyring=Keyring(master))
    queue.start()
    message = QueuedMessage("CCCC00000001", "alice@example.com", 1.0, 3, 1)
    await queue.enqueue(message, [QueueEntry("CCCC00000001", 0, "dave@example.net")], RAW)
    assert queue.get_content("CCCC00000001") == RAW
    await queue.stop()
    assert MARKER_BODY not in raw_files(tmp_path / "queue")
    with pytest.raises(MasterKeyError, match="encrypted at rest"):
        QueueStore.open(str(tmp_path), LIMITS)
    again = QueueStore.open(str(tmp_path), LIMITS, keyring=Keyring(master))
    try:
        assert again.get_content("CCCC00000001") == RAW
    finally:
        await again.stop()


# --- the spam classifier's counts


@pytest_twisted.ensureDeferred
async def test_spam_token_rows_are_keyed_names_not_the_tokens_hashes(tmp_path, sealed):
    from mailserverd.delivery.bayes import token_hash

    await sealed.deliver([ALICE], RAW)
    message, = inbox_messages(sealed, ALICE)
    hashes = [token_hash(word) for word in ("viagra", "lottery", "winner")]
    assert await sealed.train_spam(ALICE, [(message.blob_id, "spam", hashes)]) == 1
    own, site = sealed.spam_counts(ALICE, hashes), sealed.site_spam_counts(hashes)
    assert own.nspam == site.nspam == 1 and own.tokens == site.tokens == {h: (1, 0) for h in hashes}
    assert sealed.spam_counts(BOB, hashes).tokens == {}
    await sealed.stop()
    on_disk = raw_files(tmp_path / "data")
    assert not any(token in on_disk for token in hashes)  # a dictionary's hashes match nothing


# --- a damaged message over IMAP


@pytest.fixture
def imap_store(tmp_path, master):
    from imap_real_store import open_store as open_imap_store

    yield from open_imap_store(tmp_path, LIMITS, Keyring(master))


@pytest_twisted.ensureDeferred
async def test_imap_reports_a_damaged_message_and_serves_the_others(imap_store):
    from imap_real_store import USER, RealStoreClient

    store = imap_store
    await store.append(USER, "INBOX", RAW)
    await store.append(USER, "INBOX", RAW.replace(b"m1@", b"m2@"))
    first, _ = list(store.list_messages(USER, store.get_mailbox(USER, "INBOX").mailbox_id))

    def damage(w):
        value = bytearray(w.txn.get(first.blob_id, db=w.dbs["blobs"]))
        value[-1] ^= 0x01  # the message's tag
        w.txn.put(first.blob_id, bytes(value), db=w.dbs["blobs"])

    await store._submitters[0].submit(damage)
    client = RealStoreClient(store)
    await client.login()
    await client.cmd(b"a SELECT INBOX")
    damaged = await client.cmd(b"b FETCH 1 BODY.PEEK[]")
    assert damaged.endswith(b"b NO [CORRUPTION] A requested message is damaged\r\n")
    assert MARKER_BODY not in damaged  # never served as garbage
    served = await client.cmd(b"c FETCH 2 (ENVELOPE BODY.PEEK[])")
    assert MARKER_BODY in served and served.endswith(b"c OK Fetch completed\r\n")
    envelope = await client.cmd(b"d FETCH 1 ENVELOPE")  # the facts are sealed apart, still whole
    assert b"m1@example.org" in envelope and b"d OK" in envelope
