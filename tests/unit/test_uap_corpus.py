"""The judge against uap-core's own corpus: every crawler and library it names is a machine, and no
mainstream browser or mail client is.

uap-core's tests (``test_ua.yaml``, ``test_device.yaml``, ``test_os.yaml``) hold real user agents
with the family ua-parser must report for each. "Crawler" is what the corpus says (device family
"Spider"); "library" is a string whose corpus family is in ``useragent.LIBRARY_FAMILIES`` (the one
list, read off this corpus); "mainstream" is a string whose corpus family is a browser or mail
client people read in (``MAINSTREAM`` below) and that the corpus does not mark a crawler. Run with
``-s`` to see the table of verdict classes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from politetenant.tracker.judging.geoip import GeoLocator
from politetenant.tracker.judging.judge import Judge, Verdict
from politetenant.tracker.judging.useragent import LIBRARY_FAMILIES, UserAgentClassifier
from politetenant.tracker.judging.verdicts import Reason, VerdictClass, verdict_class

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "data" / "uap-core"
pytestmark = pytest.mark.skipif(not CORPUS.is_dir(), reason=f"uap-core corpus not present at {CORPUS}")

ADDRESS = "192.0.2.10"  # no network list holds it: the user agent alone decides

#: ua-parser families (as the corpus spells them) of the browsers and mail clients people read mail in.
MAINSTREAM = frozenset(
    {
        "Chrome", "Chrome Mobile", "Chrome Mobile iOS", "Chrome Mobile WebView", "Chromium", "Firefox",
        "Firefox Mobile", "Firefox iOS", "Firefox Beta", "Safari", "Mobile Safari",
        "Mobile Safari UI/WKWebView", "Edge", "Edge Mobile", "IE", "IE Mobile", "Opera", "Opera Mini",
        "Opera Mobile", "Opera GX", "Opera Touch", "Samsung Internet", "Android", "Amazon Silk",
        "UC Browser", "Yandex Browser", "Brave", "Vivaldi", "Whale", "Outlook", "Outlook-iOS",
        "Outlook-iOS-Android", "MacOutlook", "Windows Live Mail", "Thunderbird", "Apple Mail",
        "Lotus Notes", "Evolution", "kmail2", "Postbox", "The Bat!", "Airmail", "Superhuman",
        "YahooMobileMail", "Sparrow Browser", "Pale Moon", "Waterfox", "Coc Coc", "QQ Browser",
        "QQ Browser Mobile", "MiuiBrowser", "Huawei Browser", "DuckDuckGo Mobile",
    }
)  # fmt: skip


def _load(name: str) -> list[dict[str, Any]]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with (CORPUS / name).open(encoding="utf-8") as handle:
        cases: list[dict[str, Any]] = yaml.load(handle, Loader=loader)["test_cases"]
    return cases


@cache
def corpus() -> dict[str, dict[str, str]]:
    """Every distinct string of the three files -> what the corpus says of it (ua / device / os family)."""
    strings: dict[str, dict[str, str]] = {}
    for name, key in (("test_ua.yaml", "ua"), ("test_device.yaml", "device"), ("test_os.yaml", "os")):
        for case in _load(name):
            strings.setdefault(case["user_agent_string"], {})[key] = case["family"]
    return strings


@cache
def verdicts() -> dict[str, Verdict]:
    judge = Judge(GeoLocator(None), UserAgentClassifier(), cache_size=0)
    return {ua: judge.judge(ADDRESS, ua) for ua in corpus()}


def _crawlers() -> Iterator[str]:
    return (ua for ua, said in corpus().items() if said.get("device") == "Spider")


def _libraries() -> Iterator[str]:
    return (ua for ua, said in corpus().items() if said.get("ua") in LIBRARY_FAMILIES)


def _mainstream() -> Iterator[str]:
    return (
        ua for ua, said in corpus().items() if said.get("ua") in MAINSTREAM and said.get("device") != "Spider"
    )  # fmt: skip


def _table() -> str:
    classes = Counter(verdict_class(v.bot).value for v in verdicts().values())
    reasons = Counter(v.bot.name for v in verdicts().values())
    wrongly = sorted({corpus()[ua]["ua"] for ua in _mainstream() if _is_machine(ua)})
    lines = [f"uap-core corpus: {len(corpus())} distinct user agents"]
    lines += [f"  {name:<14} {classes.get(name, 0):>6}" for name in (c.value for c in VerdictClass)]
    lines += ["  by reason: " + ", ".join(f"{name} {count}" for name, count in reasons.most_common())]
    lines += [f"  mainstream clients judged machine: {wrongly or 'none'}"]
    return "\n".join(lines)


def _is_machine(ua: str) -> bool:
    return verdict_class(verdicts()[ua].bot) is VerdictClass.MACHINE


def test_every_crawler_the_corpus_names_is_judged_a_machine() -> None:
    crawlers = list(_crawlers())
    assert len(crawlers) > 60
    missed = [ua for ua in crawlers if not _is_machine(ua)]
    assert missed == [], f"{len(missed)} crawlers judged otherwise\n{_table()}"


def test_every_library_and_automation_client_in_the_corpus_is_judged_a_library() -> None:
    libraries = list(_libraries())
    assert len(libraries) > 80
    missed = [(corpus()[ua]["ua"], verdicts()[ua].bot.name) for ua in libraries if verdicts()[ua].bot != Reason.LIBRARY]
    assert missed == [], f"{len(missed)} library strings judged otherwise\n{_table()}"


def test_every_library_family_is_one_the_corpus_names() -> None:
    """The list is read off the corpus: a family it does not hold is a typo the other test misses."""
    families = {said["ua"] for said in corpus().values() if "ua" in said}
    assert sorted(LIBRARY_FAMILIES - families) == []


def test_no_mainstream_browser_or_mail_client_is_judged_a_machine() -> None:
    mainstream = list(_mainstream())
    assert len(mainstream) > 150
    assert {corpus()[ua]["ua"] for ua in mainstream} == MAINSTREAM  # each family is exercised
    wrongly = [ua for ua in mainstream if _is_machine(ua)]
    print("\n" + _table())
    assert wrongly == [], f"{len(wrongly)} mainstream clients judged machine\n{_table()}"
