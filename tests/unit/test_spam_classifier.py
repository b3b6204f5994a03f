"""The learning spam filter on a real store: tokens, Robinson–Fisher, per-user
and site models, the trainer that follows the change log, per-user verdicts."""

from __future__ import annotations

import math
import re

import pytest
import pytest_twisted

from imap_real_store import CREDS, USER, open_store
from mailserverd.delivery import bayes
from mailserverd.delivery.checks import Envelope, InboundChecks, InboundSettings
from mailserverd.delivery.spamtrainer import SpamTrainer, build_batch
from mailserverd.limits import MIB, Limits
from mailserverd.mail.facts import compute_facts
from mailserverd.store.spamtokens import HAM, SPAM
from spamcorpus import corpus

BOB = "bob@example.test"
LIMITS = Limits(store_map_size=64 * MIB, spam_training_min=5)


@pytest.fixture
def store(tmp_path):
    yield from open_store(tmp_path, LIMITS)


async def deliver(store, raw: bytes, user: str = USER, mailbox: str = "INBOX"):
    return (await store.deliver([user], raw, None, mailbox))[user]


def hashes(raw: bytes) -> list[bytes]:
    return bayes.message_hashes(raw, None, LIMITS.spam_tokens_max, LIMITS.spam_message_max)


async def train(store, user: str, messages: list[tuple[bytes, bool]]) -> int:
    examples = []
    for number, (raw, is_spam) in enumerate(messages):
        examples.append((b"blob%08d" % number, SPAM if is_spam else HAM, hashes(raw)))
    return await store.train_spam(user, examples)


def classifier(store) -> bayes.SpamClassifier:
    return bayes.SpamClassifier(store, LIMITS)


# --- the arithmetic


def test_robinson_and_fisher():
    # A token seen only in spam, often: close to 1 but never 1 (s=0.45, x=0.5).
    assert bayes.token_probability(10, 0, 10, 10) == pytest.approx((0.45 * 0.5 + 10) / 10.45)
    assert bayes.token_probability(0, 0, 10, 10) == 0.5
    assert bayes.token_probability(5, 5, 10, 10) == pytest.approx(0.5)
    # chi-square survival with 2 degrees of freedom is exp(-x/2)
    assert bayes.chi2q(3.0, 2) == pytest.approx(math.exp(-1.5))
    assert bayes.chi2q(0.0, 10) == 1.0
    assert bayes.combine([]) == 0.5
    assert bayes.combine([0.5, 0.55]) == 0.5  # nothing strong enough to count
    assert bayes.combine([0.99] * 20) > 0.99
    assert bayes.combine([0.01] * 20) < 0.01
    assert 0.3 < bayes.combine([0.99] * 10 + [0.01] * 10) < 0.7  # torn: unsure


def test_tokens_decode_and_leave_our_fields_out():
    raw = (b"Received: from x by mx.example.test id ABC\r\n"
           b"Authentication-Results: mx.example.test; spf=pass\r\n"
           b"X-Spam-Status: Yes, score=9.0 required=5.0 tests=BAYES_SPAM\r\n"
           b"From: Deals <deals@mega-offer.test>\r\n"
           b"Subject: =?utf-8?b?SmFja3BvdCB3aW5uZXI=?=\r\n"
           b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
           + __import__("base64").encodebytes(b"Claim your prize at http://Cheap-Pills.test/x now\r\n")
           .replace(b"\n", b"\r\n"))
    tokens = bayes.message_tokens(raw, compute_facts(raw), 1000)
    assert "subject:jackpot" in tokens and "subject:winner" in tokens  # RFC 2047 decoded
    assert "from:mega-offer.test" in tokens
    assert "prize" in tokens and "claim" in tokens  # base64 body decoded
    assert "url:cheap-pills.test" in tokens
    assert not [token for token in tokens if "spam" in token or "score" in token or "spf" in token
                or "mx.example" in token]
    assert len(bayes.message_tokens(raw, compute_facts(raw), 10)) == 10
    assert bayes.message_hashes(raw, None, 1000, len(raw) - 1) is None  # too large: not judged


# --- accuracy on a generated corpus


@pytest_twisted.ensureDeferred
async def test_accuracy_on_held_back_messages(store):
    messages = corpus(seed=11, hams=300, spams=300)
    training, held_back = messages[:400], messages[400:]
    assert await train(store, USER, training) == 400
    judge = classifier(store)
    right = 0
    for raw, is_spam in held_back:
        verdict = judge.classify(raw, [USER])[USER]
        assert verdict.model == "user"
        right += (verdict.probability >= 0.5) == is_spam
    accuracy = right / len(held_back)
    assert accuracy >= 0.95, accuracy


# --- training: once per message, in its last class; the site model mirrors


