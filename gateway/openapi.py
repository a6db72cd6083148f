"""The OpenAPI 3.1 description of the agent and admin API, served at /api/openapi.json.

Written by hand next to the handlers' pydantic bodies, whose JSON schemas it embeds, so the documented
request bodies are exactly the ones the API validates.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.agent_api import ClaimBody, MessageBody, PhoneBody, PresenceBody, ResolveBody, TransferBody
from gateway.callback_api import CancelBody, RescheduleBody

ERROR = {"$ref": "#/components/schemas/Error"}


def _errors(*codes: tuple[int, str]) -> dict[str, Any]:
    return {
        str(status): {"description": text, "content": {"application/json": {"schema": ERROR}}}
        for status, text in codes
    }


def _json(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"type": "object"}}}}


def _body(model: Any) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}


UNAUTHORIZED = (401, "no valid agent token (code unauthorized)")
BAD_BODY = (400, "the body is not valid (code invalid_body; detail names the field)")
NOT_FOUND = (404, "no such conversation (code conversation_not_found)")
FORBIDDEN = (403, "another agent's conversation, or a queue you do not serve")
ID = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}]


def build() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "handoff-gateway agent API", "version": "1"},
        "security": [{"agentToken": []}],
        "components": {
            "securitySchemes": {
                "agentToken": {"type": "http", "scheme": "bearer",
                               "description": "`handoff-gateway agents add` prints an agent's token once."},
                "adminToken": {"type": "http", "scheme": "bearer", "description": "the ADMIN_TOKEN setting"},
            },
            "schemas": {"Error": {"type": "object", "required": ["code", "detail"], "properties": {
                "code": {"type": "string", "description": "machine-readable"},
                "detail": {"type": "string", "description": "one sentence for a person"},
            }}},
        },
        "paths": {
            "/api/agents/me": {"get": {
                "summary": "The signed-in agent and their presence",
                "responses": {"200": _json("profile and presence"), **_errors(UNAUTHORIZED)},
            }},
            "/api/agents/me/presence": {"post": {
                "summary": "Set presence (online, away, offline) and capacity; also renews the heartbeat",
                "description": "Presence expires 60 s after the last call; going offline, or expiring, "
                               "hands the agent's conversations back to the head of their queues.",
                "requestBody": _body(PresenceBody),
                "responses": {"200": _json("the agent's state"), **_errors(UNAUTHORIZED, BAD_BODY)},
            }},
            "/api/agents/me/phone": {"post": {
                "summary": "Set (or clear, with null) the E.164 number the desk calls you on for phone calls",
                "requestBody": _body(PhoneBody),
                "responses": {"200": _json("the agent"), **_errors(UNAUTHORIZED, BAD_BODY)},
            }},
            "/api/queues": {"get": {
                "summary": "Each queue: depth, backlog, oldest wait, agents online, open now",
                "responses": {"200": _json("queues"), **_errors(UNAUTHORIZED)},
            }},
            "/api/conversations": {"get": {
                "summary": "Conversations waiting in queues you serve, or yours",
                "parameters": [{"name": "state", "in": "query", "schema": {
                    "type": "string", "enum": ["queued", "offered", "async", "assigned"],
                    "default": "queued"}}],
                "responses": {"200": _json("conversations"),
                              **_errors(UNAUTHORIZED, (400, "unknown state (code invalid_state)"))},
            }},
            "/api/conversations/{id}": {"get": {
                "summary": "A conversation with its context package (summary first, transcript below)",
                "parameters": ID,
                "responses": {"200": _json("conversation and context"),
                              **_errors(UNAUTHORIZED, FORBIDDEN, NOT_FOUND)},
            }},
            "/api/conversations/{id}/claim": {"post": {
                "summary": "Take a waiting conversation; exactly one agent wins",
                "description": "A phone call is taken on the phone: the desk calls you at your number (or "
                               "the one in the body, kept as yours) and joins you to the caller.",
                "parameters": ID, "requestBody": {**_body(ClaimBody), "required": False},
                "responses": {"200": _json("conversation and context"), **_errors(
                    UNAUTHORIZED, FORBIDDEN, NOT_FOUND, BAD_BODY,
                    (409, "claimed_by_another, not_waiting, not_online, at_capacity or phone_required"))},
            }},
            "/api/conversations/{id}/decline": {"post": {
                "summary": "Decline an offer; the conversation is offered to the next agent",
                "parameters": ID,
                "responses": {"200": _json("declined"),
                              **_errors(UNAUTHORIZED, (409, "no offer to you (no_offer)"))},
            }},
            "/api/conversations/{id}/messages": {"post": {
                "summary": "Send the customer a message on their channel",
                "parameters": ID, "requestBody": _body(MessageBody),
                "responses": {"201": _json("the stored message's id"), **_errors(
                    UNAUTHORIZED, BAD_BODY, FORBIDDEN, NOT_FOUND, (409, "not_assigned"))},
            }},
            "/api/conversations/{id}/transfer": {"post": {
                "summary": "Warm transfer to a queue or, on a call, a colleague; the note travels with it",
                "description": "On a phone call the caller holds while the colleague (named, or the best "
                               "free one with a phone in the queue) is called and hears the note and the "
                               "brief; pressing 1 joins them to you, and the caller is theirs when you hang "
                               "up (202). A colleague who does not take it brings the caller back to you. "
                               "Otherwise the conversation goes to the queue (200).",
                "parameters": ID, "requestBody": _body(TransferBody),
                "responses": {"200": _json("the conversation"), "202": _json("calling the colleague"),
                              **_errors(UNAUTHORIZED, BAD_BODY, FORBIDDEN, NOT_FOUND,
                                        (404, "no such colleague (agent_not_found)"),
                                        (409, "not_assigned, colleague_without_phone"),
                                        (422, "unknown_queue, transfer_to_agent_unsupported (not a call)"))},
            }},
            "/api/conversations/{id}/resolve": {"post": {
                "summary": "Close the conversation, or hand it back to the bot",
                "parameters": ID, "requestBody": _body(ResolveBody),
                "responses": {"200": _json("the conversation"), **_errors(
                    UNAUTHORIZED, BAD_BODY, FORBIDDEN, NOT_FOUND, (409, "not_assigned"))},
            }},
            "/api/review": {"get": {
                "summary": "The review checklist and a series a day, for supervisors (or the admin token)",
                "parameters": [{"name": "since", "in": "query", "required": False,
                                "schema": {"type": "string", "pattern": "^[0-9]{1,4}[dw]$"}}],
                "responses": {"200": _json("since, daily series, signals, sections (as review --json)"),
                              **_errors(UNAUTHORIZED, (403, "supervisor_only"), (400, "invalid_since"))},
            }},
            "/api/review/live": {"get": {
                "summary": "Every queue's depth, oldest wait and agents online now, for supervisors",
                "responses": {"200": _json("queues: depth, backlog, oldest wait, agents online, open now"),
                              **_errors(UNAUTHORIZED, (403, "supervisor_only"))},
            }},
            "/api/callbacks": {"get": {
                "summary": "Callbacks of the queues you serve, soonest first: scheduled, due, or failed",
                "parameters": [{"name": "state", "in": "query", "required": False,
                                "schema": {"type": "string", "enum": ["scheduled", "due", "failed"]}}],
                "responses": {"200": _json("callbacks: conversation, queue, number, slot, attempts, outcome"),
                              **_errors(UNAUTHORIZED, (400, "invalid_state"))},
            }},
            "/api/callbacks/{id}/cancel": {"post": {
                "summary": "Cancel a callback not yet dialling; the customer is told in their channel",
                "parameters": ID, "requestBody": _body(CancelBody),
                "responses": {"200": _json("conversation_id, state cancelled"), **_errors(
                    UNAUTHORIZED, BAD_BODY, FORBIDDEN, NOT_FOUND, (409, "not_cancellable"))},
            }},
            "/api/callbacks/{id}/reschedule": {"post": {
                "summary": "Move a waiting callback to another open time, or as soon as possible",
                "parameters": ID, "requestBody": _body(RescheduleBody),
                "responses": {"200": _json("the callback as listed"), **_errors(
                    UNAUTHORIZED, BAD_BODY, FORBIDDEN, NOT_FOUND, (409, "not_scheduled"),
                    (422, "slot_unavailable: the team is not open for all of it, or it is past"))},
            }},
            "/api/admin/rules": {"get": {
                "summary": "The escalation and routing rules in force", "security": [{"adminToken": []}],
                "responses": {"200": _json("version, hash, directory, load time"),
                              **_errors((401, "unauthorized"), (403, "admin_disabled"))},
            }},
            "/api/admin/rules/reload": {"post": {
                "summary": "Reload RULES_DIR and RULES_SHADOW_DIR; an invalid set is refused, the old stays",
                "security": [{"adminToken": []}],
                "responses": {"200": _json("the rules now in force, and the shadow candidate's"), **_errors(
                    (401, "unauthorized"), (403, "admin_disabled"),
                    (422, "rules_invalid, with problems: file, line, field, message"))},
            }},
        },
    }


_DOCUMENT = build()


async def document(request: web.Request) -> web.Response:
    return web.json_response(_DOCUMENT)
