"""Client setup over HTTP: Thunderbird's autoconfig and Outlook's autodiscover, end to end.

The documents are read as the clients read them: Thunderbird's
``readFromXML`` takes ``emailProvider`` and, per server, ``hostname``,
``port``, ``socketType`` and ``authentication`` (refusing values it does not
know) and puts ``%EMAILADDRESS%`` into ``username``; Outlook reads
``Account/Protocol`` with ``Type``, ``Server``, ``Port``, ``Encryption``.
What they describe must be the listeners the daemon actually has.
"""

from __future__ import annotations

import json
import smtplib
import xml.etree.ElementTree as ET

import pytest

from conftest import make_daemon
from webclient import ALICE, gateway_config, gateway_daemon, request

pytestmark = pytest.mark.e2e

# Thunderbird's accepted values (mailnews/base/prefs/content/accountcreation readFromXML.sys.mjs).
THUNDERBIRD_SOCKET_TYPES = {"plain": 1, "SSL": 3, "STARTTLS": 2}
THUNDERBIRD_AUTH = {"password-cleartext", "plain", "password-encrypted", "secure", "GSSAPI", "NTLM",
                    "OAuth2", "client-IP-address", "TLS-client-cert", "none"}

AUTODISCOVER_REQUEST = """<?xml version="1.0" encoding="utf-8"?>
<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006">
  <Request>
    <EMailAddress>{address}</EMailAddress>
    <AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema>
  </Request>
</Autodiscover>"""
OUTLOOK = "{http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a}"


def thunderbird_read(xml: bytes, address: str) -> dict:
    """What Thunderbird takes from a config-v1.1.xml (raises on what it would refuse)."""
    root = ET.fromstring(xml)
    assert root.tag == "clientConfig"
    provider = root.find("emailProvider")
    config = {"id": provider.get("id"), "domains": [d.text for d in provider.findall("domain")],
              "displayName": provider.findtext("displayName"), "incoming": [], "outgoing": []}
    for tag, key in (("incomingServer", "incoming"), ("outgoingServer", "outgoing")):
        for server in provider.findall(tag):
            socket_type = server.findtext("socketType")
            authentication = server.findtext("authentication")
            assert socket_type in THUNDERBIRD_SOCKET_TYPES, socket_type
            assert authentication in THUNDERBIRD_AUTH, authentication
            port = int(server.findtext("port"))
            assert 1 <= port <= 65535
            config[key].append({
                "type": server.get("type"), "hostname": server.findtext("hostname"), "port": port,
                "socketType": socket_type, "auth": authentication,
                "username": server.findtext("username").replace("%EMAILADDRESS%", address)})
    return config


def test_autoconfig_describes_the_configured_listeners_at_both_paths(tmp_path):
    d = gateway_daemon(tmp_path / "d")
    d.start()
    wanted = {("imap", d.ports["imaps"], "SSL"), ("imap", d.ports["imap"], "STARTTLS"),
              ("pop3", d.ports["pop3s"], "SSL"), ("pop3", d.ports["pop3"], "STARTTLS"),
              ("smtp", d.ports["smtps"], "SSL"), ("smtp", d.ports["submission"], "STARTTLS")}
    for kind in ("http", "https"):
        for path in ("/mail/config-v1.1.xml", "/.well-known/autoconfig/mail/config-v1.1.xml"):
            reply = request(d, "GET", f"{path}?emailaddress=Alice%40Example.test", kind=kind)
            assert reply.status == 200 and reply.content_type == "application/xml", reply.body
            config = thunderbird_read(reply.body, ALICE)
            assert config["id"] == "example.test" and config["domains"] == ["example.test"]
            servers = config["incoming"] + config["outgoing"]
            assert {(s["type"], s["port"], s["socketType"]) for s in servers} == wanted
            assert {s["hostname"] for s in servers} == {"mx.example.test"}
            assert {s["username"] for s in servers} == {ALICE} and {s["auth"] for s in servers} == {
                "password-cleartext"}
            assert config["incoming"][0]["socketType"] == "SSL"  # implicit TLS first (RFC 8314 §5.1)
            assert [s["type"] for s in config["outgoing"]] == ["smtp", "smtp"]
    # The Host header of autoconfig.<domain> names the domain when the parameter is missing.
    by_host = request(d, "GET", "/mail/config-v1.1.xml", kind="http",
                      headers={"Host": "autoconfig.example.test"})
    assert thunderbird_read(by_host.body, ALICE)["id"] == "example.test"
    # What it says works: submission on the advertised port with the advertised login.
    submission = next(s for s in config["outgoing"] if s["socketType"] == "STARTTLS")
    with smtplib.SMTP("127.0.0.1", submission["port"], timeout=30) as smtp:
        smtp.starttls(context=d.ssl_context())
        smtp.login(submission["username"], "alice-secret-1")
    d.stop()


