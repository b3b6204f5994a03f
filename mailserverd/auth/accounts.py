"""Account authentication: password checks off the reactor, throttling, failure delay, logging.

One :class:`Authenticator` serves every protocol (SMTP AUTH, IMAP LOGIN and
AUTHENTICATE, POP3 USER/PASS and AUTH). It answers a wrong user and a wrong
password with the same error after the same work (a bcrypt against a dummy
hash for an unknown user), so that logins cannot be used to find accounts.
"""

from __future__ import annotations

import hmac
import os
import threading
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorFromThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from mailserverd.auth.passwords import check_password, make_credentials
from mailserverd.auth.throttle import LoginThrottle
from mailserverd.mail.address import AddressError, canonical, parse_address
from mailserverd.metrics import Metrics
from mailserverd.store.errors import StoreError
from mailserverd.store.types import Credentials, ScramSecrets

#: A login name that is not an address is cut to this many characters before use as a key.
LOGIN_NAME_MAX = 255
#: Name of the bcrypt thread pool (shows in thread names and debuggers).
POOL_NAME = "mailserverd-auth"
#: Password of the dummy hash checked for unknown users; its value never matters.
_DUMMY_PASSWORD = "mailserverd dummy password for timing equality"


class AuthError(Exception):
    """Base of login failures; ``result`` is the word logged for it."""

    result = "error"


class AuthFailed(AuthError):
    """Wrong user or wrong password (indistinguishable on purpose)."""

    result = "failed"


class AuthThrottled(AuthError):
    """Too many recent failures from this IP or for this account; try later."""

    result = "throttled"


class AuthUnavailable(AuthError):
    """Passwords cannot be checked now (pool queue full, store error); a temporary failure."""

    result = "unavailable"


