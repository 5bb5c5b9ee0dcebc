import pytest

from utils.phone import lookup_keys, mask_phone, normalize_phone


@pytest.mark.parametrize("raw", ["+91 98765 43210", "09876543210", "9876543210", "919876543210",
                                 "+91-98765-43210", "0091 98765 43210", " +919876543210 "])
def test_every_spelling_of_an_indian_number_is_one_e164(raw):
    phone = normalize_phone(raw, "IN")
    assert phone.e164 == "+919876543210"
    assert phone.valid and phone.key == "+919876543210"
    assert phone.raw == raw.strip()


@pytest.mark.parametrize("raw", ["+1 (415) 555-2671", "+14155552671", "14155552671"])
def test_us_numbers_with_country_code(raw):
    assert normalize_phone(raw, "IN").e164 == "+14155552671"


def test_national_number_uses_the_default_region():
    assert normalize_phone("(415) 555-2671", "US").e164 == "+14155552671"


@pytest.mark.parametrize("raw", ["12345", "+0000", "abc", "1" * 25])
def test_invalid_numbers_are_kept_raw_and_keyed_by_their_text(raw):
    phone = normalize_phone(raw, "IN")
    assert phone.e164 is None and not phone.valid
    assert phone.key == raw


@pytest.mark.parametrize("raw", [None, "", "   "])
def test_no_number_at_all(raw):
    assert normalize_phone(raw, "IN") is None


def test_lookup_keys_cover_spellings_stored_before_normalization():
    keys = lookup_keys(normalize_phone("09876543210", "IN"))
    assert keys[0] == "+919876543210"
    assert {"9876543210", "09876543210", "919876543210", "+91 98765 43210"} <= set(keys)


def test_mask_keeps_last_four_digits():
    assert mask_phone("+91 98765 43210") == "***3210"
    assert mask_phone("12") == "***"
