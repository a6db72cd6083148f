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
                  "language": "en", "phone": "+14155550123"}


# The gateway's own pages (the demo shop and the agent console, which holds an agent's token): scripts, styles
# and connections (the widget's and the console's websockets, the agent API) from this origin only, no
# inline code, never framed. ``connect-src 'self'`` covers ws: and wss: to this origin (CSP level 3).
PAGE_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
               "img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; "
               "frame-ancestors 'none'")
PAGE_HEADERS = {
    "Cache-Control": "no-store", "Content-Security-Policy": PAGE_POLICY, "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
}


@cache
def static_text(name: str) -> str:
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
    page = static_text("index.html").replace(
        "{{WIDGET_OPTIONS}}", html.escape(json.dumps(options), quote=True)
    )
    return web.Response(text=page, content_type="text/html", headers=PAGE_HEADERS)


async def console_page(request: web.Request) -> web.Response:
    return web.Response(text=static_text("console.html"), content_type="text/html", headers=PAGE_HEADERS)


async def console_js(request: web.Request) -> web.Response:
    return static_asset("console.js", "application/javascript")


async def console_css(request: web.Request) -> web.Response:
    return static_asset("console.css", "text/css")


async def shop_css(request: web.Request) -> web.Response:
    return static_asset("shop.css", "text/css")


async def widget_js(request: web.Request) -> web.Response:
    """Loaded by other sites' pages: any origin may fetch it (CORS, and CORP for pages that require it)."""
    return web.Response(text=static_text("widget.js"), content_type="application/javascript",
                        headers={"Cache-Control": "public, max-age=300", "X-Content-Type-Options": "nosniff",
                                 "Access-Control-Allow-Origin": "*",
                                 "Cross-Origin-Resource-Policy": "cross-origin"})


def static_asset(name: str, content_type: str) -> web.Response:
    return web.Response(text=static_text(name), content_type=content_type,
                        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})
