"""Opening the LMDB store: layout, schema and shard-count checks, unusable dirs, records."""

from __future__ import annotations

import os
import stat
import subprocess

import pytest
import pytest_twisted

from mailserverd.limits import MIB, Limits
from mailserverd.store import records
from mailserverd.store.env import SCHEMA_KEY, SCHEMA_VERSION, SHARD_DBS, SHARD_KEY, open_env
from mailserverd.store.errors import SchemaMismatch, StoreError, StoreFull, StoreTemporaryError
from mailserverd.store.keys import u64
from mailserverd.store.lmdbstore import LMDBStore
from mailserverd.store.types import Credentials, ScramSecrets

LIMITS = Limits(store_map_size=16 * MIB)
CREDS = Credentials(bcrypt_hash=b"$2b$04$hash", scram_sha256=ScramSecrets(b"salt", 4096, b"K" * 32, b"S" * 32))


def test_open_creates_the_layout_with_private_dirs(tmp_path):
    data = tmp_path / "data"
    store = LMDBStore.open(str(data), 3, LIMITS)
    store.close()
    for sub in ("meta", "shards/00", "shards/01", "shards/02"):
        path = data / sub
        assert (path / "data.mdb").is_file()
        assert stat.S_IMODE(path.stat().st_mode) == 0o700
    assert not (data / "shards" / "03").exists()
    LMDBStore.open(str(data), 3, LIMITS).close()  # reopening is fine


def test_a_newer_schema_is_refused_naming_dir_and_versions(tmp_path):
    data = tmp_path / "data"
    LMDBStore.open(str(data), 2, LIMITS).close()
    shard_dir = str(data / "shards" / "01")
    env = open_env(shard_dir, LIMITS.store_map_size, SHARD_DBS, {SHARD_KEY: 1}, "shard 01")
    with env.env.begin(write=True, db=env.dbs["info"]) as txn:
        txn.put(SCHEMA_KEY, u64(SCHEMA_VERSION + 1))
    env.close()
    with pytest.raises(SchemaMismatch) as caught:
        LMDBStore.open(str(data), 2, LIMITS)
    text = str(caught.value)
    assert shard_dir in text and str(SCHEMA_VERSION + 1) in text and str(SCHEMA_VERSION) in text
    assert "newer" in text


def test_a_different_shard_count_is_refused(tmp_path):
    data = tmp_path / "data"
    LMDBStore.open(str(data), 2, LIMITS).close()
    with pytest.raises(SchemaMismatch, match="shards=2.*shards=3"):
        LMDBStore.open(str(data), 3, LIMITS)
    LMDBStore.open(str(data), 2, LIMITS).close()  # nothing was changed by the refusal


def test_a_shard_dir_in_the_wrong_place_is_refused(tmp_path):
    data = tmp_path / "data"
    LMDBStore.open(str(data), 2, LIMITS).close()
    shards = data / "shards"
    os.rename(shards / "00", shards / "tmp")
    os.rename(shards / "01", shards / "00")
    os.rename(shards / "tmp", shards / "01")
    with pytest.raises(SchemaMismatch, match="shard=1"):
        LMDBStore.open(str(data), 2, LIMITS)


def test_an_unusable_data_dir_is_a_clear_store_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreError, match=str(blocker)):
        LMDBStore.open(str(blocker / "data"), 1, LIMITS)
    with pytest.raises(StoreError, match="shard count"):
        LMDBStore.open(str(tmp_path / "x"), 0, LIMITS)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_a_read_only_data_dir_is_a_clear_store_error(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(StoreError, match=str(locked)):
        LMDBStore.open(str(locked / "data"), 1, LIMITS)


def test_records_refuse_an_unknown_format_version():
    encoded = records.pack({"a": 1})
    assert records.unpack(encoded) == {"a": 1}
    with pytest.raises(SchemaMismatch, match="version 2"):
        records.unpack(bytes([2]) + encoded[1:])


@pytest_twisted.ensureDeferred
async def test_data_survives_stop_and_reopen(tmp_path):
    data = str(tmp_path / "data")
    store = LMDBStore.open(data, 2, LIMITS)
    store.start()
    await store.add_domain("example.com")
    await store.add_user("a@example.com", CREDS)
    result = await store.append("a@example.com", "INBOX", b"Subject: kept\r\n\r\nx\r\n")
    await store.stop()
    with pytest.raises(StoreTemporaryError):
        await store.add_domain("late.example")
    store = LMDBStore.open(data, 2, LIMITS)
    store.start()
    try:
        message = store.get_message("a@example.com", result.mailbox_id, result.uid)
        assert store.read_message("a@example.com", message.blob_id) == b"Subject: kept\r\n\r\nx\r\n"
    finally:
        await store.stop()


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 3 MiB tmpfs mounted for the test (root only), to produce ENOSPC for real."""
    mount_point = tmp_path / "tmpfs"
    mount_point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount_point)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode(errors='replace').strip()}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


@pytest_twisted.ensureDeferred
async def test_a_full_disk_fails_the_write_and_the_store_keeps_working(tiny_tmpfs):
    store = LMDBStore.open(str(tiny_tmpfs / "data"), 1, Limits(store_map_size=64 * MIB))
    store.start()
    try:
        await store.add_domain("example.com")
        await store.add_user("a@example.com", CREDS)
        box = store.get_mailbox("a@example.com", "INBOX")
        with pytest.raises(StoreFull, match="no space left"):
            await store.append("a@example.com", "INBOX", b"Subject: big\r\n\r\n" + os.urandom(4 * MIB))
        assert store.get_mailbox("a@example.com", "INBOX") == box
        small = await store.append("a@example.com", "INBOX", b"Subject: small\r\n\r\nok\r\n")
        assert small.uid == 1
    finally:
        await store.stop()
