"""LOGOUT (RFC 3501 §6.1.3): BYE, tagged OK, then the server closes."""

from __future__ import annotations

from mailserverd.imap import responses
from mailserverd.imap.responses import Completion


def run(session, command) -> Completion:
    """Send ``* BYE``, answer OK and close once it is written."""
    command.args.expect_end()
    session.send(responses.untagged_status("BYE", "Logging out"))
    session.close_after_reply()
    return Completion("Logout completed")
