"""End to end: the spam filter that learns, against the real daemon.

Bulk training with ``mailserverd spam train`` (and a clear error for a
mailbox that does not exist), then the user's moves over IMAP: a message
moved into Junk makes the next one like it go to Junk, and moving it back
out makes the next one stay in the INBOX.
"""

from __future__ import annotations

import imaplib
import json
import random
import re

import pytest

from clients import smtp_send
from conftest import wait_for
from spamcorpus import corpus

pytestmark = pytest.mark.e2e

ALICE = "alice@example.test"
BOB = "bob@example.test"
# A campaign the training corpus has never seen: its words are new to every model.
CAMPAIGN = """zorblax quintessa vemurol plexidan oxtrafine murgavel tesquin bralodex
wintacor helvanix sorbulet kramfex dulphine yestrovar gallimor pextune obrivax
lunastel""".split()


def connect(daemon, user: str = ALICE) -> imaplib.IMAP4_SSL:
    client = imaplib.IMAP4_SSL("127.0.0.1", daemon.ports["imaps"], ssl_context=daemon.ssl_context(), timeout=30)
    client.login(user, daemon.users[user])
    return client


def campaign_message(number: int, to: str = ALICE) -> bytes:
    rng = random.Random(number)
    words = [rng.choice(CAMPAIGN) for _ in range(60)] + ["hello", "today", "please"]
    rng.shuffle(words)
    return (f"From: Offers <news{number}@campaign.test>\r\nTo: {to}\r\n"
            f"Subject: {' '.join(words[:5])}\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\n"
            f"Message-ID: <campaign{number}@campaign.test>\r\n\r\n"
            + " ".join(words) + "\r\n").encode()


def stats(daemon, user: str = ALICE) -> dict:
    return json.loads(daemon.cli("spam", "stats", user, "--json").stdout)


def mailbox_with(client, mailbox: str, marker: str) -> list[bytes]:
    """The headers of the messages of ``mailbox`` whose Message-ID holds ``marker``."""
    typ, _ = client.select(mailbox)
    assert typ == "OK"
    typ, data = client.uid("SEARCH", "HEADER", "Message-ID", marker)
    assert typ == "OK"
    found = []
    for uid in data[0].split():
        typ, fetched = client.uid("FETCH", uid, "(BODY.PEEK[HEADER])")
        found.append(fetched[0][1])
    return found


def spam_status(header: bytes) -> str:
    match = re.search(rb"X-Spam-Status: ([^\r\n]*)", header)
    assert match, header
    return match.group(1).decode()


def uid_of(client, mailbox: str, marker: str) -> bytes:
    client.select(mailbox)
    typ, data = client.uid("SEARCH", "HEADER", "Message-ID", marker)
    assert typ == "OK" and len(data[0].split()) == 1, data
    return data[0]


def test_bulk_training_then_moves_change_the_next_verdict(daemon):
    client = connect(daemon)
    try:
        for name in ("TrainSpam", "TrainHam"):
            assert client.create(name)[0] == "OK"
        for raw, is_spam in corpus(seed=21, hams=40, spams=40):
            assert client.append("TrainSpam" if is_spam else "TrainHam", None, None, raw)[0] == "OK"
    finally:
        client.logout()

    # A mailbox that does not exist is a clear error, and nothing is trained.
    failed = daemon.cli("spam", "train", ALICE, "--spam", "TrainSpam", "--ham", "NoSuchBox", check=False)
    assert failed.returncode == 1
    assert "alice@example.test has no mailbox named 'NoSuchBox'; nothing was trained" in failed.stderr
    assert stats(daemon)["spam"] == 0
    missing_user = daemon.cli("spam", "train", "carol@example.test", "--spam", "Junk", check=False)
    assert missing_user.returncode == 1 and "no such user: carol@example.test" in missing_user.stderr

    trained = daemon.cli("spam", "train", ALICE, "--spam", "TrainSpam", "--ham", "TrainHam")
    assert "trained on 40 spam and 40 ham messages (80 new to the model)" in trained.stdout
    assert "80/80" in trained.stderr  # the progress bar reached the end
    before = stats(daemon)
    assert (before["spam"], before["ham"], before["model"]) == (40, 40, "user")
    assert stats(daemon, BOB)["model"] == "site"  # bob has learnt nothing: the site decides

    # 1. New words, nothing known against them: the INBOX.
    smtp_send(daemon, campaign_message(1), rcpt=ALICE)
    client = connect(daemon)
    try:
        [first] = mailbox_with(client, "INBOX", "campaign1@")
        assert "BAYES_SPAM" not in spam_status(first), spam_status(first)
        # alice says it is spam: MOVE into Junk; the trainer learns it from the change log
        assert client.uid("MOVE", uid_of(client, "INBOX", "campaign1@"), "Junk")[0] == "OK"
        wait_for(lambda: stats(daemon)["spam"] == 41, timeout=60, what="the move into Junk trained")

        # 2. The next one like it goes to Junk, for alice (her model) and bob (the site's).
        smtp_send(daemon, campaign_message(2), rcpt=[ALICE, BOB])
        [second] = mailbox_with(client, "Junk", "campaign2@")
        assert re.match(r"Yes, .*tests=\S*BAYES_SPAM bayes=(0\.9|1\.0)", spam_status(second)), spam_status(second)
        assert mailbox_with(client, "INBOX", "campaign2@") == []
        bob = connect(daemon, BOB)
        try:
            [bobs] = mailbox_with(bob, "Junk", "campaign2@")
            assert "BAYES_SPAM" in spam_status(bobs)
        finally:
            bob.logout()

        # alice changes her mind: both back out of Junk, so they are ham now
        client.select("Junk")
        for marker in ("campaign1@", "campaign2@"):
            assert client.uid("MOVE", uid_of(client, "Junk", marker), "INBOX")[0] == "OK"
        wait_for(lambda: stats(daemon)["ham"] == 42, timeout=60, what="the moves out of Junk trained")
        assert stats(daemon)["spam"] == 40  # the first one's spam training was taken back

        # 3. The next one stays in the INBOX, judged ham.
        smtp_send(daemon, campaign_message(3), rcpt=ALICE)
        [third] = mailbox_with(client, "INBOX", "campaign3@")
        assert re.match(r"No, .*BAYES_HAM", spam_status(third)), spam_status(third)
        assert mailbox_with(client, "Junk", "campaign3@") == []
    finally:
        client.logout()