def test_autoconfig_lists_only_listeners_that_exist_and_refuses_unknown_domains(tmp_path):
    listeners, ports = gateway_config()
    d = make_daemon(tmp_path / "d", extra_config=listeners)
    d.ports.update(ports)
    text = d.config_path.read_text()
    for kind in ("imap", "pop3", "pop3s", "submission"):  # keep imaps and smtps (and smtp, the MX)
        block = f'\n[[listener]]\nkind = "{kind}"\naddress = "127.0.0.1"\nport = {d.ports.pop(kind)}\n'
        assert block in text
        text = text.replace(block, "\n")
    d.config_path.write_text(text)
    d.cli("domain", "add", "example.test")
    d.start()
    reply = request(d, "GET", "/mail/config-v1.1.xml?emailaddress=alice@example.test", kind="http")
    config = thunderbird_read(reply.body, ALICE)
    assert [(s["type"], s["port"], s["socketType"]) for s in config["incoming"] + config["outgoing"]] == [
        ("imap", d.ports["imaps"], "SSL"), ("smtp", d.ports["smtps"], "SSL")]
    for address in ("alice@elsewhere.test", "not-an-address"):
        refused = request(d, "GET", f"/mail/config-v1.1.xml?emailaddress={address}", kind="http")
        assert refused.status in (400, 404) and refused.content_type == "application/problem+json"
    assert request(d, "GET", "/mail/config-v1.1.xml", kind="http").status == 404
    d.stop()


def test_autodiscover_answers_a_known_address_and_refuses_an_unknown_domain(tmp_path):
    d = gateway_daemon(tmp_path / "d")
    d.start()
    for path in ("/autodiscover/autodiscover.xml", "/Autodiscover/Autodiscover.xml"):
        reply = request(d, "POST", path, AUTODISCOVER_REQUEST.format(address=ALICE).encode(),
                        content_type="text/xml")
        assert reply.status == 200, reply.body
        account = ET.fromstring(reply.body).find(f".//{OUTLOOK}Account")
        assert account.findtext(f"{OUTLOOK}AccountType") == "email"
        assert account.findtext(f"{OUTLOOK}Action") == "settings"
        protocols = [(p.findtext(f"{OUTLOOK}Type"), int(p.findtext(f"{OUTLOOK}Port")),
                      p.findtext(f"{OUTLOOK}Encryption"), p.findtext(f"{OUTLOOK}Server"),
                      p.findtext(f"{OUTLOOK}LoginName"))
                     for p in account.findall(f"{OUTLOOK}Protocol")]
        assert protocols == [
            ("IMAP", d.ports["imaps"], "SSL", "mx.example.test", ALICE),
            ("IMAP", d.ports["imap"], "TLS", "mx.example.test", ALICE),
            ("POP3", d.ports["pop3s"], "SSL", "mx.example.test", ALICE),
            ("POP3", d.ports["pop3"], "TLS", "mx.example.test", ALICE),
            ("SMTP", d.ports["smtps"], "SSL", "mx.example.test", ALICE),
            ("SMTP", d.ports["submission"], "TLS", "mx.example.test", ALICE)]
    unknown = request(d, "POST", "/autodiscover/autodiscover.xml",
                      AUTODISCOVER_REQUEST.format(address="carol@elsewhere.test").encode(),
                      content_type="text/xml")
    assert unknown.status == 404 and b"<ErrorCode>603</ErrorCode>" in unknown.body
    assert b"mx.example.test" not in unknown.body
    entity = (b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "y">]><Autodiscover><Request>'
              b"<EMailAddress>&x;</EMailAddress></Request></Autodiscover>")
    assert request(d, "POST", "/autodiscover/autodiscover.xml", entity, content_type="text/xml").status == 400
    # Autodiscover is not served in clear text.
    assert request(d, "POST", "/autodiscover/autodiscover.xml", AUTODISCOVER_REQUEST.format(
        address=ALICE).encode(), content_type="text/xml", kind="http").status == 404
    # The JSON variant points at the POX endpoint on this server.
    reply = request(d, "GET", f"/autodiscover/autodiscover.json?Email={ALICE}&Protocol=AutodiscoverV1")
    assert reply.status == 200
    assert json.loads(reply.body) == {
        "Protocol": "AutodiscoverV1",
        "Url": f"https://mx.example.test:{d.ports['https']}/autodiscover/autodiscover.xml"}
    assert request(d, "GET", "/autodiscover/autodiscover.json?Email=x@elsewhere.test"
                             "&Protocol=AutodiscoverV1").status == 404
    assert request(d, "GET", f"/autodiscover/autodiscover.json?Email={ALICE}"
                             "&Protocol=ActiveSync").status == 400
    d.stop()
