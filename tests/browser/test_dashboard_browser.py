"""The /ui/ dashboard in a real Chromium against a live tracker: signing in with each role (a sender
refused), every page clean (no console error, nothing from another origin, no serious axe violation,
light), the message page's figures the API report's, a department below the threshold never counted,
the CSV the API's, sessions that end and cannot be forged, forms that need their CSRF token, and a
sign-in form a keyboard alone can use. Screenshots go to test-artifacts/screenshots/dashboard-*.png
and page weights to test-artifacts/dashboard-page-weights.json."""

from __future__ import annotations

import base64
import json
import os
import re
import urllib.request
from collections.abc import Iterator
from typing import Any, Final
from urllib.parse import urljoin

import pytest
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from politetenant.tracker.http.auth import Role
from tests.browser.dashboard_data import (
    HIDDEN_GROUP,
    HIDDEN_GROUP_SIZE,
    MAIN_SUBJECT,
    SETTINGS,
    History,
    K,
    register_history,
)
from tests.browser.harness import NARROW, REPO_ROOT, Browser, LiveTracker, live_tracker, navigate_by, run_axe
from tests.browser.harness import screenshot as save_screenshot

COOKIE: Final = "polite_session"
PRODUCT: Final = "PoliteTenant"
MAX_PAGE_BYTES: Final = 200_000  # the issue: under ~200 KB per page with its assets
WEIGHTS: Final = REPO_ROOT / "test-artifacts" / "dashboard-page-weights.json"
SENDER_REFUSED: Final = "Sender tokens cannot sign in: use an analyst or privacy token."
CSRF_REFUSED: Final = "This form did not come from your current session"


# -- fixtures ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, geoip_path: str) -> Iterator[LiveTracker]:
    """A live tracker that keeps the department as a segment attribute, with a threshold of 5."""
    with live_tracker(tmp_path_factory.mktemp("live-dashboard"), geoip_path, **SETTINGS) as tracker:
        yield tracker


@pytest.fixture(scope="module")
def history(live: LiveTracker) -> History:
    return register_history(live)


# -- helpers ----------------------------------------------------------------------------------------------


def title_of(name: str) -> str:
    return f"{name} · {PRODUCT}"


def visible_text(browser: Browser) -> str:
    return " ".join(browser.driver.find_element(By.TAG_NAME, "body").text.split())


def path_of(browser: Browser, live: LiveTracker) -> str:
    return browser.driver.current_url.removeprefix(live.base_url)


def focused(browser: Browser) -> WebElement:
    return browser.driver.switch_to.active_element


def wait_for_title(browser: Browser, title: str) -> None:
    WebDriverWait(
        browser.driver,
        10,
        poll_frequency=0.05,
        ignored_exceptions=(WebDriverException,),  # mid-navigation
    ).until(lambda driver: driver.title == title)


def answered_403(browser: Browser) -> bool:
    """Chromium logs the document's own 403 (the refusal page intended) as a network message."""
    browser.collect()
    return any("status of 403" in str(entry["message"]) for entry in browser.console)


def submit_token(browser: Browser, token: str) -> None:
    """Type ``token`` into the sign-in form and send it, as a person does; wait for the next page."""
    browser.driver.find_element(By.ID, "token").send_keys(token)
    button = browser.driver.find_element(By.CSS_SELECTOR, "form.sign-in button[type=submit]")
    navigate_by(browser.driver, button.click)
    browser.collect()


def signed_out(browser: Browser, live: LiveTracker) -> None:
    """The sign-in page with no session cookie left in the browser."""
    browser.open(live.url("/ui/sign-in"))
    browser.driver.delete_all_cookies()
    browser.open(live.url("/ui/sign-in"))


def sign_in(browser: Browser, live: LiveTracker, role: Role) -> str:
    """Sign in through the form with the role's API token; the session cookie's value."""
    signed_out(browser, live)
    submit_token(browser, live.tracker.tokens[role])
    cookie = browser.driver.get_cookie(COOKIE)
    assert cookie is not None, visible_text(browser)
    return str(cookie["value"])


def set_session_cookie(browser: Browser, value: str) -> None:
    """Put a session cookie in the browser by hand, as a thief replaying or a forger inventing one would."""
    browser.driver.add_cookie({"name": COOKIE, "value": value, "path": "/ui/", "httpOnly": True, "sameSite": "Strict"})


