"""What the voice channel needs of the deployment's settings, and what it says when the rules have no text."""

from __future__ import annotations

from dataclasses import dataclass, field

# The Twilio speech-recognition and text-to-speech locale for each language the rules speak.
DEFAULT_LANGUAGES = {"en": "en-US", "de": "de-DE", "es": "es-ES", "fr": "fr-FR", "it": "it-IT", "pt": "pt-BR"}


@dataclass(frozen=True, slots=True)
class VoiceTexts:
    """The phone's own phrases: the parts of a call the handoff rules know nothing of (English; a rules
    message with a ``voice`` wording is used wherever a handoff step has one)."""

    greeting: str = ("Hello, you're through to customer support. I'm an automated assistant. Tell me in a "
                     "few words how I can help, or say agent to reach a person.")
    reprompt: str = "Sorry, I didn't catch that. Please tell me how I can help, or press 0 for a person."
    goodbye_silent: str = ("I haven't heard anything, so I'll end the call now. Please call again any time. "
                           "Goodbye.")
    holding: str = "One moment, please."
    bot_unavailable: str = "Sorry, I'm having trouble answering right now. Could you say that again?"
    goodbye: str = "Thank you for calling. Goodbye."
    unstaffed: str = ("Nobody from the team is free to take your call right now. I've passed on everything "
                      "you've told me, and they'll call you back on this number. Goodbye.")
    agent_left: str = ("The agent has left the call. I'm putting you back in the queue, and the next free "
                       "person will pick up where they left off.")
    still_waiting: str = "Thanks for holding. A person will be with you as soon as one is free."
    star_for_callback: str = "You can press star at any time to be called back instead of holding."
    nobody_free: str = "Nobody from the team is free to take your call right now."
    callback_cancelled: str = "Your callback is cancelled."
    anything_else: str = "Is there anything else I can help with?"
    transfer_hold: str = "Please hold while I bring in a colleague."
    # To agents.
    accept_prompt: str = "Press 1 to take this call, or 2 to pass it on."
    taken: str = "Sorry, this call has already been taken by someone else. Goodbye."
    gone: str = "This caller is no longer waiting. Goodbye."
    unable: str = ("You can't take calls right now: set yourself online with a free slot in the console. "
                   "The call goes to a colleague. Goodbye.")
    passed: str = "OK, I've passed the call on. Goodbye."
    no_key: str = "No key was pressed, so I've passed the call on. Goodbye."
    connecting: str = "Connecting you now."
    transfer_declined: str = "Your colleague didn't take the transfer. The caller is back with you."
    voicemail_saved: str = "Thank you, your message has been saved. Goodbye."


@dataclass(frozen=True, slots=True)
class VoiceConfig:
    from_number: str | None  # the business number agents' phones show; None: agents are never called
    hold_audio_url: str | None = None  # music between announcements; None: silence of announce_seconds
    announce_seconds: int = 45  # how often a waiting caller hears their place and wait, if not changed
    wait_check_seconds: int = 5  # without hold audio: silence between two looks at the caller's place
    reply_budget_seconds: float = 3.0  # how long a turn's webhook waits for the bot before holding
    poll_seconds: int = 2  # the pause between two looks at a slow bot's answer
    max_polls: int = 8  # then the caller is asked to say it again
    max_silences: int = 2  # prompts in a row without an answer before the bot says goodbye
    gather_timeout_seconds: int = 6
    agent_ring_seconds: int = 25  # an offered agent's phone rings this long; the offer lapses after
    agent_key_seconds: int = 10  # time to press 1 once the brief is read
    customer_ring_seconds: int = 30  # a callback's customer leg rings this long before it counts as no answer
    brief_seconds: int = 60  # an answered offer stays the agent's this long: to hear the brief and press 1
    voicemail_seconds: int = 120
    languages: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_LANGUAGES))
    voice: str | None = None  # a Twilio <Say> voice, e.g. "Polly.Joanna"; None: Twilio's default
    texts: VoiceTexts = field(default_factory=VoiceTexts)

    def locale(self, language: str | None) -> str:
        return self.languages.get((language or "en").split("-")[0], "en-US")
