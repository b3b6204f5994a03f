"""What the protocol-session fakes share: a fake authenticator and the ServerContext around the fakes."""

from __future__ import annotations

from types import SimpleNamespace

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from mailserverd.auth.accounts import AuthFailed
from mailserverd.auth.passwords import derive_scram_secrets
from mailserverd.context import ServerContext
from mailserverd.limits import Limits
from mailserverd.store.types import ScramSecrets

HOSTNAME = "mail.example.test"
SCRAM_SALT = b"session test salt"
SCRAM_ITERATIONS = 4096


class FakeAuthenticator:
    """Passwords in a dict, with the Authenticator methods SASL uses (SCRAM secrets are
    derived from the same passwords). ``hold`` makes authenticate return unfired
    Deferreds (in ``held``; :meth:`release` fires them); ``error`` fails authenticate
    and check_throttle with it."""

    def __init__(self, passwords: dict[str, str]):
        self.passwords = passwords
        self.calls: list[tuple] = []
        self.hold = False
        self.held: list[Deferred] = []
        self.error: Exception | None = None

    def authenticate(self, address, password, client_ip, *, mechanism="LOGIN", protocol=""):
        self.calls.append((address, password, client_ip, mechanism))
        if self.error is not None:
            result = fail(self.error)
        elif self.passwords.get(address.lower()) == password:
            result = succeed(address.lower())
        else:
            result = fail(AuthFailed("bad"))
        if self.hold:
            d = Deferred()
            self.held.append((d, result))
            return d
        return result

    def release(self):
        """Fire every held authentication with its real outcome."""
        for d, result in self.held:
            result.chainDeferred(d)
        self.held.clear()

    def login_key(self, name: str) -> str:
        return name.lower()

    def check_throttle(self, address, client_ip, *, mechanism, protocol=""):
        if self.error is not None:
            return fail(self.error)
        return succeed(self.login_key(address))

    def scram_lookup(self, address):
        password = self.passwords.get(self.login_key(address))
        if password is None:
            return None
        return derive_scram_secrets(password, SCRAM_SALT, SCRAM_ITERATIONS)

    def scram_decoy(self, address):
        return ScramSecrets(SCRAM_SALT, SCRAM_ITERATIONS, b"\1" * 32, b"\2" * 32)

    def record_result(self, address, client_ip, *, succeeded, mechanism, protocol=""):
        self.calls.append((address, None, client_ip, mechanism))
        return succeed(self.login_key(address)) if succeeded else fail(AuthFailed("bad"))


def make_context(store, authenticator, allow_plaintext: bool = False, **limits) -> ServerContext:
    """A ServerContext for a sans-I/O session: the given fakes, a Clock, named limits."""
    config = SimpleNamespace(
        server=SimpleNamespace(hostname=HOSTNAME),
        auth=SimpleNamespace(allow_plaintext=allow_plaintext),
        limits=Limits(**limits),
    )
    return ServerContext(
        config=config,
        store=store,
        authenticator=authenticator,
        delivery=None,
        tls=SimpleNamespace(server_creator=lambda: "tls-creator"),
        clock=Clock(),
    )
