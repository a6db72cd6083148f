"""Web chat: the ``/ws/chat`` websocket protocol (docs/webchat-protocol.md) and its adapter."""

from channels.webchat.adapter import WebChatAdapter
from channels.webchat.channel import WebChatChannel
from channels.webchat.socket import WebChatConfig, WebChatEndpoint

__all__ = ["WebChatAdapter", "WebChatChannel", "WebChatConfig", "WebChatEndpoint"]
