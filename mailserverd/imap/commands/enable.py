"""ENABLE (RFC 5161; RFC 9051 §6.3.1): the client turns on extensions that
change how the server answers.

The enabled set lives in ``session.enabled`` (upper-case names), where the
commands that behave differently look (CONDSTORE's MODSEQ, QRESYNC's
VANISHED, IMAP4rev2 and UTF8=ACCEPT's UTF-8 mailbox names). Only an extension
that is both enable-able and in the session's CAPABILITY list is enabled, so
an extension the server does not announce yet can never be switched on.
"""

from __future__ import annotations

from mailserverd.imap import responses
from mailserverd.imap.parser import ArgCursor
from mailserverd.imap.responses import Completion

#: Enable-able extensions (upper-case) -> how the ENABLED response names them:
#: RFC 7162 §3.1 / §3.2.3 (QRESYNC also turns on CONDSTORE, which
#: expunge.extension_enabled accounts for), RFC 9051 §6.3.1, RFC 6855 §3.
ENABLEABLE = {
    "CONDSTORE": "CONDSTORE",
    "QRESYNC": "QRESYNC",
    "IMAP4REV2": "IMAP4rev2",
    "UTF8=ACCEPT": "UTF8=ACCEPT",
}


def run(session, command) -> Completion:
    """``ENABLE 1*(SP capability)`` (RFC 5161 §4).

    Sends ``* ENABLED`` with the extensions this command newly enabled
    (possibly none, RFC 5161 §3.2); unknown or unannounced names are ignored
    (RFC 5161 §3.1). Raises ParseError for a missing or malformed name.
    """
    names = _read_capabilities(command.args)
    announced = {capability.upper() for capability in session.capabilities()}
    newly: list[str] = []
    for name in names:
        if name in ENABLEABLE and name in announced and name not in session.enabled \
                and name not in newly:
            newly.append(name)
    session.enabled.update(newly)
    listing = "".join(" " + ENABLEABLE[name] for name in newly)
    session.send(responses.untagged(b"ENABLED" + listing.encode("ascii")))
    return Completion("Enabled")


def _read_capabilities(args: ArgCursor) -> list[str]:
    """One or more ``SP atom``, upper-cased (RFC 5161 §4: capability is an atom)."""
    names = []
    while True:
        args.expect_sp()
        names.append(args.atom().decode("ascii").upper())
        if args.at_end():
            return names
