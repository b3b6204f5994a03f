"""Password credentials: derivation when a password is set, checking at login.

Both stored forms are derived from the SASLprep'd password (RFC 4013), so a
password works the same through PLAIN, LOGIN, IMAP LOGIN, POP3 USER/PASS and
SCRAM-SHA-256:

- a bcrypt hash, checked for the plaintext mechanisms;
- SCRAM-SHA-256 secrets (RFC 5802 §3, RFC 7677): salt, iteration count,
  StoredKey = H(ClientKey) and ServerKey, from which the password cannot be read.

Every function here is CPU-bound and blocking (bcrypt, PBKDF2): call them off
the reactor thread (the Authenticator's pool, or the CLI's own process).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import stringprep
import unicodedata

import bcrypt

from mailserverd.store.types import Credentials, ScramSecrets

#: bcrypt uses at most this many bytes of its input (bcrypt 5 refuses longer input).
BCRYPT_INPUT_MAX = 72
#: Salt length for new SCRAM secrets (RFC 5802 §5.1 leaves it open; 16 is common).
SCRAM_SALT_BYTES = 16


class PasswordError(ValueError):
    """A password cannot be set: empty, or holds characters SASLprep prohibits."""


# --------------------------------------------------------------------------
# SASLprep, RFC 4013, on the standard library's stringprep tables (Unicode 3.2)


def saslprep(text: str, *, stored: bool) -> str:
    """Prepare ``text`` with SASLprep (RFC 4013) and return the result.

    ``stored`` selects the rules for stored strings (unassigned code points are
    prohibited, RFC 3454 §7) rather than for queries (allowed). Raises
    :class:`PasswordError` for a prohibited character or a bidi violation.
    """
    # RFC 4013 §2.1 mapping: non-ASCII space -> SPACE; "commonly mapped to nothing" removed.
    mapped = "".join(
        " " if stringprep.in_table_c12(c) else c
        for c in text
        if not stringprep.in_table_b1(c)
    )
    # RFC 4013 §2.2: Unicode normalisation form KC, with RFC 3454's Unicode 3.2.
    normalised = unicodedata.ucd_3_2_0.normalize("NFKC", mapped)
    for char in normalised:
        if _is_prohibited(char):  # RFC 4013 §2.3
            raise PasswordError("password contains a prohibited character")
        if stored and stringprep.in_table_a1(char):  # RFC 4013 §2.5
            raise PasswordError("password contains an unassigned character")
    _check_bidi(normalised)
    return normalised


def _is_prohibited(char: str) -> bool:
    """RFC 4013 §2.3: tables C.1.2, C.2.1, C.2.2, C.3, C.4, C.5, C.6, C.7, C.8, C.9."""
    return (
        stringprep.in_table_c12(char)
        or stringprep.in_table_c21_c22(char)
        or stringprep.in_table_c3(char)
        or stringprep.in_table_c4(char)
        or stringprep.in_table_c5(char)
        or stringprep.in_table_c6(char)
        or stringprep.in_table_c7(char)
        or stringprep.in_table_c8(char)
        or stringprep.in_table_c9(char)
    )


def _check_bidi(text: str) -> None:
    """RFC 4013 §2.4 / RFC 3454 §6: RandALCat strings hold no LCat and start and end RandALCat."""
    if not any(stringprep.in_table_d1(c) for c in text):
        return
    if any(stringprep.in_table_d2(c) for c in text):
        raise PasswordError("password mixes right-to-left and left-to-right text")
    if not (stringprep.in_table_d1(text[0]) and stringprep.in_table_d1(text[-1])):
        raise PasswordError("right-to-left password must start and end with a right-to-left character")


# --------------------------------------------------------------------------
# bcrypt


def bcrypt_input(prepared_password: str) -> bytes:
    """The bytes given to bcrypt for an already SASLprep'd password.

    The one rule for long passwords: when the UTF-8 password is longer than
    bcrypt's 72 bytes, bcrypt is given ``base64(sha256(password_utf8))`` (44
    bytes) instead. Why pre-hash rather than truncate or refuse: truncation
    would make every password sharing its first 72 bytes equal, and refusing
    would lock out users of long passphrases (password managers generate
    them). base64 keeps the input free of NUL bytes, which bcrypt cannot take.
    Passwords of 72 bytes or fewer go in unchanged, so hashes stay compatible
    with plain bcrypt.
    """
    raw = prepared_password.encode("utf-8")
    if len(raw) <= BCRYPT_INPUT_MAX:
        return raw
    return base64.b64encode(hashlib.sha256(raw).digest())


def make_bcrypt_hash(prepared_password: str, cost: int) -> bytes:
    """bcrypt hash (``$2b$``) of an already SASLprep'd password at ``cost``."""
    return bcrypt.hashpw(bcrypt_input(prepared_password), bcrypt.gensalt(rounds=cost))


