"""Command integrity on the unit: Ed25519 signatures, pinned controller keys, expiry and replay.

Why: the broker ACL (``cedge site``) decides who may *publish* on a unit's command topic, but a
unit that obeys whatever arrives there trusts the broker, its configuration and every process that
holds the controller's broker identity.  A command that moves a handheld operator to a point in the
yard is worth more to an attacker than anything else on the link (issue 14, rows 4, 5 and 8), so
the unit checks it end to end: the controller signs each command with an Ed25519 key (RFC 8032) and
the unit verifies it against public keys pinned in its own profile.

What a signature covers -- :func:`canonical_command_bytes`::

    b"cedge-command-v1\\n" + JSON(command without "signature", keys sorted, separators "," ":",
                                  ASCII only, field names as on the wire, e.g. "schema")

computed from the *validated* :class:`~agent.wire_schema.Command` (``model_dump(mode="json",
by_alias=True)``), so signer and verifier serialise the same typed values (``30`` and ``30.0``
cannot differ) and every field is covered: target ``unit_id``, ``cmd_id``, the task and its
``task_id``, ``t_issued_utc`` / ``t_expires_utc``, the ``nonce`` and the ``key_id``.  The prefix
separates command signatures from any other use of the key.

Checks of :meth:`CommandVerifier.verify`, in order; the first failing one is the reject reason:

``unsigned``            no signature fields (only accepted with ``require_signed_commands: false``)
``unknown_key``         ``key_id`` is not one of the pinned keys (``no_pinned_key`` if none is pinned)
``bad_signature``       the signature does not verify under that key (forged or altered)
``wrong_unit``          the command names another unit
``bad_time``            times that do not parse, or ``t_expires_utc`` <= ``t_issued_utc``
``ttl_too_long``        lifetime above ``max_ttl_s`` (bounds how long the replay cache must remember)
``clock_invalid``       this unit's clock is not known good, so expiry cannot be judged (fail closed)
``future_dated``        issued more than ``max_skew_s`` ahead of this unit's clock (row 8: "2099")
``expired``             ``t_expires_utc`` + ``max_skew_s`` is in the past
``issued_before_start`` the replay cache could not be read; commands issued before this process
                        started are refused rather than risk obeying a replay
``replayed``            this nonce was accepted before
``replay_cache_full``   more unexpired nonces than the cache may hold (fail closed, never evict live ones)

Replay cache: every accepted nonce is remembered until its command's expiry (+ skew) and written
atomically to ``command_nonces.json`` in the agent's state dir *before* the command is acted on, so
an agent restart does not reopen a replay window.  If that file is unreadable or corrupt the
verifier falls back to refusing any command issued before the verifier was created: the
controller's retry (a fresh nonce, a fresh issue time) still gets through, an old capture does not.

Key rotation: several keys may be pinned at once (files ``*.pub`` in the unit's
``command_auth.keys_dir``); rotating is adding the new ``.pub`` on every unit, switching the
controller's ``command_signing_key`` / ``command_key_id``, then removing the old ``.pub``.  The
``key_id`` is derived from the key itself (:func:`key_id_of`), never from a file name.

Residual risk (documented, not hidden): a unit whose clock is not valid refuses every command
until its clock is good; the signature proves the *controller key* issued the command, so whoever
steals that private key can command the fleet until the key is rotated off the units.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agent.hal.interfaces import Clock
from agent.wire_schema import Command

log = logging.getLogger(__name__)

SIGNATURE_DOMAIN = b"cedge-command-v1\n"
SIGNED_FIELDS = ("key_id", "nonce", "t_issued_utc", "t_expires_utc", "signature")
NONCE_FILE = "command_nonces.json"
KEY_ID_HEX = 16  # 64 bits of SHA-256: names a key among a handful pinned, not a security parameter


class CommandRejected(Exception):
    """A command the unit must not obey; ``reason`` is one short machine-readable word."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class KeyFileError(ValueError):
    """A key file that cannot be used; the message names the file."""


