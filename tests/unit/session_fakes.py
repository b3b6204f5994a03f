"""What the protocol-session fakes share: a ServerContext around a fake store and authenticator."""

from __future__ import annotations

from types import SimpleNamespace

from twisted.internet.task import Clock

from mailserverd.context import ServerContext
from mailserverd.limits import Limits

HOSTNAME = "mail.example.test"


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
