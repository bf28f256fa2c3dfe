"""Judging a request on arrival: place (a person's only), device families, reason; no IP or UA kept."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from politetenant.tracker.cli.geoip_sample import write_mmdb
from politetenant.tracker.judging.client_ip import client_ip, parse_cidrs
from politetenant.tracker.judging.geoip import UNKNOWN_PLACE, GeoLocator, GeoPlace
from politetenant.tracker.judging.judge import (
    DEFAULT_SCANNER_AGENTS,
    GeoLookup,
    Judge,
    Verdict,
    compile_scanner_agents,
    fetch_purpose,
    is_prefetch,
)
from politetenant.tracker.judging.networks import DEFAULT_GATEWAY_NETWORKS, gateway_networks
from politetenant.tracker.judging.useragent import UserAgentClassifier
from politetenant.tracker.judging.verdicts import Reason, VerdictClass, verdict_class

ANDROID_CUBOT = (
    "Mozilla/5.0 (Linux; Android 11; CUBOT X30) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Mobile Safari/537.36"
)
ANDROID_GMAIL = (
    "Mozilla/5.0 (Linux; Android 13; Pixel 7 Build/TQ3A.230805.001; wv) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Version/4.0 Chrome/120.0.6099.144 Mobile Safari/537.36"
)
APPLE_MAIL_MACOS = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)"
BARRACUDA = "Mozilla/5.0 (compatible; Barracuda Sentinel (EE))"
CHROME_WINDOWS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
)
CURL = "curl/8.4.0"
GOOGLE_IMAGE_PROXY = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
HEADLESS_CHROME = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "HeadlessChrome/120.0.0.0 Safari/537.36"
)
IPHONE_MAIL = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148"
)
OUTLOOK_2016 = (
    "Mozilla/4.0 (compatible; MSIE 7.0; Windows NT 10.0; WOW64; Trident/7.0; .NET4.0C; .NET4.0E; "
    ".NET CLR 2.0.50727; .NET CLR 3.0.30729; .NET CLR 3.5.30729; Microsoft Outlook 16.0.4266; "
    "ms-office; MSOffice 16)"
)
OUTLOOK_365 = "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17328; Pro)"
PYTHON_REQUESTS = "python-requests/2.31.0"
YAHOO_MAIL_PROXY = "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html"
BARE_MOZILLA = "Mozilla/5.0"
THUNDERBIRD_WINDOWS = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:115.0) Gecko/20100101 Thunderbird/115.6.0"


def _city(city: str, country: str, region: str) -> dict[str, Any]:
    return {
        "city": {"names": {"en": city}},
        "country": {"iso_code": country},
        "subdivisions": [{"names": {"en": region}}],
    }


NETWORKS = {
    "192.0.2.0/24": _city("Dublin", "IE", "Leinster"),
    "198.51.100.0/24": _city("Frankfurt am Main", "DE", "Hesse"),
    "203.0.113.0/24": _city("Ashburn", "US", "Virginia"),  # where the "scanner" lives
    "2001:db8:1::/48": _city("Dublin", "IE", "Leinster"),
}
DUBLIN_IP = "192.0.2.10"
FRANKFURT_IP = "198.51.100.20"
SCANNER_IP = "203.0.113.30"
APPLE_IP = "17.58.100.1"  # Apple's 17.0.0.0/8
SCANNER_NETWORKS = parse_cidrs("203.0.113.0/24, 2001:db8:dead::/48")
TRUSTED_PROXIES = parse_cidrs("10.0.0.0/8")


@pytest.fixture(scope="module")
def geo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GeoLocator]:
    path: Path = tmp_path_factory.mktemp("geo") / "city.mmdb"
    write_mmdb(path, NETWORKS)
    locator = GeoLocator(str(path))
    yield locator
    locator.close()


@pytest.fixture
def judge(geo: GeoLocator) -> Judge:
    return Judge(geo, UserAgentClassifier(), scanner_networks=SCANNER_NETWORKS)


def test_human_outlook_in_dublin(judge: Judge) -> None:
    assert judge.judge(DUBLIN_IP, OUTLOOK_2016) == Verdict(
        country="IE",
        region="Leinster",
        city="Dublin",
        os="Windows",
        device_type="desktop",
        browser="Outlook",
        bot=Reason.PERSON,
    )


@pytest.mark.parametrize(
    ("user_agent", "os", "device_type", "browser"),
    [
        (IPHONE_MAIL, "iOS", "mobile", "Apple Mail"),
        (ANDROID_GMAIL, "Android", "mobile", "Chrome Mobile WebView"),
        (ANDROID_CUBOT, "Android", "mobile", "Chrome Mobile"),
        (OUTLOOK_365, "Windows", "desktop", "Outlook"),
        (APPLE_MAIL_MACOS, "Mac OS X", "desktop", "Apple Mail"),
        (THUNDERBIRD_WINDOWS, "Windows", "desktop", "Thunderbird"),
        (CHROME_WINDOWS, "Windows", "desktop", "Chrome"),
    ],
)
def test_real_clients_are_people_with_a_place(
    judge: Judge, user_agent: str, os: str, device_type: str, browser: str
) -> None:
    verdict = judge.judge(FRANKFURT_IP, user_agent)
    assert (verdict.os, verdict.device_type, verdict.browser) == (os, device_type, browser)
    assert (verdict.country, verdict.region, verdict.city) == ("DE", "Hesse", "Frankfurt am Main")
    assert verdict.bot is Reason.PERSON


@pytest.mark.parametrize(
    ("user_agent", "browser"),
    [(GOOGLE_IMAGE_PROXY, "Gmail Image Proxy"), (YAHOO_MAIL_PROXY, "Yahoo Mail Proxy")],
)
def test_webmail_image_proxies_count_as_a_person_without_device_or_place(
    judge: Judge, user_agent: str, browser: str
) -> None:
    verdict = judge.judge(FRANKFURT_IP, user_agent)
    assert verdict == Verdict(None, None, None, "Other", "unknown", browser, Reason.PROXIED)
    assert verdict_class(verdict.bot) is VerdictClass.PROXIED


def test_bare_mozilla_from_apple_is_privacy_protection_and_elsewhere_a_machine(judge: Judge) -> None:
    verdict = judge.judge(APPLE_IP, BARE_MOZILLA)
    assert verdict == Verdict(
        None, None, None, "Other", "unknown", "Apple Mail Privacy Protection", Reason.PRIVACY_PROXY
    )
    assert judge.judge(DUBLIN_IP, BARE_MOZILLA) == Verdict(
        None, None, None, "Other", "unknown", "Other", Reason.LIBRARY
    )
    # Apple's network alone proves nothing: a real client there is a person (Apple's own staff).
    assert judge.judge(APPLE_IP, IPHONE_MAIL).bot is Reason.PERSON
    assert judge.judge(APPLE_IP, f" {BARE_MOZILLA} ").bot is Reason.PRIVACY_PROXY


def test_apple_privacy_networks_are_configurable(geo: GeoLocator) -> None:
    judge = Judge(geo, UserAgentClassifier(), apple_privacy_networks=parse_cidrs("192.0.2.0/24"))
    assert judge.judge(DUBLIN_IP, BARE_MOZILLA).bot is Reason.PRIVACY_PROXY
    assert judge.judge(APPLE_IP, BARE_MOZILLA).bot is Reason.LIBRARY


@pytest.mark.parametrize(
    ("user_agent", "device_type", "browser"),
    [
        (CURL, "bot", "curl"),
        (PYTHON_REQUESTS, "bot", "Python Requests"),
        ("python-httpx/0.27.0", "unknown", "Other"),
        ("PycURL/7.45.2 libcurl/8.0.1 OpenSSL/3.0.11", "bot", "PycURL"),
        ("axios/1.6.2", "bot", "axios"),
        ("aws-sdk-go/1.44.12 (go1.21; linux; amd64)", "bot", "aws-sdk-go"),
        ("okhttp/4.12.0", "bot", "okhttp"),
        ("node-fetch/1.0 (+https://github.com/bitinn/node-fetch)", "unknown", "Other"),
        ("Java/17.0.2", "bot", "Java"),
        ("Apache-HttpClient/4.5.13 (Java/17.0.2)", "bot", "Apache-HttpClient"),
        ("Go-http-client/1.1", "bot", "Go-http-client"),
        (HEADLESS_CHROME, "bot", "HeadlessChrome"),
        (
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Puppeteer",
            "desktop",
            "Chrome",
        ),
    ],
)
def test_libraries_and_automation_are_machines_without_a_place(
    judge: Judge, user_agent: str, device_type: str, browser: str
) -> None:
    verdict = judge.judge(DUBLIN_IP, user_agent)
    assert verdict.bot is Reason.LIBRARY
    assert (verdict.device_type, verdict.browser) == (device_type, browser)
    assert (verdict.country, verdict.region, verdict.city) == (None, None, None)
    assert verdict_class(verdict.bot) is VerdictClass.MACHINE


@pytest.mark.parametrize(
    ("user_agent", "device_type", "browser"),
    [
        (BARRACUDA, "unknown", "Other"),
        (GOOGLEBOT, "bot", "Googlebot"),
        ("Mozilla/5.0 (compatible; Mimecast-ImageProxy)", "unknown", "Other"),
        ("Microsoft Office Protocol Discovery", "unknown", "Other"),
        ("facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)", "bot", "FacebookBot"),
        ("Mozilla/5.0 [en] (X11, U; OpenVAS-VT 8.0.9)", "bot", "OpenVAS Scanner"),
    ],
)
def test_scanner_agents(judge: Judge, user_agent: str, device_type: str, browser: str) -> None:
    verdict = judge.judge(DUBLIN_IP, user_agent)
    assert verdict.bot is Reason.SCANNER_AGENT
    assert (verdict.device_type, verdict.browser) == (device_type, browser)
    assert verdict.city is None  # a machine's city is nobody's


def test_device_bot_without_scanner_pattern_is_a_scanner_agent(geo: GeoLocator) -> None:
    # ua-parser's "Spider" device family alone (no default pattern matches this string).
    user_agent = "Mozilla/5.0 (compatible; YandexImages/3.0; +http://yandex.com/bots)"
    assert compile_scanner_agents().search(user_agent.lower()) is None
    verdict = Judge(geo, UserAgentClassifier()).judge(DUBLIN_IP, user_agent)
    assert verdict.device_type == "bot"
    assert verdict.bot is Reason.SCANNER_AGENT


def test_scanner_network_is_flagged_even_with_a_browser_user_agent(judge: Judge) -> None:
    verdict = judge.judge(SCANNER_IP, CHROME_WINDOWS)
    assert verdict.bot is Reason.SCANNER_NETWORK
    assert (verdict.os, verdict.device_type, verdict.browser) == ("Windows", "desktop", "Chrome")
    assert (verdict.country, verdict.city) == (None, None)  # the scanner's data centre is nobody's city
    assert judge.judge("2001:db8:dead::7", IPHONE_MAIL).bot is Reason.SCANNER_NETWORK
    assert judge.judge("::ffff:203.0.113.30", IPHONE_MAIL).bot is Reason.SCANNER_NETWORK


@pytest.mark.parametrize(
    "address",
    ["40.92.1.20", "40.107.22.5", "52.100.3.4", "104.47.10.1", "2a01:111:f400:7e00::1", "205.139.110.9",
     "91.220.42.7", "148.163.150.1", "67.231.152.10", "209.222.82.4"],
)  # fmt: skip
def test_mail_security_gateways_are_machines_by_default(judge: Judge, address: str) -> None:
    verdict = judge.judge(address, CHROME_WINDOWS)
    assert verdict.bot is Reason.GATEWAY_NETWORK
    assert (verdict.country, verdict.city) == (None, None)


def test_gateway_networks_are_configurable(geo: GeoLocator) -> None:
    own = Judge(geo, UserAgentClassifier(), gateway_networks=gateway_networks(["192.0.2.0/24"]))
    assert own.judge(DUBLIN_IP, CHROME_WINDOWS).bot is Reason.GATEWAY_NETWORK
    assert own.judge("40.92.1.20", CHROME_WINDOWS).bot is Reason.PERSON  # the defaults are replaced
    none = Judge(geo, UserAgentClassifier(), gateway_networks=gateway_networks([]))
    assert none.judge("40.92.1.20", CHROME_WINDOWS).bot is Reason.PERSON
    assert gateway_networks(None) == parse_cidrs(DEFAULT_GATEWAY_NETWORKS)


def test_default_gateway_networks_are_valid_public_networks() -> None:
    networks = parse_cidrs(DEFAULT_GATEWAY_NETWORKS)
    assert len(networks) == len(set(networks)) > 20
    assert all(network.is_global for network in networks)


def test_head_and_prefetch_are_machines(judge: Judge) -> None:
    assert judge.judge(DUBLIN_IP, CHROME_WINDOWS, method="HEAD").bot is Reason.HEAD
    for purpose in ("prefetch", "Prefetch", "prefetch;prerender", "prefetch;anonymous-client-ip", "x, prefetch"):
        assert judge.judge(DUBLIN_IP, CHROME_WINDOWS, purpose=purpose).bot is Reason.PREFETCH, purpose
    for other in (None, "", "prerender", "noprefetch", "prefetcher"):
        assert judge.judge(DUBLIN_IP, CHROME_WINDOWS, purpose=other).bot is Reason.PERSON, other
    verdict = judge.judge(DUBLIN_IP, CHROME_WINDOWS, purpose="prefetch")
    assert (verdict.browser, verdict.city) == ("Chrome", None)


def test_fetch_purpose_joins_both_headers_and_every_line() -> None:
    assert fetch_purpose([], []) is None
    assert fetch_purpose(["prefetch;prerender"], ["x"]) == "prefetch;prerender, x"
    assert is_prefetch(fetch_purpose([], ["prefetch"]))
    assert not is_prefetch(fetch_purpose(["prerender"], []))


def test_precedence(judge: Judge) -> None:
    """HONEYPOT > HEAD > PREFETCH > SCANNER_NETWORK > PRIVACY_PROXY > GATEWAY_NETWORK > agent > PERSON."""
    assert judge.judge(SCANNER_IP, CURL, honeypot=True, method="HEAD").bot is Reason.HONEYPOT
    assert judge.judge(DUBLIN_IP, CHROME_WINDOWS, honeypot=True).bot is Reason.HONEYPOT
    assert judge.judge(DUBLIN_IP, None, honeypot=True).bot is Reason.HONEYPOT
    assert judge.judge(SCANNER_IP, CHROME_WINDOWS, method="HEAD", purpose="prefetch").bot is Reason.HEAD
    assert judge.judge(SCANNER_IP, CHROME_WINDOWS, purpose="prefetch").bot is Reason.PREFETCH
    assert judge.judge(SCANNER_IP, CURL).bot is Reason.SCANNER_NETWORK
    assert judge.judge(SCANNER_IP, None).bot is Reason.SCANNER_NETWORK
    assert judge.judge(SCANNER_IP, BARE_MOZILLA).bot is Reason.SCANNER_NETWORK
    apple_gateway = Judge(
        FakeGeo(), UserAgentClassifier(), apple_privacy_networks=parse_cidrs("17.0.0.0/8"),
        gateway_networks=parse_cidrs("17.1.0.0/16"),
    )  # fmt: skip
    assert apple_gateway.judge("17.1.2.3", BARE_MOZILLA).bot is Reason.PRIVACY_PROXY
    assert apple_gateway.judge("17.1.2.3", CHROME_WINDOWS).bot is Reason.GATEWAY_NETWORK
    assert judge.judge("40.92.1.20", GOOGLE_IMAGE_PROXY).bot is Reason.GATEWAY_NETWORK
    assert judge.judge("40.92.1.20", None).bot is Reason.GATEWAY_NETWORK
    assert judge.judge(DUBLIN_IP, GOOGLE_IMAGE_PROXY).bot is Reason.PROXIED
    assert judge.judge(DUBLIN_IP, CURL).bot is Reason.LIBRARY
    assert judge.judge(DUBLIN_IP, BARRACUDA).bot is Reason.SCANNER_AGENT
    assert judge.judge(DUBLIN_IP, "").bot is Reason.NO_AGENT
    assert judge.judge(DUBLIN_IP, GOOGLEBOT).bot is Reason.SCANNER_AGENT
    assert judge.judge(DUBLIN_IP, OUTLOOK_2016).bot is Reason.PERSON


@pytest.mark.parametrize("user_agent", [None, "", "  "])
def test_no_agent(judge: Judge, user_agent: str | None) -> None:
    assert judge.judge(DUBLIN_IP, user_agent) == Verdict(None, None, None, "Other", "unknown", "Other", Reason.NO_AGENT)


def test_unknown_place(judge: Judge) -> None:
    verdict = judge.judge("8.8.8.8", CHROME_WINDOWS)
    assert (verdict.country, verdict.region, verdict.city) == (None, None, None)
    assert verdict.bot is Reason.PERSON
    assert judge.judge(None, CHROME_WINDOWS).city is None


def test_real_outlook_is_not_a_scanner() -> None:
    pattern = compile_scanner_agents()
    for user_agent in (OUTLOOK_2016, OUTLOOK_365, IPHONE_MAIL, ANDROID_CUBOT, GOOGLE_IMAGE_PROXY):
        assert pattern.search(user_agent.lower()) is None, user_agent


def test_default_patterns_are_lowercase() -> None:
    # They are searched in the lowercased user agent without IGNORECASE.
    for fragment in DEFAULT_SCANNER_AGENTS:
        assert fragment == fragment.lower()
        re.compile(fragment)


def test_extra_scanner_agents(geo: GeoLocator) -> None:
    judge = Judge(geo, UserAgentClassifier(), extra_scanner_agents=["AcmeMailGuard/\\d+", "LinkProbe"])
    assert judge.judge(DUBLIN_IP, "Mozilla/5.0 AcmeMailGuard/3").bot is Reason.SCANNER_AGENT
    assert judge.judge(DUBLIN_IP, "Mozilla/5.0 (linkprobe)").bot is Reason.SCANNER_AGENT
    assert judge.judge(DUBLIN_IP, CHROME_WINDOWS).bot is Reason.PERSON


@pytest.mark.parametrize("bad", ["(unclosed", "", ".*"])
def test_invalid_extra_scanner_agent_is_refused(geo: GeoLocator, bad: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(bad))):
        Judge(geo, UserAgentClassifier(), extra_scanner_agents=[bad])


def test_spoofed_forwarded_for_from_untrusted_peer_is_ignored(judge: Judge) -> None:
    # The client sits in Frankfurt and claims Dublin in X-Forwarded-For.
    ip = client_ip(FRANKFURT_IP, DUBLIN_IP, TRUSTED_PROXIES)
    assert judge.judge(ip, CHROME_WINDOWS).city == "Frankfurt am Main"
    # A scanner cannot hide its network behind a forged header either.
    ip = client_ip(SCANNER_IP, DUBLIN_IP, TRUSTED_PROXIES)
    assert judge.judge(ip, CHROME_WINDOWS).bot is Reason.SCANNER_NETWORK


def test_trusted_proxy_chain_gives_the_client_place(judge: Judge) -> None:
    ip = client_ip("10.0.0.3", f"{FRANKFURT_IP}, {DUBLIN_IP}:5678, 10.0.0.2", TRUSTED_PROXIES)
    assert ip == DUBLIN_IP
    assert judge.judge(ip, IPHONE_MAIL).city == "Dublin"


@pytest.mark.parametrize(
    ("ip", "user_agent"),
    [
        (DUBLIN_IP, OUTLOOK_2016),
        (DUBLIN_IP, IPHONE_MAIL),
        ("2001:db8:1::abcd", THUNDERBIRD_WINDOWS),
        (SCANNER_IP, BARRACUDA),
        (FRANKFURT_IP, CURL),
        (DUBLIN_IP, GOOGLE_IMAGE_PROXY),
    ],
)
def test_verdict_never_contains_ip_or_user_agent(judge: Judge, ip: str, user_agent: str) -> None:
    verdict = judge.judge(ip, user_agent)
    text = repr(verdict)
    assert ip not in text
    assert user_agent not in text
    # Not even a piece: no address fragment, no version string from the UA.
    assert "192.0.2" not in text and "2001:db8" not in text and "203.0.113" not in text
    for token in re.findall(r"[\w.-]+/[\w.]+", user_agent):
        assert token not in text, token
    assert all(isinstance(value, str | int) or value is None for value in _fields(verdict))


def _fields(verdict: Verdict) -> list[Any]:
    return [getattr(verdict, name) for name in Verdict.__slots__]


def test_verdict_is_frozen(judge: Judge) -> None:
    verdict = judge.judge(DUBLIN_IP, OUTLOOK_2016)
    with pytest.raises(AttributeError):
        verdict.city = "Cork"  # type: ignore[misc]


class FakeGeo:
    """A duck-typed geolocator (the GeoLookup protocol)."""

    def __init__(self) -> None:
        self.calls: list[str | None] = []

    def lookup(self, ip: str | None) -> GeoPlace:
        self.calls.append(ip)
        return GeoPlace("IE", "Leinster", "Dublin") if ip == DUBLIN_IP else UNKNOWN_PLACE


class BrokenGeo:
    def lookup(self, ip: str | None) -> GeoPlace:
        raise RuntimeError("database gone")


def test_duck_typed_geo() -> None:
    fake = FakeGeo()
    geo: GeoLookup = fake
    verdict = Judge(geo, UserAgentClassifier()).judge(DUBLIN_IP, OUTLOOK_2016)
    assert (verdict.country, verdict.region, verdict.city) == ("IE", "Leinster", "Dublin")
    assert fake.calls == [DUBLIN_IP]


def test_broken_geo_gives_unknown_place() -> None:
    verdict = Judge(BrokenGeo(), UserAgentClassifier()).judge(DUBLIN_IP, OUTLOOK_2016)
    assert (verdict.country, verdict.region, verdict.city) == (None, None, None)
    assert verdict.browser == "Outlook"


def test_user_agent_verdicts_are_cached(geo: GeoLocator) -> None:
    agents = UserAgentClassifier()
    judge = Judge(geo, agents, cache_size=4)
    first = judge.judge(DUBLIN_IP, CHROME_WINDOWS)
    assert judge.judge(FRANKFURT_IP, CHROME_WINDOWS).browser == first.browser
    judge.cache_clear()
    assert agents.cache_size == 0


@pytest.mark.parametrize(
    ("ip", "user_agent"),
    [
        ("not-an-ip", CHROME_WINDOWS),
        ("", CHROME_WINDOWS),
        ("[2001:db8::1]:443", CHROME_WINDOWS),
        ("999.999.999.999", None),
        (b"192.0.2.1", b"curl/8"),
        (12345, 67890),
        (DUBLIN_IP, "\x00" * 10),
        (DUBLIN_IP, "\udcff broken surrogate"),
        (DUBLIN_IP, "Mozilla/5.0 (" + "A" * 200_000 + ")"),
        ("fe80::1%eth0", CURL),
    ],
)
def test_never_raises(judge: Judge, ip: Any, user_agent: Any) -> None:
    verdict = judge.judge(ip, user_agent)
    assert isinstance(verdict, Verdict)
    assert verdict.device_type in {"desktop", "mobile", "tablet", "bot", "unknown"}


def test_networks_wider_than_a_slash_8_are_matched_whole(geo: GeoLocator) -> None:
    """Membership is filtered by /8 (IPv4) and /16 (IPv6) first: a wider network must cover every
    piece of itself, and an IPv6 network too wide to list its pieces turns the filter off."""
    judge = Judge(geo, UserAgentClassifier(), scanner_networks=parse_cidrs("64.0.0.0/2, 2000::/3"))
    for address in ("64.0.0.1", "100.70.1.1", "127.255.255.254", "2001:db8::1", "3fff::1"):
        assert judge.judge(address, CHROME_WINDOWS).bot is Reason.SCANNER_NETWORK, address
    for address in ("63.255.255.255", "128.0.0.1", DUBLIN_IP, "4000::1", "fe80::1"):
        assert judge.judge(address, CHROME_WINDOWS).bot is not Reason.SCANNER_NETWORK, address
