"""Callbacks in a real headless Chromium: the widget's form over an offer, and the console's Callbacks panel.

The gateway's clock is Friday 23:30 in New York, when the demo rules' `general` team is closed (weekdays
08:00-20:00, Saturdays 10:00-16:00), so a customer who insists on a person is offered a callback.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from handoff import callback_slots
from handoff.agents import AgentStore
from sessions.keys import Keys
from sessions.models import Conversation, ConversationState
from sessions.store import ConversationStore
from tests.test_browser import Browser, Page, Server, browser, expect, send  # noqa: F401 - fixtures
from tests.test_browser_csp import _watch

NEW_YORK = ZoneInfo("America/New_York")
FRIDAY_NIGHT = datetime(2026, 11, 28, 4, 30, tzinfo=UTC)  # Friday 23:30 in New York: general is closed
DEMO_PHONE = "+14155550123"  # the demo shop's signed-in customer's number (gateway/pages.py)


@pytest.fixture
async def night(redis_url: str, namespace: str, tmp_path: Path, redis: Any) -> AsyncIterator[Server]:
    server = Server(redis_url, namespace, tmp_path, identity_secret="demo")
    server.clock = lambda: FRIDAY_NIGHT
    await server.start()
    yield server
    await server.stop()


async def conversation_of(redis: Any, namespace: str) -> Conversation:
    store = ConversationStore(redis, Keys(namespace), 60)
    [cid] = await store.recent(1)
    return await store.get(cid)


async def offered_a_callback(page: Page, server: Server) -> Any:
    """The signed-in demo customer asks for a person until handed off, and is offered a callback: the form."""
    await page.goto(f"{server.base}/?signed_in=1")
    await page.get_by_role("button", name="Open chat").click()
    await expect(page.locator(".status")).to_have_text("Online")
    form = page.get_by_role("form", name="Arrange a callback")
    answers = page.locator(".msg.bot, .msg.system")
    for text in ("I need to talk to a real person please", "no, just put me through to a human now",
                 "my parcel 88123 never arrived", "I still want a person to sort it out"):
        before = await answers.count()
        await send(page, text)
        await expect(answers).not_to_have_count(before)  # answered: by the bot, or handed off
        if await page.locator(".msg.system").count():
            break
    await expect(page.locator(".msg.system").first).to_contain_text("closed")  # handed off after hours
    await expect(form).to_be_visible()  # and offered a callback
    return form


async def test_a_customer_after_hours_arranges_a_callback_in_the_form_and_cancels_it(
    browser: Browser, night: Server, redis: Any, namespace: str  # noqa: F811
) -> None:
    page = await browser.new_page()
    problems = _watch(page)  # the form and the button live under the page's CSP: nothing inline
    form = await offered_a_callback(page, night)
    offer = page.locator(".msg.system").last
    await expect(offer).to_contain_text("can call you on +1 415-555-0123")  # the text menu stays readable
    await expect(offer).to_contain_text("Reply with a number")

    number = form.get_by_label("Your phone number")
    await expect(number).to_have_value(DEMO_PHONE)  # the number the site vouched for
    assert await number.get_attribute("type") == "tel"
    times = form.get_by_role("radio")
    conversation = await conversation_of(redis, namespace)
    assert conversation.callback is not None
    choices = conversation.callback.choices
    await expect(times).to_have_count(len(choices))
    await expect(form.get_by_role("radio", name="as soon as we open")).to_be_checked()
    # Each choice's label is the menu's line, in the San Francisco number's time zone.
    second = form.get_by_role("radio", name="Saturday 28 Nov, 08:00-09:00 Pacific Time")
    await expect(second).to_have_value("2")

    # A number the gateway cannot read: it says so, the form can be corrected, and no time was sent for it.
    await number.fill("+1 555 01")
    await second.check()
    await form.get_by_role("button", name="Call me back").click()
    await expect(form.get_by_role("alert")).to_have_text("That number didn't work: please check it.")
    await expect(page.locator(".msg.system").last).to_contain_text("Sorry, I didn't get that")
    await expect(form.get_by_role("button", name="Call me back")).to_be_enabled()
    await expect(page.locator(".msg.customer").last).to_have_text("+1 555 01")

    await number.fill("(212) 555-0187")  # another number (in New York), written the local way
    await second.check()
    await form.get_by_role("button", name="Call me back").click()

    # Both answers went as ordinary messages, acknowledged; the menu for the new number came in between.
    customer = page.locator(".msg.customer")
    await expect(customer.nth(-2)).to_have_text("(212) 555-0187")
    await expect(customer.last).to_have_text("2")
    await expect(page.locator(".msg.pending")).to_have_count(0)
    confirmation = page.locator(".msg.system").last
    await expect(confirmation).to_contain_text(
        "will call you on +1 212-555-0187, Saturday 28 Nov, 11:00-12:00 Eastern Time")
    await expect(page.get_by_role("form", name="Arrange a callback")).to_have_count(0)  # answered: gone
    # The status line says when, in the time zone of the number (the browser's is UTC here).
    await expect(page.locator(".banner")).to_contain_text("Customer Support will call you back (Saturday, Nov 28, 11:00")
    await expect(page.locator(".banner")).to_contain_text("EST")
    cancel = page.get_by_role("button", name="Cancel callback")
    await expect(cancel).to_be_visible()

    conversation = await conversation_of(redis, namespace)
    assert conversation.state is ConversationState.CALLBACK
    assert conversation.callback is not None and conversation.callback.state == "scheduled"
    assert conversation.callback.number == "+12125550187"
    assert conversation.callback.slot == callback_slots.in_utc(choices[1])
    assert [m.text for m in await ConversationStore(redis, Keys(namespace), 60).transcript(conversation.id)
            if m.sender.value == "customer"][-2:] == ["(212) 555-0187", "2"]

    await page.reload()  # a reload shows the promise, not the old form
    await expect(page.get_by_role("button", name="Cancel callback")).to_be_visible()
    await expect(page.get_by_role("form", name="Arrange a callback")).to_have_count(0)

    await page.get_by_role("button", name="Cancel callback").click()
    await expect(page.locator(".msg.customer").last).to_have_text("cancel callback")
    await expect(page.locator(".msg.system").last).to_contain_text("Your callback is cancelled")
    await expect(page.get_by_role("button", name="Cancel callback")).to_have_count(0)
    conversation = await conversation_of(redis, namespace)
    assert conversation.state is ConversationState.RESOLVED
    assert conversation.callback is not None and conversation.callback.state == "cancelled"
    assert problems == []


async def test_an_agent_moves_and_cancels_a_callback_in_the_console(
    browser: Browser, night: Server, redis: Any, namespace: str  # noqa: F811
) -> None:
    customer = await browser.new_page()
    form = await offered_a_callback(customer, night)
    await form.get_by_role("radio", name="Saturday 28 Nov, 08:00-09:00 Pacific Time").check()
    await form.get_by_role("button", name="Call me back").click()
    await expect(customer.get_by_role("button", name="Cancel callback")).to_be_visible()

    _, token = await AgentStore(redis, Keys(namespace)).add("Alex", [], ["en"], [])
    # The agent works in New York: the datetime-local field and the list are in the browser's time.
    agent_context = await browser.new_context(timezone_id="America/New_York", locale="en-US",
                                              viewport={"width": 1280, "height": 900})
    console = await agent_context.new_page()
    problems = _watch(console)
    await console.goto(f"{night.base}/console")
    await console.get_by_label("Agent token").fill(token)
    await console.get_by_role("button", name="Sign in").click()
    await expect(console.locator("#me")).to_contain_text("Alex")

    panel = console.get_by_role("region", name="Callbacks")
    row = panel.locator(".item.callback")
    await expect(row).to_have_count(1)
    await expect(row).to_contain_text("scheduled")
    await expect(row).to_contain_text("Sat, Nov 28, 11:00-12:00")  # 08:00-09:00 Pacific, in New York
    await expect(row).to_contain_text("Jane Doe · +14155550123 · webchat")
    await expect(row).to_contain_text("attempts 0/3")

    # Sunday: the team is closed all day. The gateway says why, and nothing moves.
    await row.get_by_role("button", name="Move", exact=True).click()
    start = row.get_by_label("New start")
    await expect(start).to_have_value("2026-11-28T11:00")
    await start.fill("2026-11-29T11:00")
    await row.get_by_role("button", name="Move callback").click()
    await expect(row.get_by_role("alert")).to_contain_text("the Customer Support team is not open for all of that slot")
    conversation = await conversation_of(redis, namespace)
    assert conversation.callback is not None and conversation.callback.slot is not None
    assert conversation.callback.slot.start == datetime(2026, 11, 28, 11, 0, tzinfo=NEW_YORK)

    # Monday 14:00 in New York, an hour long like the slot it replaces.
    await start.fill("2026-11-30T14:00")
    await row.get_by_label("Move note").fill("asked by email to move it")
    await row.get_by_role("button", name="Move callback").click()
    await expect(console.locator("#toast")).to_contain_text("Callback moved")
    await expect(row).to_contain_text("Mon, Nov 30, 14:00-15:00")
    await expect(row).to_contain_text("Note: asked by email to move it")
    await expect(row.get_by_label("New start")).to_have_count(0)  # the form closed
    conversation = await conversation_of(redis, namespace)
    assert conversation.state is ConversationState.CALLBACK and conversation.callback is not None
    slot = conversation.callback.slot
    assert slot is not None and slot.start == datetime(2026, 11, 30, 14, 0, tzinfo=NEW_YORK)
    assert slot.end == slot.start + timedelta(hours=1)
    await expect(customer.locator(".msg.system").last).to_contain_text(
        "has moved: they'll call you on +1 415-555-0123, Monday 30 Nov, 11:00-12:00 Pacific Time")
    await expect(customer.locator(".banner")).to_contain_text("will call you back (Monday, Nov 30, 11:00")
    await expect(customer.get_by_role("button", name="Cancel callback")).to_be_visible()

    await row.get_by_role("button", name="Cancel", exact=True).click()
    await row.get_by_label("Cancel note").fill("sorted by email")
    await row.get_by_role("button", name="Cancel callback").click()
    await expect(console.locator("#toast")).to_contain_text("Callback cancelled")
    await expect(row).to_have_count(0)
    await expect(panel).to_contain_text("None.")
    conversation = await conversation_of(redis, namespace)
    assert conversation.state is ConversationState.RESOLVED
    assert conversation.callback is not None and conversation.callback.state == "cancelled"
    assert conversation.callback.note == "sorted by email"
    await expect(customer.locator(".msg.system").last).to_contain_text("Your callback is cancelled")
    await expect(customer.get_by_role("button", name="Cancel callback")).to_have_count(0)
    # Chromium logs the refused move's 422 as a failed resource; anything else would be a CSP violation or a bug.
    assert [p for p in problems if "422" not in p] == []
    await agent_context.close()
