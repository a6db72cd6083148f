"""Every path the gateway serves (the fixed ones are listed in ARCHITECTURE.md)."""

from __future__ import annotations

from aiohttp import web

from gateway import admin, agent_api, agent_socket, appkeys, health, openapi, pages


async def _chat_socket(request: web.Request) -> web.StreamResponse:
    return await request.app[appkeys.WEBCHAT].handle(request)


def _twilio_not_configured() -> web.Response:
    detail = "Set PUBLIC_URL and TWILIO_AUTH_TOKEN to accept Twilio webhooks."
    return web.json_response({"code": "twilio_not_configured", "detail": detail}, status=403)


async def _twilio_messaging(request: web.Request) -> web.StreamResponse:
    webhook = request.app[appkeys.MESSAGING]
    return _twilio_not_configured() if webhook is None else await webhook.handle(request)


async def _twilio_status(request: web.Request) -> web.StreamResponse:
    webhook = request.app[appkeys.MESSAGING]
    return _twilio_not_configured() if webhook is None else await webhook.handle_status(request)


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", health.healthz)
    app.router.add_get("/readyz", health.readyz)
    app.router.add_get("/", pages.demo_page)
    app.router.add_get("/widget.js", pages.widget_js)
    app.router.add_get("/console", pages.console_page)
    app.router.add_get("/console.js", pages.console_js)
    app.router.add_get("/ws/chat", _chat_socket)
    app.router.add_post("/twilio/messaging", _twilio_messaging)
    app.router.add_post("/twilio/messaging/status", _twilio_status)
    app.router.add_get("/api/admin/rules", admin.rules_info)
    app.router.add_post("/api/admin/rules/reload", admin.rules_reload)
    app.router.add_get("/api/openapi.json", openapi.document)
    agent_api.setup(app)
    app.router.add_get("/ws/agent", agent_socket.handle)
