"""The widget as people see it, in Debian's headless Chromium, one screenshot per promise
(``tests/artifacts/widget-*.png``; look at them):

- steps are shown in plain words ("Checking the server — healthy"), never tool names;
- lists in answers render as lists (bullets, numbers), commands as code;
- a long answer is shown from its start;
- a validation error is shown once, in the user's words (the field as they know it), and an
  oversized message is refused before sending, keeping the text;
- a pasted credential is never shown, not even in the person's own bubble;
- at a 375 px phone width the launcher is visible and the panel takes the whole screen.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from concierge.agent.models import OfflinePlanner
from concierge.registry import Registry
from tests.mcp_servers import RunningServer
from tests.server_fixtures import BEARER_CANARY, start_api_server

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARTIFACTS = Path(__file__).parent / "artifacts"
PHONE = {"width": 375, "height": 667}
DESKTOP = {"width": 1280, "height": 800}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[str, Registry]]:
    server, registry = start_api_server(tmp_path / "widget-home", allow_anonymous_loopback=True,
                                        model_factory=OfflinePlanner)
    try:
        yield server.url_base, registry
    finally:
        server.stop()
        registry.close()


@pytest.fixture
def page_at(browser: Browser) -> Iterator[Any]:
    pages: list[Page] = []

    def open_page(url: str, viewport: dict[str, int] = DESKTOP) -> Page:
        page = browser.new_page(viewport=viewport)
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.console_errors = errors  # type: ignore[attr-defined]
        pages.append(page)
        page.goto(url + "/")
        return page

    yield open_page
    for page in pages:
        assert page.console_errors == [], page.console_errors  # type: ignore[attr-defined]
        page.close()


def register(site_url: str, url: str, name: str, namespace: str) -> None:
    """Through the service's own REST API (anonymous on loopback), as a script would."""
    r = httpx2.post(f"{site_url}/api/v1/storage/sandboxes/default/sources/user-mcp", timeout=30,
                    json={"name": name, "base_url": url, "auth_kind": "none", "app_namespace": namespace})
    assert r.status_code in (200, 201), r.text


def open_chat(page: Page) -> None:
    page.get_by_role("button", name="Chat with Concierge").click()
    expect(page.get_by_role("log", name="Conversation")).to_be_visible()


def say(page: Page, text: str) -> None:
    box = page.get_by_label("Message to the concierge")
    box.fill(text)
    box.press("Enter")


def settle(page: Page) -> None:
    """Wait until the reply has finished streaming."""
    expect(page.get_by_role("button", name="Send")).to_be_enabled()
    expect(page.locator("#cw-panel .log")).to_have_attribute("aria-busy", "false")


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"widget-{name}.png"))


def panel_text(page: Page) -> str:
    return page.locator("#cw-panel").inner_text()


def test_steps_are_shown_in_plain_words(page_at, site, open_mcp: RunningServer) -> None:
    url, registry = site
    register(url, open_mcp.url(), "Demo", "demo")
    page = page_at(url)
    open_chat(page)
    say(page, "test Demo")
    settle(page)
    step = page.locator("[data-tool=test_source]")
    expect(step).to_have_text("Checking the server — healthy, 4 tools")
    expect(step).to_have_attribute("data-status", "ok")
    expect(page.locator("[data-tool=list_sources]")).to_have_text("Looking up your sources")
    text = panel_text(page)
    for raw in ("test_source", "list_sources", ": done", "_source"):
        assert raw not in text, raw
    shot(page, "steps")


def test_lists_render_as_lists(page_at, site, open_mcp: RunningServer) -> None:
    url, registry = site
    register(url, open_mcp.url(), "Acme docs", "acme_docs")
    register(url, open_mcp.url(), "Acme tools", "acme_tools")
    page = page_at(url)
    open_chat(page)
    say(page, "delete Acme docs")  # the CLI command comes as code
    settle(page)
    expect(page.locator(".msg.bot").last.locator("pre")).to_contain_text("concierge source delete ds_")
    shot(page, "lists-command")
    say(page, "help")
    settle(page)
    helped = page.locator(".msg.bot").last
    assert helped.locator("ul > li").count() >= 3  # the examples, one per bullet
    expect(helped.locator("ul > li").first).not_to_contain_text("- ")
    shot(page, "lists-help")
    say(page, "test acme")  # two match: a numbered choice
    settle(page)
    which = page.locator(".msg.bot").last
    expect(which.locator("p").first).to_have_text("Which one do you mean?")
    expect(which.locator("ol > li")).to_have_count(2)
    expect(which.locator("ol > li").nth(1)).to_contain_text("Acme tools")
    shot(page, "lists")


