"""The tenant's notice to recipients: which language a message gets, and that the text stays text."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pytest
from pydantic import ValidationError

from politetenant.settings import TrackerSettings
from politetenant.tracker.messages.api_models import MessageIn
from politetenant.tracker.messages.html_rewrite import rewrite_html
from politetenant.tracker.messages.notice import choose_language, notice_for, page_url, render_notice

BASE = "https://t.example.com"
TEXTS = {
    "en": "For statistical analysis we collect anonymised information about interactions with this message.",
    "de": "Zu statistischen Zwecken erfassen wir anonymisierte Angaben zur Nutzung dieser Nachricht.",
    "pt-BR": "Para fins estatísticos coletamos informações anonimizadas sobre esta mensagem.",
}


class _Markup(HTMLParser):
    """Start tags (with attributes) and visible text, as a mail client's parser sees them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def markup(html: str) -> _Markup:
    parser = _Markup()
    parser.feed(html)
    parser.close()
    return parser


def settings(tmp_path: Path, **values: object) -> TrackerSettings:
    return TrackerSettings.model_validate({"public_base_url": BASE, "spool_dir": str(tmp_path), **values})


@pytest.mark.parametrize(
    ("requested", "chosen"),
    [("de", "de"), ("DE", "de"), ("de-AT", "de"), ("pt-br", "pt-BR"), ("fr", "en"), (None, "en"), ("", "en")],
)
def test_message_gets_its_language_when_the_tenant_has_it_else_the_default(requested: str | None, chosen: str) -> None:
    assert choose_language(TEXTS, "en", requested) == chosen


def test_default_language_is_the_tenants_not_english() -> None:
    assert choose_language(TEXTS, "de", "fr") == "de"


def test_no_notice_texts_means_no_notice(tmp_path: Path) -> None:
    assert choose_language({}, "en", "de") is None
    assert notice_for(settings(tmp_path), "de") == ""
    plain = rewrite_html("<body><p>Hi</p></body>", BASE, notice=notice_for(settings(tmp_path), None))
    assert "/p/" not in plain.template


def test_notice_text_is_data_escaped_never_markup() -> None:
    text = 'Stats <script>alert(1)</script> & <img src="https://evil.example/x.gif"> "quoted"\x07 bell'
    html = render_notice(text, "en", BASE)
    parsed = markup(html)
    assert [tag for tag, _ in parsed.tags] == ["p", "a"]  # no script, no image, nothing the text asked for
    shown = "".join(parsed.text)
    assert shown == 'Stats <script>alert(1)</script> & <img src="https://evil.example/x.gif"> "quoted" bell'
    assert "<script" not in html and "<img" not in html


def test_notice_links_the_recipient_page_with_the_beacons_placeholder_in_its_language() -> None:
    parsed = markup(render_notice(TEXTS["de"], "de", BASE + "/"))
    (_, p_attrs), (_, a_attrs) = parsed.tags
    assert p_attrs["lang"] == "de"
    assert a_attrs["href"] == "https://t.example.com/p/{{polite_token}}" == page_url(BASE)
    assert "".join(parsed.text) == TEXTS["de"]  # the whole text is the link: no English label added
    assert "display:none" not in (p_attrs["style"] or "") and "font-size" in (p_attrs["style"] or "")


def test_notice_for_uses_the_tenants_settings(tmp_path: Path) -> None:
    tenant = settings(tmp_path, notice_texts=TEXTS, notice_default_language="en")
    assert TEXTS["de"] in notice_for(tenant, "de-CH")
    assert TEXTS["en"] in notice_for(tenant, "it")


def test_message_body_accepts_a_language_tag_and_refuses_anything_else() -> None:
    body = {
        "subject": "s",
        "from_name": "f",
        "from_email": "f@example.com",
        "list_name": "l",
        "html": "<p>x</p>",
        "recipients": [{"email": "a@example.com"}],
    }
    assert MessageIn.model_validate(body).language is None
    assert MessageIn.model_validate({**body, "language": "pt-BR"}).language == "pt-BR"
    for bad in ("de_DE", "<b>", "d", "de-" + "x" * 40):
        with pytest.raises(ValidationError):
            MessageIn.model_validate({**body, "language": bad})
