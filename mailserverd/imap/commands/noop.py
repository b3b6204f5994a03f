"""NOOP (RFC 3501 §6.1.2): does nothing, but lets pending mailbox updates out."""

from __future__ import annotations

from mailserverd.imap.responses import Completion


def run(session, command) -> Completion:
    """Report changes to the selected mailbox (new EXISTS, EXPUNGE), then OK."""
    command.args.expect_end()
    session.report_mailbox_changes()
    return Completion("NOOP completed")