@pytest_twisted.ensureDeferred
async def test_a_message_counts_once_in_its_last_class(store):
    await store.add_user(BOB, CREDS)
    raw, _ = corpus(seed=3, hams=1, spams=0)[0]
    example = [(b"blob-1", SPAM, hashes(raw))]
    assert await store.train_spam(USER, example) == 1
    assert await store.train_spam(USER, example) == 0  # replayed: nothing changes
    token = hashes(raw)[0]
    own = store.spam_counts(USER, [token])
    assert (own.nspam, own.nham, own.tokens[token]) == (1, 0, (1, 0))
    assert await store.train_spam(USER, [(b"blob-1", HAM, hashes(raw))]) == 1
    own = store.spam_counts(USER, [token])
    assert (own.nspam, own.nham, own.tokens[token]) == (0, 1, (0, 1))
    site = store.site_spam_counts([token])
    assert (site.nspam, site.nham, site.tokens[token]) == (0, 1, (0, 1))
    assert store.spam_counts(BOB, [token]).tokens == {}


@pytest_twisted.ensureDeferred
async def test_site_model_until_the_user_has_enough(store):
    await store.add_user(BOB, CREDS)
    messages = corpus(seed=5, hams=20, spams=20)
    spam_sample = next(raw for raw, is_spam in messages if is_spam)
    judge = classifier(store)
    assert judge.classify(spam_sample, [USER, BOB]) == {USER: None, BOB: None}  # nobody trained
    await train(store, USER, messages)
    verdicts = judge.classify(spam_sample, [USER, BOB, "nobody@example.test"])
    assert verdicts[USER].model == "user"
    assert verdicts[BOB].model == "site" and verdicts["nobody@example.test"].model == "site"
    assert verdicts[BOB].probability > 0.9


# --- the trainer follows the change log


@pytest_twisted.ensureDeferred
async def test_trainer_learns_from_moves_into_and_out_of_junk(store):
    from twisted.internet import reactor

    trainer = SpamTrainer(store, LIMITS, reactor)
    raw, _ = corpus(seed=7, hams=0, spams=1)[0]
    token = hashes(raw)[0]
    inbox = store.get_mailbox(USER, "INBOX").mailbox_id
    junk = store.get_mailbox(USER, "Junk").mailbox_id
    delivered = await deliver(store, raw)
    await deliver(store, raw, mailbox="Junk")  # the filter's own filing is no lesson
    await store.copy(USER, inbox, [delivered.uid], "Archive")  # neither is an ordinary copy
    try:
        await trainer.catch_up()
        assert store.spam_counts(USER, [token]).nspam == 0
        moved = await store.move(USER, inbox, [delivered.uid], "Junk")
        await trainer.catch_up()
        counts = store.spam_counts(USER, [token])
        assert (counts.nspam, counts.nham, counts.tokens[token]) == (1, 0, (1, 0))
        await store.move(USER, junk, list(moved.dest_uids), "INBOX")
        await trainer.catch_up()
        counts = store.spam_counts(USER, [token])
        assert (counts.nspam, counts.nham, counts.tokens[token]) == (0, 1, (0, 1))
        assert store.spam_seq(0) == store.last_seq(0)  # the position is stored
        assert build_batch(store, 0, store.spam_seq(0), LIMITS) is None
    finally:
        trainer.stop()


@pytest_twisted.ensureDeferred
async def test_trainer_forgets_a_removed_account(store):
    from twisted.internet import reactor

    await store.add_user(BOB, CREDS)
    await train(store, BOB, corpus(seed=9, hams=3, spams=3))
    assert store.spam_counts(BOB, ()).nspam == 3
    await store.remove_user(BOB)
    trainer = SpamTrainer(store, LIMITS, reactor)
    try:
        await trainer.catch_up()
    finally:
        trainer.stop()
    await store.add_user(BOB, CREDS)  # a new account of the same name starts afresh
    assert store.spam_counts(BOB, ()).nspam == 0
    assert store.site_spam_counts(()).nspam == 3  # what it taught the site stays


# --- per-user verdicts at delivery


@pytest_twisted.ensureDeferred
async def test_each_recipient_gets_its_own_verdict(store, dns_server):
    await store.add_user(BOB, CREDS)
    messages = corpus(seed=13, hams=30, spams=30)
    await train(store, USER, messages)
    # bob has learnt the opposite: what alice calls spam, he wants
    await train(store, BOB, [(raw, not is_spam) for raw, is_spam in messages])
    spam_sample = corpus(seed=14, hams=0, spams=1)[0][0]
    settings = InboundSettings("mx.example.test", ("127.0.0.1", dns_server.port), 3.0,
                               spf=False, dkim=False, dmarc=False)
    checks = InboundChecks(settings, classifier=classifier(store))
    checks.start()
    try:
        verdict = await checks.check(spam_sample, Envelope("192.0.2.1", "h.test", "s@remote.test",
                                                           (USER, BOB), (USER, BOB)))
    finally:
        checks.stop()
    assert verdict.action != "reject"
    alice, bob = verdict.for_user(USER), verdict.for_user(BOB)
    assert alice.action == "junk" and "BAYES_SPAM" in alice.results["tests"]
    assert bob.action == "deliver" and "BAYES_HAM" in bob.results["tests"]
    assert re.search(rb"X-Spam-Status: Yes, .* tests=\S*BAYES_SPAM bayes=0\.9", alice.message)
    assert re.search(rb"X-Spam-Status: No, .* tests=\S*BAYES_HAM bayes=0\.[01]", bob.message)
    assert verdict.results["bayes"][USER] > 0.9 > 0.2 > verdict.results["bayes"][BOB]
