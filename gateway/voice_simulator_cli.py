"""``handoff-gateway simulate voice``: be the caller (and the agent's phone) on a call to a running gateway.

``run_interactive(emulator, from_number)`` places a call from from_number through the voice emulator and
shows what each person hears. What you type:

- plain text: the caller says it (SpeechResult) to the current Gather
- ``#123``: the caller presses keys (Digits); an empty line: the caller stays silent
- ``hangup``: the caller hangs up
- ``agent: ...``: the same, for the most recent ringing or active agent phone (``agent: #1`` accepts a brief
  that asks for 1, ``agent: hangup`` hangs up)
- ``#*``: the caller presses star: while waiting for a person, that asks for a callback instead

Outbound calls to other numbers (the gateway's REST calls, ``<Dial><Number>``) ring agent phones, answered as
configured with ``emulator.phone()`` (a human by default). The command stays on the line while the caller
waits in a queue or a conference, and returns when every call has ended (or stdin ends: Ctrl-D hangs up);
with ``--stay`` it keeps answering until Ctrl-D, so a callback arranged on the call can be taken: the agent's
phone rings first (``agent: #1``), then the caller's own number.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import AsyncIterator
from typing import TextIO

from gateway.demo_twilio import DEMO_VOICE_FROM as DEMO_VOICE_NUMBER
from gateway.twilio_voice_emulator import CallLeg, VoiceEmulator, VoiceEvent

INPUT_WAIT = 10.0  # seconds a typed line waits for a Gather to listen (the prompt may still be playing)


def _stdin_lines(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[str | None]) -> None:
    """Reads stdin in a daemon thread: unlike an executor's thread, one blocked in readline never holds up
    the interpreter's exit (asyncio.run waits for the default executor's threads)."""

    def read() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(queue.put_nowait, line)
        loop.call_soon_threadsafe(queue.put_nowait, None)

    threading.Thread(target=read, name="voice-simulator-stdin", daemon=True).start()


async def stdin_lines() -> AsyncIterator[str]:
    """Lines typed on stdin, as they come, without holding up the event loop."""
    queue: asyncio.Queue[str | None] = asyncio.Queue()
    _stdin_lines(asyncio.get_running_loop(), queue)
    while (line := await queue.get()) is not None:
        yield line


class PhoneConsole:
    """Shows what each phone hears (the customer's number, and every other number as an agent's) and acts
    on typed lines for them."""

    def __init__(self, emulator: VoiceEmulator, from_number: str, out: TextIO) -> None:
        self.emulator = emulator
        self.from_number = from_number
        self.out = out
        self.caller: CallLeg | None = None
        self.agents: list[CallLeg] = []

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def is_caller(self, leg: CallLeg) -> bool:
        return leg is self.caller or (leg.direction != "inbound" and leg.to == self.from_number)

    def agent(self) -> CallLeg | None:
        live = [leg for leg in self.agents if not leg.ended]
        return live[-1] if live else None

    def finished(self) -> bool:
        callers = [leg for leg in self.emulator.calls.values() if self.is_caller(leg)]
        return all(leg.ended for leg in callers) and self.agent() is None

    def on_event(self, event: VoiceEvent) -> None:
        leg = event.leg
        if leg is None or event.kind == "error":
            self.say(f"  twilio error: {event.text}")
            return
        caller = self.is_caller(leg)
        who = "caller" if caller else "agent"
        if event.kind == "ringing":
            if caller:
                self.caller = leg
                self.say(f"  caller phone {leg.to} rings (a call from {leg.from_})")
            else:
                self.agents.append(leg)
                self.say(f"  agent phone {leg.to} rings")
        elif event.kind == "answered" and leg.direction != "inbound":
            self.say(f"  {who} phone {leg.to} answers")
        elif event.kind in ("said", "played"):
            self.say(f"  {who} hears: {event.text}")
        elif event.kind == "gather":
            prefix = "" if caller else "agent: "
            self.say(f"  ({who}'s turn: {prefix}words, {prefix}#digits, or {prefix or 'an '}empty line for "
                     "silence)")
        elif event.kind == "joined":
            self.say(f"  {who} is in conference {event.text}")
        elif event.kind == "left":
            self.say(f"  {who} left conference {event.text}")
        elif event.kind in ("hold", "unhold"):
            self.say(f"  {who} is {'on' if event.kind == 'hold' else 'off'} hold")
        elif event.kind == "bridged":
            self.say("  caller and agent are connected")
        elif event.kind == "ended":
            self.say(f"  {who} call ended ({event.text})")

    async def act(self, leg: CallLeg | None, command: str, who: str) -> None:
        if leg is None or leg.ended:
            self.say(f"  (no {who} on the line)")
            return
        try:
            if command == "hangup":
                await leg.hang_up()
            elif command.startswith("#"):
                await leg.press(command[1:], timeout=INPUT_WAIT)
            elif not command:
                await leg.stay_silent(timeout=INPUT_WAIT)
            else:
                await leg.speak(command, timeout=INPUT_WAIT)
        except (TimeoutError, RuntimeError):
            self.say(f"  (nothing is listening on the {who}'s line; ignored)")

    async def handle(self, line: str) -> None:
        text = line.strip()
        if text.lower().startswith("agent:"):
            await self.act(self.agent(), text[len("agent:"):].strip(), "agent")
        else:
            caller = self.caller if self.caller and not self.caller.ended else next(
                (leg for leg in self.emulator.calls.values() if self.is_caller(leg) and not leg.ended), None)
            await self.act(caller, text, "caller")


async def run_interactive(emulator: VoiceEmulator, from_number: str, *, to_number: str = DEMO_VOICE_NUMBER,
                          lines: AsyncIterator[str] | None = None, out: TextIO | None = None,
                          stay: bool = False) -> int:
    """Places a call from from_number to to_number; the caller and agent phones act on stdin (or lines).

    Starts the emulator (and stops it at the end) unless it is already running. Returns 0, or 1 when the
    emulator cannot listen on its port. With ``stay``, it keeps answering phones after the calls end, until
    stdin ends: a callback arranged on the call rings the caller's number (and an agent's phone) later.
    """
    console = PhoneConsole(emulator, from_number, out or sys.stdout)
    started_here = not emulator.running
    if started_here:
        try:
            await emulator.start()
        except OSError as exc:
            print(f"handoff-gateway: cannot listen on 127.0.0.1:{emulator.api_port} for Twilio's API: {exc}",
                  file=sys.stderr)
            return 1
    queue: asyncio.Queue[str | None] = asyncio.Queue()
    feeder: asyncio.Task[None] | None = None
    if lines is None:
        _stdin_lines(asyncio.get_running_loop(), queue)
    else:
        async def feed(source: AsyncIterator[str]) -> None:
            async for item in source:
                queue.put_nowait(item)
            queue.put_nowait(None)

        feeder = asyncio.create_task(feed(lines))
    emulator.listeners.append(console.on_event)
    try:
        console.say(f"Calling {to_number} from {from_number} through {emulator.gateway_url}. Type what the "
                    "caller says, #digits to press keys, an empty line for silence, 'hangup' to hang up, "
                    "'agent: ...' for the agent's phone. Ctrl-D ends.")
        console.caller = await emulator.place_call(from_number, to_number)
        while True:
            try:
                line = await asyncio.wait_for(queue.get(), 0.1)
            except TimeoutError:
                if console.finished() and not stay:
                    return 0
                continue
            if line is None:
                for leg in list(emulator.calls.values()):
                    if not leg.ended:
                        await leg.hang_up()
                return 0
            await console.handle(line)
    finally:
        emulator.listeners.remove(console.on_event)
        if feeder is not None:
            feeder.cancel()
        if started_here:
            await emulator.stop()
