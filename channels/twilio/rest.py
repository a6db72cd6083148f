"""The Twilio REST calls the voice and messaging channels make, through the twilio package's async client.

Every method answers with a `RestResult` and never raises for a Twilio error or a network failure: a
channel decides what a refusal means for the conversation, and a failed REST call must not fail the webhook
or agent request that made it. Only our own misuse (an update that changes nothing) raises ValueError.

Two requests place a phone call: calls create and conference participants create. Neither is idempotent,
so neither is retried here; when we cannot tell whether Twilio acted on one (a timeout, a dropped
connection, a 5xx) the result says `ambiguous`, and the caller reconciles from the status callbacks
instead of dialling the customer twice.

Phone numbers never reach the logs: Twilio's error messages may quote them, so only codes are logged.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

log = structlog.get_logger(__name__)

CALL_EVENTS = ("initiated", "ringing", "answered", "completed")
CALL_END_STATUSES = frozenset({"completed", "canceled"})
FRONT = "Front"
# Told of each failed request: its action (``messages.create``, ``calls.create`` ...) and kind (``rejected``,
# ``retryable``, ``ambiguous``, ``crashed``); the gateway counts them for GET /metrics.
FailureListener = Callable[[str, str], None]


@dataclass(frozen=True, slots=True)
class RestResult:
    """What came of one REST request. `error` may quote Twilio's message, phone numbers included."""

    sid: str | None
    error: str | None = None
    status: int | None = None
    # Not done, and safe to try again later: Twilio was unreachable, rate-limited us (429) or failed (5xx).
    retryable: bool = False
    # A call may or may not have been placed: reconcile from its status callbacks, never retry blindly.
    ambiguous: bool = False

    @property
    def ok(self) -> bool:
        return self.sid is not None


def _sid(instance: Any) -> str | None:
    sid = getattr(instance, "sid", None)
    return sid if isinstance(sid, str) else None


def _call_sid(instance: Any) -> str | None:
    """Participants and queue members have no sid of their own: they are known by their call's."""
    sid = getattr(instance, "call_sid", None)
    return sid if isinstance(sid, str) else None


def _events(events: Sequence[str]) -> list[str] | None:
    # A list, not a tuple: the twilio package serializes lists only, and the form then repeats the key.
    return list(events) or None


