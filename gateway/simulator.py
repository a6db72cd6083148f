"""``handoff-gateway simulate sms|whatsapp --from +15551234567``: text a running gateway as a phone user.

No Twilio account needed. Each line you type is posted to the gateway as a correctly signed Twilio webhook;
the simulator prints what the gateway answers, both in the webhook's TwiML and through REST calls, which it
catches with a local stand-in for Twilio's Messages API. `make run` starts the gateway in demo mode
(DEMO_TWILIO=1: the demo token, numbers and that stand-in's address), which this command assumes unless
PUBLIC_URL and TWILIO_AUTH_TOKEN say otherwise.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator
from typing import TextIO
from xml.etree import ElementTree

import aiohttp
from twilio.request_validator import RequestValidator

from gateway.demo_twilio import DEMO_ACCOUNT_SID, DEMO_SMS_FROM, DEMO_WHATSAPP_FROM
from gateway.twilio_voice_emulator import RecordedRequest, VoiceEmulator
from gateway.voice_simulator_cli import PhoneConsole, stdin_lines


class Simulator:
    def __init__(
        self, url: str, public_url: str, auth_token: str, *, channel: str, number: str, api_port: int,
        account_sid: str = DEMO_ACCOUNT_SID,
    ) -> None:
        self.url = url.rstrip("/")
        self.public_url = public_url.rstrip("/")
        self.auth_token = auth_token
        self.validator = RequestValidator(auth_token)
        self.channel = channel
        self.number = number
        self.api_port = api_port
        self.account_sid = account_sid

    def _address(self, number: str) -> str:
        return f"whatsapp:{number}" if self.channel == "whatsapp" else number

    def form(self, text: str) -> dict[str, str]:
        sid = "SM" + uuid.uuid4().hex
        business = DEMO_WHATSAPP_FROM if self.channel == "whatsapp" else DEMO_SMS_FROM
        return {"MessageSid": sid, "SmsMessageSid": sid, "SmsSid": sid, "AccountSid": self.account_sid,
                "From": self._address(self.number), "To": self._address(business), "Body": text,
                "NumMedia": "0", "NumSegments": "1", "SmsStatus": "received", "ApiVersion": "2010-04-01"}

    async def send(self, http: aiohttp.ClientSession, text: str) -> list[str]:
        form = self.form(text)
        signature = self.validator.compute_signature(f"{self.public_url}/twilio/messaging", form)
        async with http.post(f"{self.url}/twilio/messaging", data=form,
                             headers={"X-Twilio-Signature": signature}) as response:
            body = await response.text()
            if response.status != 200:
                return [f"(the gateway answered {response.status}: {body.strip()})"]
        return [m.text or "" for m in ElementTree.fromstring(body).iter("Message")]  # noqa: S314 - our own gateway

    def sent(self, request: RecordedRequest) -> str | None:
        """What the gateway sent this number through the Messages API, as the customer reads it."""
        if request.get("To") != self._address(self.number):
            return None
        template = f"(template {request.get('ContentSid')}: {request.get('ContentVariables')})"
        return request.get("Body") or template


async def run(
    simulator: Simulator, *, lines: AsyncIterator[str] | None = None, out: TextIO | None = None
) -> int:
    """Texts the gateway line by line. Twilio's API is stood in for by the voice emulator: messages sent by
    REST are shown, and the calls that keep a callback ring this number and the agents' phones, which lines
    starting ``call:`` and ``agent:`` answer (``call: #1``, ``agent: #1``, ``call: hangup``)."""
    out = out or sys.stdout
    emulator = VoiceEmulator(simulator.url, simulator.public_url, simulator.auth_token, simulator.account_sid,
                             simulator.api_port, time_scale=0.1)
    phones = PhoneConsole(emulator, simulator.number, out)

    def show(request: RecordedRequest) -> None:
        text = simulator.sent(request)
        if text is not None:
            print(f"\n  gateway (REST): {text}", file=out, flush=True)

    try:
        await emulator.start()
    except OSError as exc:
        print(f"handoff-gateway: cannot listen on 127.0.0.1:{simulator.api_port} for Twilio's API: {exc}",
              file=sys.stderr)
        return 1
    emulator.message_listeners.append(show)
    emulator.listeners.append(phones.on_event)
    print(f"Texting {simulator.url} by {simulator.channel} from {simulator.number}. Type a message and press "
          "Enter ('call: ...' and 'agent: ...' answer the phones when a callback rings); Ctrl-D ends.",
          file=out, flush=True)
    source = lines if lines is not None else stdin_lines()
    try:
        async with aiohttp.ClientSession() as http:
            async for line in source:
                text = line.strip()
                if text.lower().startswith(("call:", "agent:")):
                    await phones.handle(text.removeprefix("call:").removeprefix("CALL:").strip()
                                        if text.lower().startswith("call:") else text)
                    continue
                if not text:
                    continue
                try:
                    replies = await simulator.send(http, line.rstrip("\n"))
                except aiohttp.ClientError as exc:
                    print(f"  (cannot reach the gateway: {exc})", file=out, flush=True)
                    continue
                for reply in replies:
                    print(f"  gateway: {reply}", file=out, flush=True)
        return 0
    finally:
        await emulator.stop()
