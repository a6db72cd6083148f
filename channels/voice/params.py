"""What every voice webhook reads from its URL and form, checked before anything changes: a bad value is a
400 with a machine-readable code, never a 5xx."""

from __future__ import annotations

import re

from aiohttp import web

from channels.twilio.webhooks import error
from channels.voice.twiml import TWIML

_CALL_SID = re.compile(r"^CA[0-9a-fA-F]{32}$")
_CONVERSATION = re.compile(r"^[0-9a-f]{32}$")
_DIGITS = re.compile(r"^[0-9]{1,12}$")


def answer(document: str) -> web.Response:
    return web.Response(text=document, content_type=TWIML)


class BadRequest(Exception):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail

    def response(self) -> web.Response:
        return error(400, self.code, self.detail)


def conversation_param(request: web.Request) -> str:
    cid = request.query.get("c", "")
    if not _CONVERSATION.match(cid):
        raise BadRequest("invalid_conversation", "The URL's c= is not a conversation id.")
    return cid


def int_param(request: web.Request, name: str, high: int) -> int:
    raw = request.query.get(name, "")
    if not _DIGITS.match(raw) or not 0 <= int(raw) <= high:
        raise BadRequest(f"invalid_{name}", f"The URL's {name}= must be a number up to {high}.")
    return int(raw)


def call_sid(form: dict[str, str]) -> str:
    sid = form.get("CallSid", "")
    if not _CALL_SID.match(sid):
        raise BadRequest("invalid_call_sid", "CallSid is missing or malformed.")
    return sid