class TwilioRest:
    def __init__(self, account_sid: str, auth_token: str, api_base_url: str, *,
                 request_timeout: float = 15.0, on_failure: FailureListener | None = None) -> None:
        # No max_retries: the package would then retry every POST, calls create included.
        self._http = AsyncTwilioHttpClient(max_retries=None)
        self._client = Client(account_sid, auth_token, http_client=self._http, environment={})
        # The package reads `environment or os.environ`, so {} alone still lets TWILIO_REGION / TWILIO_EDGE
        # in the process environment rewrite the host; clearing both keeps requests on api_base_url.
        self._client.region = None
        self._client.edge = None
        self._client.api.base_url = api_base_url.rstrip("/")
        self._account = self._client.api.v2010.accounts(account_sid)
        # The package's async client sends no timeout at all (aiohttp then waits forever), so we bound each
        # request here; for a call create, running out of time is one more ambiguous outcome.
        self._timeout = request_timeout
        self._on_failure = on_failure

    async def aclose(self) -> None:
        await self._http.close()

    async def create_call(
        self, to: str, from_: str, url: str, *,
        status_callback: str | None,
        status_callback_events: Sequence[str] = CALL_EVENTS,
        timeout_seconds: int | None = None,
        machine_detection: str | None = None,
        async_amd_status_callback: str | None = None,
    ) -> RestResult:
        """Place a call whose TwiML is at `url`. `timeout_seconds` is how long it may ring."""
        if async_amd_status_callback is not None and machine_detection is None:
            raise ValueError("async_amd_status_callback needs machine_detection")
        return await self._request("calls.create", lambda: self._account.calls.create_async(
            to=to, from_=from_, url=url,
            status_callback=status_callback,
            status_callback_event=_events(status_callback_events) if status_callback else None,
            timeout=timeout_seconds,
            machine_detection=machine_detection,
            async_amd="true" if async_amd_status_callback else None,
            async_amd_status_callback=async_amd_status_callback,
        ), places_call=True)

    async def update_call(self, call_sid: str, *, url: str | None = None, twiml: str | None = None,
                          status: str | None = None) -> RestResult:
        """Redirect a live call to new TwiML (`url` or `twiml`), or end it (`status`: completed, canceled)."""
        if url is None and twiml is None and status is None:
            raise ValueError("update_call needs url, twiml or status")
        if url is not None and twiml is not None:
            raise ValueError("update_call takes url or twiml, not both")
        if status is not None and status not in CALL_END_STATUSES:
            raise ValueError(f"a call can only be ended with status {sorted(CALL_END_STATUSES)}")
        return await self._request("calls.update", lambda: self._account.calls(call_sid).update_async(
            url=url, twiml=twiml, status=status))

    async def find_conference(self, friendly_name: str) -> RestResult:
        """The in-progress conference of that name: Twilio has no create, so rooms are found by name.

        None in progress is not ok and not retryable, with the status (200) of Twilio's empty answer.
        """
        def first(conferences: Any) -> RestResult:
            for conference in conferences:
                return RestResult(_sid(conference))
            return RestResult(None, "no conference in progress with that name", 200)

        return await self._request("conferences.list", lambda: self._account.conferences.list_async(
            friendly_name=friendly_name, status="in-progress", limit=1), read=first)

    async def create_participant(
        self, conference: str, from_: str, to: str, *,
        label: str | None,
        start_conference_on_enter: bool | None,
        end_conference_on_exit: bool | None,
        status_callback: str | None,
        status_callback_events: Sequence[str] = (),
        timeout_seconds: int | None = None,
        early_media: bool | None = None,
    ) -> RestResult:
        """Dial `to` into a conference (its CF sid or its name, which creates the room). Gives the CallSid."""
        return await self._request(
            "participants.create",
            lambda: self._account.conferences(conference).participants.create_async(
                from_=from_, to=to, label=label,
                start_conference_on_enter=start_conference_on_enter,
                end_conference_on_exit=end_conference_on_exit,
                status_callback=status_callback,
                status_callback_event=_events(status_callback_events) if status_callback else None,
                timeout=timeout_seconds,
                early_media=early_media,
            ),
            read=lambda p: RestResult(_call_sid(p)), places_call=True,
        )

    async def update_participant(
        self, conference_sid: str, participant: str, *,
        hold: bool | None = None,
        hold_url: str | None = None,
        announce_url: str | None = None,
        muted: bool | None = None,
        end_conference_on_exit: bool | None = None,
    ) -> RestResult:
        """Hold, mute or brief one participant (its CallSid or label). Gives the participant's CallSid.

        Twilio silently ignores EndConferenceOnExit for a participant on hold, so it may not ride along with
        hold=True: send it in an update of its own first.
        """
        changes = (hold, hold_url, announce_url, muted, end_conference_on_exit)
        if all(change is None for change in changes):
            raise ValueError("update_participant needs something to change")
        if hold and end_conference_on_exit is not None:
            raise ValueError("set end_conference_on_exit in its own update before holding")
        if not conference_sid.startswith("CF"):
            raise ValueError("participants are updated by the conference's CF sid, not its name")
        return await self._request(
            "participants.update",
            lambda: self._account.conferences(conference_sid).participants(participant).update_async(
                hold=hold, hold_url=hold_url, announce_url=announce_url, muted=muted,
                end_conference_on_exit=end_conference_on_exit,
            ),
            read=lambda p: RestResult(_call_sid(p)),
        )

    async def update_queue_member(self, queue_sid: str, call_sid_or_front: str, url: str) -> RestResult:
        """Take a caller (or the one at the front, `FRONT`) out of a queue into the TwiML at `url`."""
        return await self._request(
            "queue_members.update",
            lambda: self._account.queues(queue_sid).members(call_sid_or_front).update_async(url=url),
            read=lambda m: RestResult(_call_sid(m)),
        )

    async def send_message(self, to: str, from_: str, body: str,
                           status_callback: str | None = None) -> RestResult:
        """An SMS or WhatsApp message (addresses carry `whatsapp:`), as channels/twilio_messaging sends one.

        As there, a network failure or 5xx is retryable, though a retry may send the message twice.
        """
        return await self._request("messages.create", lambda: self._account.messages.create_async(
            to=to, from_=from_, body=body, status_callback=status_callback))

    async def send_template(self, to: str, from_: str, content_sid: str, variables: Mapping[str, str],
                            status_callback: str | None = None) -> RestResult:
        """An approved content template (WhatsApp's only way in outside its 24-hour window): `ContentSid`,
        with `variables` as the JSON string `ContentVariables`, and no `Body`. Failures as send_message."""
        return await self._request("messages.create", lambda: self._account.messages.create_async(
            to=to, from_=from_, content_sid=content_sid, content_variables=json.dumps(dict(variables)),
            status_callback=status_callback))

    async def _request(self, action: str, send: Callable[[], Awaitable[Any]], *,
                       read: Callable[[Any], RestResult] = lambda r: RestResult(_sid(r)),
                       places_call: bool = False) -> RestResult:
        try:
            async with asyncio.timeout(self._timeout):
                answer = await send()
        except (TwilioRestException, TwilioServiceException) as exc:
            status = int(exc.status)
            message = exc.msg if isinstance(exc, TwilioRestException) else exc.title
            unsure = places_call and status >= 500
            retry = not unsure and (status == 429 or status >= 500)
            error = f"Twilio answered {status} to {action}: {message} (code {exc.code})"
            return self._failed(action, error, status, code=exc.code, retryable=retry, ambiguous=unsure)
        except aiohttp.ClientConnectorError as exc:
            # Failed while connecting: nothing was sent, so even a call create is safe to try again.
            return self._failed(action, f"Twilio could not be reached: {type(exc).__name__}", retryable=True)
        except (TwilioException, aiohttp.ClientError, OSError, TimeoutError) as exc:
            return self._failed(action, f"no answer from Twilio: {type(exc).__name__}",
                                retryable=not places_call, ambiguous=places_call)
        except Exception as exc:  # the client library failing must not fail the caller's request
            log.exception("twilio.rest_crashed", action=action)
            self._tell(action, "crashed")
            return RestResult(None, f"{action} failed: {type(exc).__name__}", ambiguous=places_call)
        result = read(answer)
        if result.ok:
            log.info("twilio.rest", action=action, sid=result.sid)
        elif result.error is None:
            return self._failed(action, f"Twilio answered {action} without a sid", ambiguous=places_call)
        return result

    def _failed(self, action: str, error: str, status: int | None = None, *, code: object = None,
                retryable: bool = False, ambiguous: bool = False) -> RestResult:
        log.warning("twilio.rest_failed", action=action, status=status, code=code,
                    retryable=retryable, ambiguous=ambiguous)
        self._tell(action, "ambiguous" if ambiguous else "retryable" if retryable else "rejected")
        return RestResult(None, error, status, retryable=retryable, ambiguous=ambiguous)

    def _tell(self, action: str, kind: str) -> None:
        if self._on_failure is not None:
            self._on_failure(action, kind)