def test_a_long_answer_is_shown_from_its_start(page_at, site, open_mcp: RunningServer) -> None:
    url, registry = site
    for n in range(14):
        register(url, open_mcp.url(), f"Server {n:02d}", f"server_{n:02d}")
    page = page_at(url, {"width": 1280, "height": 640})
    open_chat(page)
    say(page, "list my sources")
    settle(page)
    answer = page.locator(".msg.bot").last
    expect(answer.locator("ul > li")).to_have_count(14)
    box, log = answer.bounding_box(), page.locator("#cw-panel .log").bounding_box()
    assert box is not None and log is not None
    assert box["height"] > log["height"]  # it does not fit: which part is shown matters
    assert log["y"] <= box["y"] <= log["y"] + 40, (box, log)  # its first line is in view
    expect(answer.locator(":scope > *").first).to_be_in_viewport()  # its first line
    shot(page, "long-answer")


def test_a_validation_error_is_shown_once_in_the_users_words(page_at, site, open_mcp: RunningServer) -> None:
    url, registry = site
    register(url, open_mcp.url(), "Demo", "demo")
    page = page_at(url)
    open_chat(page)
    say(page, "set the rate cap of Demo to 1000")
    settle(page)
    text = panel_text(page)
    assert text.count("600") == 1, text  # the rule is said once
    assert "rate cap" in text.lower() and "rate_cap_per_minute" not in text and "update_source" not in text
    # The planner checks the value with the registry's own model before proposing a change:
    # nothing is attempted, and the question comes back with the rule.
    expect(page.locator("[data-tool=update_source]")).to_have_count(0)
    assert "must be less than or equal to 600" in text

    # Too long: refused before sending, in words, and the text stays in the box.
    box = page.get_by_label("Message to the concierge")
    long_text = "add " + "x" * 4496
    box.fill(long_text)
    expect(page.get_by_role("status")).to_have_text(
        "Your message is 4,500 characters; the limit is 4,000. Shorten it to send it.")
    box.press("Enter")
    assert box.input_value() == long_text
    assert page.locator(".msg.user").count() == 1  # nothing more was sent
    shot(page, "validation")
    box.fill("list my sources")
    expect(page.get_by_role("status")).to_have_text("")


def test_a_pasted_token_is_never_shown(page_at, site, demo_mcp: RunningServer) -> None:
    url, registry = site
    page = page_at(url)
    open_chat(page)
    say(page, f"add {demo_mcp.url()} called Demo with bearer token {BEARER_CANARY}")
    settle(page)
    mine = page.locator(".msg.user").last
    expect(mine).to_contain_text("called Demo with bearer token •••• secret")
    expect(page.get_by_role("group", name="Please confirm this change")).to_contain_text('"Demo"')
    html = page.evaluate("document.querySelector('#concierge-widget').shadowRoot.innerHTML")
    assert BEARER_CANARY not in html + page.content() + page.evaluate("JSON.stringify(localStorage)")
    page.get_by_role("button", name="Confirm").click()
    settle(page)
    expect(page.locator("[data-tool=register_source][data-status=ok]")).to_contain_text("healthy")
    shot(page, "pasted-token")
    page.reload()
    open_chat(page)
    expect(page.locator(".msg.user").first).to_contain_text("bearer token •••• secret")
    assert BEARER_CANARY not in page.evaluate("document.querySelector('#concierge-widget').shadowRoot.innerHTML")
    [source] = registry.list_sources()
    assert source.status == "active"


def test_a_new_message_closes_an_unanswered_card(page_at, site, open_mcp: RunningServer) -> None:
    url, registry = site
    page = page_at(url)
    open_chat(page)
    say(page, f"Add {open_mcp.url()} with no auth, call it Plain")
    card = page.get_by_role("group", name="Please confirm this change")
    expect(card.get_by_role("button", name="Confirm")).to_be_visible()
    say(page, "list my sources")
    settle(page)
    expect(card.get_by_role("button")).to_have_count(0)  # it can no longer be answered
    expect(card).to_contain_text("Not answered; nothing was changed.")
    assert registry.list_sources() == []


