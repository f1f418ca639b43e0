"""Vendor error text is scrubbed of the key before it is cut: no case variant and no piece of a key
reaches a run's error details or a test-connection answer."""

from __future__ import annotations

import pytest

from chalicelib.domain.judging import (
    MAX_ERROR_MESSAGE_CHARS,
    VendorCallError,
    sanitize_vendor_message,
    scrub_secrets,
)
from tests.unit.leak_kit import KEY, leaked


@pytest.mark.parametrize("echo", [KEY, KEY.upper(), KEY.lower(), KEY.swapcase(), KEY[:20], KEY[-12:],
                                  f"'{KEY[:14]}…{KEY[-4:]}'", f"key={KEY}&", f"<b>{KEY.upper()}</b>"])
def test_every_variant_of_the_key_is_removed(echo: str) -> None:
    clean = sanitize_vendor_message(f"Invalid credentials presented: {echo}. Rotate it.", secrets=[KEY])
    assert not leaked(clean), clean
    assert "Invalid credentials presented" in clean and "Rotate it." in clean


@pytest.mark.parametrize("offset", range(MAX_ERROR_MESSAGE_CHARS - 40, MAX_ERROR_MESSAGE_CHARS + 5))
def test_a_key_straddling_the_cut_leaves_no_prefix(offset: int) -> None:
    # Wherever the key sits relative to the length bound, what remains after the cut holds none of it.
    clean = sanitize_vendor_message("x" * offset + KEY + " trailing text", secrets=[KEY])
    assert not leaked(clean)
    assert len(clean) <= MAX_ERROR_MESSAGE_CHARS


def test_a_body_already_cut_by_someone_else_is_still_scrubbed() -> None:
    body = ("e" * 190 + KEY)[:200]  # what a 200-character cut before the scrub used to leave: 10 key chars
    assert not leaked(VendorCallError("auth", f"Rejected (HTTP 401): {body}", secrets=[KEY]).message)


def test_sk_shaped_keys_in_upper_case_are_key_shaped_too() -> None:
    assert "ABCDEF123456" not in scrub_secrets("bad key SK-ANT-API03-ABCDEF123456")


def test_ordinary_text_survives() -> None:
    text = "The model claude-sonnet-4-6 is overloaded; retry after 30 seconds (request req_0123)."
    assert scrub_secrets(text, [KEY]) == text
