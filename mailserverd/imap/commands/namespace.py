"""NAMESPACE (RFC 2342 §5, RFC 9051 §6.3.10): one personal namespace, no others."""

from __future__ import annotations

from mailserverd.imap import responses
from mailserverd.imap.commands.mailbox_names import DELIMITER
from mailserverd.imap.responses import Completion

__all__ = ["run"]

#: Personal namespace: prefix "" with the store's hierarchy separator; no
#: other users' or shared namespaces (NIL NIL).
NAMESPACE_RESPONSE = responses.untagged(b'NAMESPACE (("" ' + DELIMITER + b")) NIL NIL")


def run(session, command) -> Completion:
    """Send ``* NAMESPACE (("" "/")) NIL NIL``; takes no arguments."""
    command.args.expect_end()
    session.send(NAMESPACE_RESPONSE)
    return Completion("NAMESPACE completed")