def test_the_panel_is_usable_at_a_phone_width(page_at, site, demo_mcp: RunningServer) -> None:
    url, registry = site
    page = page_at(url, PHONE)
    launcher = page.get_by_role("button", name="Chat with Concierge")
    expect(launcher).to_be_in_viewport(ratio=1)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]  # no sideways scroll
    shot(page, "phone-closed")

    launcher.click()
    panel = page.get_by_role("dialog")
    box = panel.bounding_box()
    assert box == {"x": 0, "y": 0, "width": PHONE["width"], "height": PHONE["height"]}, box
    for control in (page.get_by_role("button", name="Close the chat"), page.get_by_role("button", name="Send"),
                    page.get_by_label("Message to the concierge")):
        expect(control).to_be_in_viewport(ratio=1)
    font = page.evaluate("""getComputedStyle(document.querySelector('#concierge-widget').shadowRoot
                            .querySelector('textarea')).fontSize""")
    assert font == "16px"  # phones do not zoom into a 16 px field

    say(page, f"Add my MCP server at {demo_mcp.url()} with a bearer token")
    expect(page.get_by_text("What should I call it?")).to_be_visible()
    say(page, "Acme")
    secret = page.get_by_label("Enter the bearer token", exact=False)
    expect(secret).to_be_in_viewport()
    secret.fill(BEARER_CANARY)
    page.get_by_role("button", name="Send securely").click()
    confirm = page.get_by_role("button", name="Confirm")
    expect(confirm).to_be_in_viewport(ratio=1)
    shot(page, "phone-confirm")
    confirm.click()
    settle(page)
    expect(page.locator("[data-tool=register_source][data-status=ok]")).to_be_in_viewport()
    shot(page, "phone-done")
    page.get_by_role("button", name="Close the chat").click()
    expect(launcher).to_be_in_viewport(ratio=1)
    assert [s.name for s in registry.list_sources()] == ["Acme"]


def test_desktop_layout(page_at, site, open_mcp: RunningServer) -> None:
    url, registry = site
    register(url, open_mcp.url(), "Demo", "demo")
    page = page_at(url)
    open_chat(page)
    panel = page.get_by_role("dialog").bounding_box()
    assert panel is not None and panel["width"] == 380 and panel["x"] + panel["width"] == DESKTOP["width"] - 20
    say(page, "list my sources")
    settle(page)
    expect(page.locator(".msg.bot").last.locator("ul > li")).to_have_count(1)
    shot(page, "desktop")


def test_typing_yes_at_an_open_card_answers_it(page_at, site, open_mcp: RunningServer) -> None:
    """Found by hand: typing "yes" at an open card dropped it and asked again with a new card."""
    url, registry = site
    page = page_at(url)
    open_chat(page)
    say(page, f"Add {open_mcp.url()} with no auth, call it Plain")
    card = page.get_by_role("group", name="Please confirm this change")
    expect(card.get_by_role("button", name="Confirm")).to_be_visible()
    say(page, "yes please")
    settle(page)
    expect(card).to_contain_text("Confirmed.")
    expect(page.get_by_role("group", name="Please confirm this change")).to_have_count(1)  # not asked again
    expect(page.locator("[data-tool=register_source][data-status=ok]")).to_contain_text("healthy")
    assert [s.name for s in registry.list_sources()] == ["Plain"]
    shot(page, "typed-yes")


def test_markup_in_messages_is_text(page_at, site) -> None:
    url, _ = site
    page = page_at(url)
    open_chat(page)
    say(page, '<img src=x onerror="document.title=\'owned\'"> and <b>bold</b>')
    settle(page)
    expect(page.locator(".msg.user").last).to_have_text('<img src=x onerror="document.title=\'owned\'"> and <b>bold</b>')
    widget = "document.querySelector('#concierge-widget').shadowRoot"
    assert page.evaluate(f"{widget}.querySelectorAll('.log img, .log b').length") == 0
    assert page.title() != "owned"


def test_cancel_on_the_credential_card_drops_the_request(page_at, site, demo_mcp: RunningServer) -> None:
    """Cancel must drop the request on the server too: otherwise a token in the next message
    answers the old request (the REPL's Ctrl-C bug, on the widget)."""
    url, registry = site
    page = page_at(url)
    open_chat(page)
    say(page, f"add {demo_mcp.url()} called Old with a bearer token")
    card = page.locator("[data-secret]")
    expect(card.get_by_role("button", name="Cancel")).to_be_visible()
    card.get_by_role("button", name="Cancel").click()
    settle(page)
    expect(card).to_contain_text("Cancelled; nothing was changed.")
    expect(page.locator(".msg.user").last).to_have_text("Cancel")
    say(page, f"add {demo_mcp.url()} called New with bearer token {BEARER_CANARY}")
    confirm = page.get_by_role("group", name="Please confirm this change")
    expect(confirm).to_contain_text('"New"')
    confirm.get_by_role("button", name="Confirm").click()
    settle(page)
    assert [(s.name, s.status) for s in registry.list_sources()] == [("New", "active")]