# --------------------------------------------------------------------------
# SCRAM-SHA-256, RFC 5802 §3 with SHA-256 (RFC 7677 §3)


def scram_salted_password(prepared_password: str, salt: bytes, iterations: int) -> bytes:
    """SaltedPassword := Hi(Normalize(password), salt, i), Hi being PBKDF2-HMAC-SHA-256."""
    return hashlib.pbkdf2_hmac("sha256", prepared_password.encode("utf-8"), salt, iterations)


def scram_client_key(salted_password: bytes) -> bytes:
    """ClientKey := HMAC(SaltedPassword, "Client Key")."""
    return hmac.digest(salted_password, b"Client Key", "sha256")


def scram_server_key(salted_password: bytes) -> bytes:
    """ServerKey := HMAC(SaltedPassword, "Server Key")."""
    return hmac.digest(salted_password, b"Server Key", "sha256")


def derive_scram_secrets(password: str, salt: bytes, iterations: int) -> ScramSecrets:
    """SCRAM-SHA-256 secrets of ``password`` (SASLprep'd here, stored rules) for ``salt``.

    Raises :class:`PasswordError` when SASLprep refuses the password.
    """
    prepared = saslprep(password, stored=True)
    salted = scram_salted_password(prepared, salt, iterations)
    stored_key = hashlib.sha256(scram_client_key(salted)).digest()
    return ScramSecrets(
        salt=salt,
        iterations=iterations,
        stored_key=stored_key,
        server_key=scram_server_key(salted),
    )


# --------------------------------------------------------------------------
# the two entry points


def make_credentials(password: str, *, bcrypt_cost: int, scram_iterations: int) -> Credentials:
    """Derive what is stored for ``password``: bcrypt hash and SCRAM-SHA-256 secrets.

    The password is SASLprep'd with the stored-string rules first. Takes
    about one bcrypt at ``bcrypt_cost`` plus ``scram_iterations`` PBKDF2 rounds.
    Raises :class:`PasswordError` for an empty password or one SASLprep refuses.
    """
    prepared = saslprep(password, stored=True)
    if not prepared:
        raise PasswordError("password is empty")
    return Credentials(
        bcrypt_hash=make_bcrypt_hash(prepared, bcrypt_cost),
        scram_sha256=derive_scram_secrets(
            password, os.urandom(SCRAM_SALT_BYTES), scram_iterations
        ),
    )


def check_password(credentials: Credentials, password: str) -> bool:
    """Whether ``password`` matches ``credentials.bcrypt_hash``. Blocking (one bcrypt).

    The password is SASLprep'd with the query rules. A password SASLprep
    refuses, or an empty one, never matches; bcrypt still runs on it so that
    the answer takes the same time. The comparison is bcrypt.checkpw's
    constant-time one.
    """
    try:
        prepared = saslprep(password, stored=False)
    except PasswordError:
        prepared = None
    candidate = bcrypt_input(prepared if prepared is not None else password)
    try:
        matched = bcrypt.checkpw(candidate, credentials.bcrypt_hash)
    except ValueError:  # a malformed stored hash or a NUL in the candidate
        return False
    return matched and bool(prepared)