class Authenticator:
    """Checks logins against the directory.

    ``directory`` is a :class:`~mailserverd.store.interface.Directory` (only
    ``get_user`` is used); ``limits`` a :class:`~mailserverd.limits.Limits`
    (auth_* limits, bcrypt_cost, scram_iterations); ``clock`` provides
    ``seconds()``/``callLater`` for throttling and the failure delay;
    ``reactor`` runs thread results back on the reactor thread (the global
    reactor if ``None``); ``metrics`` (:class:`~mailserverd.metrics.Metrics`)
    counts each login. Call :meth:`start` before use and :meth:`stop` at
    shutdown (it joins the threads).
    """

    _log = Logger()

    def __init__(self, directory: Any, limits: Any, clock: IReactorTime,
                 reactor: IReactorFromThreads | None = None, metrics: Metrics | None = None):
        self._directory = directory
        self._metrics = metrics if metrics is not None else Metrics()
        self._limits = limits
        self._clock = clock
        self._reactor = reactor
        self.throttle = LoginThrottle(
            clock,
            limits.auth_failures_per_ip,
            limits.auth_failures_per_account,
            limits.auth_failure_window,
        )
        self._pool = ThreadPool(minthreads=0, maxthreads=limits.auth_pool_threads, name=POOL_NAME)
        self._in_flight = 0  # password checks submitted and not finished
        self._dummy_credentials: Credentials | None = None
        self._dummy_lock = threading.Lock()
        self._decoy_key = os.urandom(32)

    # -- lifecycle

    def start(self) -> None:
        """Start the bcrypt pool and make the dummy hash in it (not on the reactor)."""
        self._pool.start()
        self._pool.callInThread(self._get_dummy_credentials)

    def stop(self) -> None:
        """Stop the pool, waiting for running checks to end. Blocking; call at shutdown."""
        self._pool.stop()

    # -- logins

    def login_key(self, name: str) -> str:
        """The directory key a login name stands for.

        The canonical address if ``name`` parses as one
        (:func:`~mailserverd.mail.address.canonical`); otherwise the name
        lower-cased and cut to :data:`LOGIN_NAME_MAX` characters, which the
        directory then simply does not know. Never raises.
        """
        try:
            return canonical(parse_address(name))
        except AddressError:
            return name[:LOGIN_NAME_MAX].lower()

    def authenticate(self, address: str, password: str, client_ip: str, *,
                     mechanism: str = "LOGIN", protocol: str = "") -> defer.Deferred[str]:
        """Check ``password`` for ``address`` (any case; parsed here).

        Fires with the canonical user address. Fails with :class:`AuthFailed`
        (unknown user or wrong password, after ``auth_failure_delay``),
        :class:`AuthThrottled` (after the same delay; no password is checked),
        or :class:`AuthUnavailable` (at once: too many checks waiting, or the
        store failed). ``mechanism`` (``LOGIN`` for IMAP LOGIN, ``USER`` for
        POP3, SASL mechanism names otherwise) and ``protocol`` (smtp, imap,
        pop3) are only logged and counted. Side effects: a ``login`` log
        event and metric, throttle counters updated.
        """
        key = self.login_key(address)
        if self.throttle.is_blocked(client_ip, key):
            self._log_login(key, client_ip, mechanism, AuthThrottled.result, protocol)
            return self._fail_later(AuthThrottled("too many failed logins; try later"))
        if self._in_flight >= self._limits.auth_pool_threads + self._limits.auth_pool_queue_max:
            self._log_login(key, client_ip, mechanism, AuthUnavailable.result, protocol)
            return defer.fail(AuthUnavailable("authentication service busy"))
        try:
            user = self._directory.get_user(key)
        except StoreError as error:
            self._log.failure("user lookup failed for {user!r}", user=key)
            self._log_login(key, client_ip, mechanism, AuthUnavailable.result, protocol)
            return defer.fail(AuthUnavailable(f"directory error: {type(error).__name__}"))
        credentials = user.credentials if user is not None else None
        self._in_flight += 1
        checked = deferToThreadPool(self._get_reactor(), self._pool,
                                    self._check_in_thread, credentials, password)

        def finished(result: object) -> object:
            self._in_flight -= 1
            return result

        checked.addBoth(finished)
        checked.addCallback(
            lambda matched: self.record_result(key, client_ip, succeeded=matched, mechanism=mechanism,
                                               protocol=protocol)
        )
        return checked

    def check_throttle(self, address: str, client_ip: str, *, mechanism: str,
                       protocol: str = "") -> defer.Deferred[str]:
        """For mechanisms that verify proofs themselves (SCRAM): may this exchange go on?

        Fires at once with the login key of ``address`` if neither the IP nor
        the account is throttled; otherwise logs and fails with
        :class:`AuthThrottled` after ``auth_failure_delay``.
        """
        key = self.login_key(address)
        if self.throttle.is_blocked(client_ip, key):
            self._log_login(key, client_ip, mechanism, AuthThrottled.result, protocol)
            return self._fail_later(AuthThrottled("too many failed logins; try later"))
        return defer.succeed(key)

    def record_result(self, address: str, client_ip: str, *, succeeded: bool,
                      mechanism: str, protocol: str = "") -> defer.Deferred[str]:
        """Account for a finished login: log it, update the throttle, answer it.

        Fires with the canonical user address on success; fails with
        :class:`AuthFailed` after ``auth_failure_delay`` otherwise.
        """
        key = self.login_key(address)
        if succeeded:
            self.throttle.record_success(client_ip, key)
            self._log_login(key, client_ip, mechanism, "ok", protocol)
            return defer.succeed(key)
        self.throttle.record_failure(client_ip, key)
        self._log_login(key, client_ip, mechanism, AuthFailed.result, protocol)
        return self._fail_later(AuthFailed("invalid credentials"))

    # -- SCRAM

    def scram_lookup(self, address: str) -> ScramSecrets | None:
        """The SCRAM-SHA-256 secrets of the user ``address`` names, or ``None``.

        A synchronous directory read. Store errors propagate.
        """
        user = self._directory.get_user(self.login_key(address))
        return user.credentials.scram_sha256 if user is not None else None

    def scram_decoy(self, address: str) -> ScramSecrets:
        """Made-up SCRAM secrets for an unknown user, so the exchange looks like a real one.

        The salt is stable for a name within this process (a client asking
        twice sees the same salt, as for a real account, RFC 5802 §9); the
        keys match no password.
        """
        key = self.login_key(address).encode("utf-8")
        return ScramSecrets(
            salt=hmac.digest(self._decoy_key, b"salt\0" + key, "sha256")[:16],
            iterations=self._limits.scram_iterations,
            stored_key=hmac.digest(self._decoy_key, b"stored\0" + key, "sha256"),
            server_key=hmac.digest(self._decoy_key, b"server\0" + key, "sha256"),
        )

    # -- internals

    def _check_in_thread(self, credentials: Credentials | None, password: str) -> bool:
        """Runs in the pool: one bcrypt, against the dummy hash for an unknown user."""
        if credentials is None:
            check_password(self._get_dummy_credentials(), password)
            return False
        return check_password(credentials, password)

    def _get_dummy_credentials(self) -> Credentials:
        """The dummy hash at the configured cost; made once, in a pool thread."""
        with self._dummy_lock:
            if self._dummy_credentials is None:
                self._dummy_credentials = make_credentials(
                    _DUMMY_PASSWORD,
                    bcrypt_cost=self._limits.bcrypt_cost,
                    scram_iterations=self._limits.scram_iterations,
                )
            return self._dummy_credentials

    def _fail_later(self, error: AuthError) -> defer.Deferred[str]:
        """A Deferred that fails with ``error`` after ``auth_failure_delay`` seconds."""
        delayed: defer.Deferred[str] = defer.Deferred()
        self._clock.callLater(self._limits.auth_failure_delay, delayed.errback, error)
        return delayed

    def _get_reactor(self) -> IReactorFromThreads:
        if self._reactor is None:
            from twisted.internet import reactor

            self._reactor = reactor
        return self._reactor

    def _log_login(self, user: str, ip: str, mechanism: str, result: str, protocol: str) -> None:
        """One ``login`` event and metric; never carries the password."""
        self._metrics.login(protocol, mechanism, result)
        self._log.info(
            "login user={user!r} ip={ip} mechanism={mechanism} result={result} protocol={protocol}",
            event="login", protocol=protocol or "-", user=user, ip=ip, mechanism=mechanism,
            result=result,
        )
