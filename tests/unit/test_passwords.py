"""Credentials: bcrypt with the long-password rule, SCRAM-SHA-256 secrets, SASLprep."""

import base64
import hashlib
import hmac

import bcrypt
import pytest

from mailserverd.auth.passwords import (
    BCRYPT_INPUT_MAX,
    PasswordError,
    bcrypt_input,
    check_password,
    derive_scram_secrets,
    make_credentials,
    saslprep,
)

FAST = {"bcrypt_cost": 4, "scram_iterations": 4096}


def test_right_password_matches_and_wrong_does_not():
    credentials = make_credentials("correct horse", **FAST)
    assert credentials.bcrypt_hash.startswith(b"$2b$04$")
    assert check_password(credentials, "correct horse")
    assert not check_password(credentials, "correct horsE")
    assert not check_password(credentials, "")


def test_scram_secrets_follow_rfc_5802():
    credentials = make_credentials("pencil", **FAST)
    secrets = credentials.scram_sha256
    assert secrets.iterations == 4096
    assert len(secrets.salt) == 16
    salted = hashlib.pbkdf2_hmac("sha256", b"pencil", secrets.salt, 4096)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    assert secrets.stored_key == hashlib.sha256(client_key).digest()
    assert secrets.server_key == hmac.digest(salted, b"Server Key", "sha256")


def test_each_credential_gets_its_own_salt():
    first = make_credentials("same", **FAST)
    second = make_credentials("same", **FAST)
    assert first.scram_sha256.salt != second.scram_sha256.salt
    assert first.bcrypt_hash != second.bcrypt_hash


def test_rfc_7677_secrets():
    # RFC 7677 §3: user "user", password "pencil", salt W22ZaJ0SNY7soEsUEjb6gQ==, i=4096.
    # The example's proof is checked against these secrets in test_sasl.py.
    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    secrets = derive_scram_secrets("pencil", salt, 4096)
    assert secrets.salt == salt and secrets.iterations == 4096
    assert len(secrets.stored_key) == len(secrets.server_key) == 32


def test_a_100_byte_password_works():
    password = "p" * 100
    credentials = make_credentials(password, **FAST)
    assert check_password(credentials, password)
    assert not check_password(credentials, password[:72])
    assert not check_password(credentials, password[:99])


def test_passwords_sharing_their_first_72_bytes_differ():
    common = "x" * 72
    credentials = make_credentials(common + "first", **FAST)
    assert check_password(credentials, common + "first")
    assert not check_password(credentials, common + "other")
    assert not check_password(credentials, common)


def test_long_password_rule_is_the_documented_prehash():
    short = "s" * BCRYPT_INPUT_MAX
    assert bcrypt_input(short) == short.encode()
    long = "l" * (BCRYPT_INPUT_MAX + 1)
    assert bcrypt_input(long) == base64.b64encode(hashlib.sha256(long.encode()).digest())
    # The stored hash is plain bcrypt over that input, so other tools can check it.
    credentials = make_credentials(long, **FAST)
    assert bcrypt.checkpw(bcrypt_input(long), credentials.bcrypt_hash)


def test_long_rule_counts_utf8_bytes():
    password = "é" * 40  # 40 characters, 80 UTF-8 bytes
    assert len(bcrypt_input(password)) == 44
    credentials = make_credentials(password, **FAST)
    assert check_password(credentials, password)
    assert not check_password(credentials, "é" * 36)  # the first 72 bytes


@pytest.mark.parametrize(
    "given, prepared",
    [
        # RFC 4013 §3 examples
        ("I\u00adX", "IX"),
        ("user", "user"),
        ("USER", "USER"),
        ("\u00aa", "a"),
        ("\u2168", "IX"),
        # non-ASCII space maps to SPACE
        ("a\u00a0b", "a b"),
    ],
)
def test_saslprep_examples(given, prepared):
    assert saslprep(given, stored=True) == prepared


@pytest.mark.parametrize("given", ["\u0007", "a\u0000b", "\u0627\u0031", "a\ufffeb"])
def test_saslprep_refuses(given):
    # RFC 4013 §3: U+0007 prohibited; U+0627 U+0031 violates the bidi rule.
    with pytest.raises(PasswordError):
        saslprep(given, stored=True)


def test_unassigned_code_points_only_refused_when_stored():
    unassigned = "a\u0221"  # unassigned in Unicode 3.2 (RFC 3454 table A.1)
    assert saslprep(unassigned, stored=False) == unassigned
    with pytest.raises(PasswordError):
        saslprep(unassigned, stored=True)


def test_prepared_forms_are_one_password():
    credentials = make_credentials("I\u00adX", **FAST)
    assert check_password(credentials, "IX")
    assert credentials.scram_sha256 == derive_scram_secrets(
        "IX", credentials.scram_sha256.salt, 4096)


def test_unusable_passwords_are_refused_when_set():
    with pytest.raises(PasswordError):
        make_credentials("", **FAST)
    with pytest.raises(PasswordError):
        make_credentials("\u00ad", **FAST)  # maps to nothing
    with pytest.raises(PasswordError):
        make_credentials("tab\there", **FAST)


def test_prohibited_password_never_matches():
    credentials = make_credentials("secret", **FAST)
    assert not check_password(credentials, "secret\u0000")
    assert not check_password(credentials, "\u0007")
