"""``mailserverd spam train USER --spam MAILBOX --ham MAILBOX | stats USER``.

``train`` teaches a user's spam model (and the site-wide one) from whole
mailboxes, with a progress bar on standard error: every message of each
``--spam`` mailbox as spam, of each ``--ham`` mailbox as ham. A message
trained before in the other class moves over (counted once). Every mailbox
is looked up before anything is trained, so a name that does not exist
changes nothing. ``stats`` shows what a user's model and the site's hold
and which of them classifies the user's mail.
"""

from __future__ import annotations

import json
import sys


def _mailboxes(store, user: str, names: list[str], label: str) -> list[tuple[str, object, str]]:
    """``(name, MailboxInfo, label)`` of each named mailbox; CommandError for a missing one."""
    from mailserverd.cli import CommandError
    from mailserverd.store.errors import NotFound

    found = []
    for name in names:
        try:
            found.append((name, store.get_mailbox(user, name), label))
        except NotFound:
            raise CommandError(f"{user} has no mailbox named {name!r}; nothing was trained") from None
    return found


def _train(store, user: str, boxes: list, limits):
    """Train on every message of ``boxes`` in batches; returns (trained per label, changed)."""
    from tqdm import tqdm
    from twisted.internet import defer

    from mailserverd.delivery.bayes import message_hashes
    from mailserverd.store.errors import Expunged

    @defer.inlineCallbacks
    def run():
        listed = [(label, store.list_messages(user, info.mailbox_id)) for _name, info, label in boxes]
        seen = {"spam": 0, "ham": 0}
        changed = 0
        batch: list = []
        with tqdm(total=sum(len(messages) for _label, messages in listed), unit="msg",
                  file=sys.stderr, desc=f"training {user}") as bar:
            for label, messages in listed:
                for message in messages:
                    try:
                        raw = store.read_message(user, message.blob_id)
                        facts = store.read_facts(user, message.blob_id)
                    except Expunged:  # deleted while we read: nothing to learn from
                        bar.update(1)
                        continue
                    hashes = message_hashes(raw, facts, limits.spam_tokens_max, limits.spam_message_max)
                    if hashes is None:  # too large to learn from
                        bar.update(1)
                        continue
                    batch.append((message.blob_id, label, hashes))
                    seen[label] += 1
                    if len(batch) >= limits.spam_train_batch:
                        changed += yield store.train_spam(user, batch)
                        bar.update(len(batch))
                        batch = []
            if batch:
                changed += yield store.train_spam(user, batch)
                bar.update(len(batch))
        return seen, changed

    return run()


def _stats(store, user: str, training_min: int) -> dict:
    """What ``spam stats`` shows, as a JSON-able document."""
    own = store.spam_counts(user, ())
    site = store.site_spam_counts(())
    enough = own.nspam >= training_min and own.nham >= training_min
    site_enough = site.nspam >= training_min and site.nham >= training_min
    return {
        "user": user, "spam": own.nspam, "ham": own.nham, "tokens": store.spam_token_count(user),
        "site_spam": site.nspam, "site_ham": site.nham, "training_min": training_min,
        "model": "user" if enough else "site" if site_enough else "none",
    }


def cmd_spam(args) -> int:
    from mailserverd.cli import CommandError, load, with_store

    from mailserverd.mail.address import AddressError, canonical

    config = load(args)
    try:
        user = canonical(args.user)
    except AddressError:
        raise CommandError(f"not an address: {args.user!r}") from None

    def work(store):
        if store.get_user(user) is None:
            raise CommandError(f"no such user: {user}")
        if args.action == "stats":
            doc = _stats(store, user, config.limits.spam_training_min)
            if args.json:
                print(json.dumps(doc, indent=2))
            else:
                print(f"{user}: {doc['spam']} spam and {doc['ham']} ham messages trained, "
                      f"{doc['tokens']} tokens")
                print(f"site: {doc['site_spam']} spam and {doc['site_ham']} ham messages trained")
                print(f"classified by: {doc['model']} model (a model needs {doc['training_min']} "
                      f"messages of each class)")
            return None
        if not args.spam and not args.ham:
            raise CommandError("give at least one --spam or --ham mailbox")
        boxes = (_mailboxes(store, user, args.spam or [], "spam")
                 + _mailboxes(store, user, args.ham or [], "ham"))
        running = _train(store, user, boxes, config.limits)
        return running.addCallback(_report)

    def _report(outcome) -> None:
        seen, changed = outcome
        print(f"{user}: trained on {seen['spam']} spam and {seen['ham']} ham messages "
              f"({changed} new to the model)")

    return with_store(config, work)


def add_parser(sub, common) -> None:
    """Register ``spam train`` and ``spam stats`` on the CLI's subparsers."""
    p = sub.add_parser("spam", help="the learning spam filter")
    ssub = p.add_subparsers(dest="action", required=True)
    a = ssub.add_parser("train", parents=[common], help="train a user's model from whole mailboxes")
    a.add_argument("user", metavar="USER")
    a.add_argument("--spam", action="append", metavar="MAILBOX", help="a mailbox of spam (repeatable)")
    a.add_argument("--ham", action="append", metavar="MAILBOX", help="a mailbox of ham (repeatable)")
    a = ssub.add_parser("stats", parents=[common], help="what a user's model holds")
    a.add_argument("user", metavar="USER")
    a.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_spam)
