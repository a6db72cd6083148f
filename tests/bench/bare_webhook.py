"""The baseline for bench_sms.py and bench_voice.py: an aiohttp handler that parses the same form and makes
one Redis write.

Not part of the product; it is what the gateway's webhook is compared against in the same run.
"""

from __future__ import annotations

import os
import sys

from aiohttp import web
from redis.asyncio import Redis


async def handler(request: web.Request) -> web.Response:
    form = await request.post()
    await request.app["redis"].set(f"bare:{form['MessageSid']}", str(form["Body"]), ex=60)
    return web.Response(text="<Response/>", content_type="application/xml")


async def voice_turn(request: web.Request) -> web.Response:
    """A voice turn (bench_voice.py): the same form, one write keyed by call and turn, a TwiML answer."""
    form = await request.post()
    key = f"bare:{form['CallSid']}:{request.query.get('n', '')}"
    await request.app["redis"].set(key, str(form["SpeechResult"]), ex=60)
    return web.Response(text="<Response><Gather/></Response>", content_type="application/xml")


async def redis_ctx(app: web.Application) -> object:
    app["redis"] = Redis.from_url(os.environ["REDIS_URL"])
    yield
    await app["redis"].aclose()


def main() -> None:
    app = web.Application()
    app.cleanup_ctx.append(redis_ctx)
    app.router.add_post("/twilio/messaging", handler)
    app.router.add_post("/twilio/voice/turn", voice_turn)
    app.router.add_get("/readyz", lambda request: web.json_response({"status": "ready"}))
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)


if __name__ == "__main__":
    main()
