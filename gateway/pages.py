"""The demo shop page and the embeddable widget script."""

from __future__ import annotations

import html
import json
from functools import cache
from importlib.resources import files

from aiohttp import web

from channels.webchat.identity import sign_identity
from gateway import appkeys

# The demo page acts as the shop's own backend would: it signs its signed-in customer for the widget.
_DEMO_CUSTOMER = {"id": "cust-1001", "name": "Jane Doe", "email": "jane@example.test", "tier": "gold",
                  "language": "en"}


@cache
def _static(name: str) -> str:
    return (files("gateway") / "static" / name).read_text(encoding="utf-8")


async def demo_page(request: web.Request) -> web.Response:
    """``/?signed_in=1`` shows the shop with a signed-in customer (verified when IDENTITY_SECRET is set)."""
    settings = request.app[appkeys.SETTINGS]
    options: dict[str, str] = {}
    if request.query.get("signed_in"):
        payload = json.dumps(_DEMO_CUSTOMER, separators=(",", ":"))
        options["identity"] = payload
        if settings.identity_secret is not None:
            options["identitySignature"] = sign_identity(payload, settings.identity_secret.get_secret_value())
    page = _static("index.html").replace(
        "{{WIDGET_OPTIONS}}", html.escape(json.dumps(options), quote=True)
    )
    return web.Response(text=page, content_type="text/html", headers={"Cache-Control": "no-store"})


async def console_page(request: web.Request) -> web.Response:
    # The console handles agent tokens: scripts only from this origin.
    policy = "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'"
    return web.Response(text=_static("console.html"), content_type="text/html",
                        headers={"Cache-Control": "no-store", "Content-Security-Policy": policy})


async def console_js(request: web.Request) -> web.Response:
    return web.Response(text=_static("console.js"), content_type="application/javascript",
                        headers={"Cache-Control": "no-store"})


async def widget_js(request: web.Request) -> web.Response:
    return web.Response(text=_static("widget.js"), content_type="application/javascript",
                        headers={"Cache-Control": "public, max-age=300", "Access-Control-Allow-Origin": "*"})
