"""What every Twilio webhook form needs checked: phone numbers in E.164, and a clear error when not."""

from __future__ import annotations

from functools import lru_cache

import phonenumbers


class FormError(ValueError):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


@lru_cache(maxsize=8192)
def e164(raw: str) -> str:
    """A number in E.164; cached, since the same few numbers write again and again."""
    try:
        number = phonenumbers.parse(raw, None)
    except phonenumbers.NumberParseException:
        raise FormError("invalid_number", f"{raw!r} is not an international phone number.") from None
    if not phonenumbers.is_possible_number(number):
        raise FormError("invalid_number", f"{raw!r} is not a possible phone number.")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
