"""LoginThrottle (with Clock) and Authenticator (bcrypt in its real thread pool)."""

import threading
import time

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import Clock, deferLater
from twisted.logger import globalLogPublisher

from mailserverd.auth import accounts
from mailserverd.auth.accounts import (
    POOL_NAME,
    AuthFailed,
    Authenticator,
    AuthThrottled,
    AuthUnavailable,
)
from mailserverd.auth.passwords import check_password, make_credentials
from mailserverd.auth.throttle import LoginThrottle
from mailserverd.limits import Limits
from mailserverd.metrics import Metrics
from mailserverd.store.types import User

PASSWORD = "s3cret-Passw0rd"


class InMemoryDirectory:
    """The one Directory method the Authenticator uses, over a dict of users."""

    def __init__(self, *users: User):
        self.users = {user.address: user for user in users}
        self.lookups: list[str] = []

    def get_user(self, address: str) -> User | None:
        self.lookups.append(address)
        return self.users.get(address)


def make_user(address: str, password: str) -> User:
    credentials = make_credentials(password, bcrypt_cost=4, scram_iterations=4096)
    return User(address=address, user_id=1, shard=0, credentials=credentials, quota=0, created=0)


def make_limits(**overrides) -> Limits:
    values = {"bcrypt_cost": 4, "scram_iterations": 4096, "auth_failure_delay": 0}
    values.update(overrides)
    return Limits(**values)


@pytest.fixture
def started():
    """Start Authenticators built in a test; stop them (joining their threads) afterwards."""
    running: list[Authenticator] = []

    def start(directory, limits, clock=reactor, metrics=None) -> Authenticator:
        authenticator = Authenticator(directory, limits, clock, reactor, metrics=metrics)
        authenticator.start()
        running.append(authenticator)
        return authenticator

    yield start
    for authenticator in running:
        authenticator.stop()


@pytest.fixture
def login_events():
    events: list[dict] = []
    observer = events.append
    globalLogPublisher.addObserver(observer)
    yield events
    globalLogPublisher.removeObserver(observer)


def wait_until(condition, deadline_seconds=30.0):
    """Poll ``condition`` on the running reactor until true or the deadline passes."""

    @pytest_twisted.inlineCallbacks
    def poll():
        deadline = time.monotonic() + deadline_seconds
        while not condition():
            assert time.monotonic() < deadline, "condition not reached before the deadline"
            yield deferLater(reactor, 0.01, lambda: None)

    return poll()


# ---------------------------------------------------------------- LoginThrottle


def test_ip_blocked_after_its_limit_within_the_window():
    clock = Clock()
    throttle = LoginThrottle(clock, failures_per_ip=3, failures_per_account=100, window=60)
    for n in range(3):
        assert not throttle.is_blocked("192.0.2.1", f"user{n}@example.com")
        throttle.record_failure("192.0.2.1", f"user{n}@example.com")
    assert throttle.is_blocked("192.0.2.1", "anyone@example.com")
    assert not throttle.is_blocked("192.0.2.2", "anyone@example.com")


def test_account_blocked_from_every_ip():
    clock = Clock()
    throttle = LoginThrottle(clock, failures_per_ip=100, failures_per_account=2, window=60)
    throttle.record_failure("192.0.2.1", "a@example.com")
    throttle.record_failure("192.0.2.2", "a@example.com")
    assert throttle.is_blocked("198.51.100.7", "a@example.com")
    assert not throttle.is_blocked("198.51.100.7", "b@example.com")


def test_window_slides():
    clock = Clock()
    throttle = LoginThrottle(clock, failures_per_ip=2, failures_per_account=100, window=60)
    throttle.record_failure("192.0.2.1", "a@example.com")
    clock.advance(30)
    throttle.record_failure("192.0.2.1", "b@example.com")
    assert throttle.is_blocked("192.0.2.1", "c@example.com")
    clock.advance(30)  # the first failure is now 60 s old: out of the window
    assert not throttle.is_blocked("192.0.2.1", "c@example.com")
    assert throttle.tracked_keys() == 2  # the IP and account b; account a is forgotten
    clock.advance(30)
    assert throttle.tracked_keys() == 0


