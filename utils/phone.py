"""Phone numbers: one canonical form (E.164) so that every spelling of a number is one customer."""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import phonenumbers

DEFAULT_REGION = "IN"  # where numbers written without a country code are from, unless configured


@dataclass(frozen=True)
class Phone:
    raw: str  # exactly as received
    e164: str | None  # None when the number could not be parsed into a valid number

    @property
    def valid(self) -> bool:
        return self.e164 is not None

    @property
    def key(self) -> str:
        """What a record is keyed by: E.164 when valid, else the text without surrounding blanks
        (so an invalid number is never merged with a different one)."""
        return self.e164 or self.raw.strip()

    @classmethod
    def stored(cls, key: str, valid: bool) -> "Phone":
        """The number as a record keeps it (its key and whether it is valid), without parsing again."""
        return cls(raw=key, e164=key if valid else None)


def normalize_phone(raw: object, region: str = DEFAULT_REGION) -> Phone | None:
    """Parse a number as Bolna sends it. None when there is no number to speak of: nothing, blanks,
    or text without a single digit (`anonymous`, `private`, `Restricted`, ... as carriers write a
    withheld caller id), which would otherwise make strangers one customer."""
    if missing_number_reason(raw) is not None:
        return None
    text = raw if isinstance(raw, str) else str(raw)
    return Phone(raw=text, e164=_to_e164(text.strip(), region))


def missing_number_reason(raw: object) -> str | None:
    """Why `normalize_phone` found no number: `missing` (none sent) or `withheld` (text without
    digits); None when there is a number."""
    if raw is None or not str(raw).strip():
        return "missing"
    return None if any(ch.isdigit() for ch in str(raw)) else "withheld"


# Repeat callers and re-syncs parse the same strings again and again.
@lru_cache(maxsize=65536)
def _to_e164(text: str, region: str) -> str | None:
    return text if _e164_valid(text) else _parsed_e164(text, region)


def _e164_valid(text: str) -> bool:
    """The fast path for what telephony providers send, `+<digits>`: the number is built from the
    digits as `parse` would build it, and only validated. Anything `parse` could read otherwise
    (a national number with a leading zero, a national prefix `parse` would strip) is left to it:
    `_to_e164` gives the same answer either way (tests/test_phone_fast_path.py)."""
    digits = text[1:]
    if text[:1] != "+" or not (digits.isascii() and digits.isdigit()) or not 3 <= len(digits) <= 17:
        return False
    for length in (1, 2, 3):  # country codes are prefix-free: at most one of these is one
        country = int(digits[:length])
        if country in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            national = digits[length:]
            prefix = _prefix_for_parsing(country)
            if not national or national[0] == "0" or (prefix is not None and prefix.match(national)):
                return False
            number = phonenumbers.PhoneNumber(country_code=country, national_number=int(national))
            return phonenumbers.is_valid_number(number)
    return False


@lru_cache(maxsize=512)
def _prefix_for_parsing(country: int) -> re.Pattern | None:
    """The national prefix `parse` strips for this country code (e.g. `8` in Russia), if any."""
    metadata = phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(
        country, phonenumbers.region_code_for_country_code(country))
    pattern = metadata.national_prefix_for_parsing if metadata is not None else None
    return re.compile(pattern) if pattern else None


def _parsed_e164(text: str, region: str) -> str | None:
    candidates = [text]
    digits = "".join(ch for ch in text if ch.isdigit())
    # "919876543210": the country code written without "+" is common in telephony payloads;
    # try it as international only when the national reading is not a valid number.
    if not text.startswith("+") and digits and not digits.startswith("0"):
        candidates.append("+" + digits)
    for candidate in candidates:
        try:
            number = phonenumbers.parse(candidate, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return None


# How people write the separators of a number: the formatter's spaces, or dashes, dots, nothing.
_SEPARATORS = (" ", "-", ".", "")
_GROUP_BREAK = re.compile(r"[ -]")


def lookup_keys(phone: Phone) -> list[str]:
    """Every spelling under which a record of this number may have been stored before
    normalization existed: the E.164 form, the raw text, with or without the country code
    (`+`, `00` or bare), with a trunk `0`, grouped as the formatters group it with spaces,
    dashes, dots or nothing, and brackets where a region writes them (`(415) 555-2671`)."""
    keys = [phone.key, phone.raw, phone.raw.strip()]
    if phone.e164:
        keys += _spellings(phone.e164)
    return list(dict.fromkeys(keys))


# Every page looks its numbers up again (repeat callers, re-read pages); a number's spellings
# never change. About 2 KB an entry (some thirty spellings): 4,096 numbers hold about 8 MB.
@lru_cache(maxsize=4096)
def _spellings(e164: str) -> tuple[str, ...]:
    number = phonenumbers.parse(e164)
    national = str(number.national_number)
    country = str(number.country_code)
    keys = [e164[1:], national, "0" + national, "00" + country + national]
    grouped = [phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL),
               phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)]
    grouped.append(grouped[0].replace("+", "00", 1))
    grouped.append(grouped[0].removeprefix("+" + country).strip())
    for text in grouped:
        keys.append(text)
        for spelling in (text, text.replace("(", "").replace(")", "")):
            groups = _GROUP_BREAK.split(spelling)
            keys += [separator.join(groups) for separator in _SEPARATORS]
    return tuple(keys)


def mask_phone(value: object) -> str:
    """For logs: keep the last four digits only."""
    digits = "".join(ch for ch in str(value or "") if ch.isdigit())
    return "***" + digits[-4:] if len(digits) > 4 else "***"
