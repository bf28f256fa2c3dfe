"""User agent -> (OS, device type, browser) families, on real user agent strings."""

from __future__ import annotations

from typing import Any

import pytest

from politetenant.tracker.judging.useragent import (
    MAX_USER_AGENT_LENGTH,
    UNKNOWN_DEVICE,
    Device,
    UserAgentClassifier,
    is_library,
)

IPHONE_MAIL = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148"
)
IPAD_MAIL = "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148"
IPHONE_SAFARI = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Mobile/15E148 Safari/604.1"
)
ANDROID_GMAIL = (
    "Mozilla/5.0 (Linux; Android 13; Pixel 7 Build/TQ3A.230805.001; wv) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Version/4.0 Chrome/120.0.6099.144 Mobile Safari/537.36"
)
ANDROID_TABLET_GMAIL = (
    "Mozilla/5.0 (Linux; Android 12; SM-X200 Build/SP1A.210812.016; wv) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Version/4.0 Chrome/120.0.6099.144 Safari/537.36"
)
ANDROID_CUBOT = (
    "Mozilla/5.0 (Linux; Android 11; CUBOT X30) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Mobile Safari/537.36"
)
KINDLE = (
    "Mozilla/5.0 (Linux; Android 11; KFTRWI) AppleWebKit/537.36 (KHTML, like Gecko) Silk/120.2.1 "
    "like Chrome/120.0.6099.230 Safari/537.36"
)
OUTLOOK_2016 = (
    "Mozilla/4.0 (compatible; MSIE 7.0; Windows NT 10.0; WOW64; Trident/7.0; .NET4.0C; .NET4.0E; "
    ".NET CLR 2.0.50727; .NET CLR 3.0.30729; .NET CLR 3.5.30729; Microsoft Outlook 16.0.4266; "
    "ms-office; MSOffice 16)"
)
OUTLOOK_365 = "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17328; Pro)"
OUTLOOK_IOS = "Outlook-iOS/709.2189947.prod.iphone (3.24.1)"
APPLE_MAIL_MACOS = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)"
THUNDERBIRD_WINDOWS = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:115.0) Gecko/20100101 Thunderbird/115.6.0"
THUNDERBIRD_LINUX = "Mozilla/5.0 (X11; Linux x86_64; rv:115.0) Gecko/20100101 Thunderbird/115.6.0"
CHROME_WINDOWS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
)
CHROME_OS = (
    "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
)
WINDOWS_PHONE = (
    "Mozilla/5.0 (Windows Phone 10.0; Android 6.0.1; Microsoft; Lumia 950) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/52.0.2743.116 Mobile Safari/537.36 Edge/15.15063"
)
BARRACUDA = "Mozilla/5.0 (compatible; Barracuda Sentinel (EE))"
CURL = "curl/8.4.0"
PYTHON_REQUESTS = "python-requests/2.31.0"
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
HEADLESS_CHROME = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "HeadlessChrome/120.0.0.0 Safari/537.36"
)
GOOGLE_IMAGE_PROXY = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
YAHOO_MAIL_PROXY = "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html"


@pytest.fixture(scope="module")
def classifier() -> UserAgentClassifier:
    return UserAgentClassifier()


@pytest.mark.parametrize(
    ("user_agent", "expected"),
    [
        pytest.param(IPHONE_MAIL, Device("iOS", "mobile", "Apple Mail"), id="iphone-mail"),
        pytest.param(IPAD_MAIL, Device("iOS", "tablet", "Apple Mail"), id="ipad-mail"),
        pytest.param(IPHONE_SAFARI, Device("iOS", "mobile", "Mobile Safari"), id="iphone-safari"),
        pytest.param(ANDROID_GMAIL, Device("Android", "mobile", "Chrome Mobile WebView"), id="android-gmail"),
        pytest.param(ANDROID_TABLET_GMAIL, Device("Android", "tablet", "Chrome Mobile WebView"), id="android-tablet"),
        pytest.param(ANDROID_CUBOT, Device("Android", "mobile", "Chrome Mobile"), id="cubot-is-a-phone"),
        pytest.param(KINDLE, Device("Android", "tablet", "Amazon Silk"), id="kindle"),
        pytest.param(OUTLOOK_2016, Device("Windows", "desktop", "Outlook"), id="outlook-2016"),
        pytest.param(OUTLOOK_365, Device("Windows", "desktop", "Outlook"), id="outlook-365"),
        pytest.param(OUTLOOK_IOS, Device("iOS", "mobile", "Outlook"), id="outlook-ios"),
        pytest.param(APPLE_MAIL_MACOS, Device("Mac OS X", "desktop", "Apple Mail"), id="apple-mail-macos"),
        pytest.param(THUNDERBIRD_WINDOWS, Device("Windows", "desktop", "Thunderbird"), id="thunderbird-win"),
        pytest.param(THUNDERBIRD_LINUX, Device("Linux", "desktop", "Thunderbird"), id="thunderbird-linux"),
        pytest.param(CHROME_WINDOWS, Device("Windows", "desktop", "Chrome"), id="chrome-windows"),
        pytest.param(CHROME_OS, Device("Chrome OS", "desktop", "Chrome"), id="chromeos"),
        pytest.param(WINDOWS_PHONE, Device("Windows Phone", "mobile", "Edge Mobile"), id="windows-phone"),
        pytest.param(BARRACUDA, Device("Other", "unknown", "Other"), id="barracuda"),
        pytest.param(CURL, Device("Other", "bot", "curl"), id="curl"),
        pytest.param(PYTHON_REQUESTS, Device("Other", "bot", "Python Requests"), id="python-requests"),
        pytest.param(GOOGLEBOT, Device("Other", "bot", "Googlebot"), id="googlebot"),
        pytest.param(HEADLESS_CHROME, Device("Mac OS X", "bot", "HeadlessChrome"), id="headless-chrome"),
        pytest.param(GOOGLE_IMAGE_PROXY, Device("Other", "unknown", "Gmail Image Proxy"), id="gmail-proxy"),
        pytest.param(YAHOO_MAIL_PROXY, Device("Other", "unknown", "Yahoo Mail Proxy"), id="yahoo-proxy"),
    ],
)
def test_real_user_agents(classifier: UserAgentClassifier, user_agent: str, expected: Device) -> None:
    assert classifier.classify(user_agent) == expected


