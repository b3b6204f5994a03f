"""SASL mechanisms driven through their step API: PLAIN, LOGIN, SCRAM-SHA-256."""

import base64
import hashlib
import hmac
import os

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import Clock

from mailserverd.auth.accounts import Authenticator
from mailserverd.auth.passwords import derive_scram_secrets, make_credentials
from mailserverd.auth.sasl import (
    FAILURE_AUTHORIZATION,
    FAILURE_CREDENTIALS,
    FAILURE_MALFORMED,
    FAILURE_THROTTLED,
    MechanismNotAllowed,
    SaslChallenge,
    SaslFailure,
    SaslStateError,
    SaslSuccess,
    UnknownMechanism,
    create_mechanism,
    mechanisms,
)
from mailserverd.limits import Limits
from mailserverd.store.types import Credentials, User

PASSWORD = "tr0ub4dor&3"
ALICE = "alice@example.com"


class InMemoryDirectory:
    """The one Directory method the Authenticator uses, over a dict of users."""

    def __init__(self, *users: User):
        self.users = {user.address: user for user in users}

    def get_user(self, address: str) -> User | None:
        return self.users.get(address)


def make_user(address: str, credentials: Credentials) -> User:
    return User(address=address, user_id=1, shard=0, credentials=credentials, quota=0, created=0)


def limits(**overrides) -> Limits:
    values = {"bcrypt_cost": 4, "scram_iterations": 4096, "auth_failure_delay": 0}
    values.update(overrides)
    return Limits(**values)


ALICE_CREDENTIALS = make_credentials(PASSWORD, bcrypt_cost=4, scram_iterations=4096)


@pytest.fixture
def threaded_auth():
    """An Authenticator with its real bcrypt pool on the real reactor (for PLAIN/LOGIN)."""
    auth = Authenticator(InMemoryDirectory(make_user(ALICE, ALICE_CREDENTIALS)), limits(),
                         reactor, reactor)
    auth.start()
    yield auth
    auth.stop()


def result_of(deferred):
    """The result of an already-fired Deferred (SCRAM steps need no thread)."""
    results = []
    deferred.addBoth(results.append)
    assert len(results) == 1, "step did not complete synchronously"
    return results[0]


# ---------------------------------------------------------------- advertising


def test_plaintext_mechanisms_only_over_tls_unless_allowed():
    assert mechanisms(tls_active=False, allow_plaintext=False) == []
    assert mechanisms(tls_active=True, allow_plaintext=False) == ["SCRAM-SHA-256", "PLAIN", "LOGIN"]
    assert mechanisms(tls_active=False, allow_plaintext=True) == ["SCRAM-SHA-256", "PLAIN", "LOGIN"]


def test_create_mechanism_checks_name_and_tls():
    auth = Authenticator(InMemoryDirectory(), limits(), Clock())
    with pytest.raises(UnknownMechanism):
        create_mechanism("CRAM-MD5", auth, "192.0.2.1", True)
    with pytest.raises(MechanismNotAllowed):
        create_mechanism("PLAIN", auth, "192.0.2.1", False)
    assert create_mechanism(b"plain", auth, "192.0.2.1", True).name == "PLAIN"
    assert create_mechanism("login", auth, "192.0.2.1", False, allow_plaintext=True).name == "LOGIN"
    with pytest.raises(MechanismNotAllowed):
        create_mechanism("scram-sha-256", auth, "192.0.2.1", False)
    assert create_mechanism("scram-sha-256", auth, "192.0.2.1", True).name == "SCRAM-SHA-256"


# ---------------------------------------------------------------- PLAIN


@pytest_twisted.inlineCallbacks
def test_plain_with_initial_response(threaded_auth):
    mech = create_mechanism("PLAIN", threaded_auth, "192.0.2.1", True)
    step = yield mech.step(b"\0Alice@Example.com\0" + PASSWORD.encode())
    assert step == SaslSuccess(ALICE, None)
    with pytest.raises(SaslStateError):
        mech.step(b"again")


