"""The E.164 fast path of phone normalization gives exactly what `phonenumbers.parse` gives: on
every example number of every region and type, on those numbers changed a digit at a time or with
a national prefix written in, and on generated `+<digits>`."""
import phonenumbers
import pytest
from hypothesis import given, settings, strategies as st

from utils.phone import _e164_valid, _parsed_e164, normalize_phone

COUNTRY_CODES = sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)
REGIONS = ("IN", "US", "GB")


def _examples() -> list[str]:
    numbers = set()
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in range(12):  # every PhoneNumberType
            example = phonenumbers.example_number_for_type(region, kind)
            if example is not None:
                numbers.add(phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164))
    for country in phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS:
        example = phonenumbers.example_number_for_non_geo_entity(country)
        if example is not None:
            numbers.add(phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164))
    return sorted(numbers)


def _variants(e164: str) -> list[str]:
    """The number, one digit changed, one dropped, one added, and with a `0`, `1` or `8` (national
    prefixes) written after each possible country code."""
    digits = e164[1:]
    out = [e164, e164[:-1], e164 + "7", e164[:-1] + str((int(e164[-1]) + 1) % 10)]
    for length in (1, 2, 3):
        for prefix in ("0", "1", "8"):
            out.append("+" + digits[:length] + prefix + digits[length:])
    return out


def _same(text: str) -> None:
    for region in REGIONS:
        slow = _parsed_e164(text, region)
        if _e164_valid(text):
            assert slow == text, (text, region)


def test_every_example_number_and_its_variants_agree_with_the_parser():
    examples = _examples()
    assert len(examples) > 1000
    fast = 0
    for e164 in examples:
        for text in _variants(e164):
            _same(text)
            fast += _e164_valid(text)
    assert fast > len(examples) // 2  # the fast path does carry the load


@settings(max_examples=3000)
@given(st.sampled_from(COUNTRY_CODES), st.text(alphabet="0123456789", min_size=1, max_size=14))
def test_generated_international_numbers_agree_with_the_parser(country, national):
    _same(f"+{country}{national}")


@pytest.mark.parametrize("text, expected", [
    ("+919876543210", "+919876543210"),   # fast path
    ("+78005553535", "+78005553535"),     # Russia: `8` could be a national prefix: parsed
    ("+390612345678", "+390612345678"),   # Italy: a leading zero: parsed
    ("+12345", None),
    ("+91 98765 43210", "+919876543210"),  # spaces: parsed
])
def test_normalize_gives_the_same_keys_through_either_path(text, expected):
    assert normalize_phone(text, "IN").e164 == expected
