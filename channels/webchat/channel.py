"""Web chat as a transport: the customer websocket's route and the adapter its conversations use."""

from __future__ import annotations

from aiohttp import web

from channels.base import ChannelContext
from channels.webchat.adapter import WebChatAdapter
from channels.webchat.socket import WebChatConfig, WebChatEndpoint


class WebChatChannel:
    name = "webchat"

    def __init__(self, config: WebChatConfig) -> None:
        self.config = config
        self.endpoint: WebChatEndpoint | None = None

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/ws/chat", self._socket)
        router.add_get("/ws/chat/check", self._check)

    async def _socket(self, request: web.Request) -> web.StreamResponse:
        assert self.endpoint is not None, "requests arrive only after start"
        return await self.endpoint.handle(request)

    async def _check(self, request: web.Request) -> web.StreamResponse:
        assert self.endpoint is not None, "requests arrive only after start"
        return await self.endpoint.check(request)

    async def start(self, context: ChannelContext) -> None:
        context.registry.register(WebChatAdapter())
        self.endpoint = WebChatEndpoint(self.config, context.store, context.customers, context.live,
                                        context.sink)

    async def shutdown(self) -> None:
        if self.endpoint is not None:
            await self.endpoint.close_all()

    async def aclose(self) -> None:
        """Nothing of its own to release: its sockets closed at shutdown."""
