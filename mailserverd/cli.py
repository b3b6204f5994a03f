"""The ``mailserverd`` command: serve, dev, check-config, domain/user/alias admin
(and, from cli_data.py, backup, restore, fsck, export and import).

Admin commands write through the same store API as the daemon, from their own
process; the running daemon sees the change at its next lookup (every lookup is
a fresh LMDB read), so no restart or reload is needed. Passwords are read from
standard input (``--password-stdin``) or prompted for, never taken from argv.
"""

from __future__ import annotations

import argparse
import getpass
import os
import secrets
import signal
import sys
from pathlib import Path
from typing import Callable

from mailserverd import __version__
from mailserverd.errors import ConfigError

#: The demo account ``mailserverd dev`` creates.
DEV_DOMAIN = "localhost"
DEV_USER = "demo@localhost"


class CommandError(Exception):
    """A failure to report to the person at the terminal (one line, exit status 1)."""


# --------------------------------------------------------------------------- helpers


def load(args) -> "Config":  # noqa: F821 - imported lazily to keep `--help` fast
    """The config a command's ``-c FILE`` names (or the default one). Raises ConfigError."""
    from mailserverd.config import default_config_path, load_config

    return load_config(default_config_path(args.config))


def _read_password(args, prompt: str = "Password: ") -> str:
    """A new password from stdin (first line) or from two matching prompts."""
    if args.password_stdin:
        line = sys.stdin.readline()
        password = line[:-1] if line.endswith("\n") else line
        password = password[:-1] if password.endswith("\r") else password
    else:
        password = getpass.getpass(prompt)
        if password != getpass.getpass("Again: "):
            raise CommandError("passwords do not match")
    if not password:
        raise CommandError("empty password")
    return password


def _credentials(config, password: str):
    from mailserverd.auth.passwords import make_credentials

    return make_credentials(
        password,
        bcrypt_cost=config.limits.bcrypt_cost,
        scram_iterations=config.limits.scram_iterations,
    )


def with_store(config, work: Callable, keyring=None) -> int:
    """Open the store (with ``keyring``, if given, rather than the config's master
    key), run ``work(store)`` (which may return a Deferred), close it.

    Runs a reactor for the store's writer threads; returns the exit status.
    """
    from twisted.internet import defer, task

    from mailserverd.service import open_store
    from mailserverd.store.errors import StoreError

    outcome = {"status": 0}

    @defer.inlineCallbacks
    def main(reactor):
        try:
            store = open_store(config, reactor, keyring)
        except StoreError as exc:
            print(f"mailserverd: {exc}", file=sys.stderr)
            raise SystemExit(1) from None  # task.react exits with this code
        store.start()
        try:
            yield defer.maybeDeferred(work, store)
        except (StoreError, CommandError, ValueError) as exc:
            print(f"mailserverd: {_describe(exc)}", file=sys.stderr)
            outcome["status"] = 1
        finally:
            yield store.stop()
        if outcome["status"]:
            raise SystemExit(outcome["status"])  # task.react exits with this code

    task.react(main, [])  # never returns: it ends the process with main's status
    return outcome["status"]


def _describe(exc: Exception) -> str:
    from mailserverd.store import errors as se

    names = {
        se.AlreadyExists: "already exists",
        se.NotFound: "not found",
        se.NotPermitted: "not permitted",
        se.StoreTemporaryError: "temporary store error",
    }
    for cls, word in names.items():
        if isinstance(exc, cls):
            return f"{word}: {exc}" if str(exc) else word
    return str(exc) or type(exc).__name__


# --------------------------------------------------------------------------- commands


def cmd_check_config(args) -> int:
    config = load(args)
    print(f"{config.path or 'config'}: OK ({len(config.listeners)} listeners)")
    return 0


def cmd_serve(args) -> int:
    config = load(args)
    return run_server(config, log_format=args.log_format)


#: Seconds a thread may hold the GIL while another wants it (see run_server).
REACTOR_SWITCH_INTERVAL = 0.0005


