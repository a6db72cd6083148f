"""``handoff-gateway simulate sms|whatsapp --from +15551234567``: text a running gateway as a phone user.

No Twilio account needed. Each line you type is posted to the gateway as a correctly signed Twilio webhook;
the simulator prints what the gateway answers, both in the webhook's TwiML and through REST calls, which it
catches with a local stand-in for Twilio's Messages API. `make run` starts the gateway in demo mode
(DEMO_TWILIO=1: the demo token, numbers and that stand-in's address), which this command assumes unless
PUBLIC_URL and TWILIO_AUTH_TOKEN say otherwise.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from xml.etree import ElementTree

import aiohttp
from aiohttp import web
from twilio.request_validator import RequestValidator

DEMO_AUTH_TOKEN = "demo-twilio-auth-token-0123456789"  # noqa: S105 - a fixed demo value, documented
DEMO_ACCOUNT_SID = "AC" + "0" * 32
DEMO_SMS_FROM = "+15550100000"
DEMO_WHATSAPP_FROM = "+15550100001"
DEMO_VOICE_FROM = "+15550100002"
DEMO_API_PORT = 8089


class Simulator:
    def __init__(
        self, url: str, public_url: str, auth_token: str, *, channel: str, number: str, api_port: int
    ) -> None:
        self.url = url.rstrip("/")
        self.public_url = public_url.rstrip("/")
        self.validator = RequestValidator(auth_token)
        self.channel = channel
        self.number = number
        self.api_port = api_port

    def _address(self, number: str) -> str:
        return f"whatsapp:{number}" if self.channel == "whatsapp" else number

    def form(self, text: str) -> dict[str, str]:
        sid = "SM" + uuid.uuid4().hex
        business = DEMO_WHATSAPP_FROM if self.channel == "whatsapp" else DEMO_SMS_FROM
        return {"MessageSid": sid, "SmsMessageSid": sid, "SmsSid": sid, "AccountSid": DEMO_ACCOUNT_SID,
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

    async def messages_api(self, request: web.Request) -> web.Response:
        """Twilio's Messages API as far as the gateway uses it: print what it sends to this number."""
        form = {k: str(v) for k, v in (await request.post()).items()}
        if form.get("To") == self._address(self.number):
            text = form.get("Body") or f"(template {form.get('ContentSid')}: {form.get('ContentVariables')})"
            print(f"\n  gateway (REST): {text}", flush=True)
        sid = "SM" + uuid.uuid4().hex
        return web.json_response({"sid": sid, "status": "queued", "to": form.get("To"),
                                  "from": form.get("From"), "body": form.get("Body", "")}, status=201)


async def run(simulator: Simulator) -> int:
    app = web.Application()
    app.router.add_post("/2010-04-01/Accounts/{account}/Messages.json", simulator.messages_api)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", simulator.api_port).start()
    except OSError as exc:
        print(f"handoff-gateway: cannot listen on 127.0.0.1:{simulator.api_port} for Twilio's API: {exc}",
              file=sys.stderr)
        await runner.cleanup()
        return 1
    print(f"Texting {simulator.url} by {simulator.channel} from {simulator.number}. Type a message and press "
          "Enter; Ctrl-D ends.", flush=True)
    loop = asyncio.get_running_loop()
    try:
        async with aiohttp.ClientSession() as http:
            while True:
                line = await loop.run_in_executor(None, sys.stdin.readline)
                if not line:
                    return 0
                if not line.strip():
                    continue
                try:
                    replies = await simulator.send(http, line.rstrip("\n"))
                except aiohttp.ClientError as exc:
                    print(f"  (cannot reach the gateway: {exc})", flush=True)
                    continue
                for reply in replies:
                    print(f"  gateway: {reply}", flush=True)
    finally:
        await runner.cleanup()
