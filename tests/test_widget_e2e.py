"""The widget end to end in Debian's headless Chromium (Playwright, never a downloaded browser):
the demo page at / registers a real MCP server on loopback through the offline planner — URL,
auth, the secret in the password field, the confirmation card — and the source is active."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from concierge.agent.models import OfflinePlanner
from tests.mcp_servers import RunningServer
from tests.server_fixtures import BEARER_CANARY, start_api_server

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARTIFACTS = Path(__file__).parent / "artifacts"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[str, object]]:
    server, registry = start_api_server(tmp_path / "widget-home", allow_anonymous_loopback=True,
                                        model_factory=OfflinePlanner)
    try:
        yield server.url_base, registry
    finally:
        server.stop()
        registry.close()


def shadow_active(page: Page) -> str:
    """What has keyboard focus inside the widget."""
    return page.evaluate("""() => {
        const a = document.querySelector('#concierge-widget').shadowRoot.activeElement;
        return a ? (a.getAttribute('type') || '') + ':' + (a.textContent || a.id) : '';
    }""")


def say(page: Page, text: str) -> None:
    box = page.get_by_label("Message to the concierge")
    box.fill(text)
    box.press("Enter")


def test_register_a_server_through_the_widget(browser: Browser, site, demo_mcp: RunningServer):
    url, registry = site
    page = browser.new_page(viewport={"width": 1100, "height": 760})
    console_errors: list[str] = []
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    page.goto(url + "/")

    launcher = page.get_by_role("button", name="Chat with Concierge")
    expect(launcher).to_have_attribute("aria-expanded", "false")
    launcher.click()
    expect(launcher).to_have_attribute("aria-expanded", "true")
    expect(page.get_by_role("log", name="Conversation")).to_be_visible()
    assert shadow_active(page).endswith("cw-input")  # focus moved into the panel

    say(page, f"Add my MCP server at {demo_mcp.url()} with a bearer token")
    expect(page.get_by_text("What should I call it?")).to_be_visible()
    say(page, "Acme")

    secret = page.get_by_label(re.compile("Enter the bearer token"))
    expect(secret).to_be_visible()
    expect(secret).to_have_attribute("type", "password")
    assert shadow_active(page).startswith("password:")  # focus went to the password field
    secret.fill(BEARER_CANARY)
    page.get_by_role("button", name="Send securely").click()

    card = page.get_by_role("group", name="Please confirm this change")
    expect(card).to_be_visible()
    expect(card).to_contain_text('Register the MCP server "Acme"')
    assert shadow_active(page) == "button:Confirm"  # the card takes focus; Enter answers it
    page.keyboard.press("Enter")

    done = page.locator("[data-tool=register_source][data-status=ok]")
    expect(done).to_have_text("Registering the server and checking it — healthy, 4 tools")
    expect(page.get_by_text(re.compile("is registered in sandbox"))).to_be_visible()
    [source] = registry.list_sources()
    assert (source.status, source.name, source.has_token) == ("active", "Acme", True)

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "widget-e2e.png"))

    # The credential is nowhere on the page or in its storage.
    widget_html = page.evaluate("document.querySelector('#concierge-widget').shadowRoot.innerHTML")
    storage = page.evaluate("JSON.stringify(localStorage)")
    assert BEARER_CANARY not in page.content() + widget_html + storage

    # Reload: the conversation comes back from the server.
    page.reload()
    page.get_by_role("button", name="Chat with Concierge").click()
    expect(page.get_by_text(f"Add my MCP server at {demo_mcp.url()} with a bearer token")).to_be_visible()
    expect(page.locator("[data-tool=register_source][data-status=ok]")).to_have_count(1)
    expect(page.get_by_text("You handed over a credential privately.")).to_be_visible()
    say(page, "list my sources")
    # One list while registering (the planner looks before it proposes), one for this request.
    expect(page.locator("[data-tool=list_sources][data-status=ok]")).to_have_count(2)

    # Escape closes the panel and gives focus back to the launcher.
    page.keyboard.press("Escape")
    expect(page.get_by_role("dialog")).to_be_hidden()
    assert "Chat with Concierge" in shadow_active(page)
    assert console_errors == []
    page.close()


def test_cancel_on_the_card_changes_nothing_and_a_reload_shows_the_open_question(browser, site, demo_mcp):
    url, registry = site
    page = browser.new_page()
    page.goto(url + "/")
    page.get_by_role("button", name="Chat with Concierge").click()
    say(page, f"Add my MCP server at {demo_mcp.url()} with no auth, call it Plain")
    card = page.get_by_role("group", name="Please confirm this change")
    expect(card).to_contain_text('"Plain"')

    page.reload()  # the unanswered card is shown again after a reload
    page.get_by_role("button", name="Chat with Concierge").click()
    card = page.get_by_role("group", name="Please confirm this change")
    expect(card).to_contain_text('"Plain"')
    card.get_by_role("button", name="Cancel").click()
    expect(page.get_by_text("Cancelled; nothing was changed.")).to_be_visible()
    expect(page.locator(".msg.bot").last).to_contain_text(re.compile("nothing was changed", re.I))
    # The declined call gets no step line of its own: the card and the answer already say it.
    expect(page.locator("[data-tool=register_source]")).to_have_text(
        "Registering the server and checking it — waiting for you")
    assert registry.list_sources() == []
    page.close()
