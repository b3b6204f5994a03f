"""STARTTLS (RFC 3501 §6.2.1, RFC 2595 §3.1)."""

from __future__ import annotations

from mailserverd.imap import responses
from mailserverd.imap.responses import Completion


def run(session, command) -> Completion:
    """Answer OK and start TLS after it; BAD when TLS is already on.

    The session drops any bytes pipelined after this command (they were sent
    in clear and must not run inside the TLS session), and the capabilities
    it announces afterwards reflect TLS (no STARTTLS, no LOGINDISABLED).
    """
    command.args.expect_end()
    if session.tls_active:
        raise responses.mail_error("BAD", None, "TLS is already active")
    session.start_tls_after_reply()
    return Completion("Begin TLS negotiation now")
