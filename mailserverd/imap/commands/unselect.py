"""UNSELECT (RFC 3691 §2; RFC 9051 §6.4.2 folds it into IMAP4rev2)."""

from __future__ import annotations

from mailserverd.imap.responses import Completion


def run(session, command) -> Completion:
    """``UNSELECT``: leave the selected state without expunging anything.

    Unlike CLOSE, \\Deleted messages stay, whether the mailbox was opened
    with SELECT or EXAMINE (RFC 3691 §2).
    """
    command.args.expect_end()
    session.deselect()
    return Completion("Unselect completed")
