"""The server's RSA signing keys for OIDC tokens, kept as PEM files in one directory.

The newest key signs; every key in the directory is published (JWKS and PEM certificates), so
a rotation is: add a key (``opentasks keys rotate``), wait longer than a token lives (1 h),
then remove the old one (``opentasks keys retire KID``). A running server notices both within
``reload_interval``. Several servers sharing the directory sign with the same key.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from opentasks.clock import Clock, SystemClock

KEY_BITS = 2048
_SUFFIX = ".pem"


@dataclass(frozen=True)
class SigningKey:
    """One RSA key: ``kid`` is the base64url SHA-256 of its public key (stable, unique)."""

    kid: str
    private_key: rsa.RSAPrivateKey
    created: float  # file modification time: the newest key signs

    def jwk(self) -> dict[str, str]:
        numbers = self.private_key.public_key().public_numbers()
        return {
            "kty": "RSA",
            "alg": "RS256",
            "use": "sig",
            "kid": self.kid,
            "n": _b64(numbers.n),
            "e": _b64(numbers.e),
        }

    def certificate_pem(self) -> str:
        """A self-signed X.509 certificate of the public key (Google's ``/oauth2/v1/certs`` form)."""
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"opentasks {self.kid}")])
        born = datetime.fromtimestamp(self.created, UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.private_key.public_key())
            .serial_number(int.from_bytes(hashlib.sha256(self.kid.encode()).digest()[:16], "big"))
            .not_valid_before(born - timedelta(days=1))
            .not_valid_after(born + timedelta(days=3650))
            .sign(self.private_key, hashes.SHA256())
        )
        return certificate.public_bytes(serialization.Encoding.PEM).decode()


class KeyRing:
    """The signing keys of ``directory`` (created, with a first key, when missing)."""

    def __init__(self, directory: Path, *, clock: Clock | None = None, reload_interval: float = 10.0) -> None:
        self.directory = directory
        self._clock = clock or SystemClock()
        self._reload_interval = reload_interval
        self._keys: list[SigningKey] = []
        self._stamp: tuple[tuple[str, float], ...] = ()
        self._checked = float("-inf")
        self._certificates: dict[str, str] = {}

    def load(self) -> None:
        """Read the directory now, creating a first key if it holds none."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not self._files():
            add_key(self.directory)
        self._reload()

    @property
    def keys(self) -> list[SigningKey]:
        """Every published key, newest (the signing key) first."""
        if self._clock.monotonic() - self._checked >= self._reload_interval:
            self._reload()
        return self._keys

    @property
    def signing_key(self) -> SigningKey:
        return self.keys[0]

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        return {"keys": [key.jwk() for key in self.keys]}

    def certificates(self) -> dict[str, str]:
        """kid -> PEM certificate, as Google's ``/oauth2/v1/certs`` serves them."""
        keys = self.keys
        for key in keys:
            if key.kid not in self._certificates:
                self._certificates[key.kid] = key.certificate_pem()
        return {key.kid: self._certificates[key.kid] for key in keys}

    def _files(self) -> list[Path]:
        return sorted(self.directory.glob(f"*{_SUFFIX}"))

    def _reload(self) -> None:
        self._checked = self._clock.monotonic()
        files = self._files()
        stamp = tuple((f.name, f.stat().st_mtime) for f in files)
        if stamp == self._stamp and self._keys:
            return
        keys = [_read(path) for path in files]
        if not keys:
            raise FileNotFoundError(f"no signing key (*.pem) in {self.directory}")
        self._keys = sorted(keys, key=lambda k: k.created, reverse=True)
        self._stamp = stamp


def add_key(directory: Path) -> SigningKey:
    """Generate a key and write it to ``directory`` (mode 0600); it becomes the signing key."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    kid = key_id(private_key)
    path = directory / f"{kid}{_SUFFIX}"
    pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    temporary = path.with_suffix(".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(pem)
        file.flush()
        os.fsync(file.fileno())
    temporary.replace(path)
    return _read(path)


def retire_key(directory: Path, kid: str) -> None:
    """Delete key ``kid``; refuses to delete the last one."""
    files = sorted(directory.glob(f"*{_SUFFIX}"))
    target = directory / f"{kid}{_SUFFIX}"
    if target not in files:
        raise FileNotFoundError(f"no key {kid} in {directory}")
    if len(files) == 1:
        raise ValueError("cannot retire the only signing key; rotate first")
    target.unlink()


def key_id(private_key: rsa.RSAPrivateKey) -> str:
    der = private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()[:16]).rstrip(b"=").decode()


def _read(path: Path) -> SigningKey:
    private_key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(private_key, rsa.RSAPrivateKey):
        raise ValueError(f"{path} is not an RSA private key")
    return SigningKey(key_id(private_key), private_key, path.stat().st_mtime)


def _b64(number: int) -> str:
    raw = number.to_bytes((number.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
