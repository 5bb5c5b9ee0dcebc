"""Phone numbers: one canonical form (E.164) so that every spelling of a number is one customer."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import phonenumbers

DEFAULT_REGION = "IN"  # where numbers written without a country code are from, unless configured


@dataclass(frozen=True)
class Phone:
    raw: str
    e164: str | None  # None when the number could not be parsed into a valid number

    @property
    def valid(self) -> bool:
        return self.e164 is not None

    @property
    def key(self) -> str:
        """What a record is keyed by: E.164 when valid, else the raw text (so an invalid
        number is never merged with a different one)."""
        return self.e164 or self.raw

    @classmethod
    def stored(cls, key: str, valid: bool) -> "Phone":
        """The number as a record keeps it (its key and whether it is valid), without parsing again."""
        return cls(raw=key, e164=key if valid else None)


def normalize_phone(raw: object, region: str = DEFAULT_REGION) -> Phone | None:
    """Parse a number as Bolna sends it; None when there is no number at all."""
    if raw is None:
        return None
    text = str(raw).strip()
    if not text:
        return None
    return Phone(raw=text, e164=_to_e164(text, region))


# Repeat callers and re-syncs parse the same strings again and again.
@lru_cache(maxsize=65536)
def _to_e164(text: str, region: str) -> str | None:
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


def lookup_keys(phone: Phone) -> list[str]:
    """Every spelling under which a record of this number may have been stored before
    normalization existed: the E.164 form, the raw text, and the usual national spellings."""
    keys = [phone.key, phone.raw]
    if phone.e164:
        number = phonenumbers.parse(phone.e164)
        national = str(number.national_number)
        keys += [phone.e164[1:], national, "0" + national,
                 phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)]
    return list(dict.fromkeys(keys))


def mask_phone(value: object) -> str:
    """For logs: keep the last four digits only."""
    digits = "".join(ch for ch in str(value or "") if ch.isdigit())
    return "***" + digits[-4:] if len(digits) > 4 else "***"
