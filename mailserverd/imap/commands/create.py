"""CREATE (RFC 3501 §6.3.3, RFC 9051 §6.3.4) with CREATE-SPECIAL-USE (RFC 6154 §3).

``CREATE SP mailbox [SP "(" create-param *(SP create-param) ")"]`` (RFC 4466
§2.2); the one parameter known is ``USE (attr ...)`` of RFC 6154 §3.
"""

from __future__ import annotations

import re

from mailserverd.errors import MailError
from mailserverd.imap.commands.imap4rev2 import check_net_unicode, oldname_list_response
from mailserverd.imap.commands.mailbox_names import read_mailbox_name_as_sent
from mailserverd.imap.objectid import mailbox_objectid
from mailserverd.imap.parser import ArgCursor, ParseError
from mailserverd.imap.responses import Completion

__all__ = ["run", "SPECIAL_USE_ATTRIBUTES"]

#: RFC 6154 §2: the special-use attributes, by lower-case name (attributes are
#: case-insensitive, RFC 9051 §7.3.1), in their registered spelling.
SPECIAL_USE_ATTRIBUTES = {attr.lower(): attr for attr in (
    "\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash")}

# RFC 6154 §6: use-attr is a flag-like atom: "\" atom.
_USE_ATTR = re.compile(rb'\\[^\x00-\x20\x7f-\xff(){%*"\\\]]+')

#: RFC 6154 §3 USEATTR response code: the special use cannot be given.
USEATTR = "USEATTR"


def _use_attr(args: ArgCursor) -> str:
    return args.match(_USE_ATTR, "a special-use attribute").decode("ascii")


def read_create_params(args: ArgCursor) -> list[str]:
    """Read the optional create-params; return the USE attributes given (may be empty).

    Raises ParseError (BAD) for bad syntax or a parameter other than USE
    (RFC 4466 §2.2: unknown parameters are refused).
    """
    if args.at_end():
        return []
    args.expect_sp()
    args.expect_byte(b"(", "'('")
    uses: list[str] = []
    while True:
        param = args.atom().upper()
        if param != b"USE":
            raise ParseError("Unknown CREATE parameter")
        args.expect_sp()
        uses.extend(args.parenthesized(_use_attr))
        if args.skip_byte(b")"):
            return uses
        args.expect_sp()


def special_use_of(uses: list[str]) -> str | None:
    """The one special-use attribute to give the new mailbox, or None.

    Raises MailError ``NO [USEATTR]`` for an unknown attribute or more than
    one (the store keeps one per mailbox; RFC 6154 §3 says NO, with USEATTR).
    """
    known = []
    for attr in uses:
        canonical = SPECIAL_USE_ATTRIBUTES.get(attr.lower())
        if canonical is None:
            raise MailError("NO", USEATTR, "Unsupported special-use attribute")
        known.append(canonical)
    known = list(dict.fromkeys(known))
    if len(known) > 1:
        raise MailError("NO", USEATTR, "Only one special-use attribute per mailbox")
    return known[0] if known else None


def run(session, command):
    """Create the mailbox (and its missing superiors, RFC 9051 §6.3.4).

    Returns a Deferred that fires with the OK after the durable commit.
    Store errors: AlreadyExists -> ``NO [ALREADYEXISTS]`` (also for INBOX),
    InvalidName -> ``NO [CANNOT]``, LimitExceeded -> ``NO [LIMIT]``.
    In a UTF-8 session a name that is not NFC is created in NFC and an
    untagged LIST with OLDNAME says so (RFC 9051 §6.3.4, §6.3.9.7). A name
    that is not Net-Unicode (control characters) is ``NO [CANNOT]``
    (RFC 9051 §5.1, RFC 6855 §3).
    """
    args = command.args
    args.expect_sp()
    name, supplied = read_mailbox_name_as_sent(session, args)
    special_use = special_use_of(read_create_params(args))
    args.expect_end()
    check_net_unicode(name)

    def created(info):
        announcement = oldname_list_response(session, info.name, supplied)
        if announcement:
            session.send(announcement)
        return Completion("CREATE completed",  # RFC 8474 §4.1
                          "MAILBOXID (" + mailbox_objectid(info).decode("ascii") + ")")

    return session.ctx.store.create_mailbox(session.user, name, special_use).addCallback(created)
