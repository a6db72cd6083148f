"""The gateway's pages under their Content-Security-Policy in a real headless Chromium: nothing is blocked."""

from __future__ import annotations

from typing import Any

from tests.test_browser import Browser, Server, browser, expect, send, server  # noqa: F401 - fixtures


def _watch(page: Any) -> list[str]:
    """Chromium reports each CSP violation as a console error (the favicon's 404 is not a problem)."""
    problems: list[str] = []

    def on_console(message: Any) -> None:
        if message.type == "error" and not message.location.get("url", "").endswith("/favicon.ico"):
            problems.append(f"{message.text} ({message.location.get('url')})")

    page.on("console", on_console)
    page.on("pageerror", lambda e: problems.append(str(e)))
    return problems


async def test_the_demo_page_and_widget_run_under_the_policy(
    browser: Browser, server: Server  # noqa: F811
) -> None:
    page = await browser.new_page()
    problems = _watch(page)
    response = await page.goto(server.base)
    assert response is not None and "frame-ancestors 'none'" in response.headers["content-security-policy"]
    launcher = page.get_by_role("button", name="Open chat")
    # The widget's styles applied (a constructed stylesheet), and the shop's (shop.css).
    assert await launcher.evaluate("b => getComputedStyle(b).position") == "fixed"
    assert await page.evaluate("getComputedStyle(document.querySelector('.swatch.oak')).backgroundColor") \
        == "rgb(200, 162, 122)"
    await launcher.click()
    await expect(page.locator(".status")).to_have_text("Online")  # its websocket is allowed
    await send(page, "Where is my order?")
    await expect(page.locator(".msg.bot")).to_contain_text("Account > Orders")
    assert problems == []


async def test_the_console_runs_under_the_policy(browser: Browser, server: Server) -> None:  # noqa: F811
    page = await browser.new_page()
    problems = _watch(page)
    await page.goto(f"{server.base}/console")
    assert await page.locator("#capacity").evaluate("e => getComputedStyle(e).width") != "auto"
    assert await page.locator("#signin").evaluate("e => getComputedStyle(e).maxWidth") == "420px"
    await page.get_by_label("Agent token").fill("hga_not-a-token")
    await page.get_by_role("button", name="Sign in").click()  # the agent API is reachable (and says no)
    await expect(page.locator("#signin-error")).not_to_be_empty()
    assert [p for p in problems if "401" not in p and "403" not in p] == []
