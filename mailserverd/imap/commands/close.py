"""CLOSE (RFC 3501 §6.4.2, RFC 9051 §6.4.2, RFC 7162 §3.2.8)."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from mailserverd.imap import responses
from mailserverd.imap.responses import Completion
from mailserverd.store.errors import StoreError


def run(session, command) -> Completion | Deferred:
    """``CLOSE``: silently expunge \\Deleted messages, then leave the selected state.

    No EXPUNGE (or VANISHED) responses and no HIGHESTMODSEQ (RFC 7162
    §3.2.8). Nothing is removed after EXAMINE (RFC 3501 §6.4.2). CLOSE has
    no NO result: if the store cannot expunge, the client is told with an
    untagged ``* NO`` and the mailbox is closed all the same (as Dovecot
    does); the messages stay, flagged \\Deleted, so nothing is lost.
    """
    command.args.expect_end()
    mailbox = session.selected
    if mailbox.readonly:
        session.deselect()
        return Completion("Close completed")
    expunging = session.ctx.store.expunge(session.user, mailbox.mailbox_id, None)

    def closed(result) -> Completion:
        if isinstance(result, Failure):
            result.trap(StoreError)
            error = responses.store_error_reply(result.value)
            session.send(responses.untagged_status("NO", error.text, error.enhanced or None))
        session.deselect()
        return Completion("Close completed")

    return expunging.addBoth(closed)
