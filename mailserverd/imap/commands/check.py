"""CHECK (RFC 3501 §6.4.1). RFC 9051 Appendix E item 17 removed it from
IMAP4rev2, but rev1 clients still send it: it stays a synonym of NOOP."""

from __future__ import annotations

from mailserverd.imap.responses import Completion


def run(session, command) -> Completion:
    """``CHECK``: every write is durable before its OK already, so there is no
    checkpoint to make; report pending mailbox changes like NOOP does."""
    command.args.expect_end()
    session.report_mailbox_changes()
    return Completion("Check completed")
