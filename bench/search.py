"""Search benchmark: the index against the full scan on one large mailbox.

Prints figures; asserts nothing about time. In a temporary directory on the
repository's disk:

1. builds a mailbox of N messages (default 100,000) straight through the
   store API (deliver, 50 callers), with realistic structure: plain text,
   multipart/alternative with HTML, attachments, encoded headers, several
   charsets, 2-50 KiB; the delivery rate is measured while the indexer runs
   and on a second store without it, in alternating rounds (the slowdown);
2. the indexing throughput (messages/s) of a catch-up, and the index size
   beside the mail size;
3. median and 95th percentile latency of SEARCH TEXT word, SEARCH FROM x
   SINCE date, SEARCH BODY "a phrase", by the index and by the full scan
   (the scan on a sample of runs: it takes seconds), and SORT (DATE) and
   THREAD REFERENCES over the search result.

Run: .venv/bin/python bench/search.py [--messages N] [--runs N] [--scan-runs N] [--store DIR]

With ``--store DIR`` the built store is kept in DIR, and a later run with the
same DIR measures its searches again without building it (steps 1 and 2 are
skipped); ``--scan-runs 0`` leaves the scans out.
"""

from __future__ import annotations

import argparse
import base64
import os
import quopri
import random
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

from mailserverd.imap import search  # noqa: E402
from mailserverd.imap.parser import ArgCursor  # noqa: E402
from mailserverd.imap.sortkeys import SortableMessage, SortCriterion, sort_messages  # noqa: E402
from mailserverd.imap.threading import ALGORITHMS  # noqa: E402
from mailserverd.limits import GIB, Limits  # noqa: E402
from mailserverd.search.indexer import Indexer  # noqa: E402
from mailserverd.search.query import search_indexed, sort_records  # noqa: E402
from mailserverd.store.lmdbstore import LMDBStore  # noqa: E402
from mailserverd.store.types import Credentials, ScramSecrets  # noqa: E402

USER = "bench@example.com"
CREDS = Credentials(bcrypt_hash=b"$2b$04$bench", scram_sha256=ScramSecrets(b"s", 4096, b"k" * 32, b"v" * 32))
COMMON = ("the of and to in is that for it as with was on be by this are from or have an mail server "
          "message delivery meeting report budget project schedule review team update customer").split()
RARE = [f"zork{n}" for n in range(2000)]  # each in ~1/2000 of the messages
LATIN = "Köln Müller straße déjà café naïve garçon".split()
CYRILLIC = "привет мир сообщение отчёт".split()
SENDERS = [(f"Person {n}", f"person{n}@example.org") for n in range(300)]