@pytest_twisted.inlineCallbacks
def test_plain_without_initial_response_gets_an_empty_challenge(threaded_auth):
    mech = create_mechanism("PLAIN", threaded_auth, "192.0.2.1", True)
    assert (yield mech.step(None)) == SaslChallenge(b"")
    step = yield mech.step(ALICE.encode() + b"\0" + ALICE.encode() + b"\0" + PASSWORD.encode())
    assert step == SaslSuccess(ALICE, None)


@pytest_twisted.inlineCallbacks
def test_plain_wrong_password(threaded_auth):
    mech = create_mechanism("PLAIN", threaded_auth, "192.0.2.1", True)
    step = yield mech.step(b"\0alice@example.com\0nope")
    assert isinstance(step, SaslFailure) and step.kind == FAILURE_CREDENTIALS


@pytest.mark.parametrize(
    "message, kind",
    [
        (b"bob@example.com\0alice@example.com\0pw", FAILURE_AUTHORIZATION),  # RFC 4616 §2
        (b"alice@example.com\0pw", FAILURE_MALFORMED),
        (b"\0alice@example.com\0pw\0extra", FAILURE_MALFORMED),
        (b"\0\0pw", FAILURE_MALFORMED),
        (b"\0alice@example.com\0", FAILURE_MALFORMED),
        (b"\0al\xffice@example.com\0pw", FAILURE_MALFORMED),
    ],
)
def test_plain_refusals_need_no_password_check(message, kind):
    auth = Authenticator(InMemoryDirectory(), limits(), Clock())  # pool never started
    step = result_of(create_mechanism("PLAIN", auth, "192.0.2.1", True).step(message))
    assert isinstance(step, SaslFailure) and step.kind == kind


# ---------------------------------------------------------------- LOGIN


@pytest_twisted.inlineCallbacks
def test_login_asks_username_then_password(threaded_auth):
    mech = create_mechanism("LOGIN", threaded_auth, "192.0.2.1", True)
    assert (yield mech.step(None)) == SaslChallenge(b"Username:")
    assert (yield mech.step(ALICE.encode())) == SaslChallenge(b"Password:")
    assert (yield mech.step(PASSWORD.encode())) == SaslSuccess(ALICE, None)


@pytest_twisted.inlineCallbacks
def test_login_initial_response_is_the_username(threaded_auth):
    mech = create_mechanism("LOGIN", threaded_auth, "192.0.2.1", True)
    assert (yield mech.step(ALICE.encode())) == SaslChallenge(b"Password:")
    step = yield mech.step(b"wrong")
    assert isinstance(step, SaslFailure) and step.kind == FAILURE_CREDENTIALS


# ---------------------------------------------------------------- SCRAM-SHA-256


def scram_auth(users, clock=None, **overrides):
    return Authenticator(InMemoryDirectory(*users), limits(**overrides), clock or Clock())


