"""CAPABILITY (RFC 3501 §6.1.1): list what the server supports now."""

from __future__ import annotations

from mailserverd.imap import responses
from mailserverd.imap.responses import Completion


def run(session, command) -> Completion:
    """Send ``* CAPABILITY ...``; the list depends on TLS and state (RFC 3501 §6.2.3)."""
    command.args.expect_end()
    session.send(responses.untagged(b"CAPABILITY " + " ".join(session.capabilities()).encode("ascii")))
    return Completion("Capability completed")
