"""``mailserverd queue list|show ID|flush|retry ID|hold ID|release ID|remove ID``:
the outbound queue, as Postfix's postqueue and postsuper handle it.

``list`` and ``show`` read through the queue store's API from this process
(short LMDB read transactions; the running daemon keeps writing meanwhile).
The other actions write through the store's writer (LMDB serialises them
with the daemon's) and count the change in the store, which the running
scheduler watches: ``flush`` makes every waiting recipient due now,
``retry`` those of one message, ``hold`` keeps a message's recipients from
delivery until ``release``, ``remove`` deletes a message without a report.
``--json`` prints the same facts as one JSON document for scripts.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict

#: What each changing action does, for its readable output.
_DONE = {"flush": "due now", "retry": "due now", "hold": "held", "release": "released",
         "remove": "removed"}


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds)) if seconds else "-"


def _message_doc(message, entries) -> dict:
    return {**asdict(message), "entries": [asdict(entry) for entry in entries]}


def _print_message(message, entries, verbose: bool) -> None:
    sender = message.sender or "MAILER-DAEMON"
    print(f"{message.queue_id}  {message.size:>9}  {_when(message.arrival)}  <{sender}>")
    for entry in entries:
        next_attempt = _when(entry.next_attempt) if entry.state in ("active", "deferred") else "-"
        print(f"    <{entry.recipient}>  {entry.state}  attempts={entry.attempts}  next={next_attempt}")
        if entry.last_reply:
            print(f"        ({entry.last_reply}{' from ' + entry.relay if entry.relay else ''})")
        if verbose:
            print(f"        last attempt {_when(entry.last_attempt)}; notify={','.join(entry.notify) or '-'}"
                  f" orcpt={entry.orcpt or '-'}")


def _wait(deferred):
    """Block until ``deferred`` (fired on the store's writer thread) has a result; return it or raise."""
    done = threading.Event()
    outcome: list = []
    deferred.addBoth(lambda result: outcome.append(result) or done.set())
    done.wait()
    result = outcome[0]
    if hasattr(result, "raiseException"):
        result.raiseException()
    return result


def _change(store, action: str, queue_id: str | None) -> int:
    """Carry out a changing action; returns the number of recipients it changed."""
    now = time.time()
    calls = {"flush": lambda: store.reschedule(None, now), "retry": lambda: store.reschedule(queue_id, now),
             "hold": lambda: store.hold(queue_id), "release": lambda: store.release(queue_id, now),
             "remove": lambda: store.remove(queue_id)}
    store.start()
    try:
        return _wait(calls[action]())
    finally:
        _wait(store.stop())


def cmd_queue(args) -> int:
    from mailserverd.cli import CommandError, load
    from mailserverd.service import keyring_of
    from mailserverd.store.errors import NotFound, StoreError
    from mailserverd.store.lmdbstore import call_directly
    from mailserverd.store.queuestore import QueueStore

    config = load(args)
    try:
        store = QueueStore.open(str(config.server.data_dir), config.limits, fire=call_directly,
                                keyring=keyring_of(config))
    except StoreError as exc:
        raise CommandError(str(exc)) from None
    try:
        if args.action in _DONE:
            queue_id = getattr(args, "queue_id", None)
            queue_id = queue_id.upper() if queue_id else None
            try:
                changed = _change(store, args.action, queue_id)
            except NotFound:
                raise CommandError(f"no queued message {args.queue_id}") from None
            if args.json:
                print(json.dumps({"action": args.action, "queue_id": queue_id, "recipients": changed}))
            else:
                subject = queue_id or "queue"
                print(f"{subject}: {changed} recipient{'' if changed == 1 else 's'} {_DONE[args.action]}")
            return 0
        if args.action == "list":
            listed = store.list_messages()
            if args.json:
                print(json.dumps([_message_doc(m, e) for m, e in listed], indent=2))
            elif not listed:
                print("queue is empty")
            for message, entries in ([] if args.json else listed):
                _print_message(message, entries, verbose=False)
            return 0
        message = store.get_message(args.queue_id.upper())
        if message is None:
            raise CommandError(f"no queued message {args.queue_id}")
        entries = store.entries(message.queue_id)
        if args.json:
            print(json.dumps(_message_doc(message, entries), indent=2))
        else:
            _print_message(message, entries, verbose=True)
            print(f"    envid={message.envid or '-'} ret={message.ret or '-'} body={message.body}"
                  f" smtputf8={'yes' if message.smtputf8 else 'no'}")
        return 0
    finally:
        store.close()


def add_parser(sub, common) -> None:
    """Register the ``queue`` actions on the CLI's subparsers."""
    p = sub.add_parser("queue", help="the outbound queue")
    qsub = p.add_subparsers(dest="action", required=True)
    a = qsub.add_parser("list", parents=[common], help="every queued message and its recipients")
    a.add_argument("--json", action="store_true", help="print JSON")
    a = qsub.add_parser("show", parents=[common], help="one queued message")
    a.add_argument("queue_id", metavar="ID")
    a.add_argument("--json", action="store_true", help="print JSON")
    a = qsub.add_parser("flush", parents=[common], help="try every waiting recipient now")
    a.add_argument("--json", action="store_true", help="print JSON")
    for action, text in (("retry", "try the waiting recipients of one message now"),
                         ("hold", "keep a message from delivery until released"),
                         ("release", "let a held message be delivered again"),
                         ("remove", "delete a message, without a report to its sender")):
        a = qsub.add_parser(action, parents=[common], help=text)
        a.add_argument("queue_id", metavar="ID")
        a.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_queue)

