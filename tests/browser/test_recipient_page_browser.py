"""The recipient's page (/p/{token}) in a real Chromium against a live tracker: what a person sees and
can do with a keyboard alone, that the page loads nothing from elsewhere, passes axe-core, and that its
Content Security Policy and form token hold in the browser, not only in the HTTP headers."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from politetenant.tracker.http.auth import Role
from tests.browser.harness import (
    NARROW,
    Browser,
    LiveTracker,
    axe_source,
    other_origin_requests,
    overflowing_elements,
    run_axe,
    screenshot,
)
from tests.support import IP_DUBLIN, UA_IPHONE_MAIL, message_body

PAGE_TITLE = "What is recorded about this e-mail"
GIF = "data:image/gif;base64,R0lGODlhAQABAAAAACH5BAEKAAEALAAAAAABAAEAAAICTAEAOw=="


# -- helpers ---------------------------------------------------------------------------------------------


def addresses(count: int) -> list[str]:
    """Addresses no other test uses: an objection in one test must not change another's message."""
    batch = uuid.uuid4().hex[:8]
    return [f"reader{i}.{batch}@example.com" for i in range(count)]


def register(live: LiveTracker, mode: str, emails: list[str]) -> dict[str, str | None]:
    """Register a message through the API; each address's token (None: the address objected)."""

    async def post() -> dict[str, Any]:
        body = {**message_body(0, mode=mode), "recipients": [{"email": email} for email in emails]}
        resp = await live.tracker.client.post("/api/v1/messages", json=body, headers=live.tracker.auth(Role.SENDER))
        assert resp.status == 201, await resp.text()
        return dict(await resp.json())

    return {r["email"]: r["token"] for r in live.run(post())["recipients"]}


def opened(live: LiveTracker, token: str, times: int) -> None:
    """``times`` opens from a phone's mail app in Dublin, stored before the page is read."""

    async def hits() -> None:
        for _ in range(times):
            resp = await live.tracker.client.get(f"/o/{token}.gif", headers={"User-Agent": UA_IPHONE_MAIL,
                                                                          "X-Forwarded-For": IP_DUBLIN})  # fmt: skip
            assert resp.status == 200
        await live.tracker.flush()

    live.run(hits())


def page_of(live: LiveTracker, mode: str, opens: int = 0) -> tuple[str, list[str]]:
    """The page URL of the first of two recipients of a new message, and both addresses."""
    emails = addresses(2)
    token = register(live, mode, emails)[emails[0]]
    assert token is not None
    if opens:
        opened(live, token, opens)
    return live.url(f"/p/{token}"), emails


def visible_text(browser: Browser) -> str:
    return " ".join(browser.driver.find_element(By.TAG_NAME, "body").text.split())


def focused(browser: Browser) -> tuple[str, str]:
    """The element keyboard focus is on: (tag, id or text)."""
    element = browser.driver.switch_to.active_element
    return element.tag_name, element.get_attribute("id") or element.text


def wait_for_title(browser: Browser, title: str) -> None:
    WebDriverWait(
        browser.driver,
        10,
        poll_frequency=0.05,
        ignored_exceptions=(WebDriverException,),  # mid-navigation
    ).until(lambda driver: driver.title == title)


# -- the page in each mode ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["individual", "anonymous", "aggregate"])
def test_page_loads_in_each_mode_alone_clean_and_accessible(live: LiveTracker, browser: Browser, mode: str) -> None:
    url, _ = page_of(live, mode, opens=2)
    browser.open(url)

    assert browser.driver.title == PAGE_TITLE
    text = visible_text(browser)
    assert f"This message was sent in {mode} mode" in text
    if mode == "aggregate":
        assert "Opens" not in text  # the shared record is everyone's: no figures
    else:
        assert "Opens 2" in text and "mobile" in text  # this copy's own figures, as a person reads them
    assert browser.console_errors() == []
    assert browser.requests == [url]  # the document and nothing else: no style, font or image from anywhere
    assert browser.other_origin_requests(live.base_url) == []
    assert run_axe(browser.driver) == []
    screenshot(browser.driver, f"recipient-page-{mode}")


def test_page_fits_a_360_px_phone_screen_without_sideways_scrolling(live: LiveTracker, browser: Browser) -> None:
    url, _ = page_of(live, "anonymous", opens=1)
    with browser.window(*NARROW):
        browser.open(url)
        screenshot(browser.driver, "recipient-page-anonymous-360px")  # first: a failure leaves the picture
        assert browser.driver.execute_script("return innerWidth") == NARROW[0]
        assert browser.console_errors() == []
        assert run_axe(browser.driver) == []
        assert overflowing_elements(browser.driver) == []  # nothing cut off at the right edge