def _text(rng: random.Random, size: int, extra: list[str]) -> str:
    words = [rng.choice(COMMON) if rng.random() < 0.97 else rng.choice(extra) for _ in range(size // 6)]
    if rng.random() < 0.3:
        words.insert(rng.randrange(len(words)), rng.choice(RARE))
    lines, line = [], []
    for word in words:
        line.append(word)
        if len(line) == 12:
            lines.append(" ".join(line))
            line = []
    return "\r\n".join(lines + [" ".join(line)]) + "\r\n"


def make_message(rng: random.Random, serial: int, start: int) -> bytes:
    """One message of 2-50 KiB of one of four shapes, with a References chain now and then."""
    name, address = rng.choice(SENDERS)
    size = int(rng.uniform(2, 50) * 1024)
    date = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(start + serial * 600))
    subject = f"{rng.choice(COMMON)} {rng.choice(COMMON)} {serial % 997}"
    if serial % 3 == 0:
        subject = "=?utf-8?b?" + base64.b64encode(("Ré: " + subject).encode()).decode() + "?="
    refs = f"References: <m{serial - 1}@example.org>\r\nIn-Reply-To: <m{serial - 1}@example.org>\r\n" \
        if serial % 4 and serial else ""
    head = (f"From: \"{name}\" <{address}>\r\nTo: {USER}\r\nSubject: {subject}\r\nDate: {date}\r\n"
            f"Message-ID: <m{serial}@example.org>\r\n{refs}MIME-Version: 1.0\r\n")
    shape = serial % 4
    if shape == 0:
        return (head + "Content-Type: text/plain; charset=utf-8\r\n\r\n" + _text(rng, size, LATIN)).encode()
    if shape == 1:
        body = quopri.encodestring(_text(rng, size, LATIN).encode("latin-1")).replace(b"\n", b"\r\n")
        return (head + "Content-Type: text/plain; charset=iso-8859-1\r\n"
                "Content-Transfer-Encoding: quoted-printable\r\n\r\n").encode() + body
    text = _text(rng, size // 2, CYRILLIC if shape == 2 else LATIN)
    html = "<html><body><p>" + text.replace("\r\n", "</p><p>") + "</p></body></html>"
    parts = ("--A\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + text +
             "--A\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
             base64.encodebytes(html.encode()).decode() + "--A--\r\n")
    if shape == 2:
        return (head + "Content-Type: multipart/alternative; boundary=A\r\n\r\n" + parts).encode()
    attachment = base64.encodebytes(rng.randbytes(size // 3)).decode()
    return (head + "Content-Type: multipart/mixed; boundary=M\r\n\r\n--M\r\n"
            "Content-Type: multipart/alternative; boundary=A\r\n\r\n" + parts +
            "--M\r\nContent-Type: application/pdf; name=report.pdf\r\n"
            "Content-Disposition: attachment; filename=report.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            + attachment + "--M--\r\n").encode()


async def open_store(directory: str, limits: Limits) -> LMDBStore:
    store = LMDBStore.open(directory, 1, limits)
    store.start()
    await store.add_domain("example.com")
    await store.add_user(USER, CREDS)
    return store


async def fill(store: LMDBStore, count: int, callers: int = 50) -> tuple[float, int]:
    """Deliver ``count`` messages with ``callers`` concurrent callers: (seconds, bytes)."""
    serials = iter(range(count))
    total = [0]
    start = time.perf_counter()

    async def caller(seed: int):
        rng = random.Random(seed)
        for serial in serials:
            raw = make_message(rng, serial, 1_700_000_000)
            total[0] += len(raw)
            result = await store.deliver([USER], raw)
            if isinstance(result[USER], Exception):
                raise result[USER]

    await gatherResults([task.Deferred.fromCoroutine(caller(n)) for n in range(callers)])
    return time.perf_counter() - start, total[0]


def percentiles(samples: list[float]) -> str:
    samples = sorted(samples)
    p95 = samples[min(len(samples) - 1, int(len(samples) * 0.95))]
    return f"median {statistics.median(samples) * 1000:8.1f} ms   p95 {p95 * 1000:8.1f} ms  (n={len(samples)})"


def timed(function, runs: int) -> tuple[list[float], object]:
    samples, result = [], None
    for _ in range(runs):
        start = time.perf_counter()
        result = function()
        samples.append(time.perf_counter() - start)
    return samples, result


async def build(reactor, workdir: str, limits: Limits, count: int) -> tuple[LMDBStore, Indexer]:
    """Steps 1 and 2: the indexed store of ``count`` messages, its indexer stopped."""
    plain = store = indexer = None
    try:
        # Delivery with and without the indexer, in alternating rounds, so that a
        # change in the machine's load weighs on both sides alike.
        plain = await open_store(os.path.join(workdir, "plain"), limits)
        store = await open_store(os.path.join(workdir, "indexed"), limits)
        indexer = Indexer(store, limits, reactor)
        rounds, per_round = 4, count // 20
        without = with_indexer = 0.0
        for _ in range(rounds):
            seconds, _ = await fill(plain, per_round)
            without += seconds
            indexer.start()
            seconds, _ = await fill(store, per_round)
            with_indexer += seconds
            await indexer.stop()
        delivered = rounds * per_round
        print(f"delivery without indexer:  {delivered / without:8.0f} messages/s ({delivered} messages)")
        print(f"delivery with indexer:     {delivered / with_indexer:8.0f} messages/s "
              f"(indexed meanwhile: {indexer.indexed}); slowed by {1 - without / with_indexer:.0%}")
        await plain.stop()
        await fill(store, count - delivered)
        start = time.perf_counter()
        before = indexer.indexed
        await indexer.catch_up()
        indexed = indexer.indexed - before
        print(f"indexing catch-up:         {indexed / (time.perf_counter() - start):8.0f} messages/s "
              f"({indexed} messages)")
        return store, indexer
    except BaseException:
        for opened in (plain, store):
            if opened is not None and opened._running:
                await opened.stop()
        raise


async def reopen(reactor, workdir: str, limits: Limits) -> tuple[LMDBStore, Indexer]:
    """The store a run with ``--store`` kept, its index caught up."""
    store = LMDBStore.open(os.path.join(workdir, "indexed"), 1, limits)
    store.start()
    indexer = Indexer(store, limits, reactor)
    await indexer.catch_up()
    return store, indexer


async def main(reactor, count: int, runs: int, scan_runs: int, keep: str | None) -> None:
    workdir = keep or tempfile.mkdtemp(prefix=".search-bench-", dir=str(REPO))
    built = os.path.join(workdir, "built")
    limits = Limits(store_map_size=64 * GIB)
    store = indexer = None
    try:
        print(f"messages: {count}, cpus: {os.cpu_count()}, work dir {workdir}")
        if os.path.exists(built):
            print("the store of an earlier run, kept: no delivery or indexing figures")
            store, indexer = await reopen(reactor, workdir, limits)
        else:
            os.makedirs(workdir, exist_ok=True)
            store, indexer = await build(reactor, workdir, limits, count)
            if keep:
                Path(built).touch()
        box = store.get_mailbox(USER, "INBOX")
        infos = store.list_messages(USER, box.mailbox_id)
        mail_size = sum(info.size for info in infos)
        sizes = store.read_search_index(USER, lambda reader: reader.size())
        print(f"mail {mail_size / 2**20:9.1f} MiB; index: " + ", ".join(
            f"{name} {size / 2**20:.1f} MiB" for name, size in sizes.items())
            + f"; index/mail = {sum(sizes.values()) / mail_size:.2f}")
        uids = [info.uid for info in infos]
        scope = search.SearchScope(store, USER, count=len(uids), max_uid=uids[-1])
        messages = list(enumerate(infos, 1))
        for program in (b"TEXT zork17", b"TEXT budget", b"FROM person42 SINCE 1-Jan-2024",
                        b'BODY "meeting report"', b'BODY "zork5 "', b'SUBJECT "r\xc3\xa9"'):
            key = search.parse_search(ArgCursor((program,))).key
            # As SEARCH runs it (no MODSEQ key): UIDs and numbers, no record read for the answer.
            samples, found = timed(lambda: search_indexed(key, box.mailbox_id, uids, scope, 200,
                                                          records=False), runs)
            print(f"index {program.decode('utf-8'):32s} {percentiles(samples)}  {len(found)} found")
            if scan_runs:
                samples, scanned = timed(lambda: search.search_messages(key, messages, scope), scan_runs)
                assert [(seq, info.uid) for seq, info in scanned] == found, program
                print(f"scan  {program.decode('utf-8'):32s} {percentiles(samples)}")
        def sortable():  # as SORT and THREAD run: the index's sort records, no facts read
            known = sort_records(store, USER, box.mailbox_id, uids)
            return [SortableMessage(seq, info.uid, info, store, USER, known.get(info.uid))
                    for seq, info in messages]

        samples, _ = timed(lambda: sort_messages(sortable(), [SortCriterion("DATE", False)]), runs)
        print(f"SORT (DATE) ALL                        {percentiles(samples)}")
        samples, _ = timed(lambda: ALGORITHMS["REFERENCES"](sortable()), runs)
        print(f"THREAD REFERENCES ALL                  {percentiles(samples)}")
        samples, _ = timed(lambda: sort_messages([SortableMessage(seq, info.uid, info, store, USER)
                                                  for seq, info in messages], [SortCriterion("DATE", False)]),
                           max(1, scan_runs))
        print(f"SORT (DATE) ALL from the facts         {percentiles(samples)}")
    finally:
        if indexer is not None:
            await indexer.stop()
        if store is not None and store._running:
            await store.stop()
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--scan-runs", type=int, default=2)
    parser.add_argument("--store", help="keep the built store here, or reuse the one kept here")
    options = parser.parse_args()
    task.react(lambda reactor: task.Deferred.fromCoroutine(
        main(reactor, options.messages, options.runs, options.scan_runs, options.store)))
