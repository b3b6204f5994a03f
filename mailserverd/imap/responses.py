"""IMAP server responses: formatting, response codes, and the storage-error map.

Responses are bytes ending in CRLF (RFC 3501 §7). Human text is ASCII chosen
by us, never client input. Command handlers raise
:class:`~mailserverd.errors.MailError` with ``code`` ``"NO"`` or ``"BAD"`` and
``enhanced`` holding the response code (without brackets); the session turns
it into the tagged response with :func:`tagged`.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailserverd.errors import MailError
from mailserverd.store import errors as store_errors

__all__ = [
    "CRLF",
    "Completion",
    "tagged",
    "untagged",
    "untagged_status",
    "continuation",
    "mail_error",
    "store_error_reply",
    "INTERNAL_ERROR",
]

CRLF = b"\r\n"

# RFC 5530 §3 response codes used here (and RFC 3501 §7.1 ones).
ALERT = "ALERT"
AUTHENTICATIONFAILED = "AUTHENTICATIONFAILED"
ALREADYEXISTS = "ALREADYEXISTS"
CANNOT = "CANNOT"
CLIENTBUG = "CLIENTBUG"
CORRUPTION = "CORRUPTION"
COMPRESSIONACTIVE = "COMPRESSIONACTIVE"  # RFC 4978 §3
EXPUNGEISSUED = "EXPUNGEISSUED"
INUSE = "INUSE"
LIMIT = "LIMIT"
NONEXISTENT = "NONEXISTENT"
OVERQUOTA = "OVERQUOTA"
PRIVACYREQUIRED = "PRIVACYREQUIRED"
READ_ONLY = "READ-ONLY"
READ_WRITE = "READ-WRITE"
TOOBIG = "TOOBIG"  # RFC 4469 §6 / RFC 7889
UNAVAILABLE = "UNAVAILABLE"


@dataclass(frozen=True)
class Completion:
    """A command's successful end: the tagged ``OK`` with an optional response code.

    ``code`` is the bracketed response code's content (``"READ-WRITE"``).
    """

    text: str
    code: str | None = None


def _text(status: str, text: str, code: str | None) -> bytes:
    body = f"{status} [{code}] {text}" if code else f"{status} {text}"
    return body.encode("ascii", "replace")


def tagged(tag: bytes, status: str, text: str, code: str | None = None) -> bytes:
    """``tag SP status SP [code] text CRLF`` (RFC 3501 §7.1)."""
    return tag + b" " + _text(status, text, code) + CRLF


def untagged(data: bytes) -> bytes:
    """``* data CRLF``; ``data`` is already formatted (``b"3 EXISTS"``)."""
    return b"* " + data + CRLF


def untagged_status(status: str, text: str, code: str | None = None) -> bytes:
    """``* OK|NO|BAD|BYE|PREAUTH [code] text CRLF`` (RFC 3501 §7.1)."""
    return b"* " + _text(status, text, code) + CRLF


def continuation(text: str) -> bytes:
    """``+ text CRLF``, the command continuation request (RFC 3501 §7.5)."""
    return b"+ " + text.encode("ascii") + CRLF


def mail_error(status: str, code: str | None, text: str, temporary: bool = False) -> MailError:
    """A :class:`MailError` carrying an IMAP tagged reply (``status`` NO or BAD)."""
    return MailError(status, code or "", text, temporary)


#: Abuse limits (mailserverd.abuse): RFC 5530 §3 LIMIT, "a limit on the
#: number of simultaneous sessions" or of commands; retrying later works.
TOO_MANY_COMMANDS = mail_error("NO", LIMIT, "Too many commands, slow down", temporary=True)
TOO_MANY_SESSIONS = mail_error("NO", LIMIT, "Too many sessions for this account", temporary=True)

#: The answer to an unexpected exception: temporary, and saying nothing of the cause.
INTERNAL_ERROR = mail_error("NO", UNAVAILABLE, "Internal error, try again later", temporary=True)

# The closed set of storage errors, mapped at the protocol edge (Dovecot's
# mail_storage_get_last_error idea). Texts never tell whether a mailbox of
# another user exists: every "not there" is the same NONEXISTENT answer.
_STORE_ERRORS: tuple[tuple[type, MailError], ...] = (
    (store_errors.NotFound, mail_error("NO", NONEXISTENT, "Mailbox doesn't exist")),
    (store_errors.Expunged, mail_error("NO", EXPUNGEISSUED, "Some of the requested messages no longer exist")),
    # A sealed message failing its authentication is never served as garbage.
    (store_errors.Damaged, mail_error("NO", CORRUPTION, "A requested message is damaged")),
    (store_errors.OverQuota, mail_error("NO", OVERQUOTA, "Quota exceeded")),
    (store_errors.AlreadyExists, mail_error("NO", ALREADYEXISTS, "Mailbox already exists")),
    (store_errors.InUse, mail_error("NO", INUSE, "Mailbox is in use, try again later", True)),
    (store_errors.LimitExceeded, mail_error("NO", LIMIT, "Limit exceeded")),
    (store_errors.InvalidName, mail_error("NO", CANNOT, "Invalid mailbox name")),
    (store_errors.NotPermitted, mail_error("NO", CANNOT, "Operation not permitted")),
    (store_errors.StoreTemporaryError, mail_error("NO", UNAVAILABLE, "Temporary storage failure, try again later", True)),
)


def store_error_reply(error: store_errors.StoreError) -> MailError:
    """The tagged reply for a storage error (RFC 5530 codes); unknown kinds get
    :data:`INTERNAL_ERROR`-like temporary failure wording."""
    for kind, reply in _STORE_ERRORS:
        if isinstance(error, kind):
            return reply
    return mail_error("NO", UNAVAILABLE, "Temporary storage failure, try again later", True)
