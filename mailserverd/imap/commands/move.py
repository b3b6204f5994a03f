"""MOVE and UID MOVE (RFC 6851; RFC 9051 §6.4.8).

The store moves the messages in one transaction (each message is in exactly
one of the two mailboxes, whatever happens: RFC 6851 §3.3). The client then
gets ``* OK [COPYUID ...]`` before the EXPUNGE (or VANISHED) responses of the
moved messages (RFC 6851 §4.3), other sessions' changes, and the tagged OK.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred

from mailserverd.imap import responses
from mailserverd.imap.commands.copy import (
    copyuid_code,
    parse_set_and_mailbox,
    transfer_uids,
)
from mailserverd.imap.commands.expunge import (
    expunged_completion,
    report_expunged,
    require_writable,
)
from mailserverd.imap.responses import Completion


def run(session, command) -> Completion | Deferred:
    """``[UID] MOVE SP sequence-set SP mailbox``.

    Errors as for COPY (``NO [TRYCREATE]``, ``NO [EXPUNGEISSUED]`` for the
    sequence form, store errors mapped; nothing moved on any of them), plus
    ``NO [READ-ONLY]`` after EXAMINE. UID MOVE of UIDs no longer there is
    ``OK`` with no COPYUID. Moving into the selected mailbox itself is
    allowed (RFC 6851 §3.3): the copies then arrive as EXISTS.
    """
    seqset, destination = parse_set_and_mailbox(session, command)
    require_writable(session)
    uids = transfer_uids(session, command, seqset, destination)
    moving = session.ctx.store.move(session.user, session.selected.mailbox_id, uids, destination)

    def moved(result) -> Completion:
        if not result.source_uids:
            return expunged_completion(session, "No messages moved", [])
        # RFC 6851 §4.3: COPYUID in an untagged OK, before the EXPUNGEs.
        session.send(responses.untagged_status("OK", "Moved", copyuid_code(result)))
        report_expunged(session, result.source_uids)
        return expunged_completion(session, "Move completed", list(result.source_uids))

    return moving.addCallback(moved)
