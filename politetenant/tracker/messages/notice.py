"""The tenant's notice to recipients: one short paragraph appended to every registered message.

The text is the tenant's (``notice_texts``, one per language; empty: no notice) and is data, never
markup: it is escaped, stripped of control characters, and becomes the text of one link to the
recipient's page, ``{base}/p/{{polite_token}}``, so it reads in the recipient's language without any
English label of ours. The rewriter inserts the paragraph after it has chosen what to track, so the
link is neither tracked nor rewritten. No image, no script, no class: inline styles that mail clients
keep, and a ``lang`` attribute so screen readers pronounce it in its own language.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from html import escape
from typing import Final

from politetenant.settings import TrackerSettings
from politetenant.tracker.messages.html_rewrite import TOKEN_PLACEHOLDER

PAGE_PATH: Final = "/p/"
PARAGRAPH_STYLE: Final = "margin:16px 0 0 0;font-size:12px;line-height:1.5;color:#555555"
LINK_STYLE: Final = "color:#555555;text-decoration:underline"
_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def choose_language(texts: Mapping[str, str], default_language: str, requested: str | None) -> str | None:
    """The language of the notice a message gets, or None when the tenant has no notice.

    The requested language when the tenant has a text for it (tags compare case-insensitively, and
    ``de-AT`` falls back to ``de``); otherwise the tenant's default language.
    """
    if not texts:
        return None
    if requested:
        by_lower = {language.lower(): language for language in texts}
        wanted = requested.lower()
        if wanted in by_lower:
            return by_lower[wanted]
        primary = wanted.split("-", 1)[0]
        if primary in by_lower:
            return by_lower[primary]
    return default_language if default_language in texts else min(texts)


def page_url(base_url: str) -> str:
    """The recipient's page for the token the sender substitutes, as the beacons name it."""
    return f"{base_url.strip().rstrip('/')}{PAGE_PATH}{TOKEN_PLACEHOLDER}"


def render_notice(text: str, language: str, base_url: str) -> str:
    """The notice paragraph: the escaped text as the link to the recipient's page."""
    plain = " ".join(_CONTROLS.sub(" ", text).split())
    href = escape(page_url(base_url), quote=True)
    return (
        f'<p lang="{escape(language, quote=True)}" style="{PARAGRAPH_STYLE}">'
        f'<a href="{href}" style="{LINK_STYLE}">{escape(plain, quote=True)}</a></p>'
    )


def notice_for(settings: TrackerSettings, requested_language: str | None) -> str:
    """The notice a message registered with ``requested_language`` carries ("" when the tenant has none)."""
    language = choose_language(settings.notice_texts, settings.notice_default_language, requested_language)
    if language is None:
        return ""
    return render_notice(settings.notice_texts[language], language, settings.public_base_url)