def test_success_clears_the_account_not_the_ip():
    clock = Clock()
    throttle = LoginThrottle(clock, failures_per_ip=2, failures_per_account=2, window=60)
    throttle.record_failure("192.0.2.1", "a@example.com")
    throttle.record_failure("192.0.2.1", "a@example.com")
    throttle.record_success("192.0.2.1", "a@example.com")
    assert not throttle.is_blocked("192.0.2.9", "a@example.com")
    assert throttle.is_blocked("192.0.2.1", "b@example.com")


def test_tracked_keys_are_bounded_oldest_dropped():
    clock = Clock()
    throttle = LoginThrottle(clock, failures_per_ip=1, failures_per_account=100, window=60,
                             max_tracked_keys=10)
    for n in range(20):
        throttle.record_failure(f"10.0.0.{n}", "victim@example.com")
    assert throttle.tracked_keys() == 10
    assert throttle.is_blocked("10.0.0.19", "x@example.com")
    assert not throttle.is_blocked("10.0.0.0", "x@example.com")


# ---------------------------------------------------------------- Authenticator


@pytest_twisted.inlineCallbacks
def test_right_password_gives_the_canonical_address(started, monkeypatch):
    checked_in: list[str] = []

    def spy(credentials, password):
        checked_in.append(threading.current_thread().name)
        return check_password(credentials, password)

    monkeypatch.setattr(accounts, "check_password", spy)
    auth = started(InMemoryDirectory(make_user("alice@example.com", PASSWORD)), make_limits())
    user = yield auth.authenticate("Alice@EXAMPLE.com", PASSWORD, "192.0.2.1")
    assert user == "alice@example.com"
    assert checked_in and all(POOL_NAME in name for name in checked_in)
    assert threading.current_thread() is threading.main_thread()


@pytest_twisted.inlineCallbacks
def test_each_login_is_counted_by_protocol_mechanism_and_result(started):
    metrics = Metrics()
    auth = started(InMemoryDirectory(make_user("alice@example.com", PASSWORD)), make_limits(),
                   metrics=metrics)
    yield auth.authenticate("alice@example.com", PASSWORD, "192.0.2.1", protocol="imap")
    for address in ("alice@example.com", "nobody@example.com"):
        with pytest.raises(AuthFailed):
            yield auth.authenticate(address, "wrong", "192.0.2.1", mechanism="PLAIN", protocol="smtp")

    def count(protocol, mechanism, result):
        return metrics.registry.get_sample_value(
            "mailserverd_logins_total", {"protocol": protocol, "mechanism": mechanism, "result": result})

    assert count("imap", "LOGIN", "ok") == 1
    assert count("smtp", "PLAIN", "failed") == 2
    assert count("smtp", "PLAIN", "ok") is None


@pytest_twisted.inlineCallbacks
def test_wrong_password_and_unknown_user_fail_alike(started):
    directory = InMemoryDirectory(make_user("alice@example.com", PASSWORD))
    auth = started(directory, make_limits())
    errors = []
    for address, password in (("alice@example.com", "wrong"), ("nobody@example.com", PASSWORD),
                              ("not an address", PASSWORD)):
        with pytest.raises(AuthFailed) as caught:
            yield auth.authenticate(address, password, "192.0.2.1")
        errors.append(str(caught.value))
    assert len(set(errors)) == 1
    assert directory.lookups == ["alice@example.com", "nobody@example.com", "not an address"]


@pytest_twisted.inlineCallbacks
def test_unknown_user_still_costs_one_bcrypt(started, monkeypatch):
    checked: list[bytes] = []

    def spy(credentials, password):
        checked.append(credentials.bcrypt_hash)
        return check_password(credentials, password)

    monkeypatch.setattr(accounts, "check_password", spy)
    auth = started(InMemoryDirectory(), make_limits())
    with pytest.raises(AuthFailed):
        yield auth.authenticate("nobody@example.com", PASSWORD, "192.0.2.1")
    assert len(checked) == 1 and checked[0].startswith(b"$2b$04$")


