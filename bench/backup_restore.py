"""Backup, restore and fsck of a ~1 GB store: how long each takes.

Prints figures; asserts nothing about time. In a temporary directory on the
same disk as the repository it fills a store (2 shards, 10 users) with
``--messages`` distinct 20 KiB messages (50,000: about 1 GB) through the store
API, then times ``backup_store`` (LMDB's compacting copy, hashed in the same
pass), ``restore_store`` (copy, checksum, fsync, move into place) and
``check_store`` (fsck, content re-hashed), as ``mailserverd backup``,
``restore`` and ``fsck`` run them.

Run: .venv/bin/python bench/backup_restore.py [--messages N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from twisted.internet import task  # noqa: E402
from twisted.internet.defer import gatherResults  # noqa: E402

from mailserverd.limits import GIB, Limits  # noqa: E402
from mailserverd.store.backup import backup_store, restore_store  # noqa: E402
from mailserverd.store.fsck import check_store  # noqa: E402
from mailserverd.store.lmdbstore import LMDBStore  # noqa: E402
from store_bench import CREDS, make_message  # noqa: E402

USERS = [f"user{n}@example.com" for n in range(10)]
CALLERS = 50


async def fill(data_dir: str, messages: int) -> float:
    """Deliver ``messages`` distinct messages round-robin to USERS; returns seconds taken."""
    store = LMDBStore.open(data_dir, 2, Limits(store_map_size=8 * GIB))
    store.start()
    try:
        await store.add_domain("example.com")
        for user in USERS:
            await store.add_user(user, CREDS)
        serial = iter(range(messages))
        start = time.perf_counter()

        async def caller():
            for n in serial:
                result = await store.deliver([USERS[n % len(USERS)]], make_message(n))
                if isinstance(result[USERS[n % len(USERS)]], Exception):
                    raise result[USERS[n % len(USERS)]]

        await gatherResults([task.Deferred.fromCoroutine(caller()) for _ in range(CALLERS)])
        return time.perf_counter() - start
    finally:
        await store.stop()


def size_of(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, n)) for d, _, names in os.walk(path) for n in names)


def timed(label: str, function, *args):
    start = time.perf_counter()
    result = function(*args)
    elapsed = time.perf_counter() - start
    print(f"{label:34s} {elapsed:7.1f} s")
    return result, elapsed


async def main(reactor, messages: int) -> None:
    workdir = tempfile.mkdtemp(prefix=".backup-bench-", dir=str(REPO))
    try:
        data, backup, restored = (os.path.join(workdir, name) for name in ("data", "backup", "restored"))
        print(f"work dir: {workdir} (same disk as the repository), cpus: {os.cpu_count()}")
        seconds = await fill(data, messages)
        store_bytes = size_of(data)
        print(f"filled: {messages} messages of 20 KiB in {seconds:.1f} s; "
              f"store files {store_bytes / 2**20:.0f} MiB")
        manifest, backup_seconds = timed("backup (compacting copy + sha256)", backup_store, data, backup)
        backup_bytes = sum(e["size"] for e in manifest["environments"])
        print(f"  backup size {backup_bytes / 2**20:.0f} MiB, {backup_bytes / 2**20 / backup_seconds:.0f} MiB/s")
        _, restore_seconds = timed("restore (copy + verify + fsync)", restore_store, backup, restored)
        print(f"  {backup_bytes / 2**20 / restore_seconds:.0f} MiB/s")
        report, _ = timed("fsck of the restored store", check_store, restored)
        print(f"  {len(report.problems)} problems, {dict(report.totals)}")
        _, _ = timed("fsck without content hashing", check_store, restored, False)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=50000, help="20 KiB messages to store")
    arguments = parser.parse_args()
    task.react(lambda reactor: task.Deferred.fromCoroutine(main(reactor, arguments.messages)))
