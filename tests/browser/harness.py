"""Real-browser testing: Debian's headless Chromium driven through chromedriver, a live tracker on a
loopback port, axe-core for accessibility, and screenshots a person can look at.

Reusable by any page the tracker serves (the recipient page now, the /ui/ dashboard next):
- ``start_browser`` gives a ``Browser`` that keeps every console message and every request the pages
  made, so a test can say "no console error" and "nothing fetched from another origin";
- ``run_axe`` injects the vendored axe-core (its sha512 checked first) and returns the serious and
  critical violations;
- ``screenshot`` writes ``test-artifacts/screenshots/<name>.png`` (the whole page, not just the window);
- ``live_tracker`` runs a tracker on 127.0.0.1 in a thread of its own: selenium blocks the calling
  thread, so the server cannot share the test's event loop.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import tempfile
import threading
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait

from politetenant.tracker.http.auth import Role, create_api_token
from tests.conftest import Tracker, start_tracker

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
AXE_DIR: Final = REPO_ROOT / "tests" / "vendor" / "axe-core"
SCREENSHOT_DIR: Final = REPO_ROOT / "test-artifacts" / "screenshots"
CHROMIUM: Final = Path("/usr/bin/chromium")
CHROMEDRIVER: Final = Path("/usr/bin/chromedriver")
WIDE: Final = (1280, 900)
NARROW: Final = (360, 740)
FLAGS: Final = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
)  # fmt: skip
BLOCKING_IMPACTS: Final = frozenset({"serious", "critical"})

T = TypeVar("T")


# -- decisions (pure) ---------------------------------------------------------------------------------------


def browser_missing(chromium: Path = CHROMIUM, chromedriver: Path = CHROMEDRIVER) -> str | None:
    """Why no browser test can run here (None: both binaries are installed)."""
    absent = [str(path) for path in (chromium, chromedriver) if not path.is_file()]
    if not absent:
        return None
    return (f"{' and '.join(absent)} not found: `make test` installs Debian's chromium and chromium-driver"
            " (apt-get install chromium chromium-driver)")  # fmt: skip


def chrome_options(user_data_dir: Path, width: int, height: int) -> Options:
    """Headless Chromium as root, nothing fetched in the background, console and network logged."""
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--user-data-dir={user_data_dir}", f"--window-size={width},{height}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return options


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def other_origin_requests(urls: Iterable[str], origin: str) -> list[str]:
    """The requests that left ``origin`` (data: and about: URLs never leave the page)."""
    return [url for url in urls if not url.startswith(("data:", "about:")) and origin_of(url) != origin]


def console_errors(entries: Iterable[Mapping[str, Any]], document_url: str | None = None) -> list[str]:
    """The console messages Chromium logged as errors (level SEVERE), CSP refusals among them.

    Chromium also logs a document's own status >= 400 as "Failed to load resource": for a refusal page
    (a 403, a 404) that status is the answer intended, so the line for ``document_url`` itself is not
    counted; the same line for anything the page loads is."""
    own_status = None if document_url is None else f"{document_url} - Failed to load resource: the server responded"
    return [
        str(entry["message"])
        for entry in entries
        if entry.get("level") == "SEVERE"
        and not (own_status and entry.get("source") == "network" and str(entry["message"]).startswith(own_status))
    ]


def csp_reports(entries: Iterable[Mapping[str, Any]]) -> list[str]:
    """The console messages in which Chromium reports a Content Security Policy refusal, at any level."""
    return [str(e["message"]) for e in entries if "Content Security Policy" in str(e.get("message", ""))]


def blocking_violations(violations: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """axe's violations a release must not ship with: impact serious or critical."""
    return [dict(v) for v in violations if v.get("impact") in BLOCKING_IMPACTS]


