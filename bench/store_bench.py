"""Store benchmark: durable deliveries per second, with and without group commit.

Prints figures; asserts nothing about time. Measures, in a temporary directory
on the same disk as the repository:

1. the disk's own fsyncs per second (write + fsync of a small file, ~2 s);
2. durable deliveries/s of 20 KiB messages (distinct content, so no dedup)
   with 1 concurrent caller and with 50 concurrent callers;
3. the 50-caller run again with batch_max=1 (one commit, one fsync per message),
   alternating with (2) for several rounds; the median ratio is the figure.

Run: .venv/bin/python bench/store_bench.py [--seconds N] [--rounds N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
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


def _body_text() -> bytes:
    """About 20 KiB of plain text in 76-character lines (made once, shared)."""
    words = (b"the of and to in is that for it as with was on be by this are from or have an "
             b"mail server message delivery store commit durable shard mailbox client").split()
    text, line, n = [], [], 0
    while sum(len(l) + 2 for l in text) < MESSAGE_SIZE:
        word = words[(n * 7919) % len(words)]
        n += 1
        if sum(len(w) + 1 for w in line) + len(word) > 76:
            text.append(b" ".join(line))
            line = []
        line.append(word)
    return b"\r\n".join(text) + b"\r\n"


BODY = _body_text()


def make_message(serial: int) -> bytes:
    """A 20 KiB message whose content is unique (so each is its own blob).

    The header carries the serial number; the body is made once, so that the
    callers spend their time in the store, not in building test data.
    """
    header = (f"From: Sender <a@example.net>\r\nTo: {USER}\r\nSubject: bench {serial}\r\n"
              f"Message-ID: <{serial}@example.net>\r\n\r\n").encode()
    return (header + BODY)[:MESSAGE_SIZE]


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


def report(label: str, rate: float, stats: dict) -> None:
    per_commit = stats["deliveries"] / max(1, stats["commits"])
    print(f"durable deliveries/s, {label:30s} {rate:7.0f}   "
          f"({stats['deliveries']} deliveries, {stats['commits']} commits, {per_commit:.1f}/commit)")


async def main(reactor, seconds: float, rounds: int) -> None:
    workdir = tempfile.mkdtemp(prefix=".store-bench-", dir=str(REPO))
    try:
        print(f"work dir: {workdir} (same disk as the repository)")
        print(f"message size: {MESSAGE_SIZE} bytes, {seconds:.0f} s per run, cpus: {os.cpu_count()}")
        fsync_rate = fsyncs_per_second(workdir)
        print(f"disk fsyncs/s (write 512 B + fsync):                 {fsync_rate:7.0f}")
        rate, stats = await run_deliveries(os.path.join(workdir, "one"), 1, seconds, None)
        report("1 caller", rate, stats)
        # Group commit and its reference (one commit per message) alternate, so
        # that a drift in the disk's or the machine's speed hits both alike.
        ratios, group_rates = [], []
        for number in range(rounds):
            group, stats = await run_deliveries(os.path.join(workdir, f"g{number}"), 50, seconds, None)
            report(f"50 callers, group commit #{number + 1}", group, stats)
            single, stats = await run_deliveries(os.path.join(workdir, f"s{number}"), 50, seconds, 1)
            report(f"50 callers, batch_max=1  #{number + 1}", single, stats)
            ratios.append(group / single)
            group_rates.append(group)
        print("group commit / per-message commit, 50 callers, per round: "
              + ", ".join(f"{r:.1f}x" for r in ratios))
        print(f"median ratio: {statistics.median(ratios):.1f}x  (target >= 4x)")
        print(f"50-caller group commit / disk fsyncs/s: {statistics.median(group_rates) / fsync_rate:.1f}x")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each delivery run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating group/per-message rounds")
    arguments = parser.parse_args()
    task.react(lambda reactor: task.Deferred.fromCoroutine(main(reactor, arguments.seconds, arguments.rounds)))
