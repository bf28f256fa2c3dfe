"""OS / device type / browser families from a user agent string, via ua-parser.

The user agent is judged on arrival and only the three families are kept. The raw string lives
only as a key of the bounded in-memory LRU cache here (never logged, never stored); a string
longer than ``MAX_USER_AGENT_LENGTH`` is cut before parsing so that an attacker sending huge
headers can neither slow the parser down nor blow up the cache.
"""

from __future__ import annotations

import functools
import re
import threading
from dataclasses import dataclass
from typing import Any, Final

import ua_parser

__all__ = [
    "MAX_USER_AGENT_LENGTH",
    "UNKNOWN_DEVICE",
    "Device",
    "UserAgentClassifier",
]

#: Longer user agents are cut to this many characters before parsing and caching. Real ones
#: (Outlook with a list of .NET CLR versions included) stay well under 400.
MAX_USER_AGENT_LENGTH: Final = 1024

DEVICE_TYPES: Final = frozenset({"desktop", "mobile", "tablet", "bot", "unknown"})


@dataclass(frozen=True, slots=True)
class Device:
    """What kind of software and machine fetched the beacon (families only, no versions)."""

    os: str
    device_type: str
    browser: str


UNKNOWN_DEVICE: Final = Device("Other", "unknown", "Other")

# ua-parser user-agent families of automation clients (the device family is not "Spider" for
# all of them, e.g. curl or Go-http-client).
_BOT_FAMILIES: Final = frozenset(
    {
        "curl",
        "Wget",
        "Python Requests",
        "Python-urllib",
        "Python aiohttp",
        "Go-http-client",
        "HeadlessChrome",
        "PhantomJS",
        "Apache-HttpClient",
        "Java",
    }
)
_BOT_FAMILY_RE: Final = re.compile(r"bot\b|bot[-_]|crawler|spider", re.IGNORECASE)

# Image proxies of webmail providers fetch the beacon when the recipient opens the message:
# a real open, but nothing is known about the recipient's device.
_MAIL_PROXIES: Final = {
    "GmailImageProxy": "Gmail Image Proxy",
    "YahooMailProxy": "Yahoo Mail Proxy",
}
_BROWSER_RENAMES: Final = {
    # iOS Mail renders in a WKWebView whose UA ends in "Mobile/15E148" with no "Safari" token.
    "Mobile Safari UI/WKWebView": "Apple Mail",
    "Outlook-iOS": "Outlook",
    "Outlook-Android": "Outlook",
}
_MOBILE_OS: Final = frozenset({"Windows Phone", "Windows Mobile", "BlackBerry OS", "KaiOS", "Symbian OS", "Firefox OS"})
_TABLET_OS: Final = frozenset({"BlackBerry Tablet OS"})
_DESKTOP_OS: Final = frozenset(
    {
        "Windows",
        "Mac OS X",
        "Mac OS",
        "Linux",
        "Chrome OS",
        "Ubuntu",
        "Kubuntu",
        "Fedora",
        "Debian",
        "Red Hat",
        "SUSE",
        "openSUSE",
        "Mint",
        "Linux Mint",
        "Gentoo",
        "Arch Linux",
        "Slackware",
        "Mandriva",
        "CentOS",
        "FreeBSD",
        "OpenBSD",
        "NetBSD",
        "Solaris",
    }
)
_TABLET_BRANDS: Final = frozenset({"Generic_Android_Tablet", "Amazon"})
_TABLET_MODEL_RE: Final = re.compile(r"\biPad|Kindle|Tablet|\bTab\b|\bPad\b", re.IGNORECASE)

_resolver_lock = threading.Lock()
_resolver: Any = None


def _shared_resolver() -> Any:
    """One uncached ua-parser resolver per process (the fastest available: Rust, re2 or Python).

    Built lazily because compiling the matchers takes a moment; it is immutable afterwards and
    shared by every classifier (the caching is ours, keyed by the string, holding only families).
    """
    global _resolver
    if _resolver is None:
        with _resolver_lock:
            if _resolver is None:
                fast = ua_parser.RegexResolver is not None or ua_parser.Re2Resolver is not None
                matchers = ua_parser.load_lazy_builtins() if fast else ua_parser.load_builtins()
                _resolver = ua_parser.BestAvailableResolver(matchers)
    return _resolver


def _device_type(ua: str, browser: str, os: str, family: str, brand: str, model: str) -> str:
    if family == "Spider" or browser in _BOT_FAMILIES or _BOT_FAMILY_RE.search(browser):
        return "bot"
    if family == "iPad" or model.startswith("iPad"):
        return "tablet"
    if family in ("iPhone", "iPod") or os == "iOS":
        return "mobile"
    if os in _MOBILE_OS:
        return "mobile"
    if os in _TABLET_OS or brand in _TABLET_BRANDS or _TABLET_MODEL_RE.search(family):
        return "tablet"
    if os == "Android":
        # Google's guidance: phones say "Mobile", tablets do not.
        return "mobile" if "Mobile" in ua else "tablet"
    if os in _DESKTOP_OS or os.startswith("Windows"):
        return "desktop"
    return "unknown"


def _classify(ua: str) -> Device:
    try:
        parsed = _shared_resolver()(ua, ua_parser.Domain.ALL)
    except Exception:  # a parser bug must not take the beacon down
        return UNKNOWN_DEVICE
    browser = parsed.user_agent.family if parsed.user_agent is not None else "Other"
    os = parsed.os.family if parsed.os is not None else "Other"
    device = parsed.device
    family = device.family if device is not None else "Other"
    brand = (device.brand or "") if device is not None else ""
    model = (device.model or "") if device is not None else ""

    proxy = _MAIL_PROXIES.get(browser)
    if proxy is not None:
        # The OS in these strings is made up by the proxy (Gmail claims Windows XP).
        return Device("Other", "unknown", proxy)

    device_type = _device_type(ua, browser, os, family, brand, model)
    if device_type != "bot":
        browser = _BROWSER_RENAMES.get(browser, browser)
    return Device(os, device_type, browser)


class UserAgentClassifier:
    """Classifies user agents, remembering the last ``cache_size`` distinct strings.

    Thread-safe. ``cache_size=0`` disables the cache.
    """

    __slots__ = ("_cached",)

    def __init__(self, cache_size: int = 10_000) -> None:
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size}")
        self._cached = functools.lru_cache(maxsize=cache_size)(_classify)

    def classify(self, user_agent: str | None) -> Device:
        """Return the OS, device type and browser families of ``user_agent``; never raises."""
        if not user_agent or not isinstance(user_agent, str):
            return UNKNOWN_DEVICE
        ua = user_agent[:MAX_USER_AGENT_LENGTH].strip()
        if not ua:
            return UNKNOWN_DEVICE
        return self._cached(ua)

    def cache_clear(self) -> None:
        """Forget every cached user agent string."""
        self._cached.cache_clear()

    @property
    def cache_size(self) -> int:
        """How many distinct user agent strings are cached right now."""
        return self._cached.cache_info().currsize
