"""SUBSCRIBE and UNSUBSCRIBE (RFC 3501 §6.3.6, §6.3.7; RFC 9051 §6.3.7, §6.3.8)."""

from __future__ import annotations

from mailserverd.imap.commands.mailbox_names import read_mailbox_name
from mailserverd.imap.responses import Completion

__all__ = ["run_subscribe", "run_unsubscribe"]


def _set(session, command, subscribed: bool, done: str):
    args = command.args
    args.expect_sp()
    name = read_mailbox_name(session, args)
    args.expect_end()
    changed = session.ctx.store.subscribe(session.user, name, subscribed)
    return changed.addCallback(lambda _: Completion(done))


def run_subscribe(session, command):
    """Subscribe to an existing mailbox (RFC 9051 §6.3.7: a server MAY require it
    to exist; ours does: NotFound -> ``NO [NONEXISTENT]``). OK if already subscribed.
    Returns a Deferred firing after the durable commit."""
    return _set(session, command, True, "SUBSCRIBE completed")


def run_unsubscribe(session, command):
    """Remove a name from the subscriptions, whether or not the mailbox exists;
    OK if it was not subscribed (RFC 9051 §6.3.8). Returns a Deferred."""
    return _set(session, command, False, "UNSUBSCRIBE completed")
