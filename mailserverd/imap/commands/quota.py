"""GETQUOTA, GETQUOTAROOT and SETQUOTA (RFC 9208 §4.1).

Each account has one quota root, named ``""``, that covers all its mailboxes
(RFC 9208 §3.2 leaves naming to the server). Its one resource is STORAGE
(RFC 9208 §5.1): usage is the store's count of the account's mail bytes,
the limit the account's quota, both in units of 1024 octets (rounded down).
An account without a quota (0, unlimited) has the root with an empty
resource list, which RFC 9208 §4.2.1 defines as "no limits". MESSAGE is not
reported: no message-count limit exists to report against.

Quotas are set by the administrator (the ``mailserverd user`` CLI), so
SETQUOTA is parsed and refused with ``NO [NOPERM]``; QUOTASET is not
advertised (RFC 9208 §4.1.3).
"""

from __future__ import annotations

import re

from mailserverd.imap import responses, wire
from mailserverd.imap.commands.mailbox_names import encode_name, read_mailbox_name
from mailserverd.imap.parser import ArgCursor, ParseError
from mailserverd.imap.responses import Completion

__all__ = ["run_getquota", "run_getquotaroot", "run_setquota", "QUOTA_CAPABILITIES", "QUOTA_ROOT"]

#: The capabilities this module completes (RFC 9208 §1, §5.1).
QUOTA_CAPABILITIES = ("QUOTA", "QUOTA=RES-STORAGE")
#: The name of every account's single quota root.
QUOTA_ROOT = b""
#: RFC 5530 §3: the operation is not permitted to this user.
NOPERM = "NOPERM"

_NUMBER64_MAX = (1 << 63) - 1  # RFC 9051 §9 number64
_DIGITS = re.compile(rb"[0-9]+")


def _quota_response(session) -> bytes:
    """``* QUOTA "" (STORAGE used limit)`` for the session's account (RFC 9208 §4.2.1)."""
    store = session.ctx.store
    user = store.get_user(session.user)
    resources = b""
    if user is not None and user.quota > 0:
        used = store.used_bytes(session.user)
        resources = b"STORAGE %d %d" % (used // 1024, user.quota // 1024)
    return responses.untagged(b"QUOTA " + wire.quoted(QUOTA_ROOT) + b" (" + resources + b")")


def run_getquota(session, command) -> Completion:
    """``GETQUOTA SP quota-root-name``: one QUOTA response (RFC 9208 §4.1.1).

    Raises ParseError (BAD) for bad syntax; MailError ``NO [NONEXISTENT]`` for
    a root other than ``""``.
    """
    args = command.args
    args.expect_sp()
    root = args.astring()
    args.expect_end()
    if root != QUOTA_ROOT:
        raise responses.mail_error("NO", responses.NONEXISTENT, "No such quota root")
    session.send(_quota_response(session))
    return Completion("Getquota completed")


def run_getquotaroot(session, command) -> Completion:
    """``GETQUOTAROOT SP mailbox``: QUOTAROOT, then QUOTA (RFC 9208 §4.1.2).

    The mailbox need not exist (RFC 9208 §4.1.2: the root it would get); it
    is named back as the client's encoding writes it. Raises ParseError
    (BAD) for bad syntax or a badly encoded name.
    """
    args = command.args
    args.expect_sp()
    name = read_mailbox_name(session, args)
    args.expect_end()
    session.send(responses.untagged(b"QUOTAROOT " + encode_name(session, name) + b" "
                                    + wire.quoted(QUOTA_ROOT)))
    session.send(_quota_response(session))
    return Completion("Getquotaroot completed")


def _setquota_resource(args: ArgCursor) -> tuple[bytes, int]:
    """``resource-name SP resource-limit`` (RFC 9208 §7; the limit is a number64)."""
    name = args.atom()
    args.expect_sp()
    digits = args.match(_DIGITS, "a resource limit")
    if len(digits) > 19 or int(digits) > _NUMBER64_MAX:
        raise ParseError("Resource limit out of range")
    return name, int(digits)


def run_setquota(session, command) -> Completion:
    """``SETQUOTA SP quota-root-name SP setquota-list`` (RFC 9208 §4.1.3): always NO.

    Quotas are the administrator's to set; a well-formed command gets
    ``NO [NOPERM]``, a malformed one BAD.
    """
    args = command.args
    args.expect_sp()
    args.astring()
    args.expect_sp()
    args.parenthesized(_setquota_resource)
    args.expect_end()
    raise responses.mail_error("NO", NOPERM, "Quotas are set by the administrator")