def http_get(url: str, cookie: str | None = None, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """A plain GET outside the browser (with the browser's session cookie, when given)."""
    sent = dict(headers or {})
    if cookie is not None:
        sent["Cookie"] = f"{COOKIE}={cookie}"
    request = urllib.request.Request(url, headers=sent)
    with urllib.request.urlopen(request, timeout=30) as response:
        return int(response.status), bytes(response.read())


def api_get(live: LiveTracker, path: str, role: Role = Role.ANALYST) -> bytes:
    status, body = http_get(live.url(path), headers=live.tracker.auth(role))
    assert status == 200, body
    return body


def page_weight(url: str, cookie: str) -> dict[str, int]:
    """Bytes of a page's HTML and of the stylesheets it links (the only assets a dashboard page has)."""
    _, html = http_get(url, cookie)
    sheets = re.findall(r'<link rel="stylesheet" href="([^"]+)"', html.decode("utf-8"))
    css = sum(len(http_get(urljoin(url, href.replace("&amp;", "&")))[1]) for href in sheets)
    return {"html": len(html), "css": css, "total": len(html) + css}


def record_weight(name: str, weight: dict[str, int]) -> None:
    weights = json.loads(WEIGHTS.read_text("utf-8")) if WEIGHTS.is_file() else {}
    weights[name] = weight
    WEIGHTS.parent.mkdir(parents=True, exist_ok=True)
    WEIGHTS.write_text(json.dumps(weights, indent=2, sort_keys=True) + "\n", "utf-8")


def lookup(report: Any, path: str) -> Any:
    """The API JSON's value at a dotted path (list items by index); None when absent, as the page reads it."""
    for key in path.split("."):
        if isinstance(report, list) and key.isdigit() and int(key) < len(report):
            report = report[int(key)]
        elif isinstance(report, dict) and key in report:
            report = report[key]
        else:
            return None
    return report


_FIGURES: Final = """
return [...document.querySelectorAll("[data-figure]")].map((e) =>
  [e.dataset.figure, e.dataset.value, e.textContent.replace(/\\s+/g, " ").trim()]);
"""


def dom_figures(browser: Browser) -> list[tuple[str, Any, str]]:
    """Every figure of the page as the browser holds it: (its path, its JSON value, the text a person reads)."""
    return [(str(path), json.loads(value), str(text)) for path, value, text in browser.driver.execute_script(_FIGURES)]


def shown_as(value: Any, path: str) -> set[str]:
    """How the page may write ``value`` (a rate as a percentage, a time in seconds, a count with commas)."""
    if value is None:
        return {f"fewer than {K}", "not defined"}
    if path.split(".")[-2:-1] == ["rates"] or path.startswith("rates."):
        return {f"{value * 100:.1f}%"}
    if path.endswith("_ms"):
        return {f"{value / 1000:.1f} s"}
    return {f"{value:,}"}


def assert_figures_are_the_apis(browser: Browser, report: dict[str, Any]) -> dict[str, tuple[Any, str]]:
    figures = dom_figures(browser)
    assert figures, "the page carries no data-figure"
    for path, value, text in figures:
        assert value == lookup(report, path), path
        assert text in shown_as(value, path), (path, value, text)
    return {path: (value, text) for path, value, text in figures}


_CUT_OFF: Final = """
const visible = document.documentElement.clientWidth;
const scroller = (e) => {
  for (let p = e.parentElement; p && p !== document.body; p = p.parentElement) {
    if (["auto", "scroll"].includes(getComputedStyle(p).overflowX)) return p;
  }
  return null;
};
const name = (e) => e.tagName.toLowerCase() + (e.id ? "#" + e.id : "") + (e.className ? "." + e.className : "");
const cut = [...document.body.querySelectorAll("*")]
  .filter((e) => e.getBoundingClientRect().right > visible + 0.5)
  .filter((e) => { const s = scroller(e); return s === null || s.getBoundingClientRect().right > visible + 0.5; })
  .map((e) => name(e) + " (right edge " + e.getBoundingClientRect().right.toFixed(1) + " px)");
if (document.documentElement.scrollWidth > visible) cut.push("the page scrolls sideways: " +
  document.documentElement.scrollWidth + " px wide for " + visible + " px visible");
return cut;
"""


def cut_off_elements(browser: Browser) -> list[str]:
    """What sticks out past the visible width other than inside a wrapper that scrolls sideways (a wide
    table in its ``table-wrap``, scrolled by the reader): the harness's ``overflowing_elements`` for a
    page with tables. Empty when the page fits a 360 px phone."""
    return [str(item) for item in browser.driver.execute_script(_CUT_OFF)]


# -- signing in ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("role", "landing", "title"), [
    (Role.ANALYST, "/ui/messages", "Messages"),
    (Role.PRIVACY, "/ui/privacy", "Privacy: subject rights"),
])  # fmt: skip
def test_each_role_signs_in_through_the_form_and_lands_on_its_page(
    live: LiveTracker, browser: Browser, history: History, role: Role, landing: str, title: str
) -> None:
    sign_in(browser, live, role)
    assert path_of(browser, live) == landing
    assert browser.driver.title == title_of(title)
    assert f"Signed in as {role.value}" in visible_text(browser)
    assert live.tracker.tokens[role] not in browser.driver.current_url + browser.driver.page_source
    assert browser.console_errors() == []