def sri_digest(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode("ascii")


def pinned_digest(readme: str) -> str:
    """The ``axe.min.js sha512`` the vendored README pins (written by scripts/fetch-axe-core.sh)."""
    found = re.search(r"^- axe\.min\.js sha512: (sha512-[A-Za-z0-9+/=]+)$", readme, re.MULTILINE)
    if found is None:
        raise RuntimeError("tests/vendor/axe-core/README.md pins no `axe.min.js sha512`")
    return found.group(1)


# -- axe and screenshots ----------------------------------------------------------------------------------


def axe_source(axe_dir: Path = AXE_DIR) -> str:
    """The vendored axe.min.js, refused loudly when it is not the file the README pins."""
    script = (axe_dir / "axe.min.js").read_bytes()
    expected, actual = pinned_digest((axe_dir / "README.md").read_text("utf-8")), sri_digest(script)
    if actual != expected:
        raise RuntimeError(f"{axe_dir / 'axe.min.js'} is not the pinned axe-core: expected {expected}, got {actual};"
                           " refresh it with scripts/fetch-axe-core.sh")  # fmt: skip
    return script.decode("utf-8")


_RUN_AXE: Final = """
const done = arguments[arguments.length - 1];
axe.run(document, {resultTypes: ["violations"]}).then(
  (results) => done(results.violations.map((v) => ({id: v.id, impact: v.impact, help: v.help,
    nodes: v.nodes.map((n) => n.target.join(" "))}))),
  (error) => done({error: String(error)}));
"""


def navigate_by(driver: webdriver.Chrome, act: Callable[[], None], timeout: float = 10) -> None:
    """Do ``act`` (a click, an Enter) and wait until the document it leads to has loaded.

    The old document is marked and the wait is for one without the mark. No element of the old page is
    queried meanwhile: while a page is being replaced, chromedriver may answer such a query with an
    inspector error ("Node with given id does not belong to the document") rather than the stale-element
    error selenium's staleness_of expects, which made that wait fail now and then.
    """
    driver.execute_script("window.__politeOldDocument = true")
    act()

    def arrived(d: webdriver.Chrome) -> bool:
        try:
            return d.execute_script("return document.readyState === 'complete' && !window.__politeOldDocument") is True
        except WebDriverException:  # between the two documents
            return False

    WebDriverWait(driver, timeout, poll_frequency=0.05).until(arrived)


def run_axe(driver: webdriver.Chrome) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the page as it is now (id, impact, help, nodes)."""
    driver.execute_script(axe_source())  # through the DevTools protocol: the page's CSP does not apply
    result = driver.execute_async_script(_RUN_AXE)
    if isinstance(result, dict):
        raise RuntimeError(f"axe-core failed: {result['error']}")
    return blocking_violations(result)


def screenshot(driver: webdriver.Chrome, name: str) -> Path:
    """The whole page (beyond the window) as ``test-artifacts/screenshots/<name>.png``, laid out at the
    width the reader has (the window less its scrollbar).

    For the shot the viewport is stretched to the page's height with scrollbars hidden, then given back
    (Chromium's own ``captureBeyondViewport`` leaves the page without its scrollbar afterwards, which
    changes the layout the test goes on to check)."""
    cdp = driver.execute_cdp_cmd
    width = driver.execute_script("return document.documentElement.clientWidth")
    cdp("Emulation.setScrollbarsHidden", {"hidden": True})
    try:
        height = driver.execute_script("return innerHeight")
        for _ in range(3):  # until the page is no taller than the viewport
            cdp("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1,
                                                       "mobile": False})  # fmt: skip
            needed = driver.execute_script("return document.documentElement.scrollHeight")
            if needed <= height:
                break
            height = needed
        shot = cdp("Page.captureScreenshot", {"format": "png"})
    finally:
        cdp("Emulation.setScrollbarsHidden", {"hidden": False})
        cdp("Emulation.clearDeviceMetricsOverride", {})
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOT_DIR / f"{name}.png"
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


_OVERFLOWING: Final = """
const visible = document.documentElement.clientWidth;
const name = (e) => e.tagName.toLowerCase() + (e.id ? "#" + e.id : "");
const cut = [...document.body.querySelectorAll("*")]
  .filter((e) => e.getBoundingClientRect().right > visible + 0.5)
  .map((e) => name(e) + " (right edge " + e.getBoundingClientRect().right.toFixed(1) + " px)");
if (document.documentElement.scrollWidth > visible) cut.push("the page scrolls sideways: " +
  document.documentElement.scrollWidth + " px wide for " + visible + " px visible");
return cut;
"""


def overflowing_elements(driver: webdriver.Chrome) -> list[str]:
    """What sticks out past the visible width (the window less its scrollbar): cut off for the reader,
    or a page that scrolls sideways. Empty when the page fits, as it must on a 360 px phone."""
    return [str(item) for item in driver.execute_script(_OVERFLOWING)]


# -- the browser --------------------------------------------------------------------------------------------


@dataclass
class Browser:
    """One Chromium session, with what its pages logged kept across ``get_log`` calls (which drain)."""

    driver: webdriver.Chrome
    console: list[dict[str, Any]] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def collect(self) -> None:
        """Move the browser's pending console and network log entries into ``console`` and ``requests``."""
        get_log: Callable[[str], list[dict[str, Any]]] = self.driver.get_log  # untyped in selenium
        self.console.extend(get_log("browser"))
        for entry in get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message["method"] == "Network.requestWillBeSent":
                self.requests.append(message["params"]["request"]["url"])

    def open(self, url: str) -> None:
        """Load ``url`` with the logs emptied first: what follows is this page's alone."""
        self.collect()
        self.console.clear()
        self.requests.clear()
        self.driver.get(url)
        self.collect()

    def console_errors(self) -> list[str]:
        """Errors in the console since the last ``open`` (the current document's own status excepted)."""
        self.collect()
        return console_errors(self.console, self.driver.current_url)

    def csp_reports(self) -> list[str]:
        self.collect()
        return csp_reports(self.console)

    def other_origin_requests(self, origin: str) -> list[str]:
        self.collect()
        return other_origin_requests(self.requests, origin)

    @contextmanager
    def window(self, width: int, height: int) -> Iterator[None]:
        """Use a window of this size for a while (a phone's width, say), then the previous one again."""
        before = self.driver.get_window_size()
        self.driver.set_window_size(width, height)
        try:
            yield
        finally:
            self.driver.set_window_size(before["width"], before["height"])


@contextmanager
def start_browser(width: int = WIDE[0], height: int = WIDE[1]) -> Iterator[Browser]:
    """Headless Chromium with a fresh profile, quit and removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="polite-chromium-") as profile:
        service = Service(executable_path=str(CHROMEDRIVER))
        driver = webdriver.Chrome(options=chrome_options(Path(profile), width, height), service=service)
        driver.set_script_timeout(30)
        driver.set_page_load_timeout(30)
        try:
            browser = Browser(driver)
            browser.open("about:blank")  # and forget what the start page loaded
            yield browser
        finally:
            driver.quit()


# -- a live tracker ----------------------------------------------------------------------------------------


@dataclass
class LiveTracker:
    """A tracker serving on a real loopback port from its own thread and event loop."""

    loop: asyncio.AbstractEventLoop
    base_url: str
    tracker: Tracker  # its test client (for API calls, from this loop: see ``run``), state and role tokens

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        """Run ``coro`` on the tracker's loop (an API call, a flush) and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def url(self, path: str) -> str:
        return self.base_url + path


@contextmanager
def live_tracker(tmp_path: Path, geoip_path: str, **overrides: Any) -> Iterator[LiveTracker]:
    """A tracker on SQLite (PostgreSQL is the integration tests' business) with one API token per role."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="live-tracker", daemon=True)
    thread.start()

    async def started() -> Tracker:
        client, state = await start_tracker(tmp_path, f"sqlite:///{tmp_path}/tracker.db", geoip_path, **overrides)
        tracker = Tracker(client=client, state=state)
        for role in Role:
            tracker.tokens[role] = await create_api_token(state.store, role)
        return tracker

    try:
        tracker = asyncio.run_coroutine_threadsafe(started(), loop).result(60)
        live = LiveTracker(loop, str(tracker.client.make_url("")).rstrip("/"), tracker)
        try:
            yield live
        finally:
            live.run(tracker.client.close())
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
