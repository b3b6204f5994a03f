"""The send API's OpenAPI 3 document, served at ``/api/v1/openapi.json``.

Written by hand beside the code it describes (:mod:`.api`, :mod:`.compose`,
:mod:`.problems`) and kept true by tests that validate live requests and
responses against it and run schemathesis on it against the live server.
"""

from __future__ import annotations

from mailserverd.web.problems import CONTENT_TYPE as PROBLEM_TYPE

_PROBLEM = {"$ref": "#/components/responses/Problem"}

# Header text: no line breaks or other controls (they are refused as header injection).
_LINE = "^[^\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029]*$"
_ATEXT = "[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"  # RFC 5322 §3.2.3 atext
_LABEL = "[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"  # RFC 5321 §4.1.2 sub-domain
_MAILBOX = {"type": "string", "pattern": f"^{_ATEXT}(\\.{_ATEXT})*@{_LABEL}(\\.{_LABEL})*$", "maxLength": 254,
            "description": "A bare address, local@domain (ASCII).", "example": "alice@example.com"}
_ADDRESS = {
    "oneOf": [
        _MAILBOX,
        {"type": "object", "additionalProperties": False, "required": ["address"],
         "properties": {"address": _MAILBOX,
                        "name": {"type": "string", "pattern": _LINE,
                                 "description": "Display name (any Unicode)."}}},
    ],
}
_ADDRESSES = {"oneOf": [{"$ref": "#/components/schemas/Address"},
                        {"type": "array", "items": {"$ref": "#/components/schemas/Address"}}]}


def _given(member: str) -> dict:
    """``member`` is there and is not an empty array (an empty one counts as absent)."""
    return {"required": [member], "properties": {member: {"not": {"type": "array", "maxItems": 0}}}}


_SEND_REQUEST = {
    "type": "object",
    "additionalProperties": False,
    "required": ["from"],
    "allOf": [{"anyOf": [_given(name) for name in ("to", "cc", "bcc")]},
              {"anyOf": [{"required": ["text"]}, {"required": ["html"]}, _given("attachments")]}],
    "description": "At least one of to, cc, bcc; at least one of text, html, attachments. "
                   "No line breaks or control characters in subject, names or header values. "
                   "The sender must be an address of the authenticated user (else 403) and "
                   "local recipients must exist (else 422).",
    "properties": {
        "from": {"$ref": "#/components/schemas/Address"},
        "to": {"$ref": "#/components/schemas/Addresses"},
        "cc": {"$ref": "#/components/schemas/Addresses"},
        "bcc": {"$ref": "#/components/schemas/Addresses"},
        "subject": {"type": "string", "pattern": _LINE},
        "text": {"type": "string", "description": "The text/plain body."},
        "html": {"type": "string", "description": "The text/html body (an alternative to text)."},
        "headers": {"type": "object", "additionalProperties": {"type": "string", "pattern": _LINE},
                    "description": "More header fields, by name (RFC 5322 field names; not those "
                                   "the API sets: From, To, Cc, Bcc, Subject, Date, Message-ID, "
                                   "MIME and trace fields)."},
        "attachments": {"type": "array", "items": {"$ref": "#/components/schemas/Attachment"}},
        "idempotency_key": {"type": "string", "pattern": "^[!-~]{1,100}$",
                            "description": "A retry with the same key gets the first message's id."},
    },
}
_ATTACHMENT = {
    "type": "object", "additionalProperties": False, "required": ["filename", "content"],
    "properties": {
        "filename": {"type": "string", "pattern": _LINE},
        "content_type": {"type": "string", "default": "application/octet-stream",
                         "pattern": "^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*$"},
        "content": {"type": "string", "format": "byte", "description": "The bytes, base64."},
    },
}
_ACCEPTED = {
    "type": "object", "required": ["id", "status", "recipients"],
    "properties": {"id": {"type": "string"}, "status": {"type": "string", "enum": ["accepted"]},
                   "recipients": {"type": "array", "items": {"type": "string"}}},
}
_STATUS = {
    "type": "object", "required": ["id", "created", "recipients"],
    "properties": {
        "id": {"type": "string"},
        "created": {"type": "string", "format": "date-time"},
        "recipients": {"type": "array", "items": {
            "type": "object", "required": ["address", "state"],
            "properties": {
                "address": {"type": "string"},
                "state": {"type": "string", "enum": ["queued", "deferred", "held", "delivered", "bounced",
                                                     "unknown"]},
                "attempts": {"type": "integer", "minimum": 0},
                "last_reply": {"type": "string", "description": "The last SMTP reply or our reason."},
            }}},
    },
}
_PROBLEM_SCHEMA = {
    "type": "object", "required": ["type", "title", "status", "code"],
    "description": "RFC 9457 problem details.",
    "properties": {"type": {"type": "string"}, "title": {"type": "string"},
                   "status": {"type": "integer"}, "detail": {"type": "string"},
                   "code": {"type": "string"}},
}


