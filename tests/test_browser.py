"""The widget in a real headless Chromium (Playwright with Debian's /usr/bin/chromium)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway import appkeys
from gateway.app import create_app
from gateway.embedded_redis import free_port
from handoff.agents import AgentStore
from sessions.keys import Keys
from sessions.store import ConversationStore
from tests.conftest import make_settings

CHROMIUM = Path("/usr/bin/chromium")

if not CHROMIUM.exists():
    if os.environ.get("REQUIRE_BROWSER"):
        raise RuntimeError("REQUIRE_BROWSER is set but /usr/bin/chromium is missing")
    pytest.skip("browser tests skipped: /usr/bin/chromium is not installed (apt-get install chromium)",
                allow_module_level=True)

from playwright.async_api import Browser, Page, async_playwright, expect  # noqa: E402

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield browser
        await browser.close()


class Server:
    """A gateway on a fixed port that can be stopped and started again, as in a deploy or a crash."""

    def __init__(self, redis_url: str, namespace: str, tmp_path: Path, **overrides: Any) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.settings = make_settings(redis_url, namespace, tmp_path, port=self.port,
                                      allowed_origins=frozenset({self.base}), **overrides)
        self.runner: web.AppRunner | None = None
        self.clock: Callable[[], datetime] | None = None

    async def start(self) -> None:
        app = create_app(self.settings)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        if self.clock is not None:
            app[appkeys.PIPELINE].clock = self.clock
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


@pytest.fixture
async def server(redis_url: str, namespace: str, tmp_path: Path, redis: Any) -> AsyncIterator[Server]:
    server = Server(redis_url, namespace, tmp_path)
    await server.start()
    yield server
    await server.stop()


async def send(page: Page, text: str) -> None:
    box = page.get_by_label("Message")
    await box.fill(text)
    await box.press("Enter")


async def test_chat_answer_then_reload_shows_history(browser: Browser, server: Server) -> None:
    page = await browser.new_page()
    await page.goto(server.base)
    await page.get_by_role("button", name="Open chat").click()
    await expect(page.locator(".status")).to_have_text("Online")

    await send(page, "Where is my order?")
    await expect(page.locator(".msg.bot")).to_contain_text("Account > Orders")
    await expect(page.locator(".msg.customer")).to_have_text("Where is my order?")
    await expect(page.locator(".msg.pending")).to_have_count(0)

    await page.reload()
    await expect(page.locator(".status")).to_have_text("Online")
    await expect(page.locator(".msg.customer")).to_have_text("Where is my order?")
    await expect(page.locator(".msg.bot")).to_have_count(1)
    await expect(page.locator(".msg.bot")).to_contain_text("Account > Orders")


async def test_widget_reconnects_after_a_drop_without_losing_or_repeating(
    browser: Browser, server: Server
) -> None:
    page = await browser.new_page()
    await page.goto(server.base)
    await page.get_by_role("button", name="Open chat").click()
    await send(page, "hello")
    await expect(page.locator(".msg.bot")).to_have_count(1)

    await server.stop()
    await expect(page.locator(".status")).to_have_text("Reconnecting")
    await send(page, "how much is shipping")  # typed while the gateway is down
    await expect(page.locator(".msg.pending")).to_have_count(1)

    await server.start()
    await expect(page.locator(".status")).to_have_text("Online", timeout=15_000)
    await expect(page.locator(".msg.bot")).to_have_count(2, timeout=10_000)
    await expect(page.locator(".msg.bot").nth(1)).to_contain_text("Shipping is free")
    await expect(page.locator(".msg.customer")).to_have_count(2)
    await expect(page.locator(".msg.pending")).to_have_count(0)

    await page.reload()
    await expect(page.locator(".msg")).to_have_count(4)


async def test_verified_demo_customer(browser: Browser, redis_url: str, namespace: str, tmp_path: Path,
                                      redis: Any) -> None:
    server = Server(redis_url, namespace, tmp_path, identity_secret="demo")
    await server.start()
    try:
        page = await browser.new_page()
        await page.goto(f"{server.base}/?signed_in=1")
        await page.get_by_role("button", name="Open chat").click()
        await send(page, "hi")
        await expect(page.locator(".msg.bot")).to_have_count(1)
        store = ConversationStore(redis, Keys(namespace), 60)
        conversation = await store.get((await store.recent(1))[0])
        assert conversation.customer.trusted("tier") == "gold"
    finally:
        await server.stop()


async def test_handoff_shows_the_notice_and_a_status_line_that_survives_a_reload(
    browser: Browser, redis_url: str, namespace: str, tmp_path: Path, redis: Any
) -> None:
    server = Server(redis_url, namespace, tmp_path)
    server.clock = lambda: datetime(2026, 11, 28, 4, 30, tzinfo=UTC)  # Friday night in New York
    await server.start()
    try:
        page = await browser.new_page()
        await page.goto(server.base)
        await page.get_by_role("button", name="Open chat").click()
        await send(page, "I want to dispute a charge on my card")
        await expect(page.locator(".msg.system")).to_contain_text("Our Billing team is closed right now")
        await expect(page.locator(".msg.bot")).to_have_count(0)  # the bot never answered
        banner = page.locator(".banner")
        await expect(banner).to_be_visible()
        await expect(banner).to_contain_text("Billing will reply here")
        await expect(banner).to_have_attribute("data-status", "async")

        await page.reload()
        await expect(page.locator(".banner")).to_contain_text("Billing will reply here")
        await expect(page.locator(".msg.system")).to_have_count(1)
    finally:
        await server.stop()


async def test_customer_and_agent_pages_end_to_end(
    browser: Browser, redis_url: str, namespace: str, tmp_path: Path, redis: Any
) -> None:
    """A customer asks for a person in the widget; an agent accepts in the console; they talk; the agent
    resolves; the widget shows each step."""
    server = Server(redis_url, namespace, tmp_path)
    server.clock = lambda: datetime(2026, 11, 27, 15, 0, tzinfo=UTC)  # Friday morning in New York
    await server.start()
    try:
        _, token = await AgentStore(redis, Keys(namespace)).add("Alex", ["billing"], ["en"], [])
        console = await browser.new_page(viewport={"width": 1280, "height": 800})
        await console.goto(f"{server.base}/console")
        await console.get_by_label("Agent token").fill(token)
        await console.get_by_role("button", name="Sign in").click()
        await expect(console.locator("#me")).to_contain_text("Alex")
        await console.get_by_label("Capacity").fill("2")
        await console.get_by_label("Status").select_option("online")
        await expect(console.locator("#toast")).to_contain_text("You are online")

        customer = await browser.new_page()
        await customer.goto(server.base)
        await customer.get_by_role("button", name="Open chat").click()
        await send(customer, "where is my order #123456")
        await expect(customer.locator(".msg.bot")).to_have_count(1)
        await send(customer, "I want to dispute a charge on my card")
        await expect(customer.locator(".msg.system")).to_contain_text("Billing team")
        await expect(customer.locator(".banner")).to_be_visible()

        offer = console.locator(".item.offer")
        await expect(offer).to_have_count(1, timeout=10_000)
        await offer.get_by_role("button", name="Accept").click()
        await expect(console.locator("#summary")).to_contain_text('order_status: "where is my order #123456"')
        await expect(console.locator("#summary")).to_contain_text("order_number: 123456")
        await expect(console.locator("#summary")).to_contain_text("high_risk_intent")
        await expect(console.locator("#transcript .msg.customer")).to_have_count(2)
        await expect(customer.locator(".banner")).to_contain_text("You're chatting with Alex")
        await expect(customer.locator(".msg.system").last).to_contain_text("Alex from our team has joined")

        await console.get_by_label("Reply").fill("Hi, I'm Alex. Which charge is it?")
        await console.get_by_role("button", name="Send").click()
        await expect(customer.locator(".msg.agent")).to_contain_text("Which charge is it?")
        await send(customer, "The one from Tuesday, 49 EUR")
        await expect(console.locator("#transcript .msg.customer").last).to_contain_text("from Tuesday")

        await console.get_by_label("Outcome").fill("refund issued")
        await console.get_by_label("back to the bot").check()
        await console.locator('input[name="context"][value="yes"]').check()
        await console.get_by_role("button", name="Resolve").click()
        await expect(customer.locator(".msg.system").last).to_contain_text("I'm back to help")
        await expect(customer.locator(".banner")).to_be_hidden()
        await send(customer, "how much is shipping")
        await expect(customer.locator(".msg.bot")).to_have_count(2)

        store = ConversationStore(redis, Keys(namespace), 60)
        conversation = await store.get((await store.recent(1))[0])
        resolved = [e for e in await store.events(conversation.id) if e.type == "handoff.resolved"]
        assert resolved[0].data["context_sufficient"] is True and resolved[0].data["outcome"] == "refund issued"
    finally:
        await server.stop()


async def test_demo_page_on_a_port_not_in_allowed_origins_chats_and_a_foreign_site_is_told_why(
    browser: Browser, start_gateway: Any
) -> None:
    """`PORT=8090 make run`: the gateway's own page may always open the chat; a site whose origin is not
    allowed says so instead of "Reconnecting" for ever."""
    base = await start_gateway()  # the default ALLOWED_ORIGINS name port 8080 only
    assert not base.endswith(":8080")
    page = await browser.new_page()
    await page.goto(base)
    await page.get_by_role("button", name="Open chat").click()
    await expect(page.locator(".status")).to_have_text("Online")
    await send(page, "Where is my order?")
    await expect(page.locator(".msg.bot")).to_contain_text("Account > Orders")

    async def shop(request: web.Request) -> web.Response:
        return web.Response(text=f'<!doctype html><title>Other shop</title><body><script src="{base}/widget.js">'
                                 '</script></body>', content_type="text/html")

    app = web.Application()
    app.router.add_get("/", shop)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        foreign = await browser.new_page()
        attempts: list[str] = []
        foreign.on("websocket", lambda ws: attempts.append(ws.url))
        await foreign.goto(f"http://127.0.0.1:{port}/")
        await foreign.get_by_role("button", name="Open chat").click()
        await expect(foreign.locator(".notice")).to_have_text("This site is not allowed to open the chat.")
        await expect(foreign.locator(".status")).to_have_text("Unavailable")
        await foreign.wait_for_timeout(1500)
        assert len(attempts) == 1  # told why, it stops trying
    finally:
        await runner.cleanup()


async def test_the_console_says_so_when_its_agent_is_removed(browser: Browser, server: Server, redis: Any,
                                                              namespace: str) -> None:
    """The socket closes with 4401: the console signs out and does not reconnect with a dead token."""
    agents = AgentStore(redis, Keys(namespace))
    alex, token = await agents.add("Alex", ["billing"], ["en"], [])
    console = await browser.new_page()
    await console.goto(f"{server.base}/console")
    await console.get_by_label("Agent token").fill(token)
    await console.get_by_role("button", name="Sign in").click()
    await expect(console.locator("#me")).to_contain_text("Alex")
    await expect(console.locator("#queues")).to_contain_text("Billing")  # the socket is up

    await agents.remove(alex)
    await expect(console.locator("#signin-error")).to_have_text("Signed out: this agent was removed.")
    await expect(console.locator("#signin")).to_be_visible()
    assert await console.evaluate("sessionStorage.getItem('agent-token')") is None
