"""What a customer reads and writes while arranging a callback: slots in words, the numbered menu, and
reading their reply (a choice, a phone number, CANCEL). The same words on every written channel; web chat
adds a form over them and voice reads keys, but both end in the same choices.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from babel.dates import format_datetime, format_time, get_timezone_name
from phonenumbers import timezone as number_zones

from handoff import messages
from handoff.ruleset import RuleSet
from sessions.models import CallbackRequest, CallbackSlot, Conversation

# Words that cancel a callback (or stop choosing one), in the rule sets' languages; matched on the whole
# reply, accents and case folded, as SMS keywords are. Never a bare CANCEL: on SMS that is a carrier opt-out
# keyword (Twilio blocks every later text to the number), so customers are told to write CANCEL CALLBACK.
CANCEL_WORDS = frozenset({"cancel callback", "cancel the callback", "cancel call", "no callback",
                          "ruckruf abbrechen", "ruckruf stornieren", "abbrechen", "kein ruckruf",
                          "cancelar llamada", "anular llamada", "cancelar", "sin llamada"})
# Words that ask for a callback while already waiting (the bot's "call me back" is a trigger phrase).
CALLBACK_WORDS = frozenset(
    {"callback", "call back", "call me back", "ruckruf", "zuruckrufen", "llamada", "llamenme", "llamame"}
)
# Inside a longer message, only wordings that cannot mean anything else.
_CALLBACK_PHRASES = frozenset(
    {
        "callback",
        "call back",
        "ruckruf",
        "zuruckrufen",
        "llamenme",
        "llamame",
        "call me",
        "ring me",
        "phone me",
        "give me a call",
        "rufen sie mich",
        "ruft mich",
        "mich anrufen",
        "mich zuruckrufen",
        "me llamen",
        "me llame",
        "devolver la llamada",
    }
)


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(re.sub(r"[^\w+]+", " ", plain).split())


def is_cancel(text: str) -> bool:
    return _fold(text) in CANCEL_WORDS


def asks_for_callback(text: str, anywhere: bool = False) -> bool:
    """The whole reply is a request for a callback (a keyword while waiting), or, ``anywhere``, the words
    appear in a longer message (the one that asked for a person)."""
    folded = _fold(text)
    if not anywhere:
        return folded in CALLBACK_WORDS
    padded = f" {folded} "
    return any(f" {words} " in padded for words in _CALLBACK_PHRASES)


@dataclass(frozen=True, slots=True)
class Reply:
    """What a reply to the callback menu means: one of these is set, or none (not about the callback)."""

    choice: int | None = None  # 1-based, as shown
    number: str | None = None  # E.164
    bad_number: bool = False
    out_of_range: bool = False


def read_reply(text: str, request: CallbackRequest, region: str | None) -> Reply:
    folded = _fold(text)
    if folded.isdigit() and len(folded) <= 2:
        index = int(folded)
        if 1 <= index <= len(request.choices):
            return Reply(choice=index)
        return Reply(out_of_range=True)
    digits = re.sub(r"[\s().-]", "", text)
    if re.fullmatch(r"\+?\d{6,16}", digits):
        number = parse_number(digits, region)
        return Reply(number=number) if number else Reply(bad_number=True)
    return Reply()


def parse_number(text: str, region: str | None) -> str | None:
    """E.164 for a number a customer wrote, or None when it is not a valid number."""
    try:
        parsed = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def region_of(number: str | None) -> str | None:
    if not number:
        return None
    try:
        return phonenumbers.region_code_for_number(phonenumbers.parse(number, None)) or None
    except phonenumbers.NumberParseException:
        return None


def shown_number(number: str) -> str:
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        return number
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL)


def zone_for(number: str | None, fallback: ZoneInfo | None) -> ZoneInfo | None:
    """The customer's time zone when their number has exactly one, else the team's."""
    if number:
        try:
            zones = number_zones.time_zones_for_number(phonenumbers.parse(number, None))
        except phonenumbers.NumberParseException:
            zones = ()
        if len(zones) == 1 and zones[0] != "Etc/Unknown":
            try:
                return ZoneInfo(zones[0])
            except ZoneInfoNotFoundError:
                pass
    return fallback


@dataclass(frozen=True, slots=True)
class Wording:
    """Whom a text is for: their language, channel and time zone, and the time it is written at."""

    rules: RuleSet
    locale: str
    channel: str
    zone: ZoneInfo | None
    now: datetime


def describe_slot(slot: CallbackSlot, w: Wording) -> str:
    """A slot in the customer's words and time zone, named so it is never ambiguous."""
    tz_name = get_timezone_name(w.zone, "long", locale=w.locale) if w.zone else "UTC"
    if slot.asap:
        if slot.start <= w.now + timedelta(minutes=1):
            return messages.render(w.rules, "callback_asap", w.locale, w.channel, now=w.now)[0]
        when = format_datetime(slot.start, "EEEE HH:mm", tzinfo=w.zone, locale=w.locale)
        return messages.render(w.rules, "callback_asap_later", w.locale, w.channel, now=w.now,
                               extra={"slot": f"{when} {tz_name}"})[0]
    start = format_datetime(slot.start, "EEEE d MMM, HH:mm", tzinfo=w.zone, locale=w.locale)
    end = format_time(slot.end, "HH:mm", tzinfo=w.zone, locale=w.locale) if slot.end else ""
    return f"{start}-{end} {tz_name}" if end else f"{start} {tz_name}"


def menu(slots: list[CallbackSlot], w: Wording) -> str:
    """One line per time, in the channel's wording of a line ("1. ..." written, "Press 1 for ..." spoken)."""
    line = w.rules.message("callback_choice", w.locale, w.channel)[0] or "{n}. {slot}"
    return "\n".join(line.format_map({"n": str(i), "slot": describe_slot(slot, w)})
                     for i, slot in enumerate(slots, 1))


def number_end(number: str | None) -> str:
    """The last four digits, spaced, so a voice reads them one by one ("ending in 4 5 6 7")."""
    digits = [c for c in number or "" if c.isdigit()]
    return " ".join(digits[-4:])


def locale_of(conversation: Conversation, rules: RuleSet) -> str:
    return (conversation.handoff.language if conversation.handoff else None) or (
        conversation.signals.language or rules.meta.default_locale
    )