@pytest_twisted.inlineCallbacks
def test_throttled_after_the_limit_without_checking(started, monkeypatch):
    auth = started(InMemoryDirectory(make_user("alice@example.com", PASSWORD)),
                   make_limits(auth_failures_per_account=3))
    for _ in range(3):
        with pytest.raises(AuthFailed):
            yield auth.authenticate("alice@example.com", "guess", "192.0.2.1")
    calls = []
    monkeypatch.setattr(accounts, "check_password", lambda *args: calls.append(args))
    with pytest.raises(AuthThrottled):
        yield auth.authenticate("alice@example.com", PASSWORD, "198.51.100.1")
    assert calls == []


@pytest_twisted.inlineCallbacks
def test_full_queue_is_refused_at_once(started):
    auth = started(InMemoryDirectory(make_user("alice@example.com", PASSWORD)),
                   make_limits(auth_pool_threads=1, auth_pool_queue_max=1))
    first = auth.authenticate("alice@example.com", PASSWORD, "192.0.2.1")
    second = auth.authenticate("alice@example.com", PASSWORD, "192.0.2.2")
    third = auth.authenticate("alice@example.com", PASSWORD, "192.0.2.3")
    with pytest.raises(AuthUnavailable):
        yield third
    assert (yield first) == "alice@example.com"
    assert (yield second) == "alice@example.com"
    # Capacity is back once the checks have finished.
    assert (yield auth.authenticate("alice@example.com", PASSWORD, "192.0.2.4")) == "alice@example.com"


@pytest_twisted.inlineCallbacks
def test_failure_is_answered_after_the_delay(started):
    clock = Clock()
    auth = started(InMemoryDirectory(make_user("alice@example.com", PASSWORD)),
                   make_limits(auth_failure_delay=5), clock)
    outcome = []
    login = auth.authenticate("alice@example.com", "wrong", "192.0.2.1")
    login.addBoth(outcome.append)
    yield wait_until(lambda: clock.getDelayedCalls())
    assert outcome == []
    clock.advance(4.9)
    assert outcome == []
    clock.advance(0.1)
    assert len(outcome) == 1 and outcome[0].check(AuthFailed)


@pytest_twisted.inlineCallbacks
def test_success_is_not_delayed(started):
    clock = Clock()
    auth = started(InMemoryDirectory(make_user("alice@example.com", PASSWORD)),
                   make_limits(auth_failure_delay=5), clock)
    user = yield auth.authenticate("alice@example.com", PASSWORD, "192.0.2.1")
    assert user == "alice@example.com"
    assert clock.getDelayedCalls() == []


@pytest_twisted.inlineCallbacks
def test_logins_are_logged_without_the_password(started, login_events):
    auth = started(InMemoryDirectory(make_user("alice@example.com", PASSWORD)), make_limits())
    yield auth.authenticate("alice@example.com", PASSWORD, "192.0.2.1", mechanism="PLAIN")
    with pytest.raises(AuthFailed):
        yield auth.authenticate("alice@example.com", "wrong-guess", "192.0.2.7")
    logins = [event for event in login_events if event.get("event") == "login"]
    assert [(e["user"], e["ip"], e["mechanism"], e["result"]) for e in logins] == [
        ("alice@example.com", "192.0.2.1", "PLAIN", "ok"),
        ("alice@example.com", "192.0.2.7", "LOGIN", "failed"),
    ]
    for event in login_events:
        text = repr(event)
        assert PASSWORD not in text and "wrong-guess" not in text


def test_scram_lookup_and_decoy():
    user = make_user("alice@example.com", PASSWORD)
    auth = Authenticator(InMemoryDirectory(user), make_limits(scram_iterations=5000), Clock())
    assert auth.scram_lookup("ALICE@example.com") == user.credentials.scram_sha256
    assert auth.scram_lookup("nobody@example.com") is None
    decoy = auth.scram_decoy("nobody@example.com")
    assert decoy.iterations == 5000
    assert decoy == auth.scram_decoy("Nobody@Example.com")  # stable per name
    assert decoy.salt != auth.scram_decoy("other@example.com").salt
