"""Sessions, roles and CSRF for the console: every request is checked here, server-side.

* Session: a 256-bit random token in a cookie that is ``HttpOnly`` (page scripts cannot read it),
  ``SameSite=Strict`` (other sites' pages cannot make the browser send it) and ``Secure`` under TLS;
  sessions live in memory with an absolute expiry, so a controller restart logs everyone out.
* CSRF: each session has its own random token, handed to the page in the login answer and
  ``GET /api/session``; every state-changing request must echo it in ``X-CSRF-Token``
  (synchronizer-token pattern, OWASP CSRF Prevention Cheat Sheet), compared in constant time.
* Roles are ranked: viewer < operator < administrator; an endpoint names the least role it needs.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from dataclasses import dataclass

from starlette.requests import Request

from controller.web.users import ROLES

__all__ = ["COOKIE", "CSRF_HEADER", "AuthError", "Session", "SessionStore"]

COOKIE = "cedge_session"
CSRF_HEADER = "x-csrf-token"
MAX_SESSIONS = 10_000  # bounded memory: the oldest session goes first


class AuthError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Session:
    token: str
    user: str
    role: str
    csrf: str
    expires_mono_s: float


class SessionStore:
    def __init__(self, ttl_s: float):
        self.ttl_s = ttl_s
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def create(self, user: str, role: str) -> Session:
        s = Session(secrets.token_urlsafe(32), user, role, secrets.token_urlsafe(32), time.monotonic() + self.ttl_s)
        with self._lock:
            while len(self._sessions) >= MAX_SESSIONS:
                self._sessions.pop(next(iter(self._sessions)))
            self._sessions[s.token] = s
        return s

    def drop(self, token: str) -> None:
        with self._lock:
            self._sessions.pop(token, None)

    def get(self, token: str | None) -> Session | None:
        if not token:
            return None
        with self._lock:
            s = self._sessions.get(token)
            if s is not None and s.expires_mono_s < time.monotonic():
                del self._sessions[token]
                return None
            return s

    def require(self, request: Request, role: str = "viewer", state_changing: bool = False) -> Session:
        """The request's session, or :class:`AuthError` (401 no/expired session, 403 role or CSRF)."""
        s = self.get(request.cookies.get(COOKIE))
        if s is None:
            raise AuthError(401, "not logged in (no or expired session)")
        if ROLES[s.role] < ROLES[role]:
            raise AuthError(403, f"role {s.role} may not do this (needs {role})")
        if state_changing:
            sent = request.headers.get(CSRF_HEADER, "")
            if not sent or not hmac.compare_digest(sent, s.csrf):
                raise AuthError(403, f"missing or wrong CSRF token (send the {CSRF_HEADER} header)")
        return s
