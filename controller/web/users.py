"""Operator accounts: name, role and a slow password hash (scrypt, RFC 7914).

Why scrypt from the standard library: it is memory-hard (n=2**14, r=8, p=1 takes ~16 MiB and tens of
milliseconds per guess, the parameters OWASP lists for scrypt), and needs no extra dependency.  The
hash string carries its parameters and salt (``scrypt$n$r$p$salt_hex$hash_hex``) so they can be
raised later without invalidating existing accounts; comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from controller.store import Store

__all__ = ["ROLES", "Role", "UserError", "add_user", "hash_password", "verify_password", "check_login"]

Role = Literal["viewer", "operator", "administrator"]
ROLES: dict[str, int] = {"viewer": 0, "operator": 1, "administrator": 2}  # rank: who may do what
_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
_N, _R, _P = 2**14, 8, 1
MIN_PASSWORD_CHARS = 8
MAX_PASSWORD_CHARS = 1024  # bounded input: the hash of a megabyte password is work for nothing


class UserError(ValueError):
    """A user name, role or password that cannot be accepted (the message says which and why)."""


def hash_password(password: str, salt: bytes | None = None, n: int = _N, r: int = _R, p: int = _P) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=64 * 1024 * 1024, dklen=32)
    return f"scrypt${n}${r}${p}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt_hex, hash_hex = stored.split("$")
        if kind != "scrypt":
            return False
        again = hash_password(password, bytes.fromhex(salt_hex), int(n), int(r), int(p))
    except ValueError:
        return False
    return hmac.compare_digest(again.rsplit("$", 1)[1], hash_hex)


# the hash compared when the name is unknown, so a login takes as long whether or not the name exists
_DUMMY_HASH = hash_password("not-a-real-password", salt=b"\0" * 16)


def add_user(conn: Store, name: str, role: str, password: str, replace: bool = False) -> None:
    if not _NAME.match(name):
        raise UserError(f"user name {name!r}: 1-64 characters of letters, digits, _ . @ -")
    if role not in ROLES:
        raise UserError(f"role {role!r}: one of {', '.join(ROLES)}")
    if not MIN_PASSWORD_CHARS <= len(password) <= MAX_PASSWORD_CHARS:
        raise UserError(f"password: {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters")
    row = (name, role, hash_password(password), datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"))
    on_conflict = ("DO UPDATE SET role = excluded.role, password_hash = excluded.password_hash, "
                   "created_utc = excluded.created_utc, disabled = 0" if replace else "DO NOTHING")
    stored = conn.execute("INSERT INTO web_users (name, role, password_hash, created_utc) VALUES (?, ?, ?, ?) "
                          f"ON CONFLICT (name) {on_conflict}", row)
    if not stored:
        raise UserError(f"user {name!r} exists (use --replace to set a new password or role)")


def check_login(conn: Store, name: str, password: str) -> str | None:
    """The user's role if name and password match an enabled account, else None."""
    if len(password) > MAX_PASSWORD_CHARS or len(name) > 64:
        return None
    rows = conn.query("SELECT role, password_hash, disabled FROM web_users WHERE name = ?", (name,))
    row = rows[0] if rows else None
    ok = verify_password(password, row["password_hash"] if row else _DUMMY_HASH)
    if row is None or not ok or row["disabled"]:
        return None
    return str(row["role"])
