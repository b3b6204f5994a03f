"""The POP3 reply catalogue: every status line the server sends, in one place.

A reply is ``+OK`` or ``-ERR``, optionally an RFC 2449 §8 response code in
square brackets, and short text (RFC 1939 §3). Multi-line replies carry their
body lines, which :meth:`Reply.to_bytes` dot-stuffs and terminates.

Response codes used (advertised by the RESP-CODES and AUTH-RESP-CODE
capabilities):

- ``AUTH`` (RFC 3206 §4): the credentials, or the way they were presented,
  are not acceptable (wrong password, or a policy such as "no passwords
  before TLS"). A client should ask its user, not retry blindly.
- ``SYS/TEMP`` (RFC 3206 §5): a temporary system problem; retrying later may
  work (store busy or full, authentication service unavailable or
  throttled, unexpected internal error).
- ``SYS/PERM`` (RFC 3206 §5): a permanent system problem; retrying will not help.
- ``IN-USE`` (RFC 2449 §8.1.2): authentication succeeded, but another POP3
  session holds the maildrop.

A SASL server challenge (RFC 5034 §4) is not a status line: it is
``+ base64`` (:class:`Challenge`).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from mailserverd.errors import MailError

#: RFC 2449 §8 / RFC 3206 response codes.
CODE_AUTH = "AUTH"
CODE_SYS_TEMP = "SYS/TEMP"
CODE_SYS_PERM = "SYS/PERM"
CODE_IN_USE = "IN-USE"
CODE_UTF8 = "UTF8"  # RFC 6856 §5


@dataclass(frozen=True)
class Reply:
    """One POP3 response.

    ``ok`` selects ``+OK`` or ``-ERR``; ``code`` is a response code without
    brackets or ``""``; ``text`` must be printable ASCII without CR/LF.
    ``lines`` is ``None`` for a single-line reply, else the body lines of a
    multi-line reply (bytes, without line ends, not yet dot-stuffed).
    """

    ok: bool
    text: str
    code: str = ""
    lines: tuple[bytes, ...] | None = None

    def status_line(self) -> bytes:
        """The first line, CRLF-terminated: ``+OK text`` or ``-ERR [CODE] text``."""
        words = ["+OK" if self.ok else "-ERR"]
        if self.code:
            words.append(f"[{self.code}]")
        if self.text:
            words.append(self.text)
        return " ".join(words).encode("ascii") + b"\r\n"

    def to_bytes(self) -> bytes:
        """The whole reply on the wire, multi-line body stuffed and ended with ``.\\r\\n``."""
        if self.lines is None:
            return self.status_line()
        # RFC 1939 §3: lines starting with "." get one more "."; "." alone ends the body.
        body = b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in self.lines)
        return self.status_line() + body + b".\r\n"


@dataclass(frozen=True)
class Challenge:
    """A SASL server challenge (RFC 5034 §4): "+", one space, ``data`` in base64."""

    data: bytes

    def to_bytes(self) -> bytes:
        """The challenge line on the wire, CRLF-terminated ("+ " alone for empty data)."""
        return b"+ " + base64.b64encode(self.data) + b"\r\n"


def ok(text: str, lines: tuple[bytes, ...] | None = None) -> Reply:
    """A ``+OK`` reply, multi-line if ``lines`` is given."""
    return Reply(True, text, "", lines)


def err(text: str, code: str = "") -> Reply:
    """A ``-ERR`` reply with an optional response code."""
    return Reply(False, text, code)


def from_error(error: MailError) -> Reply:
    """The reply a :class:`~mailserverd.errors.MailError` with code ``-ERR`` carries."""
    return Reply(False, error.text, error.enhanced)


def failure(text: str, code: str = "", temporary: bool = False) -> MailError:
    """A MailError carrying a ``-ERR`` reply, for handlers to raise from deep inside."""
    return MailError("-ERR", code, text, temporary)


# --- the catalogue ---------------------------------------------------------

def greeting(hostname: str) -> Reply:
    # RFC 1939 §4: the greeting is a positive response. No APOP timestamp: no APOP.
    return ok(f"{hostname} POP3 server ready")


def signing_off(hostname: str) -> Reply:
    return ok(f"{hostname} POP3 server signing off")


def maildrop_summary(count: int, octets: int) -> Reply:
    return ok(f"maildrop has {count} messages ({octets} octets)")


CAPA_FOLLOWS = "capability list follows"
SCAN_LISTING_FOLLOWS = "scan listing follows"
UIDL_LISTING_FOLLOWS = "unique-id listing follows"
MESSAGE_FOLLOWS = "message follows"
TOP_FOLLOWS = "top of message follows"

OK_PLAIN = ok("")
USER_ACCEPTED = ok("send PASS")
STLS_BEGIN = ok("begin TLS negotiation")
UTF8_ENABLED = ok("UTF8 enabled")
MECHANISMS_FOLLOW = "SASL mechanisms follow"

UNKNOWN_COMMAND = err("unknown command")
BAD_STATE = err("command not valid in this state")
LINE_TOO_LONG = err("line too long")
TOO_MANY_BAD_COMMANDS = err("too many bad commands, closing connection")
NUL_IN_COMMAND = err("NUL byte in command")
TLS_ACTIVE = err("command not permitted when TLS active")
# RFC 6856 §2.1: a server MAY refuse STLS after UTF8; a protocol error, so no response code.
STLS_AFTER_UTF8 = err("STLS not permitted after UTF8")
# RFC 2595 §4 lets a server refuse plaintext passwords; RFC 3206 §4 names "an attempt
# to authenticate in violation of policy" as an [AUTH] case, so the client asks its user
# (whose settings must change to use TLS) instead of retrying as if the system were down.
PLAINTEXT_DISALLOWED = err("plaintext authentication disallowed without TLS, use STLS", CODE_AUTH)
# Every SASL mechanism waits for TLS unless plaintext is allowed (mailserverd.auth.sasl.mechanisms).
AUTH_DISALLOWED_WITHOUT_TLS = err("authentication disallowed without TLS, use STLS", CODE_AUTH)
NO_USER_GIVEN = err("no USER given")
AUTH_FAILED = err("authentication failed", CODE_AUTH)
# RFC 5034 §4: a cancelled exchange ("*") and an undecodable response both end AUTH with -ERR.
AUTH_CANCELLED = err("authentication cancelled")
AUTH_BAD_BASE64 = err("invalid base64 in authentication exchange")
AUTH_MALFORMED = err("malformed authentication exchange")
UNSUPPORTED_MECHANISM = err("unsupported authentication mechanism")
# RFC 2449 §8.1.2: authenticated, but the maildrop is locked by another session.
# RFC 6856 §2.1: a message with UTF-8 headers is refused outside UTF-8 mode (no surrogates).
NEEDS_UTF8 = err("message has UTF-8 headers, issue UTF8 first", CODE_UTF8)
MAILDROP_IN_USE = err("maildrop already in use by another session", CODE_IN_USE)
AUTH_TEMPORARILY_UNAVAILABLE = err("authentication temporarily unavailable, try again later", CODE_SYS_TEMP)
NO_SUCH_MESSAGE = err("no such message")
MESSAGE_GONE = err("message no longer exists")
TEMPORARY_FAILURE = err("temporary failure, try again later", CODE_SYS_TEMP)
# Abuse limits (mailserverd.abuse): temporary, RFC 3206 §4.
TOO_MANY_COMMANDS = err("too many commands, slow down", CODE_SYS_TEMP)
TOO_MANY_SESSIONS = err("too many sessions for this account", CODE_SYS_TEMP)
SHUTTING_DOWN = err("server shutting down, try again later", CODE_SYS_TEMP)
PERMANENT_FAILURE = err("mailbox unavailable", CODE_SYS_PERM)
# RFC 1939 §6: the reply when the UPDATE state could not remove every marked message.
NOT_ALL_REMOVED = err("some deleted messages not removed", CODE_SYS_TEMP)


def message_deleted(number: int) -> Reply:
    return ok(f"message {number} deleted")


def already_deleted(number: int) -> Reply:
    return err(f"message {number} already deleted")


def syntax_error(syntax: str) -> Reply:
    """The reply to a malformed command: the command's syntax from the command table."""
    return err(f"syntax: {syntax}")
