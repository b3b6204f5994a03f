"""Backup and restore of a whole data dir: every LMDB environment, with a manifest.

A backup is a directory holding a compacted copy of each environment
(``meta/data.mdb``, ``shards/NN/data.mdb``, ``queue/data.mdb`` when the queue
exists) and ``MANIFEST.json``: the backup format, the store's schema and
record format versions, the shard count, and per environment its file, size,
sha256, the time of its snapshot and (shards) the change-log sequence number
the copy holds.

Consistency: each copy is LMDB's compacting copy of one read transaction, so
every environment is copied as of one instant while the daemon keeps writing
(LMDB serialises nothing against readers). The read transactions of all
environments are begun back to back before the first byte is copied, so the
copies are of (nearly) the same moment; they are held until the backup ends,
which keeps the daemon's files from reusing pages meanwhile (they may grow by
what is written during the backup). A write acknowledged before the backup
began is in it.

Completeness: the backup is built under a temporary name and renamed into
place when every file and the manifest are written and fsynced
(:class:`mailserverd.staging.StagedDir`); a failure (full disk, read-only
target) removes the partial copy. Restore refuses a directory without a valid
manifest, and writes nothing into place before every checksum has matched.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import threading
import time
from datetime import datetime, timezone
from typing import Callable

from mailserverd.staging import StagedDir, StagingError, fsync_dir, fsync_tree, is_empty_dir
from mailserverd.store import shard
from mailserverd.store.env import SCHEMA_VERSION, layout, open_all_readonly
from mailserverd.store.migrations import STEPS
from mailserverd.store.errors import StoreError
from mailserverd.store.records import FORMAT_VERSION

MANIFEST_NAME = "MANIFEST.json"
BACKUP_FORMAT = "mailserverd-backup"
BACKUP_VERSION = 1
#: Bytes moved per read while copying or hashing (an I/O buffer, not a limit).
CHUNK = 1 << 20
#: Staging directory name inside a data dir while a restore is in progress.
RESTORE_STAGE = ".restore-incomplete"

Progress = Callable[[int], None]


class BackupError(StoreError):
    """A backup or restore that cannot be made (its message says why and what was left)."""


def _iso(when: float) -> str:
    return datetime.fromtimestamp(when, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _copy_env(env, txn, dest: str, progress: Progress | None) -> tuple[int, str]:
    """Write LMDB's compacting copy of ``txn`` to file ``dest``; return (size, sha256 hex).

    The copy goes through a pipe so that it is hashed and counted as it is
    written, in one pass. A write failure (ENOSPC) closes the pipe, which
    stops LMDB's copy with EPIPE; the write failure is then the one raised.
    """
    read_fd, write_fd = os.pipe()
    outcome: dict = {}

    def pump() -> None:
        digest, size = hashlib.sha256(), 0
        try:
            with open(dest, "xb") as out:
                while chunk := os.read(read_fd, CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                    if progress is not None:
                        progress(len(chunk))
                out.flush()
                os.fsync(out.fileno())
            outcome["result"] = (size, digest.hexdigest())
        except BaseException as exc:  # handed to the calling thread below
            outcome["error"] = exc
        finally:
            os.close(read_fd)

    thread = threading.Thread(target=pump, name="backup-copy", daemon=True)
    thread.start()
    copy_error = None
    try:
        env.env.copyfd(write_fd, compact=True, txn=txn)
    except Exception as exc:  # lmdb.Error; reported after the pump's own error
        copy_error = exc
    finally:
        os.close(write_fd)
        thread.join()
    if "error" in outcome:
        raise outcome["error"]
    if copy_error is not None:
        raise BackupError(f"copying {env.path} failed: {copy_error}")
    return outcome["result"]


def backup_store(data_dir: str, target: str, progress: Progress | None = None) -> dict:
    """Copy every environment of ``data_dir`` into the new directory ``target``.

    Runs beside a running daemon (read-only; see the module docstring).
    ``progress(n)`` is called with each n bytes written. Returns the manifest.
    Raises BackupError (target unusable, disk full, read-only, I/O error:
    nothing that looks like a backup is left) or StoreError/SchemaMismatch
    (no store, or one of another version, in ``data_dir``).
    """
    opened = open_all_readonly(data_dir)
    txns = []
    try:
        for _, _, env in opened:  # the snapshot: every read transaction before any copy
            txns.append((env.env.begin(), time.time()))
        try:
            with StagedDir(target) as stage:
                manifest = _write_backup(stage, opened, txns, progress)
        except StagingError as exc:
            raise BackupError(f"cannot back up into {target}: {exc}") from None
        except OSError as exc:
            raise BackupError(f"backup into {target} failed and was removed: "
                              f"{exc.strerror or exc}") from None
    finally:
        for txn, _ in txns:
            txn.abort()
        for _, _, env in opened:
            env.close()
    return manifest


def _write_backup(stage: str, opened, txns, progress: Progress | None) -> dict:
    entries = []
    for (name, rel, env), (txn, began) in zip(opened, txns):
        os.makedirs(os.path.join(stage, rel))
        seq = shard.last_seq(txn, env.dbs) if name.startswith("shard-") else None
        size, digest = _copy_env(env, txn, os.path.join(stage, rel, "data.mdb"), progress)
        entries.append({"name": name, "file": f"{rel}/data.mdb", "size": size, "sha256": digest,
                        "snapshot": _iso(began), "seq": seq})
    manifest = {
        "format": BACKUP_FORMAT, "version": BACKUP_VERSION, "created": _iso(time.time()),
        "schema": SCHEMA_VERSION, "record_format": FORMAT_VERSION,
        "shards": sum(1 for e in entries if e["name"].startswith("shard-")),
        "environments": entries,
    }
    path = os.path.join(stage, MANIFEST_NAME)
    with open(path, "x", encoding="utf-8") as out:  # last: its presence means complete
        json.dump(manifest, out, indent=2)
        out.write("\n")
        out.flush()
        os.fsync(out.fileno())
    return manifest


# ---------------------------------------------------------------- restore


def read_manifest(backup_dir: str) -> dict:
    """The checked manifest of a backup. Raises BackupError for a missing,
    unreadable or foreign manifest, another store version, or unknown files."""
    path = os.path.join(backup_dir, MANIFEST_NAME)
    try:
        with open(path, encoding="utf-8") as source:
            manifest = json.load(source)
    except FileNotFoundError:
        raise BackupError(f"{backup_dir} has no {MANIFEST_NAME}: not a backup, or an incomplete one") from None
    except (OSError, ValueError) as exc:
        raise BackupError(f"cannot read {path}: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != BACKUP_FORMAT:
        raise BackupError(f"{path} is not a mailserverd backup manifest")
    if manifest.get("version") != BACKUP_VERSION:
        raise BackupError(f"{path}: backup format version {manifest.get('version')} is not known "
                          f"(this version reads {BACKUP_VERSION})")
    # An older schema is restored as it is and upgraded when the store is first
    # opened (migrations.py); a newer one this version cannot read.
    readable = manifest.get("schema") == SCHEMA_VERSION or manifest.get("schema") in STEPS
    if not readable or manifest.get("record_format") != FORMAT_VERSION:
        raise BackupError(f"{path}: the backup holds store schema {manifest.get('schema')} "
                          f"(records {manifest.get('record_format')}); this version reads schema "
                          f"{SCHEMA_VERSION} (records {FORMAT_VERSION})")
    _check_entries(path, manifest)
    return manifest


def _check_entries(path: str, manifest: dict) -> None:
    """Refuse a manifest whose environments are not exactly a store's (no other paths)."""
    entries = manifest.get("environments")
    shards = manifest.get("shards")
    if not isinstance(entries, list) or not isinstance(shards, int) or not 1 <= shards <= 100:
        raise BackupError(f"{path}: malformed manifest")
    names = [entry.get("name") if isinstance(entry, dict) else None for entry in entries]
    expected = layout(shards, "queue" in names)
    if names != [name for name, _ in expected]:
        raise BackupError(f"{path}: environments {names} do not match a store of {shards} shards")
    for entry, (_, rel) in zip(entries, expected):
        if entry.get("file") != f"{rel}/data.mdb" or not isinstance(entry.get("size"), int) \
                or not re.fullmatch(r"[0-9a-f]{64}", str(entry.get("sha256"))):
            raise BackupError(f"{path}: malformed entry for {entry.get('name')}")


