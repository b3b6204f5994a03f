"""Object identifiers (RFC 8474 OBJECTID): EMAILID of a message, MAILBOXID of a mailbox."""

from __future__ import annotations

import binascii


def email_objectid(blob_id: bytes) -> bytes:
    """EMAILID (RFC 8474 §5.1): ``M`` and 24 hex digits of the content hash.

    Identical content gives the same id, which §5.1 allows, and copies keep it
    (they share the blob), which §5.1 requires.
    """
    return b"M" + binascii.hexlify(blob_id[:12])


def mailbox_objectid(mailbox) -> bytes:
    """MAILBOXID (RFC 8474 §4) of a MailboxInfo: ``F<uidvalidity>-<mailbox_id>`` in hex.

    A mailbox id is never reused on its shard and survives RENAME, as §4
    requires; UIDVALIDITY in it keeps ids apart should a mailbox ever get a
    new id space (a move of the user to another shard).
    """
    return b"F%x-%x" % (mailbox.uidvalidity, mailbox.mailbox_id)