def test_a_sender_token_is_refused_with_a_clear_message(live: LiveTracker, browser: Browser) -> None:
    signed_out(browser, live)
    save_screenshot(browser.driver, "dashboard-sign-in")
    submit_token(browser, live.tracker.tokens[Role.SENDER])

    assert path_of(browser, live) == "/ui/sign-in"
    assert browser.driver.title == title_of("Sign in")
    assert SENDER_REFUSED in visible_text(browser)
    assert browser.driver.find_element(By.CSS_SELECTOR, "[role=alert]").text == SENDER_REFUSED
    assert browser.driver.get_cookie(COOKIE) is None
    assert answered_403(browser)
    assert browser.driver.find_element(By.ID, "token").get_attribute("value") == ""  # never written back
    assert browser.console_errors() == []
    assert run_axe(browser.driver) == []
    save_screenshot(browser.driver, "dashboard-sign-in-sender-refused")


# -- every page: clean, alone, accessible, light ------------------------------------------------------------

PAGES: Final = {  # screenshot name -> (role, path with {id} for the main message, title or None: the subject)
    "dashboard-messages": (Role.ANALYST, "/ui/messages", "Messages"),
    "dashboard-message": (Role.ANALYST, "/ui/messages/{id}", None),
    "dashboard-message-segment-department": (Role.ANALYST, "/ui/messages/{id}?segment=department", None),
    "dashboard-privacy": (Role.PRIVACY, "/ui/privacy", "Privacy: subject rights"),
    "dashboard-audit": (Role.PRIVACY, "/ui/privacy/audit", "Audit log"),
}


@pytest.mark.parametrize("name", list(PAGES))
def test_every_page_loads_alone_without_errors_and_passes_axe(
    live: LiveTracker, browser: Browser, history: History, name: str
) -> None:
    role, path, title = PAGES[name]
    cookie = sign_in(browser, live, role)
    url = live.url(path.format(id=history.main_id))
    browser.open(url)

    assert browser.driver.title == title_of(title or MAIN_SUBJECT)
    assert len(browser.driver.find_elements(By.TAG_NAME, "h1")) == 1
    assert browser.console_errors() == []
    assert browser.csp_reports() == []
    assert browser.other_origin_requests(live.base_url) == []
    own = [request for request in browser.requests if not request.startswith("data:")]  # data: never leaves
    assert all(request == url or "/ui/static/" in request for request in own), own
    assert run_axe(browser.driver) == []
    save_screenshot(browser.driver, name)
    weight = page_weight(url, cookie)
    record_weight(name, weight)
    assert weight["total"] < MAX_PAGE_BYTES, weight


@pytest.mark.parametrize("name", list(PAGES))
def test_every_page_fits_a_360_px_phone(live: LiveTracker, browser: Browser, history: History, name: str) -> None:
    role, path, _ = PAGES[name]
    sign_in(browser, live, role)
    with browser.window(*NARROW):
        browser.open(live.url(path.format(id=history.main_id)))
        save_screenshot(browser.driver, f"{name}-360px")  # first: a failure leaves the picture
        assert browser.driver.execute_script("return innerWidth") == NARROW[0]
        assert browser.console_errors() == []
        assert cut_off_elements(browser) == []  # wide tables scroll inside their wrapper, the page does not
        assert run_axe(browser.driver) == []  # a wrapper that scrolls must be reachable by keyboard


# -- the figures are the API's ----------------------------------------------------------------------------


