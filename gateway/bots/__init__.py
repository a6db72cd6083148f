"""Bots behind one small interface; ``build_bot`` picks the one the settings name."""

from gateway.bots.base import Bot
from gateway.bots.factory import build_bot

__all__ = ["Bot", "build_bot"]
