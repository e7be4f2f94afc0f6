"""Redact the secrets a run knows from text before it is kept: transcripts, records, logs,
artifacts.

An agent that got hold of a secret could print it encoded to slip past a plain search, so
each secret is also looked for reversed, base64-encoded (standard and URL-safe alphabets, at
each of the three alignments it can have inside a longer encoded text, and across the line
breaks `base64` inserts) and hex-encoded.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Iterable, Mapping

REDACTED = "[redacted]"
# Shorter secrets only get the plain and reversed search: their encoded forms are so short
# they would match ordinary text.
MIN_ENCODED_LEN = 8
# Variable names that hint at a credential, anywhere in the name (AUTH but not AUTHOR).
SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|AUTH(?!OR)|CREDENTIAL", re.IGNORECASE)
MIN_SECRET_LEN = 6  # shorter values (a "1", a "true") would redact ordinary text


def process_secrets(
    extra: Iterable[str] = (), environ: Mapping[str, str] | None = None
) -> set[str]:
    """The secrets this process knows: `extra` (the model API key, an auth string) and the
    values of its environment variables named like credentials."""
    env = os.environ if environ is None else environ
    found = {v for k, v in env.items() if SECRET_NAME.search(k)} | set(extra)
    return {s for s in found if s and len(s.strip()) >= MIN_SECRET_LEN}


def _base64_cores(data: bytes) -> set[str]:
    """The base64 characters that depend on `data` alone, at each alignment (0, 1, 2 bytes of
    something else before it), in both alphabets."""
    cores = set()
    for skip in range(3):
        encoded = base64.b64encode(bytes(skip) + data).decode()
        first = -(-skip * 8 // 6)  # the first character made of `data` bits only
        last = ((skip + len(data)) * 8) // 6  # one past the last such character
        core = encoded[first:last]
        cores |= {core, core.replace("+", "-").replace("/", "_")}
    return {c for c in cores if c}


def _forms(secret: str) -> set[str]:
    forms = {secret, secret[::-1]}
    if len(secret) >= MIN_ENCODED_LEN:
        for text in (secret, secret[::-1]):
            data = text.encode()
            forms |= _base64_cores(data)
            hexed = binascii.hexlify(data).decode()
            forms |= {hexed, hexed.upper()}
    return forms


def _pattern(form: str) -> str:
    # base64 wraps its output every 76 characters: allow a line break between any two.
    return r"(?:\r?\n)?".join(re.escape(ch) for ch in form)


class Redactor:
    """Replaces every known secret, in any of its forms, with REDACTED."""

    def __init__(self, secrets: Iterable[str]) -> None:
        forms: set[str] = set()
        for secret in secrets:
            if secret and secret.strip():
                forms |= _forms(secret)
        # Longest first, so a form that contains another is replaced whole.
        ordered = sorted(forms, key=len, reverse=True)
        self._regex = re.compile("|".join(_pattern(f) for f in ordered)) if ordered else None

    def __call__(self, text: str) -> str:
        """`text` with every secret replaced."""
        if self._regex is None or not text:
            return text
        return self._regex.sub(REDACTED, text)


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` without `secrets` (plain, reversed, base64, hex). Build a Redactor once to
    redact many texts."""
    return Redactor(secrets)(text)
