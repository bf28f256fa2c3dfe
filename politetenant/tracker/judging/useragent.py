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
    "LIBRARY_AGENT_PATTERNS",
    "LIBRARY_FAMILIES",
    "MAIL_PROXIES",
    "MAIL_PROXY_BROWSERS",
    "MAX_USER_AGENT_LENGTH",
    "UNKNOWN_DEVICE",
    "Device",
    "UserAgentClassifier",
    "is_library",
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

#: ua-parser user-agent families of HTTP client libraries, SDKs, command-line fetchers, headless or
#: automation browsers and synthetic monitors: software, not a person's mail client. This is the one
#: list of them. It was read off uap-core's own test corpus (``tests/test_ua.yaml``: the family
#: ua-parser must report for each real string), keeping every family whose strings are a library or
#: a tool rather than a browser or an app a person reads in; ``tests/unit/test_uap_corpus.py`` holds
#: it to that corpus in both directions. Crawlers are not here: ua-parser gives them the device
#: family "Spider", which the judge reads as a scanner. Left out on purpose: "CFNetwork" (Apple's
#: URL loading system, which native mail apps use too), "Electron" and "Qt Web Engine" (desktop
#: apps, mail clients among them are built on them), "ExchangeWebServices" (Apple Mail speaking to
#: Exchange names itself so).
LIBRARY_FAMILIES: Final = frozenset(
    {
        # HTTP client libraries and SDKs
        "AHC", "Apache-CXF", "Apache-HttpClient", "Boto", "Boto3", "Go-CF-client", "Go-http-client",
        "go-cli", "go-resty", "Google-HTTP-Java-Client", "GuzzleHttp", "HTTPClient", "Java",
        "Java-EurekaClient", "Jersey", "JetS3t", "Node-oauth", "PyAMF", "PycURL", "Python Requests",
        "Python aiohttp", "Python-urllib", "ReactorNetty", "Squrl Java", "Vert.x-WebClient", "WinHTTP",
        "akka-http", "axios", "got", "http.rb", "libcurl-agent", "libwww-perl", "lua-resty-http",
        "okhttp", "reqwest", "scalaj-http", "unirest-java", "ureq", "Microsoft-CryptoAPI",
        "aws-sdk-cpp", "aws-sdk-dotnet-45", "aws-sdk-go", "aws-sdk-go-v2", "aws-sdk-java",
        "aws-sdk-nodejs", "aws-sdk-ruby2", "ibm-cos-sdk-java", "minio-go", "rusoto",
        "sap-leonardo-iot-sdk-nodejs", "sap xsuaa", "SAP CPI", "SAP NetWeaver Application Server",
        "CloudCockpitBackend", "CloudFoundry",
        # command-line fetchers, downloaders, package and update agents
        "curl", "Wget", "wget2", "aria2", "Axel", "fetchurl", "HTTPie", "lftp", "OpenBSD ftp",
        "PostmanRuntime", "aws-cli", "rclone", "s3fs", "S3Gof3r", "urlgrabber", "HTTrack",
        "Debian APT-HTTP", "Ubuntu APT-HTTP", "Windows-Update-Agent",
        # headless and automation browsers
        "HeadlessChrome", "PhantomJS", "Camoufox",
        # synthetic monitoring
        "Catchpoint", "Ruxit Synthetic", "GomezAgent", "Site24x7", "Monitis", "YottaaMonitor",
    }
)  # fmt: skip

#: Lowercase regex fragments (searched in the lowercased user agent) of libraries and automation
#: that ua-parser does not name, or names only as part of another family.
LIBRARY_AGENT_PATTERNS: Final[tuple[str, ...]] = (
    r"python-httpx",
    r"python-requests",
    r"python-urllib",
    r"aiohttp/",
    r"node-fetch",
    r"\bundici\b",
    r"\baxios/",
    r"\bokhttp/",
    r"\bpycurl/",
    r"\blibcurl/",
    r"\bcurl/",
    r"\bwget/",
    r"go-http-client",
    r"\bjava/\d",
    r"apache-httpclient",
    r"\baws-sdk-",
    r"headlesschrome",
    r"phantomjs",
    r"puppeteer",
    r"playwright",
    r"selenium",
    r"libwww-perl",
)
_LIBRARY_AGENTS: Final = re.compile("|".join(LIBRARY_AGENT_PATTERNS))


def is_library(lowered_user_agent: str, browser: str) -> bool:
    """Whether a user agent (lowercased) with ua-parser family ``browser`` is an HTTP library or
    automation rather than a person's client."""
    return browser in LIBRARY_FAMILIES or _LIBRARY_AGENTS.search(lowered_user_agent) is not None


_BOT_FAMILY_RE: Final = re.compile(r"bot\b|bot[-_]|crawl|spider|scanner", re.IGNORECASE)

#: Image proxies of webmail providers fetch the beacon when the recipient opens the message: a
#: person's open, but nothing is known about the person's device or place. ua-parser family ->
#: the name reports give it. Gmail: "(via ggpht.com GoogleImageProxy)"; Yahoo: "YahooMailProxy;
#: https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html". Outlook.com documents no user agent
#: for its image proxy, so none is guessed here.
MAIL_PROXIES: Final = {
    "GmailImageProxy": "Gmail Image Proxy",
    "YahooMailProxy": "Yahoo Mail Proxy",
}
MAIL_PROXY_BROWSERS: Final = frozenset(MAIL_PROXIES.values())
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
    if family == "Spider" or browser in LIBRARY_FAMILIES or _BOT_FAMILY_RE.search(browser):
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

    proxy = MAIL_PROXIES.get(browser)
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
