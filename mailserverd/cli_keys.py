"""``mailserverd keys new FILE | rotate --new-key FILE``: the master key of
encryption at rest (:mod:`mailserverd.store.sealing`).

``new`` writes a fresh random key (base64, mode 0400), refusing to replace
a file. ``rotate`` rewraps every user's data key and the outbound queue's
under the key in FILE
(no message is re-encrypted) and leaves pointing ``[encryption]`` at it to
the operator: run it with the daemon stopped, then restart with the new key
(a daemon left running refuses to make new data keys from then on). A
rotation cut short is run again as it was; the old key opens nothing once
it is done.
"""

from __future__ import annotations

import base64
import os


def cmd_keys(args) -> int:
    from mailserverd.cli import CommandError

    if args.action == "new":
        return _new(args.file, CommandError)
    return _rotate(args)


def _new(path: str, error) -> int:
    from mailserverd.store.sealing import new_master_key

    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o400)
    except OSError as exc:
        raise error(f"{path}: {exc.strerror} (an existing key is never replaced)") from None
    with os.fdopen(fd, "wb") as key_file:
        key_file.write(base64.b64encode(new_master_key()) + b"\n")
        key_file.flush()
        os.fsync(key_file.fileno())
    print(f"wrote a new master key to {path} (mode 0400); keep a copy apart from the backups")
    return 0


def _rotate(args) -> int:
    from twisted.internet.defer import inlineCallbacks

    from mailserverd.cli import CommandError, load, with_store
    from mailserverd.store.queuestore import QueueStore
    from mailserverd.service import keyring_of
    from mailserverd.store.sealing import Keyring, MasterKey, MasterKeyError, read_master_key_file

    config = load(args)
    try:
        old = keyring_of(config)
        new = MasterKey(read_master_key_file(args.new_key))
    except MasterKeyError as exc:
        raise CommandError(str(exc)) from None
    if old is None:
        raise CommandError("[encryption] names no master key: this store is not encrypted at rest")

    keyring = Keyring(old.master, rotating_to=new)

    @inlineCallbacks
    def work(store):
        count = yield store.rewrap_data_keys(new)
        queue = QueueStore.open(str(config.server.data_dir), config.limits, keyring=keyring)
        queue.start()
        try:
            count += yield queue.rewrap_data_keys(new)
        finally:
            yield queue.stop()
        print(f"rewrapped {count} data keys in {store.shards} shards and the queue under {args.new_key}; "
              f"now set [encryption] master_key_file = \"{os.path.abspath(args.new_key)}\" and start the daemon")

    return with_store(config, work, keyring=keyring)


def add_parser(sub, common) -> None:
    """Register ``keys new`` and ``keys rotate`` on the CLI's subparsers."""
    p = sub.add_parser("keys", help="the master key of encryption at rest")
    ksub = p.add_subparsers(dest="action", required=True)
    a = ksub.add_parser("new", parents=[common], help="write a new random master key to FILE (mode 0400)")
    a.add_argument("file", metavar="FILE")
    a = ksub.add_parser("rotate", parents=[common],
                        help="rewrap every data key under the master key in FILE (daemon stopped)")
    a.add_argument("--new-key", required=True, metavar="FILE")
    p.set_defaults(func=cmd_keys)