# --------------------------------------------------------------------------- keys
def key_id_of(public_key: Ed25519PublicKey) -> str:
    """Short hex of SHA-256 over the raw 32-byte public key: same key, same id, on every host."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:KEY_ID_HEX]


def write_signing_keypair(private_path: str | Path, public_path: str | Path) -> str:
    """Create an Ed25519 key pair as PEM files (private PKCS#8 mode 0600, public SPKI) -> key_id.

    The private file is created with ``O_EXCL`` and mode 0600 from the start (no window in which
    it is world-readable) and an existing file is never overwritten: losing a signing key by a
    repeated ``cedge site init`` would lock the controller out of every unit.
    """
    private_path, public_path = Path(private_path), Path(public_path)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    private_path.parent.mkdir(parents=True, exist_ok=True)
    public_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(private_path, 0o600)  # in case the umask or an ACL widened it
    public_path.write_bytes(pub)
    return key_id_of(key.public_key())


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as err:
        raise KeyFileError(f"{p}: cannot read signing key ({err.strerror})") from err
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as err:
        raise KeyFileError(f"{p}: not an unencrypted PEM private key ({err})") from err
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{p}: signing key must be Ed25519, not {type(key).__name__}")
    return key


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as err:
        raise KeyFileError(f"{p}: cannot read public key ({err.strerror})") from err
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as err:
        raise KeyFileError(f"{p}: not a PEM public key ({err})") from err
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{p}: command key must be Ed25519, not {type(key).__name__}")
    return key


def load_public_keys(dir_or_paths: str | Path | Iterable[str | Path]) -> dict[str, Ed25519PublicKey]:
    """Pinned keys by key id: every ``*.pub`` in a directory, or the given files.

    A missing directory gives no keys (the caller decides whether that is an error); an unreadable
    or non-Ed25519 file raises :class:`KeyFileError` so a typo is not silently "no key".
    """
    if isinstance(dir_or_paths, (str, Path)):
        d = Path(dir_or_paths)
        if d.is_dir():
            paths: list[Path] = sorted(d.glob("*.pub"))
        elif d.exists():
            paths = [d]
        else:
            return {}
    else:
        paths = [Path(p) for p in dir_or_paths]
    keys: dict[str, Ed25519PublicKey] = {}
    for p in paths:
        key = load_public_key(p)
        keys[key_id_of(key)] = key
    return keys


# --------------------------------------------------------------------------- canonical form
def canonical_command_bytes(cmd: Command | dict[str, Any]) -> bytes:
    """The exact bytes a command signature covers (see the module docstring)."""
    data = cmd.model_dump(mode="json", by_alias=True) if isinstance(cmd, Command) else dict(cmd)
    data.pop("signature", None)
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return SIGNATURE_DOMAIN + text.encode("ascii")


def parse_utc(text: str) -> datetime:
    """ISO-8601 with an explicit UTC offset ('Z' or '+00:00'); a naive time is refused."""
    t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if t.tzinfo is None:
        raise ValueError(f"time {text!r} has no UTC offset")
    return t.astimezone(UTC)


# --------------------------------------------------------------------------- replay cache
class NonceCache:
    """Nonces of accepted commands with their expiry (epoch s of the unit's clock), bounded, on disk.

    ``path`` None keeps it in memory only (tests).  ``trusted`` is False when the file existed but
    could not be read: the verifier then refuses commands issued before it started.
    """

    def __init__(self, path: Path | None, max_entries: int) -> None:
        self.path = path
        self.max_entries = max_entries
        self._entries: dict[str, float] = {}
        self.trusted = True
        if path is not None and path.exists():
            try:
                raw = json.loads(path.read_text())
                if not isinstance(raw, dict):
                    raise ValueError("not a JSON object")
                self._entries = {str(k): float(v) for k, v in list(raw.items())[: max_entries * 2]}
            except (OSError, ValueError, TypeError) as err:
                log.error("replay cache %s unreadable (%s): refusing commands issued before this start", path, err)
                self.trusted = False
                self._entries = {}

    def __contains__(self, nonce: str) -> bool:
        return nonce in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def prune(self, now_epoch_s: float) -> None:
        self._entries = {n: exp for n, exp in self._entries.items() if exp >= now_epoch_s}

    def add(self, nonce: str, forget_after_epoch_s: float) -> None:
        """Remember a nonce and persist the cache atomically (fsync, rename) before returning."""
        self._entries[nonce] = forget_after_epoch_s
        if self.path is None:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w") as f:
            json.dump(self._entries, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


# --------------------------------------------------------------------------- verifier
@dataclass(frozen=True)
class VerifiedCommand:
    cmd: Command
    key_id: str | None  # None: accepted unsigned because require_signed_commands is false


class CommandVerifier:
    """Decides whether this unit may obey a command; thread-safe (paho's thread calls it)."""

    def __init__(self, pinned_keys: dict[str, Ed25519PublicKey], clock: Clock, unit_id: str,
                 max_skew_s: float = 30.0, max_ttl_s: float = 3600.0, state_dir: str | Path | None = None,
                 require_signed: bool = True, max_nonces: int = 10_000) -> None:
        if max_skew_s < 0 or max_ttl_s <= 0 or max_nonces < 1:
            raise ValueError("max_skew_s >= 0, max_ttl_s > 0 and max_nonces >= 1 are required")
        self.keys = dict(pinned_keys)
        self.clock = clock
        self.unit_id = unit_id
        self.max_skew_s = float(max_skew_s)
        self.max_ttl_s = float(max_ttl_s)
        self.require_signed = require_signed
        self.nonces = NonceCache(Path(state_dir) / NONCE_FILE if state_dir is not None else None, max_nonces)
        self._started_utc = clock.utc_now()
        self._lock = threading.Lock()

    def verify(self, cmd: Command) -> VerifiedCommand:
        """Return the command if it may be obeyed; raise :class:`CommandRejected` otherwise.

        A command that passes is recorded in the replay cache before this returns, so the same
        command can never pass twice, even across a restart.
        """
        with self._lock:
            return self._verify(cmd)

    def _verify(self, cmd: Command) -> VerifiedCommand:
        present = [getattr(cmd, f) is not None for f in SIGNED_FIELDS]
        if not any(present):
            if self.require_signed:
                raise CommandRejected("unsigned", "command carries no signature")
            if cmd.unit_id != self.unit_id:
                raise CommandRejected("wrong_unit", f"command is for {cmd.unit_id}, this is {self.unit_id}")
            return VerifiedCommand(cmd, None)
        if not all(present):
            missing = [f for f, p in zip(SIGNED_FIELDS, present, strict=True) if not p]
            raise CommandRejected("unsigned", f"signature fields missing: {', '.join(missing)}")
        assert cmd.key_id is not None and cmd.signature is not None and cmd.nonce is not None
        key = self.keys.get(cmd.key_id)
        if key is None:
            if not self.keys:
                raise CommandRejected("no_pinned_key", "this unit pins no controller key")
            raise CommandRejected("unknown_key", f"key {cmd.key_id} is not pinned on this unit")
        try:
            sig = bytes.fromhex(cmd.signature)
            key.verify(sig, canonical_command_bytes(cmd))
        except (ValueError, InvalidSignature) as err:
            raise CommandRejected("bad_signature", f"signature does not verify under key {cmd.key_id}") from err
        if cmd.unit_id != self.unit_id:
            raise CommandRejected("wrong_unit", f"command is for {cmd.unit_id}, this is {self.unit_id}")
        try:
            issued = parse_utc(cmd.t_issued_utc or "")
            expires = parse_utc(cmd.t_expires_utc or "")
        except ValueError as err:
            raise CommandRejected("bad_time", str(err)) from err
        ttl_s = (expires - issued).total_seconds()
        if ttl_s <= 0:
            raise CommandRejected("bad_time", "expires before it is issued")
        if ttl_s > self.max_ttl_s:
            raise CommandRejected("ttl_too_long", f"lifetime {ttl_s:.0f} s > {self.max_ttl_s:.0f} s")
        if not self.clock.utc_valid:
            raise CommandRejected("clock_invalid", "this unit's clock is not valid; cannot judge expiry")
        now = self.clock.utc_now()
        ahead_s = (issued - now).total_seconds()
        if ahead_s > self.max_skew_s:
            raise CommandRejected("future_dated", f"issued {ahead_s:.0f} s in this unit's future")
        late_s = (now - expires).total_seconds()
        if late_s > self.max_skew_s:
            raise CommandRejected("expired", f"expired {late_s:.0f} s ago")
        if not self.nonces.trusted and issued < self._started_utc:
            raise CommandRejected("issued_before_start", "replay cache was lost; command predates this start")
        if cmd.nonce in self.nonces:
            raise CommandRejected("replayed", f"nonce {cmd.nonce[:12]}... was already used")
        self.nonces.prune(now.timestamp())
        if len(self.nonces) >= self.nonces.max_entries:
            raise CommandRejected("replay_cache_full", f"{len(self.nonces)} unexpired nonces")
        try:
            self.nonces.add(cmd.nonce, expires.timestamp() + self.max_skew_s)
        except OSError as err:  # cannot persist: obeying would leave a replay window after a restart
            raise CommandRejected("replay_cache_io", f"cannot store nonce ({err})") from err
        return VerifiedCommand(cmd, cmd.key_id)
