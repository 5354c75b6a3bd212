"""Encryption of provider credentials at rest (Fernet), and their masked display."""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from .errors import ConfigError


def _fernet_for(secret: str) -> Fernet:
    """A Fernet key as given, or one derived from a passphrase (SHA-256 of it)."""
    try:
        return Fernet(secret.encode())
    except ValueError:
        digest = hashlib.sha256(secret.encode()).digest()
        return Fernet(base64.urlsafe_b64encode(digest))


class CredentialCipher:
    """Encrypts and decrypts provider credentials with the configured secret.

    Several comma-separated secrets rotate: the first encrypts, all decrypt. Without a secret,
    encrypting raises :class:`ConfigError` telling the operator which setting to add, so a
    credential is never stored in clear.
    """

    def __init__(self, secrets: str | None) -> None:
        parts = [s.strip() for s in (secrets or "").split(",") if s.strip()]
        self._fernet = MultiFernet([_fernet_for(p) for p in parts]) if parts else None

    @property
    def configured(self) -> bool:
        return self._fernet is not None

    def _require(self) -> MultiFernet:
        if self._fernet is None:
            raise ConfigError(
                "No encryption key for provider credentials: set AIGATEWAY_SECRET_KEY "
                "(or the app's SECRET_KEY)."
            )
        return self._fernet

    def encrypt(self, plaintext: str) -> str:
        return self._require().encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._require().decrypt(token.encode()).decode()
        except InvalidToken:
            raise ConfigError(
                "A stored provider credential cannot be decrypted: AIGATEWAY_SECRET_KEY "
                "changed. Put the old key after the new one (comma-separated), or set the "
                "provider's API key and extra headers again (`flask provider list` names "
                "those that cannot be decrypted)."
            ) from None


#: Marks an extra-header value stored as a Fernet token (values without it are rows written
#: before header values were encrypted, read as they are and encrypted on the next update).
ENCRYPTED_PREFIX = "aigw-enc:"


def encrypt_headers(cipher: CredentialCipher, headers: dict[str, str]) -> dict[str, str]:
    """Header values as stored: names in clear (shown in listings), values encrypted."""
    return {name: ENCRYPTED_PREFIX + cipher.encrypt(value) for name, value in headers.items()}


def decrypt_headers(cipher: CredentialCipher, stored: dict[str, str] | None) -> dict[str, str]:
    """Stored header values in clear (see :func:`encrypt_headers`); raises ConfigError like
    :meth:`CredentialCipher.decrypt` when the secret changed."""
    return {
        name: cipher.decrypt(value[len(ENCRYPTED_PREFIX) :])
        if value.startswith(ENCRYPTED_PREFIX)
        else value
        for name, value in (stored or {}).items()
    }


def mask(secret: str | None) -> str | None:
    """What listings show of a credential: its last four characters at most."""
    if not secret:
        return None
    if len(secret) < 12:
        return "****"
    return f"****{secret[-4:]}"
