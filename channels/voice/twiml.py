"""Every TwiML document the voice channel answers with, built only through ``twilio.twiml`` builders.

Pure functions of what to say and where Twilio should go next, so the call flow (channel.py) reads as a
sequence of decisions and each document can be checked by parsing it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from xml.sax.saxutils import escape

from twilio.twiml.voice_response import Dial, Gather, VoiceResponse

TWIML = "application/xml"


@dataclass(frozen=True, slots=True)
class Speech:
    """How the gateway speaks and listens on a call: Twilio's language code and optional voice."""

    language: str = "en-US"
    voice: str | None = None

    def say(self, parent: VoiceResponse | Gather, text: str) -> None:
        if text:
            if self.voice:
                parent.say(text, language=self.language, voice=self.voice)
            else:
                parent.say(text, language=self.language)


def prompt(speech: Speech, texts: Sequence[str], action: str, *, timeout_seconds: int, after: str) -> str:
    """Say ``texts`` inside a Gather for speech or keys; without any input, Twilio still posts to ``action``
    (actionOnEmptyResult), and ``after`` is a Redirect in case it does not.

    Every turn of every call answers with one of these, mostly with the same few texts (an FAQ's answers, a
    reprompt): the document is built once per texts by the builder, with a marker where the URLs go."""
    document = _prompt_document(speech, tuple(texts), timeout_seconds)
    return document.replace(_ACTION, escape(action, _QUOTES)).replace(_AFTER, escape(after))


_ACTION, _AFTER = "hg-action-url-marker", "hg-after-url-marker"
_QUOTES = {'"': "&quot;"}


@lru_cache(maxsize=1024)
def _prompt_document(speech: Speech, texts: tuple[str, ...], timeout_seconds: int) -> str:
    response = VoiceResponse()
    gather = response.gather(
        input="speech dtmf", action=_ACTION, method="POST", speech_timeout="auto", timeout=timeout_seconds,
        action_on_empty_result=True, language=speech.language,
    )
    for text in texts:
        speech.say(gather, text)
    response.redirect(_AFTER, method="POST")
    return str(response)


def keys(
    speech: Speech, texts: Sequence[str], action: str, *, timeout_seconds: int, num_digits: int | None
) -> str:
    """Say ``texts`` and listen for keys only: ``num_digits`` of them, or any number ended with #. Without
    any, Twilio still posts to ``action`` (actionOnEmptyResult), and a Redirect there is the fallback."""
    response = VoiceResponse()
    gather = response.gather(input="dtmf", action=action, method="POST", timeout=timeout_seconds,
                             finish_on_key="#", action_on_empty_result=True,
                             **({"num_digits": num_digits} if num_digits else {}))
    for text in texts:
        speech.say(gather, text)
    response.redirect(action, method="POST")
    return str(response)


def holding(speech: Speech, text: str, redirect: str, pause_seconds: int) -> str:
    """A short phrase while the bot is still thinking, then poll again."""
    response = VoiceResponse()
    speech.say(response, text)
    response.pause(length=pause_seconds)
    response.redirect(redirect, method="POST")
    return str(response)


def goodbye(speech: Speech, texts: Sequence[str]) -> str:
    response = VoiceResponse()
    for text in texts:
        speech.say(response, text)
    response.hangup()
    return str(response)


def voicemail(speech: Speech, texts: Sequence[str], action: str, max_seconds: int) -> str:
    """Say why, then record after the tone; the recording comes back to ``action``."""
    response = VoiceResponse()
    for text in texts:
        speech.say(response, text)
    response.record(action=action, method="POST", max_length=max_seconds, play_beep=True, timeout=5)
    response.hangup()
    return str(response)


def wait_for_agent(
    speech: Speech, texts: Sequence[str], room: str, *, wait_url: str, events_url: str, after: str,
    star_leaves: bool = False,
) -> str:
    """The caller waits in the conversation's conference room, hearing ``wait_url`` (announcements and hold
    audio) until an agent's leg starts the room. The caller leaving ends the room; an agent leaving does not,
    so a transfer can bring in the next one. ``after`` is asked when the caller leaves the room: by pressing
    star too, with ``star_leaves`` (a room takes no other keys, so that is how a waiting caller asks for a
    callback)."""
    response = VoiceResponse()
    for text in texts:
        speech.say(response, text)
    dial = Dial(action=after, method="POST", **({"hangup_on_star": True} if star_leaves else {}))
    dial.conference(
        room, start_conference_on_enter=False, end_conference_on_exit=True, beep=False,
        wait_url=wait_url, wait_method="POST", status_callback=events_url, status_callback_method="POST",
        status_callback_event="start end join leave hold",
    )
    response.append(dial)
    return str(response)


def join_as_agent(speech: Speech, text: str, room: str, events_url: str) -> str:
    """An agent's leg joins (and starts) the room; leaving it does not end it for the caller."""
    response = VoiceResponse()
    speech.say(response, text)
    dial = Dial()
    dial.conference(
        room, start_conference_on_enter=True, end_conference_on_exit=False, beep=False,
        status_callback=events_url, status_callback_method="POST", status_callback_event="join leave",
    )
    response.append(dial)
    return str(response)


def announcements(speech: Speech, text: str, hold_audio: str | None, again: str, pause_seconds: int) -> str:
    """Hold/wait audio: only Say, Play, Pause and Redirect are allowed here (a Gather is error 13238)."""
    response = VoiceResponse()
    speech.say(response, text)
    if hold_audio:
        response.play(hold_audio)
    else:
        response.pause(length=pause_seconds)
    response.redirect(again, method="POST")
    return str(response)


def agent_brief(speech: Speech, texts: Sequence[str], action: str, timeout_seconds: int) -> str:
    """What an agent's leg hears before taking the call: the brief, then one key."""
    response = VoiceResponse()
    gather = response.gather(input="dtmf", num_digits=1, action=action, method="POST",
                             timeout=timeout_seconds, action_on_empty_result=True)
    for text in texts:
        speech.say(gather, text)
    return str(response)


def say_only(speech: Speech, texts: Sequence[str]) -> str:
    """An announcement (to one participant of a conference): Say only."""
    response = VoiceResponse()
    for text in texts:
        speech.say(response, text)
    return str(response)