def test_the_message_pages_figures_are_the_api_reports(live: LiveTracker, browser: Browser, history: History) -> None:
    report = json.loads(api_get(live, f"/api/v1/messages/{history.main_id}/report"))
    sign_in(browser, live, Role.ANALYST)
    browser.open(live.url(f"/ui/messages/{history.main_id}"))

    figures = assert_figures_are_the_apis(browser, report)
    # the tiles, devices, places, links and the opens that were not a person's own are all on the page
    assert {"recipients", "opens.unique", "rates.open", "clicks.unique", "rates.click", "rates.click_to_open",
            "rates.read", "read_time.median_ms", "breakdowns.device.buckets.0.records",
            "breakdowns.city.buckets.0.records", "links.buckets.0.clicks.unique", "heatmap.cells.0.records",
            "privacy_proxy_opens.unique", "machine.records"} <= set(figures)  # fmt: skip
    # and what the test knows happened: Apple's proxy opens apart from people's, the gateway a machine
    assert figures["recipients"] == (41, "41")
    assert figures["privacy_proxy_opens.unique"] == (history.apple_copies, str(history.apple_copies))
    assert figures["opens.unique"] == (26, "26")  # people only: neither Apple's proxy nor the gateway
    assert figures["machine.opens"] == (history.gateway_copies, str(history.gateway_copies))

    browser.open(live.url(f"/ui/messages/{history.main_id}?segment=department"))
    segmented = json.loads(api_get(live, f"/api/v1/messages/{history.main_id}/report?segment=department"))
    assert "segments.other.tracked" in assert_figures_are_the_apis(browser, segmented)


def test_the_list_shows_a_message_below_the_threshold_without_figures(
    live: LiveTracker, browser: Browser, history: History
) -> None:
    listing = json.loads(api_get(live, "/api/v1/messages"))
    sign_in(browser, live, Role.ANALYST)
    row = browser.driver.find_element(By.XPATH, f"//tr[.//a[@href='/ui/messages/{history.suppressed_id}']]")
    assert f"fewer than {K} recipients" in row.text
    assert "4" not in row.text.split("UTC", 1)[1]  # its 4 recipients appear nowhere after the date
    assert row.find_elements(By.CSS_SELECTOR, "[data-figure]") == []
    shown = [link.get_attribute("href") for link in browser.driver.find_elements(By.CSS_SELECTOR, "td a")]
    assert shown == [live.url(f"/ui/messages/{m['id']}") for m in listing["messages"]]  # newest first, as the API
    recipients = {path: value for path, value, _ in dom_figures(browser) if path.endswith(".recipients")}
    assert recipients == {f"messages.{i}.recipients": m["recipients"] for i, m in enumerate(listing["messages"])
                          if not m["suppressed"]}  # fmt: skip


