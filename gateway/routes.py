"""The gateway's own paths (the fixed ones are listed in ARCHITECTURE.md); each channel adds its own."""

from __future__ import annotations

from aiohttp import web

from gateway import (
    admin,
    agent_api,
    agent_socket,
    callback_api,
    health,
    metrics_api,
    openapi,
    pages,
    review_api,
)


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", health.healthz)
    app.router.add_get("/readyz", health.readyz)
    app.router.add_get("/metrics", metrics_api.scrape)
    app.router.add_get("/", pages.demo_page)
    app.router.add_get("/widget.js", pages.widget_js)
    app.router.add_get("/console", pages.console_page)
    app.router.add_get("/console.js", pages.console_js)
    app.router.add_get("/console.css", pages.console_css)
    app.router.add_get("/shop.css", pages.shop_css)
    app.router.add_get("/api/admin/rules", admin.rules_info)
    app.router.add_post("/api/admin/rules/reload", admin.rules_reload)
    app.router.add_get("/api/openapi.json", openapi.document)
    agent_api.setup(app)
    callback_api.setup(app)
    review_api.setup(app)
    app.router.add_get("/ws/agent", agent_socket.handle)
