"""Spam classifier benchmark: time per message and accuracy on a generated corpus.

Prints figures; asserts nothing about time. In a temporary store (one shard,
through the store API, no daemon): trains one user on ``--train`` generated
messages (tests/spamcorpus.py: half ham, half spam, overlapping
vocabularies), then classifies ``--classify`` held-back messages the way
delivery does (SpamClassifier.classify in one thread: MIME facts, text
extraction, tokens, the model's counts read from LMDB, Fisher–Robinson),
and reports milliseconds per message (median and 95th percentile), the share
spent on extracting tokens, and the accuracy. Also the bulk training rate
(messages/s, tokens extracted and committed with fsync).

With ``--mime DIR`` it also times every message file of DIR (for example
the shared MIME test messages), ten times each.

Run: .venv/bin/python bench/spam_classify.py [--train N] [--classify N] [--mime DIR]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from mailserverd.delivery.bayes import SpamClassifier, message_hashes  # noqa: E402
from mailserverd.limits import MIB, Limits  # noqa: E402
from mailserverd.store.lmdbstore import LMDBStore, call_directly  # noqa: E402
from mailserverd.store.spamtokens import HAM, SPAM  # noqa: E402
from mailserverd.store.types import Credentials, ScramSecrets  # noqa: E402
from spamcorpus import corpus  # noqa: E402

USER = "bench@example.test"


def wait(deferred):
    """The result of a store Deferred (fired on a store thread: fire=call_directly)."""
    done = threading.Event()
    box = []
    deferred.addBoth(lambda result: (box.append(result), done.set()))
    done.wait(600)
    if not box or isinstance(box[0], Exception) or hasattr(box[0], "raiseException"):
        raise RuntimeError(f"store call failed: {box}")
    return box[0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--classify", type=int, default=1000)
    parser.add_argument("--mime", metavar="DIR", help="also time each message file in DIR")
    args = parser.parse_args()
    limits = Limits(store_map_size=1024 * MIB)
    root = tempfile.mkdtemp(prefix="spam-bench-")
    store = LMDBStore.open(str(Path(root) / "data"), 1, limits, fire=call_directly)
    store.start()
    try:
        wait(store.add_domain("example.test"))
        wait(store.add_user(USER, Credentials(b"$2b$04$x", ScramSecrets(b"s", 4096, b"K" * 32, b"S" * 32))))
        messages = corpus(seed=1, hams=(args.train + args.classify) // 2,
                          spams=(args.train + args.classify) // 2)
        training, held_back = messages[:args.train], messages[args.train:]
        started = time.perf_counter()
        batch = []
        for number, (raw, is_spam) in enumerate(training):
            batch.append((b"m%08d" % number, SPAM if is_spam else HAM,
                          message_hashes(raw, None, limits.spam_tokens_max, limits.spam_message_max)))
            if len(batch) == limits.spam_train_batch:
                wait(store.train_spam(USER, batch))
                batch = []
        if batch:
            wait(store.train_spam(USER, batch))
        train_seconds = time.perf_counter() - started
        classifier = SpamClassifier(store, limits)
        times, token_times, right = [], [], 0
        for raw, is_spam in held_back:
            started = time.perf_counter()
            verdict = classifier.classify(raw, [USER])[USER]
            times.append(time.perf_counter() - started)
            started = time.perf_counter()
            message_hashes(raw, None, limits.spam_tokens_max, limits.spam_message_max)
            token_times.append(time.perf_counter() - started)
            right += (verdict.probability >= 0.5) == is_spam
        times.sort()
        size = statistics.mean(len(raw) for raw, _ in held_back)
        print(f"trained {len(training)} messages in {train_seconds:.2f} s "
              f"({len(training) / train_seconds:.0f} messages/s); "
              f"model: {store.spam_token_count(USER)} tokens")
        print(f"classified {len(held_back)} messages (mean {size:.0f} bytes): "
              f"median {statistics.median(times) * 1000:.2f} ms, "
              f"p95 {times[int(len(times) * 0.95)] * 1000:.2f} ms per message; "
              f"token extraction {statistics.median(token_times) * 1000:.2f} ms of it")
        print(f"accuracy on held-back messages: {right / len(held_back):.1%}")
        if args.mime:
            real = [path.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
                    for path in sorted(Path(args.mime).iterdir()) if path.is_file()]
            real_times = []
            for raw in real * 10:
                started = time.perf_counter()
                classifier.classify(raw, [USER])
                real_times.append(time.perf_counter() - started)
            real_times.sort()
            print(f"classified {len(real)} varied MIME messages x10 (mean "
                  f"{statistics.mean(len(raw) for raw in real):.0f} bytes): median "
                  f"{statistics.median(real_times) * 1000:.2f} ms, p95 "
                  f"{real_times[int(len(real_times) * 0.95)] * 1000:.2f} ms per message")
    finally:
        wait(store.stop())
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
