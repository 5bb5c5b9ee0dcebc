import pytest

from utils.phone import lookup_keys, mask_phone, missing_number_reason, normalize_phone


@pytest.mark.parametrize("raw", ["+91 98765 43210", "09876543210", "9876543210", "919876543210",
                                 "+91-98765-43210", "0091 98765 43210", " +919876543210 "])
def test_every_spelling_of_an_indian_number_is_one_e164(raw):
    phone = normalize_phone(raw, "IN")
    assert phone.e164 == "+919876543210"
    assert phone.valid and phone.key == "+919876543210"
    assert phone.raw == raw  # exactly as received: cleaning is for matching only


@pytest.mark.parametrize("raw", ["+1 (415) 555-2671", "+14155552671", "14155552671"])
def test_us_numbers_with_country_code(raw):
    assert normalize_phone(raw, "IN").e164 == "+14155552671"


def test_national_number_uses_the_default_region():
    assert normalize_phone("(415) 555-2671", "US").e164 == "+14155552671"


@pytest.mark.parametrize("raw", ["12345", "+0000", "1" * 25, "98765\x0043210", "ext. 12"])
def test_invalid_numbers_are_kept_raw_and_keyed_by_their_text(raw):
    phone = normalize_phone(raw, "IN")
    assert phone.e164 is None and not phone.valid
    assert phone.key == raw


@pytest.mark.parametrize("raw,reason", [(None, "missing"), ("", "missing"), ("   ", "missing"),
                                        ("anonymous", "withheld"), ("Restricted", "withheld"),
                                        ("UNKNOWN", "withheld"), ("private", "withheld"), ("null", "withheld")])
def test_no_number_at_all(raw, reason):
    assert normalize_phone(raw, "IN") is None
    assert missing_number_reason(raw) == reason


def test_a_number_has_no_missing_reason():
    assert missing_number_reason("+91 98765 43210") is None


def test_lookup_keys_cover_spellings_stored_before_normalization():
    keys = lookup_keys(normalize_phone("09876543210", "IN"))
    assert keys[0] == "+919876543210"
    assert {"9876543210", "09876543210", "919876543210", "+91 98765 43210", "+91-98765-43210",
            "98765 43210", "0091 98765 43210", "00919876543210", "098765-43210"} <= set(keys)


def test_lookup_keys_cover_bracketed_and_dotted_us_spellings():
    keys = set(lookup_keys(normalize_phone("+14155552671", "IN")))
    assert {"(415) 555-2671", "415-555-2671", "415.555.2671", "+1 415 555 2671", "14155552671"} <= keys


def test_mask_keeps_last_four_digits():
    assert mask_phone("+91 98765 43210") == "***3210"
    assert mask_phone("12") == "***"