def test_scram_rfc_7677_example():
    # RFC 7677 §3, byte for byte, with the example's server nonce injected.
    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    credentials = Credentials(b"unused", derive_scram_secrets("pencil", salt, 4096))
    auth = scram_auth([make_user("user", credentials)])
    mech = create_mechanism("SCRAM-SHA-256", auth, "192.0.2.1", True,
                            nonce_factory=lambda: "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0")
    first = result_of(mech.step(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"))
    assert first == SaslChallenge(
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
    final = result_of(mech.step(
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
        b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="))
    assert final == SaslSuccess("user", b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")


class ScramClient:
    """The client side of RFC 5802, written independently of the server code."""

    def __init__(self, username: str, password: str, gs2_header: str = "n,,"):
        self.gs2_header = gs2_header
        name = username.replace("=", "=3D").replace(",", "=2C")
        self.nonce = base64.b64encode(os.urandom(12)).decode()
        self.bare = f"n={name},r={self.nonce}"
        self.password = password

    def first(self) -> bytes:
        return (self.gs2_header + self.bare).encode()

    def final(self, server_first: bytes) -> bytes:
        fields = dict(item.split("=", 1) for item in server_first.decode().split(","))
        assert fields["r"].startswith(self.nonce) and len(fields["r"]) > len(self.nonce)
        salted = hashlib.pbkdf2_hmac("sha256", self.password.encode(),
                                     base64.b64decode(fields["s"]), int(fields["i"]))
        client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
        stored_key = hashlib.sha256(client_key).digest()
        channel = base64.b64encode(self.gs2_header.encode()).decode()
        without_proof = f"c={channel},r={fields['r']}"
        self.auth_message = f"{self.bare},{server_first.decode()},{without_proof}".encode()
        signature = hmac.new(stored_key, self.auth_message, hashlib.sha256).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
        self.expected_server_signature = hmac.new(server_key, self.auth_message, hashlib.sha256).digest()
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def server_final_ok(self, data: bytes) -> bool:
        return data == b"v=" + base64.b64encode(self.expected_server_signature)


def run_scram(auth, client, ip="192.0.2.1"):
    mech = create_mechanism("SCRAM-SHA-256", auth, ip, True)
    assert result_of(mech.step(None)) == SaslChallenge(b"")
    challenge = result_of(mech.step(client.first()))
    assert isinstance(challenge, SaslChallenge), challenge
    return result_of(mech.step(client.final(challenge.data)))


@pytest.mark.parametrize("gs2_header", ["n,,", "y,,", "n,a=alice@example.com,"])
def test_scram_with_a_real_client(gs2_header):
    auth = scram_auth([make_user(ALICE, ALICE_CREDENTIALS)])
    client = ScramClient(ALICE, PASSWORD, gs2_header)
    outcome = run_scram(auth, client)
    assert isinstance(outcome, SaslSuccess) and outcome.user == ALICE
    assert client.server_final_ok(outcome.server_data)


def test_scram_wrong_password_fails_after_the_delay():
    clock = Clock()
    auth = scram_auth([make_user(ALICE, ALICE_CREDENTIALS)], clock, auth_failure_delay=2)
    mech = create_mechanism("SCRAM-SHA-256", auth, "192.0.2.1", True)
    client = ScramClient(ALICE, "not it")
    challenge = result_of(mech.step(client.first()))
    outcomes = []
    mech.step(client.final(challenge.data)).addBoth(outcomes.append)
    assert outcomes == []
    clock.advance(2)
    assert len(outcomes) == 1
    assert isinstance(outcomes[0], SaslFailure) and outcomes[0].kind == FAILURE_CREDENTIALS


def test_scram_unknown_user_looks_like_a_real_one():
    clock = Clock()
    auth = scram_auth([make_user(ALICE, ALICE_CREDENTIALS)], clock)
    client = ScramClient("nobody@example.com", PASSWORD)
    mech = create_mechanism("SCRAM-SHA-256", auth, "192.0.2.1", True)
    challenge = result_of(mech.step(client.first()))
    assert b",i=4096" in challenge.data
    again = result_of(create_mechanism("SCRAM-SHA-256", auth, "192.0.2.1", True)
                      .step(ScramClient("nobody@example.com", PASSWORD).first()))
    salt = [part for part in challenge.data.split(b",") if part.startswith(b"s=")]
    assert salt and salt[0] in again.data.split(b",")  # same salt each time
    outcomes = []
    mech.step(client.final(challenge.data)).addBoth(outcomes.append)
    clock.advance(0)
    assert isinstance(outcomes[0], SaslFailure) and outcomes[0].kind == FAILURE_CREDENTIALS


def test_scram_is_throttled_through_the_authenticator():
    clock = Clock()
    auth = scram_auth([make_user(ALICE, ALICE_CREDENTIALS)], clock, auth_failures_per_ip=2)
    for _ in range(2):
        mech = create_mechanism("SCRAM-SHA-256", auth, "192.0.2.1", True)
        client = ScramClient(ALICE, "guess")
        mech.step(client.final(result_of(mech.step(client.first())).data))
        clock.advance(0)
    outcomes = []
    mech = create_mechanism("SCRAM-SHA-256", auth, "192.0.2.1", True)
    mech.step(ScramClient(ALICE, PASSWORD).first()).addBoth(outcomes.append)
    clock.advance(0)
    assert isinstance(outcomes[0], SaslFailure) and outcomes[0].kind == FAILURE_THROTTLED
    # Another IP is not affected.
    assert isinstance(run_scram(auth, ScramClient(ALICE, PASSWORD), ip="192.0.2.2"), SaslSuccess)


@pytest.mark.parametrize(
    "client_first, kind",
    [
        (b"p=tls-unique,,n=alice@example.com,r=abc", FAILURE_MALFORMED),  # no binding here
        (b"n,,m=ext,n=alice@example.com,r=abc", FAILURE_MALFORMED),  # RFC 5802 §5.1 "m"
        (b"n,,n=alice=2Xexample.com,r=abc", FAILURE_MALFORMED),  # bad "=" escape
        (b"n,,n=alice@example.com,r=a,b", FAILURE_MALFORMED),
        (b"n,,r=abc,n=alice@example.com", FAILURE_MALFORMED),
        (b"n,,n=alice@example.com", FAILURE_MALFORMED),
        (b"x,,n=alice@example.com,r=abc", FAILURE_MALFORMED),
        (b"n,a=bob@example.com,n=alice@example.com,r=abc", FAILURE_AUTHORIZATION),
        (b"n,,n=\xff,r=abc", FAILURE_MALFORMED),
    ],
)
def test_scram_client_first_refusals(client_first, kind):
    auth = scram_auth([make_user(ALICE, ALICE_CREDENTIALS)])
    step = result_of(create_mechanism("SCRAM-SHA-256", auth, "192.0.2.1", True).step(client_first))
    assert isinstance(step, SaslFailure) and step.kind == kind, step


def test_scram_username_escapes_are_decoded():
    user = "a,b=c@example.com"
    credentials = make_credentials(PASSWORD, bcrypt_cost=4, scram_iterations=4096)
    auth = scram_auth([make_user(user, credentials)])
    client = ScramClient(user, PASSWORD)
    assert b"n=a=2Cb=3Dc@example.com" in client.first()
    outcome = run_scram(auth, client)
    assert isinstance(outcome, SaslSuccess) and outcome.user == user


@pytest.mark.parametrize("tamper", ["nonce", "channel", "proof-base64"])
def test_scram_client_final_refusals(tamper):
    auth = scram_auth([make_user(ALICE, ALICE_CREDENTIALS)])
    mech = create_mechanism("SCRAM-SHA-256", auth, "192.0.2.1", True)
    client = ScramClient(ALICE, PASSWORD)
    final = client.final(result_of(mech.step(client.first())).data)
    if tamper == "nonce":
        final = final.replace(b",r=", b",r=X", 1)
    elif tamper == "channel":
        final = final.replace(b"c=biws", b"c=eSws")  # "y,," instead of the "n,," sent
    else:
        final = final[: final.index(b",p=")] + b",p=!!!"
    step = result_of(mech.step(final))
    assert isinstance(step, SaslFailure) and step.kind == FAILURE_MALFORMED


def test_scram_missing_response_after_challenge_is_malformed():
    auth = scram_auth([make_user(ALICE, ALICE_CREDENTIALS)])
    mech = create_mechanism("SCRAM-SHA-256", auth, "192.0.2.1", True)
    client = ScramClient(ALICE, PASSWORD)
    result_of(mech.step(client.first()))
    step = result_of(mech.step(None))
    assert isinstance(step, SaslFailure) and step.kind == FAILURE_MALFORMED
    with pytest.raises(SaslStateError):
        mech.step(b"")