def restore_store(backup_dir: str, data_dir: str, progress: Progress | None = None) -> dict:
    """Restore the backup in ``backup_dir`` into ``data_dir``, which must be empty or missing.

    Every file is copied into a staging directory inside ``data_dir`` and its
    size and sha256 checked; only when all match are the environments moved
    into place (meta last, as the store is opened by its meta). On any
    failure the staging directory is removed and ``data_dir`` is as it was.
    Returns the manifest. Raises BackupError.
    """
    manifest = read_manifest(backup_dir)
    if os.path.lexists(data_dir) and not (os.path.isdir(data_dir) and is_empty_dir(data_dir)):
        raise BackupError(f"{data_dir} is not empty: restore only into an empty or new data dir")
    stage = os.path.join(data_dir, RESTORE_STAGE)
    try:
        os.makedirs(stage, mode=0o700)
        for entry in manifest["environments"]:
            _copy_verified(backup_dir, stage, entry, progress)
        fsync_tree(stage)
        entries = manifest["environments"]
        for entry in entries[1:] + entries[:1]:  # meta last
            top = entry["file"].split("/")[0]
            if not os.path.exists(os.path.join(data_dir, top)):
                os.rename(os.path.join(stage, top), os.path.join(data_dir, top))
        os.rmdir(stage)
        fsync_dir(data_dir)
    except OSError as exc:
        _undo_restore(data_dir, manifest)
        raise BackupError(f"restore into {data_dir} failed, nothing restored: {exc.strerror or exc}") from None
    except BaseException:
        _undo_restore(data_dir, manifest)
        raise
    return manifest


def _undo_restore(data_dir: str, manifest: dict) -> None:
    """Remove what a failed restore wrote (the staging dir, anything moved into place)."""
    shutil.rmtree(os.path.join(data_dir, RESTORE_STAGE), ignore_errors=True)
    for top in {entry["file"].split("/")[0] for entry in manifest["environments"]}:
        shutil.rmtree(os.path.join(data_dir, top), ignore_errors=True)


def _copy_verified(backup_dir: str, stage: str, entry: dict, progress: Progress | None) -> None:
    """Copy one backup file into ``stage``, checking its size and sha256 on the way."""
    source_path = os.path.join(backup_dir, entry["file"])
    dest_path = os.path.join(stage, entry["file"])
    os.makedirs(os.path.dirname(dest_path), mode=0o700, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    try:
        source = open(source_path, "rb")
    except FileNotFoundError:
        raise BackupError(f"backup file {source_path} is missing") from None
    with source, open(dest_path, "xb") as out:
        os.fchmod(out.fileno(), 0o600)
        while chunk := source.read(CHUNK):
            out.write(chunk)
            digest.update(chunk)
            size += len(chunk)
            if progress is not None:
                progress(len(chunk))
    if size != entry["size"] or digest.hexdigest() != entry["sha256"]:
        raise BackupError(f"backup file {source_path} does not match its checksum in the manifest "
                          f"(damaged backup); nothing was restored")