# -- objecting with the keyboard alone -----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["individual", "anonymous"])
def test_keyboard_alone_stops_tracking_and_the_next_message_leaves_the_reader_out(
    live: LiveTracker, browser: Browser, mode: str
) -> None:
    url, (reader, other) = page_of(live, mode)
    browser.open(url)
    keys = ActionChains(browser.driver)

    if mode == "anonymous":
        keys.send_keys(Keys.TAB).perform()
        assert focused(browser) == ("input", "email")
        keys.send_keys(reader.upper()).perform()  # as people type it: the address matches case-insensitively
    keys.send_keys(Keys.TAB).perform()
    assert focused(browser) == ("button", "Stop tracking me")
    screenshot(browser.driver, f"recipient-page-{mode}-keyboard-focus")
    keys.send_keys(Keys.ENTER).perform()

    wait_for_title(browser, "Done")
    assert browser.driver.current_url == url + "/object"
    text = visible_text(browser)
    assert "will not be tracked in future messages" in text
    assert browser.console_errors() == []
    screenshot(browser.driver, f"recipient-page-{mode}-done")

    after = register(live, mode, [reader, other])
    assert after[reader] is None  # on the objection list: no token, no tracking
    assert after[other] is not None


# -- the form token and the CSP in the browser ------------------------------------------------------------


def test_tampered_form_token_gets_the_rendered_403_page_and_objects_nobody(live: LiveTracker, browser: Browser) -> None:
    url, (reader, other) = page_of(live, "individual")
    browser.open(url)
    browser.driver.execute_script(  # one character of the MAC changed, as a forger would
        "const f = document.querySelector('input[name=csrf]');"
        "f.value = f.value.slice(0, -1) + (f.value.endsWith('A') ? 'B' : 'A');"
    )
    browser.driver.find_element(By.TAG_NAME, "button").click()

    wait_for_title(browser, "This form has expired")
    assert browser.driver.current_url == url + "/object"
    assert "Open the page again from the link in the message" in visible_text(browser)
    assert browser.console_errors() == []  # nothing went wrong: the refusal page rendered
    assert any("status of 403" in str(entry["message"]) for entry in browser.console)  # as a 403
    assert run_axe(browser.driver) == []
    screenshot(browser.driver, "recipient-page-403")
    assert register(live, "individual", [reader, other])[reader] is not None  # still tracked

    browser.driver.find_element(By.LINK_TEXT, "Back to the page").click()  # a fresh form from there works
    wait_for_title(browser, PAGE_TITLE)
    assert browser.driver.current_url == url
    browser.driver.find_element(By.TAG_NAME, "button").click()
    wait_for_title(browser, "Done")
    assert register(live, "individual", [reader, other])[reader] is None


def test_the_pages_content_security_policy_holds_in_the_browser(live: LiveTracker, browser: Browser) -> None:
    url, _ = page_of(live, "anonymous")
    browser.open(url)
    assert browser.csp_reports() == []
    # the page's one inline style is the one the policy's hash allows: the browser applied it
    max_width = browser.driver.execute_script("return getComputedStyle(document.body).maxWidth")
    assert max_width == "640px"  # 40rem
    # and the policy is in force: anything else on the page is refused, and the refusal is reported
    browser.driver.execute_script(f"document.body.insertAdjacentHTML('beforeend', '<img alt=\"\" src=\"{GIF}\">')")
    WebDriverWait(browser.driver, 5, poll_frequency=0.05).until(lambda _: browser.csp_reports())
    (report,) = browser.csp_reports()
    assert "Loading the image" in report and "default-src 'none'" in report and "blocked" in report


# -- the harness itself: a broken page must fail, never pass quietly ------------------------------------------


def test_harness_reports_a_broken_pages_console_error_and_accessibility_violations(browser: Browser) -> None:
    broken = (
        "data:text/html,<!DOCTYPE html><html><head><title>broken</title></head><body>"
        f"<img src='{GIF}'><input type='text'><script>console.error('boom')</script></body></html>"
    )
    browser.open(broken)
    assert any("boom" in message for message in browser.console_errors())
    found = {violation["id"]: violation["impact"] for violation in run_axe(browser.driver)}
    assert found.get("image-alt") == "critical" and found.get("label") == "critical"
    assert found.get("html-has-lang") == "serious"


def test_harness_tells_requests_to_another_origin_apart() -> None:
    origin = "http://127.0.0.1:8080"
    urls = [f"{origin}/p/x", "http://127.0.0.1:8081/a.css", "https://127.0.0.1:8080/b", GIF, "http://localhost:8080/"]
    assert other_origin_requests(urls, origin) == urls[1:3] + urls[4:]


def test_harness_refuses_an_axe_core_that_is_not_the_pinned_one(tmp_path: Path) -> None:
    vendored = Path(__file__).resolve().parents[1] / "vendor" / "axe-core"
    assert axe_source(vendored).startswith("/*! axe v")
    copy = tmp_path / "axe-core"
    shutil.copytree(vendored, copy)
    script = copy / "axe.min.js"
    script.write_text(script.read_text("utf-8").replace("axe v", "axe V", 1), "utf-8")
    with pytest.raises(RuntimeError, match="not the pinned axe-core"):
        axe_source(copy)
