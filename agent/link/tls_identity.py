"""The identity a client certificate proves: its subject Common Name.

Why the CN: the site broker runs with ``use_identity_as_username`` (Mosquitto takes the CN of the
verified client certificate as the MQTT username) and ``use_username_as_clientid`` (the username
replaces whatever client id the client sent), and its ACL is written per username.  So the CN is
the unit id (or the controller's name) that the broker enforces; the agent and the controller read
it from their own certificate at load to check their configuration against it instead of finding
out from a refused connection.
"""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID


class CertificateError(ValueError):
    """A certificate file that cannot be read or has no usable identity; the message says why."""


def certificate_identity(path: str | Path) -> str:
    """Common Name of the first certificate in PEM file ``path``."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as err:
        raise CertificateError(f"{p}: cannot read certificate ({err.strerror})") from err
    try:
        cert = x509.load_pem_x509_certificate(data)
    except ValueError as err:
        raise CertificateError(f"{p}: not a PEM X.509 certificate ({err})") from err
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1 or not isinstance(names[0].value, str) or not names[0].value:
        raise CertificateError(f"{p}: certificate subject needs exactly one Common Name (the identity)")
    return names[0].value


def check_key_pair(cert_path: str | Path, key_path: str | Path) -> None:
    """Raise CertificateError unless ``key_path`` holds the private key of ``cert_path``'s certificate.

    Why check at load: with a mismatched pair the TLS handshake fails with an OpenSSL message that
    names neither file; here the error names both, before the agent starts.
    """
    from cryptography.hazmat.primitives import serialization

    kp = Path(key_path)
    try:
        key = serialization.load_pem_private_key(kp.read_bytes(), password=None)
    except OSError as err:
        raise CertificateError(f"{kp}: cannot read key ({err.strerror})") from err
    except (ValueError, TypeError) as err:
        raise CertificateError(f"{kp}: not an unencrypted PEM private key ({err})") from err
    cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if key.public_key().public_bytes(*fmt) != cert.public_key().public_bytes(*fmt):
        raise CertificateError(f"{kp} is not the private key of the certificate {cert_path}")
