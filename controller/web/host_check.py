"""Host-header check: the console answers only to the names it is served under (DNS rebinding).

Why: a page on an outside site can make its own host name resolve to 127.0.0.1 (DNS rebinding);
the browser then treats the console on loopback as that site's origin, and the page can read it.
Cookies do not follow (they belong to the console's own name), but the login form, the API's error
answers and anything served without a session would.  The defence is the one the server cannot be
fooled out of: refuse any request whose ``Host`` header names a host the console is not meant to be
reached by (answer 421 Misdirected Request), before routing.

Allowed hosts:

* the bound host itself;
* on loopback (``127.0.0.0/8``, ``::1``, ``localhost``): ``localhost``, ``127.0.0.1`` and ``[::1]``;
* on a wildcard bind (``0.0.0.0``, ``::``): any IP literal (a rebinding attack needs a *name*);
* the names in ``web.allowed_hosts`` (the control room's DNS name of the controller, say).

The port in the header is not checked: the socket already is the port.
"""

from __future__ import annotations

import ipaddress
import json

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["HostCheck", "allowed_hosts"]

_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _is_loopback(host: str) -> bool:
    return host == "localhost" or (_is_ip(host) and ipaddress.ip_address(host).is_loopback)


def allowed_hosts(bind_host: str, extra: list[str] | tuple[str, ...] = ()) -> tuple[frozenset[str], bool]:
    """(names allowed, whether any IP literal is allowed) for a server bound to ``bind_host``."""
    host = bind_host.strip("[]").lower()
    names = {host, *(h.strip("[]").lower() for h in extra)}
    if _is_loopback(host):
        names |= _LOOPBACK_NAMES
    any_ip = host in ("0.0.0.0", "::", "")
    return frozenset(names), any_ip


def host_of(header: str) -> str:
    """The host part of a Host header: ``[::1]:8470`` -> ``::1``, ``Name:80`` -> ``name``."""
    h = header.strip().lower()
    if h.startswith("["):
        return h[1:h.find("]")] if "]" in h else h
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


class HostCheck:
    """ASGI middleware: 421 for a request whose Host header is not one of the allowed hosts."""

    def __init__(self, app: ASGIApp, bind_host: str, extra: list[str] | tuple[str, ...] = ()):
        self.app = app
        self.names, self.any_ip = allowed_hosts(bind_host, extra)
        self.refused = 0

    def allows(self, header: str | None) -> bool:
        if not header:
            return False  # HTTP/1.1 requires Host (RFC 9112 section 3.2); browsers always send it
        host = host_of(header)
        return host in self.names or (self.any_ip and _is_ip(host))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        header = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"host"), None)
        if self.allows(header):
            await self.app(scope, receive, send)
            return
        self.refused += 1
        body = json.dumps({"error": f"host {header!r} is not a name this console is served under; "
                                    "add it to web.allowed_hosts if it should be"}).encode()
        await send({"type": "http.response.start", "status": 421,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
