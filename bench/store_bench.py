"""Store benchmark: durable deliveries per second, with and without group commit.

Prints figures; asserts nothing about time. Measures, in a temporary directory
on the same disk as the repository:

1. the disk's own fsyncs per second (write + fsync of a small file, ~2 s);
2. durable deliveries/s of 20 KiB messages (distinct content, so no dedup)
   with 1 concurrent caller and with 50 concurrent callers;
3. the 50-caller run again with batch_max=1 (one commit, one fsync per message).

Run: .venv/bin/python bench/store_bench.py [--seconds N]
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

from twisted.internet import task  # noqa: E402
from twisted.internet.defer import gatherResults  # noqa: E402

from mailserverd.limits import GIB, KIB, Limits  # noqa: E402
from mailserverd.store.lmdbstore import LMDBStore  # noqa: E402
from mailserverd.store.types import Credentials, ScramSecrets  # noqa: E402

MESSAGE_SIZE = 20 * KIB
USER = "bench@example.com"
CREDS = Credentials(bcrypt_hash=b"$2b$04$bench", scram_sha256=ScramSecrets(b"s", 4096, b"k" * 32, b"v" * 32))


def fsyncs_per_second(directory: str, seconds: float = 2.0) -> float:
    """How many write+fsync rounds of a 512-byte file the disk does per second."""
    path = os.path.join(directory, "fsync-probe")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        count = 0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            os.pwrite(fd, os.urandom(512), 0)
            os.fsync(fd)
            count += 1
        return count / (time.perf_counter() - start)
    finally:
        os.close(fd)
        os.unlink(path)


def make_message(serial: int) -> bytes:
    """A 20 KiB message whose content is unique (so each is its own blob)."""
    header = f"From: a@example.net\r\nTo: {USER}\r\nSubject: bench {serial}\r\n\r\n".encode()
    body_line = f"{serial:012d} ".encode() * 6 + b"\r\n"
    body = body_line * (MESSAGE_SIZE // len(body_line) + 1)
    return (header + body)[:MESSAGE_SIZE]


async def run_deliveries(directory: str, callers: int, seconds: float, batch_max: int | None) -> tuple[float, dict]:
    """Deliveries/s with ``callers`` concurrent callers each waiting for its commit."""
    store = LMDBStore.open(directory, 1, Limits(store_map_size=4 * GIB), batch_max=batch_max)
    store.start()
    try:
        await store.add_domain("example.com")
        await store.add_user(USER, CREDS)
        serial = iter(range(10**9))
        done = [0]
        deadline = time.perf_counter() + seconds

        async def caller():
            while time.perf_counter() < deadline:
                result = await store.deliver([USER], make_message(next(serial)))
                if isinstance(result[USER], Exception):
                    raise result[USER]
                done[0] += 1

        writer = store.shard_writers[0]
        commits_before = writer.commits
        start = time.perf_counter()
        await gatherResults([task.Deferred.fromCoroutine(caller()) for _ in range(callers)])
        elapsed = time.perf_counter() - start
        stats = {"deliveries": done[0], "commits": writer.commits - commits_before}
        return done[0] / elapsed, stats
    finally:
        await store.stop()


async def main(reactor, seconds: float) -> None:
    workdir = tempfile.mkdtemp(prefix=".store-bench-", dir=str(REPO))
    try:
        print(f"work dir: {workdir} (same disk as the repository)")
        print(f"message size: {MESSAGE_SIZE} bytes, {seconds:.0f} s per run, cpus: {os.cpu_count()}")
        fsync_rate = fsyncs_per_second(workdir)
        print(f"disk fsyncs/s (write 512 B + fsync):          {fsync_rate:9.0f}")
        runs = [("1 caller, group commit", 1, None),
                ("50 callers, group commit", 50, None),
                ("50 callers, batch_max=1", 50, 1)]
        rates = {}
        for number, (label, callers, batch_max) in enumerate(runs):
            rate, stats = await run_deliveries(os.path.join(workdir, f"run{number}"), callers, seconds, batch_max)
            rates[label] = rate
            per_commit = stats["deliveries"] / max(1, stats["commits"])
            print(f"durable deliveries/s, {label:26s} {rate:9.0f}   "
                  f"({stats['deliveries']} deliveries, {stats['commits']} commits, {per_commit:.1f}/commit)")
        ratio = rates["50 callers, group commit"] / rates["50 callers, batch_max=1"]
        print(f"group commit / per-message commit, 50 callers: {ratio:9.1f}x  (target >= 4x)")
        print(f"50-caller group commit / disk fsyncs/s:        "
              f"{rates['50 callers, group commit'] / fsync_rate:9.1f}x")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each delivery run")
    arguments = parser.parse_args()
    task.react(lambda reactor: task.Deferred.fromCoroutine(main(reactor, arguments.seconds)))
