"""The site's certificate authority: one CA, the broker's server certificate, client certificates.

Why a private CA (RFC 5280 profile, built with ``cryptography``): the broker admits a client only if
its certificate chains to this CA (``require_certificate``), and the certificate's Common Name is the
identity the ACL is written for (``use_identity_as_username``).  A public CA would let anyone holding
any certificate from it connect; a site CA issues certificates only to the site's own units.

Choices:

* **EC P-256 keys, ECDSA-SHA256** (NIST FIPS 186-4; TLS 1.2/1.3 ``ecdsa_secp256r1_sha256``): small
  keys and fast handshakes on a unit's ARM board, supported by every OpenSSL Mosquitto links to.
* **CA**: ``basicConstraints CA:TRUE, pathlen:0`` (it signs leaves only) and
  ``keyUsage keyCertSign, cRLSign``, both critical (RFC 5280 4.2.1.9, 4.2.1.3).
* **Leaves**: ``CA:FALSE``, ``digitalSignature`` and an extended key usage of ``serverAuth``
  (broker) or ``clientAuth`` (units, controller), so a unit's certificate cannot serve as a broker
  certificate (RFC 5280 4.2.1.12).  The broker certificate names every host name and IP address the
  units dial in its subjectAltName (RFC 6125: clients match the SAN, not the CN).
* **Validity**: leaves start one hour in the past (clock skew between the CA host and the broker)
  and last ``LEAF_DAYS``; renewal is ``cedge site enroll`` again.  The CRL's nextUpdate is the CA's
  own expiry: OpenSSL refuses every client once a CRL has expired, and this CRL is a local file of
  the broker host (nobody can replay an older one to it without owning that host), so a short CRL
  life would buy an outage, not security.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
LEAF_DAYS = 825  # the CA/Browser Forum's former maximum; a unit is re-enrolled well before that
_SKEW = dt.timedelta(hours=1)


@dataclass(frozen=True)
class Issued:
    """A private key and the certificate for it."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """PKCS#8 PEM, unencrypted: Mosquitto and paho read it without a passphrase prompt; the file
    mode (0600) protects it."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _name(common_name: str, org: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def create_ca(site_name: str, valid_days: int = CA_DAYS) -> Issued:
    """A self-signed site CA."""
    key = new_key()
    name = _name(f"customs-edge site CA ({site_name})", "customs-edge")
    start = now_utc() - _SKEW
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + dt.timedelta(days=valid_days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                                         key_cert_sign=True, crl_sign=True, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256()))
    return Issued(key, cert)


def _leaf(ca: Issued, common_name: str, usage: x509.ObjectIdentifier, valid_days: int,
          san: x509.SubjectAlternativeName | None = None) -> Issued:
    key = new_key()
    start = now_utc() - _SKEW
    end = min(start + dt.timedelta(days=valid_days), ca.cert.not_valid_after_utc)
    builder = (x509.CertificateBuilder()
               .subject_name(_name(common_name, "customs-edge"))
               .issuer_name(ca.cert.subject)
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(start).not_valid_after(end)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                            key_encipherment=False, data_encipherment=False, key_agreement=False,
                                            key_cert_sign=False, crl_sign=False, encipher_only=False,
                                            decipher_only=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
                              critical=False))
    if san is not None:
        builder = builder.add_extension(san, critical=False)
    return Issued(key, builder.sign(ca.key, hashes.SHA256()))


def subject_alt_names(hostnames: Sequence[str]) -> x509.SubjectAlternativeName:
    """DNS names and IP addresses (an IP literal becomes an iPAddress entry, as RFC 6125 wants)."""
    entries: list[x509.GeneralName] = []
    for h in dict.fromkeys(hostnames):
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            entries.append(x509.DNSName(h))
    return x509.SubjectAlternativeName(entries)


def issue_server_cert(ca: Issued, hostnames: Sequence[str], valid_days: int = LEAF_DAYS) -> Issued:
    """The broker's certificate; ``hostnames`` are every name and address units connect to."""
    if not hostnames:
        raise ValueError("the broker certificate needs at least one host name or address")
    return _leaf(ca, hostnames[0], ExtendedKeyUsageOID.SERVER_AUTH, valid_days, subject_alt_names(hostnames))


def issue_client_cert(ca: Issued, identity: str, valid_days: int = LEAF_DAYS) -> Issued:
    """A client certificate whose Common Name is ``identity`` (a unit id or a controller name)."""
    return _leaf(ca, identity, ExtendedKeyUsageOID.CLIENT_AUTH, valid_days)


def build_crl(ca: Issued, revoked: Iterable[tuple[int, dt.datetime]],
              crl_number: int) -> x509.CertificateRevocationList:
    """A CRL listing ``(serial, revocation time)``; valid until the CA expires (see module doc)."""
    now = now_utc()
    builder = (x509.CertificateRevocationListBuilder()
               .issuer_name(ca.cert.subject)
               .last_update(now - _SKEW)
               .next_update(max(ca.cert.not_valid_after_utc, now + dt.timedelta(days=1)))
               .add_extension(x509.CRLNumber(crl_number), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
                              critical=False))
    for serial, when in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build())
    return builder.sign(ca.key, hashes.SHA256())


def crl_pem(crl: x509.CertificateRevocationList) -> bytes:
    return crl.public_bytes(serialization.Encoding.PEM)


def load_ca(cert_path: str | Path, key_path: str | Path) -> Issued:
    """The CA from its PEM files (the key file is unencrypted PKCS#8, mode 0600)."""
    cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{key_path}: the site CA key must be an EC key")
    if key.public_key().public_numbers() != cert.public_key().public_numbers():  # type: ignore[union-attr]
        raise ValueError(f"{key_path} is not the key of {cert_path}")
    return Issued(key, cert)


def load_cert(path: str | Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(Path(path).read_bytes())