def _errors(*statuses: int) -> dict:
    return {str(status): _PROBLEM for status in statuses}


def document(server_url: str) -> dict:
    """The OpenAPI 3.0 document, with ``server_url`` (``https://host[:port]``) as its server."""
    return {
        "openapi": "3.0.3",
        "info": {"title": "mailserverd send API", "version": "1",
                 "description": "Send mail through the server's submission path (as port 587) and "
                                "follow its delivery."},
        "servers": [{"url": server_url}],
        "security": [{"bearer": []}, {"basic": []}],
        "paths": {
            "/api/v1/messages": {"post": {
                "operationId": "sendMessage",
                "summary": "Send a message",
                "parameters": [{"name": "Idempotency-Key", "in": "header", "required": False,
                                "schema": {"type": "string", "pattern": "^[!-~]{1,100}$"}}],
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/SendRequest"}},
                    "message/rfc822": {"schema": {"type": "string", "format": "binary"}}}},
                "responses": {
                    "202": {"description": "Accepted: stored or queued durably.",
                            "headers": {"Location": {"schema": {"type": "string"}}},
                            "links": {"status": {"operationId": "messageStatus",
                                                 "parameters": {"id": "$response.body#/id"}}},
                            "content": {"application/json": {
                                "schema": {"$ref": "#/components/schemas/Accepted"}}}},
                    **_errors(400, 401, 403, 409, 413, 415, 422, 429, 503)}}},
            "/api/v1/messages/{id}": {"get": {
                "operationId": "messageStatus",
                "summary": "Where each recipient's delivery stands",
                "parameters": [{"name": "id", "in": "path", "required": True,
                                "schema": {"type": "string"}}],
                "responses": {
                    "200": {"description": "The message's recipients and their states.",
                            "content": {"application/json": {
                                "schema": {"$ref": "#/components/schemas/Status"}}}},
                    **_errors(401, 403, 404, 429, 503)}}},
            "/api/v1/openapi.json": {"get": {
                "operationId": "openapi", "summary": "This document", "security": [],
                "responses": {"200": {"description": "The OpenAPI document.",
                                      "content": {"application/json": {"schema": {"type": "object"}}}}}}},
        },
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer",
                           "description": "A token from `mailserverd token create USER`."},
                "basic": {"type": "http", "scheme": "basic",
                          "description": "The account's address and password (TLS only)."}},
            "schemas": {"Address": _ADDRESS, "Addresses": _ADDRESSES, "SendRequest": _SEND_REQUEST,
                        "Attachment": _ATTACHMENT, "Accepted": _ACCEPTED, "Status": _STATUS,
                        "Problem": _PROBLEM_SCHEMA},
            "responses": {"Problem": {"description": "The request was refused; nothing was sent.",
                                      "content": {PROBLEM_TYPE.decode(): {
                                          "schema": {"$ref": "#/components/schemas/Problem"}}}}},
        },
    }
