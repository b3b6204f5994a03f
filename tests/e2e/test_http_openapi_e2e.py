"""The OpenAPI document at /api/v1/openapi.json is true of the live server.

Two ways: requests this test makes (valid ones, and refusals of each kind)
are validated against the document's request schemas, and every response
against the schema documented for its status and content type; then
schemathesis (from PyPI) generates requests from the document, valid and
invalid, and checks every response the live server gives against it.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate as validate_document

from conftest import IN_CI
from webclient import ALICE, BOB, create_token, gateway_daemon, request

pytestmark = pytest.mark.e2e


def resolve(document: dict, node: dict) -> dict:
    """``node``, or what its ``$ref`` (``#/a/b``) points at in ``document``."""
    while "$ref" in node:
        target = document
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def check(document: dict, schema: dict, instance: object) -> None:
    """Validate ``instance`` against ``schema`` (references into ``document``'s components)."""
    OAS30Validator({**schema, "components": document["components"]}).validate(instance)


def check_exchange(document: dict, path: str, method: str, reply, body: object = None) -> None:
    """The request ``body`` (when JSON) and the reply must be what the document says."""
    operation = document["paths"][path][method]
    if body is not None:
        check(document, operation["requestBody"]["content"]["application/json"]["schema"], body)
    responses = operation["responses"]
    assert str(reply.status) in responses, (path, method, reply.status, reply.body)
    documented = resolve(document, responses[str(reply.status)])
    assert reply.content_type in documented["content"], (reply.status, reply.content_type)
    check(document, documented["content"][reply.content_type]["schema"], reply.json())
    for header in documented.get("headers", {}):
        assert reply.headers[header], header


@pytest.fixture
def gateway(tmp_path):
    d = gateway_daemon(tmp_path / "d",
                       limits="http_requests_burst = 100000\nhttp_requests_per_minute = 1000000\n")
    token, _ = create_token(d)
    d.start()
    d.token = token
    reply = request(d, "GET", "/api/v1/openapi.json")
    assert reply.status == 200
    d.document = reply.json()
    yield d
    if d.proc.poll() is None:
        d.stop()


def test_the_document_is_valid_openapi_3_and_true_of_requests_and_responses(gateway):
    document, token = gateway.document, gateway.token
    validate_document(document)
    assert document["servers"] == [{"url": f"https://mx.example.test:{gateway.ports['https']}"}]
    check_exchange(document, "/api/v1/openapi.json", "get", request(gateway, "GET", "/api/v1/openapi.json"))
    sent = {"from": {"address": ALICE, "name": "Alice"}, "to": [BOB], "cc": BOB, "subject": "s",
            "text": "t", "html": "<p>t</p>", "headers": {"X-Tag": "1"}, "idempotency_key": "k-1",
            "attachments": [{"filename": "a.txt", "content_type": "text/plain",
                             "content": base64.b64encode(b"abc").decode()}]}
    accepted = request(gateway, "POST", "/api/v1/messages", json.dumps(sent).encode(), token=token)
    assert accepted.status == 202
    check_exchange(document, "/api/v1/messages", "post", accepted, sent)
    status = request(gateway, "GET", accepted.headers["Location"], token=token)
    assert status.status == 200
    check_exchange(document, "/api/v1/messages/{id}", "get", status)
    refusals = [
        ({"from": ALICE, "to": BOB, "text": "t", "subject": "a\r\nb"}, 400),
        ({"from": BOB, "to": BOB, "text": "t"}, 403),
        ({"from": ALICE, "to": "nobody@example.test", "text": "t"}, 422),
    ]
    for body, wanted in refusals:
        reply = request(gateway, "POST", "/api/v1/messages", json.dumps(body).encode(), token=token)
        assert reply.status == wanted
        check_exchange(document, "/api/v1/messages", "post", reply)
    for reply in (request(gateway, "POST", "/api/v1/messages", b"{", token=token),
                  request(gateway, "POST", "/api/v1/messages", b"x", token=token, content_type="text/csv"),
                  request(gateway, "POST", "/api/v1/messages", b"{}", token="wrong")):
        check_exchange(document, "/api/v1/messages", "post", reply)
    check_exchange(document, "/api/v1/messages/{id}", "get",
                   request(gateway, "GET", "/api/v1/messages/NOSUCH", token=token))
    # The document says what a valid request is: one this server refuses as malformed is not.
    with pytest.raises(Exception):
        check(document, document["paths"]["/api/v1/messages"]["post"]["requestBody"]["content"]
              ["application/json"]["schema"], {"from": ALICE, "to": [], "text": "t"})


def schemathesis_program() -> str:
    program = Path(sys.executable).with_name("schemathesis")
    if not program.exists():
        message = "schemathesis is not installed (pip install -e '.[test]')"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return str(program)


def test_schemathesis_finds_nothing_against_the_live_server(gateway, tmp_path):
    base = f"https://127.0.0.1:{gateway.ports['https']}"
    result = subprocess.run([
        schemathesis_program(), "run", f"{base}/api/v1/openapi.json", "--url", base,
        "-H", f"Authorization: Bearer {gateway.token}", "--tls-verify", str(gateway.ca_path),
        # Every check but "schema-valid requests are accepted": whether the sender is the
        # user's and the recipients exist is the server's to know, not the schema's.
        "--checks", "all", "--exclude-checks", "positive_data_acceptance",
        "--max-examples", "40", "--seed", "20261202", "--request-timeout", "30",
        "--report-dir", str(tmp_path / "report"),
    ], capture_output=True, text=True, timeout=540, env={**os.environ, "NO_COLOR": "1"})
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "generated" in result.stdout
    assert "Traceback" not in gateway.log()