def run_server(config, log_format: str | None = None, on_ready: Callable | None = None) -> int:
    """Serve until SIGINT/SIGTERM; return 0 after a clean stop, 1 if the start failed."""
    from twisted.internet import reactor

    from mailserverd.listeners import ListenerError
    from mailserverd.log import start_logging
    from mailserverd.privileges import PrivilegeError
    from mailserverd.sdnotify import Notifier
    from mailserverd.service import MailServer
    from mailserverd.store.errors import StoreError
    from mailserverd.tls import TLSSetupError

    server = MailServer(config, reactor, Notifier())
    try:
        server.prepare()
    except (StoreError, TLSSetupError, PrivilegeError, ListenerError) as exc:
        print(f"mailserverd: {exc}", file=sys.stderr)
        return 1
    start_logging(config.log.level, log_format or config.log.format)
    status = {"code": 0}

    def failed(failure):
        from twisted.logger import Logger

        log = Logger(namespace="mailserverd.service")
        if failure.check(ListenerError, PrivilegeError):
            log.critical("start-failed: {error}", error=failure.value)
        else:
            log.failure("start failed", failure)
        status["code"] = 1
        reactor.stop()

    def begin():
        d = server.start()
        if on_ready is not None:
            d.addCallback(lambda _: on_ready(server))
        d.addErrback(failed)

    reactor.addSystemEventTrigger("before", "shutdown", server.stop)
    # SIGHUP (systemctl reload) reloads; the handler only queues the work for the reactor.
    signal.signal(signal.SIGHUP, lambda signum, frame: reactor.callFromThread(server.reload))
    reactor.callWhenRunning(begin)
    # The reactor thread gives up the GIL at every socket call; with the store's
    # writer and the check threads busy, CPython's default 5 ms switch interval
    # then leaves it waiting that long to get it back. 0.5 ms measured ~20% more
    # messages/s on bench/smtp_accept.py (2 cores).
    sys.setswitchinterval(REACTOR_SWITCH_INTERVAL)
    reactor.run()
    return status["code"]


def cmd_dev(args) -> int:
    """Set up ./var (config, certificate, demo account) once, then serve in the foreground."""
    from mailserverd.config import load_config, render_dev_config
    from mailserverd.tls import write_self_signed

    var = Path(args.var_dir).resolve()
    (var / "tls").mkdir(parents=True, exist_ok=True)
    (var / "data").mkdir(parents=True, exist_ok=True)
    os.chmod(var, 0o700)
    cert, key = var / "tls" / "cert.pem", var / "tls" / "key.pem"
    if not (cert.exists() and key.exists()):
        write_self_signed(str(cert), str(key), ["localhost", "127.0.0.1"])
    config_path = var / "mailserverd.toml"
    if not config_path.exists():
        config_path.write_text(render_dev_config(var))
    password_file = var / "demo-password"
    if not password_file.exists():
        fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(12) + "\n")
    password = password_file.read_text().strip()
    config = load_config(config_path)

    def ensure_demo(server):
        from twisted.internet import defer

        store = server.store

        @defer.inlineCallbacks
        def work():
            if store.get_domain(DEV_DOMAIN) is None:
                yield store.add_domain(DEV_DOMAIN)
            if store.get_user(DEV_USER) is None:
                yield store.add_user(DEV_USER, _credentials(config, password))
            print(f"demo account: {DEV_USER} password: {password}", flush=True)
            print(
                "listening on 127.0.0.1: " + ", ".join(f"{l.kind} {l.port}" for l in config.listeners)
                + " (Ctrl-C stops)",
                flush=True,
            )

        return work()

    return run_server(config, log_format=args.log_format, on_ready=ensure_demo)


def cmd_domain(args) -> int:
    config = load(args)

    def work(store):
        if args.action == "add":
            return store.add_domain(args.name.lower()).addCallback(lambda _: print(f"added {args.name}"))
        if args.action == "remove":
            return store.remove_domain(args.name.lower()).addCallback(lambda _: print(f"removed {args.name}"))
        for domain in store.list_domains():
            print(domain.name)
        return None

    return with_store(config, work)


def cmd_user(args) -> int:
    from mailserverd.mail.address import canonical, parse_address

    config = load(args)
    password = _read_password(args) if args.action in ("add", "passwd") else None

    def work(store):
        if args.action == "add":
            quota = config.limits.quota_default if args.quota is None else args.quota
            address = canonical(parse_address(args.address))
            d = store.add_user(address, _credentials(config, password), quota)
            return d.addCallback(lambda user: print(f"added {user.address} (shard {user.shard})"))
        if args.action == "passwd":
            d = store.set_credentials(canonical(args.address), _credentials(config, password))
            return d.addCallback(lambda _: print(f"password changed for {args.address}"))
        if args.action == "remove":
            d = store.remove_user(canonical(args.address))
            return d.addCallback(lambda _: print(f"removed {args.address}"))
        for user in store.list_users(args.domain):
            quota = "unlimited" if not user.quota else f"{user.quota} bytes"
            print(f"{user.address}\tshard={user.shard}\tquota={quota}")
        return None

    return with_store(config, work)


