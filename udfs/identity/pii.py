"""PII normalization and keyed hashing.

Emails and phone numbers are normalized (trimmed, lower-cased email; E.164 phone) and then replaced by
HMAC-SHA256 under a secret key from `TAGSTREAM_PII_KEY`, before anything is kept in state or emitted.
The domain (identifier type) is part of the MAC input, so equal strings of different types never collide.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Mapping

PII_KEY_ENV = "TAGSTREAM_PII_KEY"
PII_KEY_FILE_ENV = PII_KEY_ENV + "_FILE"  # a file holding the key (e.g. a mounted Docker / Kubernetes secret)
MIN_KEY_BYTES = 16

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_EMAIL_IN_TEXT = re.compile(r"[^@\s<>\"'(),;:]+@[^@\s<>\"'(),;:]+\.[a-z]{2,}", re.IGNORECASE)
_PHONE_SEPARATORS = re.compile(r"[\s\-./()\u00a0]")
_PHONE_EXTENSION = re.compile(r"(?:ext\.?|x|#)\s*\d+$", re.IGNORECASE)


class PiiKeyMissing(RuntimeError):
    """The HMAC key is not configured."""


def normalize_email(raw: str) -> str | None:
    """Trims and lower-cases an email address.

    Returns:
        The normalized address, or None when it does not look like `local@domain.tld`.
    """
    text = raw.strip().lower()
    return text if _EMAIL.match(text) else None


def normalize_phone(raw: str, default_country_code: str) -> str | None:
    """Normalizes a phone number to E.164 (`+` then 8 to 15 digits).

    Rules: separators and an extension are dropped; a leading `+` or `00` marks an international number;
    otherwise a single leading trunk `0` is dropped and the default country code prepended. This is not a
    full numbering-plan parser (e.g. Italian fixed lines keep their leading 0 in E.164); `phonenumbers`
    would be the upgrade path.

    Returns:
        The E.164 number, or None when the text is not a plausible phone number.
    """
    text = _PHONE_EXTENSION.sub("", raw.strip())
    text = _PHONE_SEPARATORS.sub("", text)
    if text.startswith("+"):
        body = text[1:]
    elif text.startswith("00"):
        body = text[2:]
    elif text.startswith("0"):
        body = default_country_code + text[1:]
    else:
        body = default_country_code + text
    if not body.isascii() or not body.isdigit() or body.startswith("0") or not 8 <= len(body) <= 15:
        return None
    return "+" + body


def redact_emails(text: str) -> str:
    """Replaces anything shaped like an email address in free text by `[email]`."""
    return _EMAIL_IN_TEXT.sub("[email]", text)


class PiiHasher:
    """Keyed hashing of normalized PII.

    Args:
        key: the secret HMAC key (at least 16 bytes).
        hex_chars: length of the emitted hex digest (128 bits by default).
    """

    def __init__(self, key: bytes, hex_chars: int = 32):
        if len(key) < MIN_KEY_BYTES:
            raise PiiKeyMissing(f"the PII key must be at least {MIN_KEY_BYTES} bytes")
        self._key = key
        self.hex_chars = hex_chars

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, hex_chars: int = 32) -> PiiHasher:
        """Builds a hasher from `TAGSTREAM_PII_KEY`, or from the file `TAGSTREAM_PII_KEY_FILE` names (a mounted
        secret; surrounding whitespace is dropped).

        Raises:
            PiiKeyMissing: when neither is set, the file cannot be read, or the key is too short (the job must
                not start without it).
        """
        env = os.environ if env is None else env
        value = env.get(PII_KEY_ENV, "")
        if not value and env.get(PII_KEY_FILE_ENV):
            try:
                with open(env[PII_KEY_FILE_ENV], encoding="utf-8") as f:
                    value = f.read().strip()
            except OSError as exc:
                raise PiiKeyMissing(f"{PII_KEY_FILE_ENV}: cannot read the PII key ({exc})") from None
        if not value:
            raise PiiKeyMissing(f"{PII_KEY_ENV} (or {PII_KEY_FILE_ENV}) is not set: the identity job needs a secret "
                                "key to hash emails and phone numbers (HMAC-SHA256); set it from the secret store")
        return cls(value.encode("utf-8"), hex_chars)

    def digest(self, domain: str, value: str) -> str:
        """Returns the keyed hash of a normalized value in a domain (e.g. `email`)."""
        mac = hmac.new(self._key, f"{domain}\x1f{value}".encode(), hashlib.sha256)
        return mac.hexdigest()[: self.hex_chars]
