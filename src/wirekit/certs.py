"""A local certificate authority, like mkcert: ``wirekit certs --out DIR NAME...``.

The first run creates ``ca.pem``/``ca-key.pem`` in DIR; later runs reuse that CA, so clients
that trust it (``--ca DIR/ca.pem``) keep trusting new server certificates. Each run writes
``server.pem`` and ``server-key.pem`` for the given DNS names and IP addresses. Keys are ECDSA
P-256; private keys are written mode 0600.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .errors import UsageError

CA_DAYS = 3650
SERVER_DAYS = 825


@dataclass(frozen=True, slots=True)
class Issued:
    ca: Path
    ca_key: Path
    cert: Path
    key: Path
    names: list[str]
    ca_created: bool
    not_after: str


def _write(path: Path, data: bytes, private: bool) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _load_or_create_ca(out: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey, bool]:
    ca_path, key_path = out / "ca.pem", out / "ca-key.pem"
    if ca_path.exists() and key_path.exists():
        try:
            cert = x509.load_pem_x509_certificate(ca_path.read_bytes())
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        except (ValueError, OSError) as exc:
            raise UsageError(f"cannot read the existing CA in {out}: {exc}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise UsageError(f"{key_path} is not an ECDSA key")
        return cert, key, False
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "wirekit local CA"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"wirekit local CA {os.urandom(4).hex()}"),
        ]
    )
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    _write(key_path, _key_pem(key), private=True)
    _write(ca_path, cert.public_bytes(serialization.Encoding.PEM), private=False)
    return cert, key, True


def _san(names: list[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for name in names:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            if not name or any(c.isspace() for c in name):
                raise UsageError(f"not a valid DNS name or IP address: {name!r}") from None
            out.append(x509.DNSName(name))
    return out


def issue(out: str | Path, names: list[str]) -> Issued:
    """Create (or reuse) the CA in ``out`` and issue a server certificate for ``names``."""
    if not names:
        raise UsageError("give at least one DNS name or IP address for the certificate")
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create {out}: {exc.strerror}") from None
    sans = _san(names)
    ca_cert, ca_key, created = _load_or_create_ca(out)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    not_after = now + dt.timedelta(days=SERVER_DAYS)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = out / "server.pem", out / "server-key.pem"
    _write(key_path, _key_pem(key), private=True)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), private=False)
    return Issued(
        ca=out / "ca.pem",
        ca_key=out / "ca-key.pem",
        cert=cert_path,
        key=key_path,
        names=names,
        ca_created=created,
        not_after=not_after.isoformat(timespec="seconds"),
    )


DEFAULT_NAMES = ["localhost", "127.0.0.1", "::1"]


def default_server_cert(data_dir: str | Path) -> tuple[Path, Path]:
    """The server certificate in ``DATA_DIR/certs``, issued for localhost on first use."""
    out = Path(data_dir) / "certs"
    cert, key = out / "server.pem", out / "server-key.pem"
    if not (cert.exists() and key.exists()):
        issue(out, DEFAULT_NAMES)
    return cert, key
