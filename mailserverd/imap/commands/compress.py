"""COMPRESS (RFC 4978 §3): DEFLATE both ways from the end of the tagged OK on.

The compression itself is :mod:`mailserverd.imap.compression`, put between
the connection and the session by the adapter (the session's output's
``start_compression``).
"""

from __future__ import annotations

from mailserverd.imap import responses
from mailserverd.imap.responses import Completion

#: RFC 4978 §5: algorithm = "DEFLATE", the only one defined (case-insensitive).
MECHANISMS = (b"DEFLATE",)


def run(session, command) -> Completion:
    """``COMPRESS SP algorithm``: answer OK, then compress after the reply.

    Raises ParseError (BAD) for a missing or malformed argument, MailError
    BAD for an unknown mechanism and NO [COMPRESSIONACTIVE] when DEFLATE is
    already on (RFC 4978 §3). On OK, the bytes the client pipelined after
    this command are read as compressed (RFC 4978 §3: the client compresses
    from the first command after COMPRESS on).
    """
    args = command.args
    args.expect_sp()
    mechanism = args.atom().upper()
    args.expect_end()
    if mechanism not in MECHANISMS:
        raise responses.mail_error("BAD", None, "Unknown compression mechanism")
    if session.compression_active:
        raise responses.mail_error("NO", responses.COMPRESSIONACTIVE, "DEFLATE is already active")
    session.compress_after_reply()
    return Completion("DEFLATE active")
