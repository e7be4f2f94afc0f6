"""Redaction of a run's secrets from text, in the forms an agent could print them."""

from __future__ import annotations

import base64
import binascii
import re

import pytest

from devswarm.sandbox.redact import REDACTED, Redactor, redact

KEY = "sk-test-secret-0123456789abcdefXYZ"


def _decodings(text: str) -> list[bytes]:
    """`text` as it is, and decoded from base64 (both alphabets, any start) and hex."""
    flat = text.replace("\n", "")
    found = [flat.encode("utf-8", "replace")]
    for start in range(len(flat)):
        chunk = flat[start:]
        chunk = chunk[: len(chunk) - len(chunk) % 4]
        for decode in (base64.b64decode, base64.urlsafe_b64decode):
            try:
                found.append(decode(chunk))
            except (binascii.Error, ValueError):
                pass
    for run in re.findall(r"[0-9a-fA-F]{16,}", flat):
        for start in (0, 1):
            part = run[start:]
            found.append(binascii.unhexlify(part[: len(part) - len(part) % 2]))
    return found


def _leaks(text: str) -> bool:
    """Whether `text` still holds KEY, plainly, reversed or encoded."""
    needles = (KEY.encode(), KEY[::-1].encode())
    return any(n in d for d in _decodings(text) for n in needles)


@pytest.mark.parametrize("prefix", ["", "x", "xy", "OPENAI_API_KEY=", "KEY=\u00e9"])
@pytest.mark.parametrize(
    "encode",
    [
        pytest.param(lambda b: b.decode(), id="plain"),
        pytest.param(lambda b: b.decode()[::-1], id="reversed"),
        pytest.param(lambda b: base64.b64encode(b).decode(), id="base64"),
        pytest.param(lambda b: base64.encodebytes(b * 3).decode(), id="base64-wrapped"),
        pytest.param(lambda b: base64.urlsafe_b64encode(b).decode(), id="base64-url"),
        pytest.param(lambda b: base64.b64encode(b.decode()[::-1].encode()).decode(), id="rev-b64"),
        pytest.param(lambda b: binascii.hexlify(b).decode(), id="hex"),
    ],
)
def test_every_form_of_the_key_is_redacted_wherever_it_sits(prefix, encode):
    shown = encode(f"{prefix}{KEY}\nmore output".encode())
    assert _leaks(shown)  # the checker sees the key in the unredacted text
    cleaned = redact(f"before {shown} after", [KEY])
    assert not _leaks(cleaned), cleaned
    assert KEY.encode().hex() not in cleaned
    assert REDACTED in cleaned and cleaned.startswith("before ")


def test_text_without_secrets_is_unchanged():
    text = "exit code 0\nall 12 tests passed; base64 aGVsbG8gd29ybGQ=\n"
    assert redact(text, [KEY, "", "   "]) == text
    assert Redactor([])(text) == text


def test_short_secrets_are_redacted_plainly_only():
    assert redact("pin 4321 and 1234", ["1234"]) == f"pin {REDACTED} and {REDACTED}"
    assert redact("MTIzNA==", ["1234"]) == "MTIzNA=="  # encoded short forms would hit ordinary text


def test_several_secrets_one_redactor():
    redactor = Redactor([KEY, "ghp_another_token_value"])
    text = f"{KEY} / ghp_another_token_value / {base64.b64encode(b'ghp_another_token_value')}"
    assert redactor(text).count(REDACTED) == 3
