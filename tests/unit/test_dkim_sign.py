"""DKIM signing keys and signatures: keys made in a temporary data dir, signatures
checked by dkimpy's verifier against the TXT record the key says to publish."""

from __future__ import annotations

import os
import stat

import dkim
import pytest

from mailserverd.queue import dkimsign

MESSAGE = (b"Received: from client by mx.example.test\r\n"
           b"From: Alice <alice@example.test>\r\nTo: bob@remote.test\r\nSubject: signed\r\n"
           b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <1@example.test>\r\n\r\n"
           b"Hello,\r\n\r\nthis is signed.\r\n")


def records_of(keys):
    """A dkimpy ``dnsfunc`` answering the keys' published records, and nothing else."""
    published = {f"{key.record_name}.".encode(): key.txt_value().encode() for key in keys}
    return lambda name, timeout=5: published.get(name)


@pytest.fixture
def data_dir(tmp_path):
    path = tmp_path / "data"
    path.mkdir()
    return str(path)


@pytest.mark.parametrize("algorithm, bits", [("rsa", 2048), ("ed25519", 256)])
def test_a_generated_key_signs_what_its_record_verifies(data_dir, algorithm, bits):
    key = dkimsign.generate_key(data_dir, "Example.TEST", "s1", algorithm)
    assert (key.domain, key.selector, key.algorithm, key.bits) == ("example.test", "s1", algorithm, bits)
    assert key.record_name == "s1._domainkey.example.test"
    path = os.path.join(data_dir, "dkim", "example.test", "s1.pem")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
    signed = dkimsign.sign_message(MESSAGE, [key])
    assert signed.endswith(MESSAGE) and signed.startswith(b"DKIM-Signature: ")
    assert dkim.verify(signed, dnsfunc=records_of([key]))
    assert not dkim.verify(signed.replace(b"this is signed", b"this is forged"), dnsfunc=records_of([key]))


def test_dual_signature_verifies_with_both_keys_and_signs_the_recommended_fields(data_dir):
    rsa = dkimsign.generate_key(data_dir, "example.test", "r1", "rsa")
    ed = dkimsign.generate_key(data_dir, "example.test", "e1", "ed25519")
    keys = dkimsign.read_domain_keys(data_dir, "example.test")
    assert [key.selector for key in keys] == ["e1", "r1"]
    signed = dkimsign.sign_message(MESSAGE, keys)
    lookup = records_of([rsa, ed])
    for index in (0, 1):  # RFC 8463 §6: one signature per algorithm
        assert dkim.DKIM(signed).verify(idx=index, dnsfunc=lookup)
    signature = signed.split(b"\r\n\r\n")[0].replace(b"\r\n", b"").replace(b"\t", b"").replace(b" ", b"")
    assert b"h=from:to:subject:date:message-id:from;" in signature  # From oversigned, Received not signed
    assert b"c=relaxed/relaxed" in signature


def test_the_zone_line_splits_long_records_into_strings_of_255(data_dir):
    key = dkimsign.generate_key(data_dir, "example.test", "mail", "rsa")
    line = key.zone_line()
    name, _, strings = line.partition(" IN TXT ")
    assert name == "mail._domainkey.example.test."
    parts = [part for part in strings.split('"') if part.strip()]
    assert all(len(part) <= 255 for part in parts) and len(parts) > 1
    assert "".join(parts) == key.txt_value() and key.txt_value().startswith("v=DKIM1; k=rsa; p=MII")


def test_bad_selectors_existing_keys_and_foreign_key_types_are_refused(data_dir):
    with pytest.raises(dkimsign.DKIMKeyError, match="bad selector"):
        dkimsign.generate_key(data_dir, "example.test", "../x", "rsa")
    dkimsign.generate_key(data_dir, "example.test", "s1", "ed25519")
    with pytest.raises(dkimsign.DKIMKeyError, match="already has a key"):
        dkimsign.generate_key(data_dir, "example.test", "s1", "rsa")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    with open(os.path.join(data_dir, "dkim", "example.test", "s2.pem"), "wb") as out:
        out.write(pem)
    with pytest.raises(dkimsign.DKIMKeyError, match="only RSA and Ed25519"):
        dkimsign.list_keys(data_dir)


def test_list_keys_is_empty_without_a_key_dir(data_dir):
    assert dkimsign.list_keys(data_dir) == []
    assert dkimsign.read_domain_keys(data_dir, "example.test") == []
