"""THREAD and UID THREAD (RFC 5256 §3): ORDEREDSUBJECT and REFERENCES.

``THREAD algorithm charset search-key...``: the messages the search program
finds, threaded by :mod:`mailserverd.imap.threading`, in one ``* THREAD``
response.
"""

from __future__ import annotations

from mailserverd.imap import responses
from mailserverd.imap.commands.sort import read_search_criteria, searched_messages
from mailserverd.imap.responses import Completion
from mailserverd.imap.threading import ALGORITHMS, format_threads

__all__ = ["run", "THREAD_CAPABILITIES"]

#: The capabilities this command completes (RFC 5256 §1): THREAD=ORDEREDSUBJECT, THREAD=REFERENCES.
THREAD_CAPABILITIES = tuple(f"THREAD={name}" for name in ALGORITHMS)


def run(session, command):
    """``[UID] THREAD SP thread-alg SP search-criteria``: one ``* THREAD`` response
    (a Deferred: the search and the threading run off the reactor).

    An algorithm we do not implement is a valid atom we cannot use: NO
    (RFC 5256 §3 "can't thread that ... criteria"). Raises ParseError (BAD),
    MailError (NO) or a store error.
    """
    args = command.args
    args.expect_sp()
    name = args.atom().decode("ascii", "replace").upper()
    algorithm = ALGORITHMS.get(name)
    if algorithm is None:
        raise responses.mail_error("NO", None, "Unsupported threading algorithm")
    args.expect_sp()
    key = read_search_criteria(args)
    threaded = searched_messages(session, command, key, algorithm)
    return threaded.addCallback(lambda threads: _answer(session, threads))


def _answer(session, threads) -> Completion:
    session.send(responses.untagged(format_threads(threads)))
    return Completion("Thread completed")
