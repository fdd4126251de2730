"""Tests for observability.phones: one normal form and one mask for every spelling."""

from __future__ import annotations

import pytest

from observability import phones


@pytest.mark.parametrize(
    "typed",
    ["+7 (900) 123-45-67", "8 900 123 45 67", "79001234567", "9001234567", "+79001234567"],
)
def test_normalize__any_spelling_gives_stored_form(typed):
    """Every way a person types a Russian mobile number finds the stored 79001234567."""
    assert phones.normalize(typed) == "79001234567"


def test_normalize__no_digits_is_empty():
    """Text without digits normalizes to nothing (so it is never searched as a phone)."""
    assert phones.normalize("Анна") == ""
    assert phones.normalize(None) == ""


def test_mask__keeps_both_ends_only():
    """A masked number shows the first four and last four digits and hides the middle."""
    assert phones.mask("+7 (900) 123-45-67") == "7900***4567"
    assert "123" not in phones.mask("79001234567")


def test_mask__short_number_hides_all_but_two():
    """A short number keeps only its last two digits."""
    assert phones.mask("12345") == "***45"
    assert phones.mask("") is None


def test_mask_jid__reads_creds_me_id():
    """The JID in creds.me.id is masked to the number's ends."""
    assert phones.mask_jid("79001234567:12@s.whatsapp.net") == "7900***4567"
    assert phones.mask_jid("79001234567@s.whatsapp.net") == "7900***4567"
    assert phones.mask_jid("") is None


def test_looks_like_phone__digits_not_names():
    """A phone in any spelling counts as a phone; a name or a salon id does not."""
    assert phones.looks_like_phone("+7 (900) 123-45-67")
    assert not phones.looks_like_phone("Анна 79001234567")
    assert not phones.looks_like_phone("962302")


@pytest.mark.parametrize(
    ("typed", "suffix", "prefix"),
    [
        ("4567", "4567", ""),
        ("45-67", "4567", ""),
        ("123 45 67", "4567", ""),  # only the four digits the mask shows
        ("7900***4567", "4567", "7900"),
        ("+7900***4567", "4567", "7900"),
    ],
)
def test_partial__last_digits_or_a_pasted_mask(typed, suffix, prefix):
    """Four to nine digits: the last four (what the mask shows); a pasted mask: both ends."""
    assert phones.partial(typed) == phones.PartialPhone(suffix=suffix, prefix=prefix)


@pytest.mark.parametrize("typed", ["123", "79001234567", "8 900 123 45 67", "Анна 4567", "", None])
def test_partial__not_a_partial_number(typed):
    """Fewer than four digits, a whole number, or text with letters is not a partial phone."""
    assert phones.partial(typed) is None


@pytest.mark.parametrize(
    ("typed", "suffix", "prefix"),
    [
        ("79001234567", "4567", "7900"),
        ("8 900 123 45 67", "4567", "7900"),
        ("+7 (900) 999-45-67", "4567", "7900"),  # the hidden digits play no part
        ("7900***4567", "4567", "7900"),
        ("123 45 67", "4567", ""),
    ],
)
def test_shown__a_whole_number_gives_only_what_its_mask_shows(typed, suffix, prefix):
    """A whole number gives its mask's first and last four digits; shorter text is partial."""
    assert phones.shown(typed) == phones.PartialPhone(suffix=suffix, prefix=prefix)


@pytest.mark.parametrize("typed", ["123", "Анна 79001234567", "", None])
def test_shown__not_a_phone(typed):
    """Too few digits, or letters, is no phone at all."""
    assert phones.shown(typed) is None