def cmd_alias(args) -> int:
    config = load(args)

    def work(store):
        if args.action == "add":
            d = store.add_alias(args.address.lower(), [t.lower() for t in args.targets])
            return d.addCallback(lambda a: print(f"added {a.address} -> {', '.join(a.targets)}"))
        if args.action == "remove":
            return store.remove_alias(args.address.lower()).addCallback(
                lambda _: print(f"removed {args.address}")
            )
        for alias in store.list_aliases(args.domain):
            print(f"{alias.address}\t{', '.join(alias.targets)}")
        return None

    return with_store(config, work)


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-c", "--config", metavar="FILE",
        help="config file (default: $MAILSERVERD_CONFIG, then /etc/mailserverd/mailserverd.toml)",
    )
    parser = argparse.ArgumentParser(prog="mailserverd", description="SMTP, IMAP4 and POP3 mail server")
    parser.add_argument("--version", action="version", version=f"mailserverd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", parents=[common], help="run the server in the foreground")
    p.add_argument("--log-format", choices=("text", "json"), default=None)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("dev", help="set up ./var with a demo account and serve on unprivileged ports")
    p.add_argument("--var-dir", default="var", metavar="DIR")
    p.add_argument("--log-format", choices=("text", "json"), default=None)
    p.set_defaults(func=cmd_dev)

    p = sub.add_parser("check-config", parents=[common], help="validate the config file")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("domain", help="local domains")
    dsub = p.add_subparsers(dest="action", required=True)
    for action in ("add", "remove"):
        a = dsub.add_parser(action, parents=[common])
        a.add_argument("name")
    a = dsub.add_parser("list", parents=[common])
    p.set_defaults(func=cmd_domain)

    p = sub.add_parser("user", help="accounts")
    usub = p.add_subparsers(dest="action", required=True)
    for action in ("add", "passwd"):
        a = usub.add_parser(action, parents=[common])
        a.add_argument("address")
        a.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
        if action == "add":
            a.add_argument("--quota", type=int, default=None, metavar="BYTES", help="0 = unlimited")
    a = usub.add_parser("remove", parents=[common])
    a.add_argument("address")
    a = usub.add_parser("list", parents=[common])
    a.add_argument("domain", nargs="?")
    p.set_defaults(func=cmd_user)

    p = sub.add_parser("alias", help="aliases and catch-alls (@domain)")
    asub = p.add_subparsers(dest="action", required=True)
    a = asub.add_parser("add", parents=[common])
    a.add_argument("address", help="alias address, or @domain for a catch-all")
    a.add_argument("targets", nargs="+")
    a = asub.add_parser("remove", parents=[common])
    a.add_argument("address")
    a = asub.add_parser("list", parents=[common])
    a.add_argument("domain", nargs="?")
    p.set_defaults(func=cmd_alias)

    from mailserverd.cli_data import add_parsers  # backup, restore, fsck, export, import

    add_parsers(sub, common)
    from mailserverd.cli_queue import add_parser as add_queue_parser  # queue list, show

    add_queue_parser(sub, common)
    from mailserverd.cli_dkim import add_parser as add_dkim_parser  # dkim generate, list

    add_dkim_parser(sub, common)
    from mailserverd.cli_token import add_parser as add_token_parser  # token create, list, revoke

    add_token_parser(sub, common)
    from mailserverd.cli_spam import add_parser as add_spam_parser  # spam train, stats

    add_spam_parser(sub, common)
    from mailserverd.cli_index import add_parser as add_index_parser  # index status, rebuild

    add_index_parser(sub, common)
    from mailserverd.cli_keys import add_parser as add_keys_parser  # keys new, rotate

    add_keys_parser(sub, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        where = exc.path or "config"
        for problem in exc.problems:
            print(f"{where}: {problem}", file=sys.stderr)
        return 1
    except CommandError as exc:
        print(f"mailserverd: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