def test_a_department_below_the_threshold_shows_no_number(
    live: LiveTracker, browser: Browser, history: History
) -> None:
    sign_in(browser, live, Role.ANALYST)
    browser.open(live.url(f"/ui/messages/{history.main_id}?segment=department"))
    table = browser.driver.find_element(By.XPATH, "//table[caption[starts-with(., 'Figures by department')]]")
    rows = {
        row.find_element(By.TAG_NAME, "th").text: [cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
        for row in table.find_elements(By.CSS_SELECTOR, "tbody tr")
    }
    # Legal (3 people) is never named, so its count can sit by no label; it is in "other groups" with others
    dom = browser.driver.execute_script("return document.documentElement.outerHTML")
    assert HIDDEN_GROUP not in dom and HIDDEN_GROUP not in visible_text(browser)
    assert {"Engineering", "Sales"} <= set(rows)
    for label, cells in rows.items():
        assert str(HIDDEN_GROUP_SIZE) not in cells, (label, cells)
    (other,) = [cells for label, cells in rows.items() if label.startswith("Other groups")]
    assert other[0] == "15"  # Legal's 3 with Finance's 12: Legal's own count cannot be worked out
    # a named group's figure below the threshold (3 gateway copies each) reads "fewer than k", no number
    for label in ("Engineering", "Sales"):
        assert rows[label][-1] == f"fewer than {K}"


def test_the_csv_downloaded_through_the_pages_link_is_the_apis(
    live: LiveTracker, browser: Browser, history: History
) -> None:
    cookie = sign_in(browser, live, Role.ANALYST)
    for query in ("", "?segment=department"):
        browser.open(live.url(f"/ui/messages/{history.main_id}{query}"))
        link = browser.driver.find_element(By.LINK_TEXT, "Export as CSV")
        href = str(link.get_attribute("href"))
        assert href == live.url(f"/ui/messages/{history.main_id}/export.csv{query}")
        status, ui_csv = http_get(href, cookie)
        api_csv = api_get(live, f"/api/v1/messages/{history.main_id}/export.csv{query}")
        assert status == 200 and ui_csv == api_csv
        assert HIDDEN_GROUP.encode() not in ui_csv


# -- sessions and forms ------------------------------------------------------------------------------------


def test_sign_out_ends_the_session_and_its_old_cookie_signs_nobody_in(
    live: LiveTracker, browser: Browser, history: History
) -> None:
    old = sign_in(browser, live, Role.ANALYST)
    browser.driver.find_element(By.CSS_SELECTOR, "form.sign-out button").click()
    wait_for_title(browser, title_of("Sign in"))
    assert "You are signed out." in visible_text(browser)
    assert browser.driver.get_cookie(COOKIE) is None
    assert browser.console_errors() == []

    set_session_cookie(browser, old)  # the cookie as it was before signing out, set again by hand
    browser.open(live.url(f"/ui/messages/{history.main_id}"))
    assert path_of(browser, live) == "/ui/sign-in"
    assert browser.driver.title == title_of("Sign in")
    assert browser.driver.find_elements(By.CSS_SELECTOR, "[data-figure]") == []
    assert http_get(live.url("/ui/messages"), old)[1].count(b'id="token"') == 1  # outside the browser too


@pytest.mark.parametrize("forged", [
    base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode(),  # well formed, never issued
    "forged-session",
])  # fmt: skip
def test_a_forged_session_cookie_gets_the_sign_in_page(
    live: LiveTracker, browser: Browser, history: History, forged: str
) -> None:
    signed_out(browser, live)
    set_session_cookie(browser, forged)
    browser.open(live.url(f"/ui/messages/{history.main_id}"))
    assert path_of(browser, live) == "/ui/sign-in"
    assert browser.driver.title == title_of("Sign in")
    assert MAIN_SUBJECT not in browser.driver.page_source
    assert browser.console_errors() == []


def test_a_form_sent_without_its_csrf_token_gets_the_403_page_and_does_nothing(
    live: LiveTracker, browser: Browser, history: History
) -> None:
    sign_in(browser, live, Role.PRIVACY)
    form = browser.driver.find_element(By.CSS_SELECTOR, "form[action='/ui/privacy/subjects/object']")
    browser.driver.execute_script("arguments[0].querySelector('input[name=csrf]').remove()", form)
    assert form.find_elements(By.NAME, "csrf") == []
    form.find_element(By.ID, "object-email").send_keys("someone.else@example.com")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()

    wait_for_title(browser, title_of("Not allowed"))
    assert path_of(browser, live) == "/ui/privacy/subjects/object"
    assert CSRF_REFUSED in visible_text(browser)
    assert answered_403(browser)
    assert browser.console_errors() == []
    assert run_axe(browser.driver) == []
    save_screenshot(browser.driver, "dashboard-403-csrf")
    entries = json.loads(api_get(live, "/api/v1/audit?action=subject.object", Role.PRIVACY))["entries"]
    assert entries == []  # the objection was never made
    browser.open(live.url("/ui/privacy"))  # the session itself is untouched
    assert browser.driver.title == title_of("Privacy: subject rights")


# -- the keyboard ---------------------------------------------------------------------------------------------


def test_the_sign_in_form_works_with_tab_and_enter_alone(live: LiveTracker, browser: Browser, history: History) -> None:
    signed_out(browser, live)
    keys = ActionChains(browser.driver)
    order = []
    for _ in range(3):
        keys.send_keys(Keys.TAB).perform()
        element = focused(browser)
        order.append(element.get_attribute("id") or element.text)
        outline = browser.driver.execute_script("return getComputedStyle(arguments[0]).outlineStyle", element)
        assert outline != "none", order[-1]  # the focus is visible
    assert order == ["Skip to main content", PRODUCT, "token"]
    keys.send_keys(live.tracker.tokens[Role.ANALYST]).perform()
    keys.send_keys(Keys.TAB).perform()
    assert (focused(browser).tag_name, focused(browser).text) == ("button", "Sign in")
    save_screenshot(browser.driver, "dashboard-sign-in-keyboard-focus")
    keys.send_keys(Keys.ENTER).perform()

    wait_for_title(browser, title_of("Messages"))
    assert path_of(browser, live) == "/ui/messages"
    assert browser.console_errors() == []


# -- the check itself: a page cut off at 360 px must fail, a table scrolling in its wrapper must not -------------


def test_cut_off_check_tells_a_scrolling_table_from_a_page_cut_off(browser: Browser) -> None:
    wide = "<table><tr><td>" + "x" * 200 + "</td></tr></table>"
    fits = f"<div style='overflow-x:auto'>{wide}</div>"
    with browser.window(*NARROW):
        browser.open(f"data:text/html,<!DOCTYPE html><html><body>{fits}</body></html>")
        assert cut_off_elements(browser) == []
        browser.open(f"data:text/html,<!DOCTYPE html><html><body>{fits}{wide}</body></html>")
        found = cut_off_elements(browser)
        assert any(item.startswith("table (right edge") for item in found)
        assert any(item.startswith("the page scrolls sideways") for item in found)