@pytest.mark.parametrize("user_agent", [None, "", "   ", "\t\n"])
def test_missing_user_agent_is_unknown(classifier: UserAgentClassifier, user_agent: str | None) -> None:
    assert classifier.classify(user_agent) == Device("Other", "unknown", "Other")
    assert classifier.classify(user_agent) is UNKNOWN_DEVICE


def test_device_types_are_from_the_fixed_set(classifier: UserAgentClassifier) -> None:
    allowed = {"desktop", "mobile", "tablet", "bot", "unknown"}
    for user_agent in (IPHONE_MAIL, CHROME_WINDOWS, "Mozilla/5.0", "x", "Mozilla/5.0 (Nintendo Switch)"):
        assert classifier.classify(user_agent).device_type in allowed


def test_device_is_frozen_and_slotted() -> None:
    device = Device("iOS", "mobile", "Apple Mail")
    with pytest.raises(AttributeError):
        device.os = "Android"  # type: ignore[misc]
    assert not hasattr(device, "__dict__")


def test_cache_is_bounded_and_reused() -> None:
    classifier = UserAgentClassifier(cache_size=2)
    first = classifier.classify(CHROME_WINDOWS)
    assert classifier.classify(CHROME_WINDOWS) is first  # served from the cache
    classifier.classify(OUTLOOK_2016)
    classifier.classify(THUNDERBIRD_WINDOWS)
    classifier.classify(IPHONE_MAIL)
    assert classifier.cache_size == 2
    classifier.cache_clear()
    assert classifier.cache_size == 0


def test_cache_can_be_disabled() -> None:
    classifier = UserAgentClassifier(cache_size=0)
    assert classifier.classify(OUTLOOK_2016) == Device("Windows", "desktop", "Outlook")
    assert classifier.cache_size == 0


def test_negative_cache_size_is_refused() -> None:
    with pytest.raises(ValueError, match="cache_size"):
        UserAgentClassifier(cache_size=-1)


def test_surrounding_whitespace_is_ignored(classifier: UserAgentClassifier) -> None:
    assert classifier.classify(f"  {OUTLOOK_2016} ") == Device("Windows", "desktop", "Outlook")


def test_huge_user_agent_is_cut_and_cached_bounded() -> None:
    classifier = UserAgentClassifier(cache_size=10)
    huge = CHROME_WINDOWS + " " + "A" * 100_000
    assert classifier.classify(huge) == Device("Windows", "desktop", "Chrome")
    assert len(huge) > MAX_USER_AGENT_LENGTH


@pytest.mark.parametrize(
    "garbage",
    [b"Mozilla/5.0", 42, "\x00\x01\x02", "\udcff\udcfe", "(((((((((((", "Mozilla/5.0 (" + ";" * 5000 + ")"],
)
def test_never_raises(classifier: UserAgentClassifier, garbage: Any) -> None:
    device = classifier.classify(garbage)
    assert isinstance(device, Device)


@pytest.mark.parametrize(
    ("user_agent", "browser"),
    [
        ("axios/1.6.2", "axios"),
        ("aws-sdk-java/1.12.500 Linux/5.15 OpenJDK_64-Bit_Server_VM/17", "aws-sdk-java"),
        ("okhttp/4.12.0", "okhttp"),
        ("PycURL/7.45.2 libcurl/8.0.1", "PycURL"),
    ],
)
def test_library_families_are_bots_not_people(classifier: UserAgentClassifier, user_agent: str, browser: str) -> None:
    device = classifier.classify(user_agent)
    assert (device.device_type, device.browser) == ("bot", browser)
    assert is_library(user_agent.lower(), device.browser)


@pytest.mark.parametrize(
    "user_agent", ["python-httpx/0.27.0", "node-fetch", "Mozilla/5.0 (X11) Chrome/120.0 Safari/537.36 Playwright/1.40"]
)
def test_libraries_ua_parser_does_not_name_are_found_by_pattern(
    classifier: UserAgentClassifier, user_agent: str
) -> None:
    assert is_library(user_agent.lower(), classifier.classify(user_agent).browser)


@pytest.mark.parametrize("user_agent", [IPHONE_MAIL, OUTLOOK_2016, OUTLOOK_IOS, THUNDERBIRD_LINUX, CHROME_OS, KINDLE])
def test_mail_clients_are_not_libraries(classifier: UserAgentClassifier, user_agent: str) -> None:
    assert not is_library(user_agent.lower(), classifier.classify(user_agent).browser)
