"""The console's transport-level defences, on a real uvicorn server in this process (no browser, no broker).

* Host-header check (DNS rebinding): a request whose Host names another site is refused with 421
  before routing, the loopback names and the configured extra names are served;
* the security headers (CSP without inline script, no framing, no sniffing) are on every answer;
* optional TLS: with a certificate the console serves HTTPS, and the session cookie is ``Secure``.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.config import WebConfig
from controller.web.host_check import HostCheck, allowed_hosts, host_of

PASSWORD = "sec-test-pass-1"


def _server(tmp_path: Path, **cfg: Any) -> Any:
    from controller.store import Store
    from controller.web.db import connect
    from controller.web.server import WebServer
    from controller.web.users import add_user

    db = tmp_path / "c.sqlite"
    Store(db).close()
    conn = connect(db)
    add_user(conn, "olga", "operator", PASSWORD)
    conn.close()
    server = WebServer(WebConfig(port=0, **cfg), str(db))
    server.start()
    return server


def _request(url: str, path: str, host: str | None = None, method: str = "GET", body: Any = None,
             context: ssl.SSLContext | None = None) -> tuple[int, dict[str, str], bytes]:
    from urllib.parse import urlsplit

    u = urlsplit(url)
    conn: http.client.HTTPConnection = (http.client.HTTPSConnection(u.hostname, u.port, timeout=30, context=context)
                                        if u.scheme == "https" else http.client.HTTPConnection(u.hostname, u.port,
                                                                                                timeout=30))
    headers = {"Host": host} if host is not None else {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    conn.request(method, path, body=data, headers=headers)
    r = conn.getresponse()
    out = r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    conn.close()
    return out


@pytest.fixture
def plain(tmp_path: Path) -> Iterator[Any]:
    s = _server(tmp_path, allowed_hosts=["controller.yard.example"])
    try:
        yield s
    finally:
        s.stop()


def test_foreign_host_header_is_refused_before_routing(plain: Any) -> None:
    port = plain.url.rsplit(":", 1)[1].strip("/")
    for evil in (f"evil.example:{port}", "evil.example", f"127.0.0.1.evil.example:{port}", ""):
        for path in ("/", "/api/login", "/static/app.js"):
            status, _, body = _request(plain.url, path, host=evil)
            assert status == 421, (evil, path, status)
            assert "web.allowed_hosts" in json.loads(body)["error"]
    for good in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "controller.yard.example",
                 f"Controller.Yard.Example:{port}"):
        status, _, _ = _request(plain.url, "/", host=good)
        assert status == 200, good
    # a login from a rebinding page never gets as far as the password check
    status, headers, _ = _request(plain.url, "/api/login", host="evil.example", method="POST",
                                  body={"name": "olga", "password": PASSWORD})
    assert status == 421 and "set-cookie" not in headers


def test_security_headers_on_every_answer(plain: Any) -> None:
    for path, want in (("/", 200), ("/static/app.js", 200), ("/api/units", 401), ("/api/nothing", 404)):
        status, h, _ = _request(plain.url, path)
        assert status == want, path
        assert "script-src 'self'" in h["content-security-policy"] and "frame-ancestors 'none'" in \
            h["content-security-policy"] and "unsafe-inline" not in h["content-security-policy"]
        assert h["x-frame-options"] == "DENY" and h["x-content-type-options"] == "nosniff"
        if path.startswith("/api/"):
            assert h["cache-control"] == "no-store"


def test_allowed_hosts_rules() -> None:
    assert host_of("[::1]:8470") == "::1" and host_of("Name.Example:80") == "name.example" and host_of("::1") == "::1"
    names, any_ip = allowed_hosts("127.0.0.1")
    assert {"localhost", "127.0.0.1", "::1"} <= names and not any_ip
    check = HostCheck(lambda *a: None, "0.0.0.0", ["ctl.example"])  # type: ignore[arg-type]
    assert check.allows("10.1.2.3:8470") and check.allows("[fe80::1]:8470") and check.allows("ctl.example")
    assert not check.allows("attacker.example:8470") and not check.allows(None)
    check = HostCheck(lambda *a: None, "10.0.0.5")  # type: ignore[arg-type]
    assert check.allows("10.0.0.5:8470") and not check.allows("10.0.0.6") and not check.allows("localhost")


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    import ipaddress

    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "console.crt", tmp_path / "console.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_tls_serves_https_with_a_secure_cookie(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    s = _server(tmp_path, tls_cert_file=str(cert), tls_key_file=str(key))
    try:
        assert s.url.startswith("https://127.0.0.1:")
        ctx = ssl.create_default_context(cafile=str(cert))
        status, _, body = _request(s.url, "/", context=ctx)
        assert status == 200 and b"app.js" in body
        status, headers, body = _request(s.url, "/api/login", method="POST", context=ctx,
                                         body={"name": "olga", "password": PASSWORD})
        assert status == 200 and json.loads(body)["role"] == "operator"
        cookie = headers["set-cookie"].lower()
        assert "secure" in cookie and "httponly" in cookie and "samesite=strict" in cookie
        # plain HTTP to the TLS port gets no console
        try:
            plain_status: int | None = _request(s.url.replace("https://", "http://"), "/")[0]
        except (http.client.HTTPException, OSError):
            plain_status = None  # the TLS handshake fails: connection closed
        assert plain_status != 200
    finally:
        s.stop()
