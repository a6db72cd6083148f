"""The check every Twilio webhook passes before anything reads it, and the answers shared by all of them.

Twilio signs each request over the URL it called (PUBLIC_URL plus the raw path and query) and the posted
form. ``TwilioWebhooks.signed`` wraps a handler (as slack-bolt makes verification one middleware every
endpoint reuses): an unreadable body is 400, a missing or wrong ``X-Twilio-Signature`` 403, both before the
handler sees anything, and a channel that is not configured answers 403 ``twilio_not_configured``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import cast

import structlog
from aiohttp import web
from twilio.request_validator import RequestValidator

log = structlog.get_logger(__name__)

SignedHandler = Callable[[web.Request, dict[str, str]], Awaitable[web.StreamResponse]]


def error(status: int, code: str, detail: str) -> web.Response:
    return web.json_response({"code": code, "detail": detail}, status=status)


def not_configured() -> web.Response:
    detail = "Set PUBLIC_URL and TWILIO_AUTH_TOKEN to accept Twilio webhooks."
    return error(403, "twilio_not_configured", detail)


class TwilioWebhooks:
    def __init__(self, public_url: str, auth_token: str) -> None:
        self.public_url = public_url.rstrip("/")  # scheme and host Twilio calls, e.g. https://example.com
        self.validator = RequestValidator(auth_token)
        # HMAC-SHA1 (Twilio's default signature) keyed with the auth token, PUBLIC_URL already in it: every
        # webhook's signed text starts with it, so each check copies this state and adds only its own part.
        self._signed_prefix = hmac.new(auth_token.encode(), self.public_url.encode(), hashlib.sha1)

    def url_of(self, request: web.Request) -> str:
        """The URL Twilio called, as it signed it."""
        return self.public_url + request.raw_path

    def absolute(self, path: str) -> str:
        """A URL of ours to give Twilio (TwiML actions, status callbacks)."""
        return self.public_url + path

    def verified(self, request: web.Request, posted: Mapping[str, str],
                 items: Iterable[tuple[str, str]] | None = None) -> bool:
        """Whether Twilio signed exactly this form. ``posted`` is best the multidict aiohttp parsed: the
        validator reads every value of a repeated field from it (as Twilio signs them), and directly.
        ``items``: ``posted.items()`` when the caller has already listed them."""
        signature = request.headers.get("X-Twilio-Signature", "")
        if not signature:
            return False
        # The exact URL first (one HMAC); the validator's full check also tries the URL with and without
        # the default port, as Twilio may sign either.
        if hmac.compare_digest(self._signature(request.raw_path, posted, items), signature):
            return True
        return bool(self.validator.validate(self.url_of(request), posted, signature))

    def _signature(self, raw_path: str, posted: Mapping[str, str],
                   items: Iterable[tuple[str, str]] | None = None) -> str:
        """What ``RequestValidator.compute_signature(url_of(request), posted)`` computes: the URL, then each
        distinct name and value pair in order (of the name, then of the value) as name + value, HMAC-SHA1
        with the auth token, base64. ``posted.items()`` yields every value of a repeated field."""
        mac = self._signed_prefix.copy()
        pairs = sorted(set(posted.items() if items is None else items))
        mac.update((raw_path + "".join([name + value for name, value in pairs])).encode())
        return base64.b64encode(mac.digest()).decode()

    async def checked_form(self, request: web.Request) -> dict[str, str] | web.Response:
        """The form Twilio posted, or the 400/403 answer when it is unreadable or not signed by Twilio."""
        try:
            posted = await request.post()
        except (ValueError, LookupError, UnicodeDecodeError):  # a bad charset, a broken multipart body
            return error(400, "invalid_form", "The body is not a readable form.")
        items = list(posted.items())  # listed once: for the form and for the signature
        texts_only = all(isinstance(v, str) for _, v in items)  # Twilio never uploads files
        if texts_only:
            texts = cast("list[tuple[str, str]]", items)
            form = dict(texts)
            verified = self.verified(request, cast("Mapping[str, str]", posted), texts)
        else:
            form = {k: str(v) for k, v in items}
            verified = self.verified(request, form)
        if not verified:
            log.warning("twilio.signature_refused", path=request.path)
            return error(403, "invalid_signature", "X-Twilio-Signature is missing or does not match.")
        return form


def signed(
    webhooks: Callable[[], TwilioWebhooks | None], handler: SignedHandler
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """``handler`` behind the signature check; ``webhooks`` says how this deployment checks (None: Twilio
    is not configured, and every Twilio path answers 403 saying what to set)."""

    async def checked(request: web.Request) -> web.StreamResponse:
        guard = webhooks()
        if guard is None:
            return not_configured()
        form = await guard.checked_form(request)
        if isinstance(form, web.Response):
            return form
        return await handler(request, form)

    return checked