def test_a_token_typed_in_the_chat_answers_the_credential_card(page_at, site, demo_mcp: RunningServer) -> None:
    url, registry = site
    page = page_at(url)
    open_chat(page)
    say(page, f"add {demo_mcp.url()} called Typed with a bearer token")
    card = page.locator("[data-secret]")
    expect(card.get_by_role("button", name="Send securely")).to_be_visible()
    say(page, BEARER_CANARY)  # into the chat box, not the card
    expect(page.get_by_role("group", name="Please confirm this change")).to_contain_text('"Typed"')
    expect(card).to_contain_text("Credential received (it is not shown in the chat).")
    expect(page.locator(".msg.user").last).to_have_text("•••• secret")
    assert BEARER_CANARY not in page.evaluate("document.querySelector('#concierge-widget').shadowRoot.innerHTML")


def test_a_conversation_gone_from_the_server_loses_nothing(page_at, site) -> None:
    url, _ = site
    page = page_at(url)
    open_chat(page)
    say(page, "help")
    settle(page)
    sid = page.evaluate("Object.values(localStorage)[0]")
    assert httpx2.delete(f"{url}/api/v1/storage/sandboxes/default/concierge/sessions/{sid}").status_code == 200
    say(page, "list my sources")
    expect(page.get_by_role("alert")).to_have_text(
        "This conversation is no longer on the server. Send your message again to start a new one.")
    box = page.get_by_label("Message to the concierge")
    assert box.input_value() == "list my sources"  # given back, not lost
    assert page.console_errors == ["Failed to load resource: the server responded with a status of 404 (Not Found)"]
    page.console_errors.clear()  # that 404 was the point
    box.press("Enter")
    settle(page)
    expect(page.locator(".msg.bot").last).to_contain_text("no MCP sources")


def test_an_oauth_registration_shows_an_authorize_button(page_at, site) -> None:
    """Chat: "connect … it uses OAuth" → confirm → an "Authorize" button for the sign-in link;
    opening it (the authorization server auto-approves) signs the source in."""
    from tests.oauth_servers import oauth_servers

    url, registry = site
    with oauth_servers() as srv:
        page = page_at(url)
        open_chat(page)
        say(page, f"connect {srv.mcp_url} it uses OAuth and call it Linear")
        card = page.get_by_role("group", name="Please confirm this change")
        expect(card).to_contain_text("an OAuth sign-in (you will get a link to open)")
        card.get_by_role("button", name="Confirm").click()
        settle(page)
        button = page.get_by_role("link", name="Authorize")
        expect(button).to_be_visible()
        expect(page.locator("[data-tool=register_source][data-status=ok]")).to_contain_text("waiting for you to sign in")
        expect(page.locator("#cw-panel")).to_contain_text("Open this link to sign in")
        href = button.get_attribute("href")
        assert href is not None and href.startswith(srv.as_url + "/authorize?")
        assert button.get_attribute("target") == "_blank" and "noopener" in (button.get_attribute("rel") or "")
        shot(page, "oauth-authorize")
        with page.context.expect_page() as opened:
            button.click()
        signed = opened.value
        signed.wait_for_load_state()
        expect(signed.locator("h1")).to_have_text("Signed in")
        signed.close()
        [source] = registry.list_sources()
        for _ in range(200):
            source = registry.get_source(source.id)
            if source.status.value == "active":
                break
            page.wait_for_timeout(50)
        assert source.status.value == "active" and source.signed_in


def test_a_stdio_registration_names_the_command_in_plain_words(page_at, tmp_path) -> None:
    """Chat on a server started with allow_stdio: the confirmation says which program runs."""
    import sys

    server, registry = start_api_server(tmp_path / "stdio-home", allow_anonymous_loopback=True,
                                        model_factory=OfflinePlanner, allow_stdio=True)
    try:
        page = page_at(server.url_base)
        open_chat(page)
        say(page, f"add the server that runs with `{sys.executable} -m mcp_server_time` and call it Clock")
        card = page.get_by_role("group", name="Please confirm this change")
        expect(card).to_contain_text(f"runs the program `{sys.executable} -m mcp_server_time` on the machine "
                                     "that hosts Concierge")
        shot(page, "stdio-confirm")
        card.get_by_role("button", name="Confirm").click()
        settle(page)
        expect(page.locator("[data-tool=register_source][data-status=ok]")).to_contain_text("healthy, 2 tools")
        assert [s.command_line for s in registry.list_sources()] == [f"{sys.executable} -m mcp_server_time"]
    finally:
        server.stop()
        registry.close()
