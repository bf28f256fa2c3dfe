"""What a sender sees of the rewriter: which links go through the tracker, and that nothing else moves."""

from __future__ import annotations

import random
import re

import pytest

from politetenant.tracker.messages.html_rewrite import (
    HONEYPOT_LINK,
    TOKEN_PLACEHOLDER,
    RewriteResult,
    TrackedLink,
    rewrite_html,
)
from politetenant.tracker.messages.notice import render_notice

BASE = "https://t.example.com"
STYLE = "display:block;width:1px;height:1px;border:0;margin:0;padding:0"
BEACONS = (
    f'<img src="{BASE}/o/{{{{polite_token}}}}.gif" width="1" height="1" alt="" style="{STYLE}">'
    f'<img src="{BASE}/t/{{{{polite_token}}}}.gif" width="1" height="1" alt="" style="{STYLE}">'
    f'<a href="{BASE}/c/{{{{polite_token}}}}/0" style="display:none" aria-hidden="true" tabindex="-1"></a>'
)


def click(n: int) -> str:
    return f"{BASE}/c/{{{{polite_token}}}}/{n}"


def rewrite(html: str, no_track: tuple[str, ...] = ()) -> RewriteResult:
    return rewrite_html(html, BASE, no_track)


def body_of(result: RewriteResult) -> str:
    """The template without its beacon block (which must be there exactly once)."""
    assert result.template.count(BEACONS) == 1
    return result.template.replace(BEACONS, "")


def test_constants_match_the_api_contract() -> None:
    assert TOKEN_PLACEHOLDER == "{{polite_token}}"
    assert HONEYPOT_LINK == 0
    assert click(3) == "https://t.example.com/c/{{polite_token}}/3"


def test_each_http_link_is_rewritten_once_in_order() -> None:
    html = (
        '<p><a href="https://example.com/a">A</a> and <a href="http://example.com/b">B</a>'
        ' and again <a href="https://example.com/a">A again</a></p>'
    )
    result = rewrite(html)
    assert body_of(result) == (
        f'<p><a href="{click(1)}">A</a> and <a href="{click(2)}">B</a> and again <a href="{click(3)}">A again</a></p>'
    )
    assert result.links == [
        TrackedLink(1, "https://example.com/a", "A"),
        TrackedLink(2, "http://example.com/b", "B"),
        TrackedLink(3, "https://example.com/a", "A again"),
    ]


def test_scheme_is_case_insensitive_and_area_links_count() -> None:
    html = '<a href="HTTPS://Example.com/X">x</a><map><area href="Http://example.com/map" alt="The map"></map>'
    result = rewrite(html)
    assert [link.url for link in result.links] == ["HTTPS://Example.com/X", "Http://example.com/map"]
    assert result.links[1].text == "The map"
    assert body_of(result) == f'<a href="{click(1)}">x</a><map><area href="{click(2)}" alt="The map"></map>'


@pytest.mark.parametrize(
    "href",
    [
        "mailto:someone@example.com",
        "tel:+15551234567",
        "javascript:alert(1)",
        "JavaScript:alert(1)",
        "&#106;avascript:alert(1)",
        "java\nscript:alert(1)",
        "data:text/html,<b>hi</b>",
        "vbscript:msgbox",
        "/relative/path",
        "relative.html",
        "#section-2",
        "//example.com/scheme-relative",
        "ftp://example.com/file",
        "",
    ],
)
def test_mailto_links_are_never_rewritten(href: str) -> None:
    html = f'<p><a href="{href}">not tracked</a></p>'
    result = rewrite(html)
    assert result.links == []
    assert body_of(result) == html


def test_link_inside_comment_is_left_alone() -> None:
    html = (
        '<!-- <a href="https://hidden.example/1">old</a> -->'
        '<!--[if mso]><a href="https://hidden.example/2">outlook</a><![endif]-->'
        '<!----><!--><a href="https://shown.example/3">after an empty comment</a>'
        '<!-- a comment closed the lenient way --!><a href="https://shown.example/4">4</a>'
    )
    result = rewrite(html)
    assert [link.url for link in result.links] == ["https://shown.example/3", "https://shown.example/4"]
    assert "https://hidden.example/1" in result.template
    assert "https://hidden.example/2" in result.template


def test_unclosed_comment_hides_everything_after_it() -> None:
    html = '<a href="https://a.example/">a</a><!-- never closed <a href="https://b.example/">b</a>'
    result = rewrite(html)
    assert [link.url for link in result.links] == ["https://a.example/"]
    # the beacons cannot go inside the comment: they go right before it, and it stays a comment
    assert result.template == f'<a href="{click(1)}">a</a>' + BEACONS + html[html.index("<!--") :]


@pytest.mark.parametrize(
    "container",
    [
        "<script>var s = '<a href=\"https://in.example/\">';</script>",
        '<SCRIPT type="text/javascript">document.write("<a href=https://in.example/>x</a>")</SCRIPT >',
        # inside "<!--<script>" a "</script>" does not end the script (HTML's script escape states)
        '<script><!--<script></script><a href="https://in.example/">x</a></script>',
        '<style>a[href="https://in.example/"] { color: red }</style>',
        '<textarea><a href="https://in.example/">x</a></textarea>',
        '<title><a href="https://in.example/">x</a></title>',
    ],
)
def test_links_inside_script_style_and_textarea_are_left_alone(container: str) -> None:
    html = container + '<a href="https://out.example/">out</a>'
    result = rewrite(html)
    assert [link.url for link in result.links] == ["https://out.example/"]
    assert body_of(result) == container + f'<a href="{click(1)}">out</a>'


def test_script_escape_that_closes_lets_links_after_it_count() -> None:
    html = '<script><!-- var x = 1; --></script><a href="https://out.example/">out</a>'
    assert [link.url for link in rewrite(html).links] == ["https://out.example/"]


def test_img_src_and_other_attributes_are_never_touched() -> None:
    html = (
        '<img src="https://cdn.example/logo.png" alt="Logo">'
        '<a data-href="https://data.example/" href="https://real.example/" title="https://title.example/">x</a>'
        '<link href="https://style.example/s.css"><div href="https://div.example/">div</div>'
    )
    result = rewrite(html)
    assert [link.url for link in result.links] == ["https://real.example/"]
    assert body_of(result) == html.replace('href="https://real.example/"', f'href="{click(1)}"')


def test_quoting_is_preserved_and_unquoted_becomes_double_quoted() -> None:
    html = (
        "<a href='https://one.example/'>1</a><a href=https://two.example/?a=1>2</a><a href = \"https://three/\">3</a>"
    )
    result = rewrite(html)
    assert body_of(result) == (f'<a href=\'{click(1)}\'>1</a><a href="{click(2)}">2</a><a href = "{click(3)}">3</a>')
    assert [link.url for link in result.links] == ["https://one.example/", "https://two.example/?a=1", "https://three/"]


def test_unquoted_value_ending_in_slash_keeps_the_tag_intact() -> None:
    result = rewrite("<a href=https://example.com/>x</a>")
    assert body_of(result) == f'<a href="{click(1)}">x</a>'
    assert result.links[0].url == "https://example.com/"


def test_attribute_names_are_case_insensitive() -> None:
    result = rewrite('<A HREF="https://upper.example/">x</A><a hReF="https://mixed.example/">y</a>')
    assert [link.url for link in result.links] == ["https://upper.example/", "https://mixed.example/"]
    assert [link.text for link in result.links] == ["x", "y"]


def test_only_the_first_of_duplicate_hrefs_counts() -> None:
    # a browser keeps the first href; rewriting the second would leave the visible link untracked
    html = '<a href="https://first.example/" href="https://second.example/">x</a>'
    result = rewrite(html)
    assert body_of(result) == f'<a href="{click(1)}" href="https://second.example/">x</a>'
    assert result.links == [TrackedLink(1, "https://first.example/", "x")]
    # and when the first is not trackable, the tag is not tracked at all
    html = '<a href="mailto:x@example.com" HREF="https://second.example/">x</a>'
    assert rewrite(html).links == []


def test_href_text_inside_another_attribute_is_not_an_attribute() -> None:
    html = '<a title=\'see href="https://fake.example/"\' href="https://real.example/">x</a>'
    result = rewrite(html)
    assert [link.url for link in result.links] == ["https://real.example/"]
    html = '<a title="a > b" href="https://after-gt.example/">x</a>'
    assert [link.url for link in rewrite(html).links] == ["https://after-gt.example/"]


def test_stored_url_is_unescaped_and_trimmed_like_a_browser_does() -> None:
    html = (
        '<a href="  https://example.com/p?a=1&amp;b=2&#38;c=3  ">1</a>'
        '<a href="https://example.com/p?x=1&not=2&copy=3">2</a>'  # legacy names before "=" stay literal
        '<a href="https://example.com/&copy;">3</a>'
        '<a href="https://exa\nmple.com/\tpath">4</a>'  # browsers drop tabs and newlines from URLs
    )
    urls = [link.url for link in rewrite(html).links]
    assert urls == [
        "https://example.com/p?a=1&b=2&c=3",
        "https://example.com/p?x=1&not=2&copy=3",
        "https://example.com/©",
        "https://example.com/path",
    ]


def test_no_track_urls_are_left_alone() -> None:
    html = (
        '<a href="https://example.com/unsubscribe?u=1">unsub</a>'
        '<a href="https://example.com/privacy">privacy</a>'
        '<a href="https://example.com/privacy/more">more</a>'
        '<a href="https://example.com/news">news</a>'
    )
    result = rewrite(html, ("https://example.com/unsubscribe*", " https://example.com/privacy "))
    assert [(link.number, link.url) for link in result.links] == [
        (1, "https://example.com/privacy/more"),
        (2, "https://example.com/news"),
    ]
    body = body_of(result)
    assert 'href="https://example.com/unsubscribe?u=1"' in body
    assert 'href="https://example.com/privacy"' in body
    assert f'href="{click(1)}">more' in body and f'href="{click(2)}">news' in body


def test_link_text_is_the_visible_text() -> None:
    html = (
        '<a href="https://a.example/">  Read <b>the</b>\n\n  full&nbsp;story &amp; more </a>'
        '<a href="https://b.example/"><img src="x.png" alt=""><img src="y.png" alt="Company &amp; Co"></a>'
        '<a href="https://c.example/"><img src="z.png"></a>'
        '<a href="https://d.example/">Line one<br>line two</a>'
        '<a href="https://e.example/">unclosed <a href="https://f.example/">next</a>'
        '<a href="https://g.example/">before<!-- hidden --><script>var x;</script>after</a>'
    )
    texts = [link.text for link in rewrite(html).links]
    assert texts == [
        "Read the full story & more",
        "Company & Co",
        "",
        "Line one line two",
        "unclosed",  # a new <a> closes the open one, as in a browser
        "next",
        "beforeafter",
    ]


def test_link_text_is_truncated_to_300_characters() -> None:
    words = " ".join(f"word{i}" for i in range(2000))
    result = rewrite(f'<a href="https://a.example/">{words}</a>')
    text = result.links[0].text
    assert len(text) <= 300
    assert words.startswith(text)
    assert len(text) >= 295


def test_beacons_go_before_closing_body() -> None:
    html = "<html><body><p>Hello</p></body></html>"
    assert rewrite(html).template == "<html><body><p>Hello</p>" + BEACONS + "</body></html>"


def test_beacons_go_before_the_last_real_closing_body() -> None:
    html = "<body>one</BODY>two</Body ><!-- </body> --><script>'</body>'</script>"
    assert (
        rewrite(html).template == "<body>one</BODY>two" + BEACONS + "</Body ><!-- </body> --><script>'</body>'</script>"
    )


def test_beacons_are_appended_when_there_is_no_closing_body() -> None:
    html = "<p>Hello</p>"
    assert rewrite(html).template == html + BEACONS
    assert rewrite("").template == BEACONS


@pytest.mark.parametrize(
    "tail",
    ["<style>p { color: red }", "<script>var x = 1;", '<a href="https://cut.example/', "<plaintext>raw", "<!", "</"],
)
def test_beacons_go_before_a_construct_the_body_never_closes(tail: str) -> None:
    # appended after it, they would be swallowed by it (and stop being images)
    html = "<p>Hello</p>" + tail
    result = rewrite(html)
    assert result.template == "<p>Hello</p>" + BEACONS + tail
    assert result.links == []  # a tag cut off by the end of the body is no tag to a browser


def test_honeypot_is_link_zero_and_not_listed() -> None:
    result = rewrite('<a href="https://a.example/">a</a></body>')
    assert f'<a href="{click(HONEYPOT_LINK)}" style="display:none" aria-hidden="true" tabindex="-1"></a>' in (
        result.template
    )
    assert [link.number for link in result.links] == [1]


def test_base_url_trailing_slash_is_stripped() -> None:
    result = rewrite_html('<a href="https://a.example/">a</a>', "https://t.example.com/")
    assert result.template.startswith(f'<a href="{click(1)}">a</a>')
    assert "https://t.example.com//" not in result.template


def test_text_outside_links_is_unchanged() -> None:
    html = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>News & <a href="https://no.example/">views</a></title>
<style>.btn { background: url("https://cdn.example/bg.png") }</style></head>
<BODY class=main>
<!--[if mso]><v:roundrect href="https://vml.example/"></v:roundrect><![endif]-->
<table role=presentation><tr><td>
  <a class="btn" href = 'https://shop.example/?id=1&amp;utm=mail' target=_blank >Shop &nbsp; now</a>
  <a href=https://plain.example/x title="A &quot;title&quot;">Plain</a>
  <a href="mailto:team@example.com">Mail us</a> <a href="#top">Top</a>
  <img src="https://cdn.example/pic.png" alt="A picture" width=600>
  <a href="https://unsub.example/?u=9">Unsubscribe</a>
</td></tr></table>
<script>if (a < b && c > d) { location = "https://js.example/" }</script>
</body>
</html>
"""
    result = rewrite(html, ("https://unsub.example/*",))
    expected = (
        html.replace("'https://shop.example/?id=1&amp;utm=mail'", f"'{click(1)}'")
        .replace("href=https://plain.example/x ", f'href="{click(2)}" ')
        .replace("</body>", BEACONS + "</body>")
    )
    assert result.template == expected
    assert result.links == [
        TrackedLink(1, "https://shop.example/?id=1&utm=mail", "Shop now"),
        TrackedLink(2, "https://plain.example/x", "Plain"),
    ]


def test_five_megabyte_body_is_rewritten() -> None:
    row = (
        '<tr><td><p>Item {i}: a line of text &amp; more.</p><a href="https://shop.example/p/{i}?s=mail">View {i}</a>'
        "</td></tr>\n"
    )
    rows = "".join(row.format(i=i) for i in range(50_000))
    html = "<html><body><table>" + rows + "</table>" + " " * max(0, 5_000_000 - len(rows)) + "</body></html>"
    assert len(html) >= 5_000_000
    result = rewrite(html)
    assert len(result.links) == 50_000
    assert [link.number for link in result.links] == list(range(1, 50_001))
    assert result.links[12_345] == TrackedLink(12_346, "https://shop.example/p/12345?s=mail", "View 12345")
    assert result.template.count(f"{BASE}/c/{{{{polite_token}}}}/") == 50_001  # with the honeypot
    assert result.template.count(BEACONS) == 1
    assert result.template.endswith(BEACONS + "</body></html>")


@pytest.mark.parametrize(
    "garbage",
    [
        "<" * 200_000,
        "<a " * 100_000,
        "<a href=" * 50_000,
        "<!--" * 100_000,
        "<!--" + "-" * 200_000,
        '<a "' * 100_000,
        "</a" * 100_000,
        "<a" + " " * 200_000,
        "<a " + "=" * 200_000,
        "<a " + 'b="c" ' * 50_000 + ">",
        '<a href="https://x.example/">' * 20_000,
        '<a href="https://x.example/">' + "word " * 50_000,
        '<a href="https://x.example/' + "&notin" * 50_000 + '">x</a>',
        "<script><!--" + "<script>" * 50_000,
        "<script>" + "<!--<script></script>" * 20_000,
        "&" * 200_000,
        "\x00\ufffd\ud800<a\x00 href\x00=\x00https://x.example/>",
    ],
)
def test_garbage_never_raises(garbage: str) -> None:
    result = rewrite(garbage)
    assert result.template.count(BEACONS) == 1
    assert all(link.url.lower().startswith(("http://", "https://")) for link in result.links)
    assert [link.number for link in result.links] == list(range(1, len(result.links) + 1))


def test_random_soup_keeps_every_character_outside_rewritten_values() -> None:
    pieces = ["<", ">", "/", '"', "'", "=", " ", "\n", "-", "!", "?", "&", "x", "<!--", "-->", "<a ", "<A ", "</a>",
              "href=", "HREF=", "https://r.example/", "http://q.example/?a=1&amp;b", "mailto:m", "<script>",
              "</script>", "<style>", "</style>", "<body>", "</body>", "<img alt=", "<area "]  # fmt: skip
    rng = random.Random(1234)
    target = re.compile(r"([\"']?)" + re.escape(BASE) + r"/c/\{\{polite_token\}\}/(\d+)\1")
    for _ in range(2000):
        html = "".join(rng.choice(pieces) for _ in range(rng.randrange(1, 40)))
        result = rewrite(html)
        body = body_of(result)
        assert [int(m.group(2)) for m in target.finditer(body)] == [link.number for link in result.links]
        # between the rewritten values, the input comes out again character for character
        chunks = target.split(body)[::3]
        assert re.fullmatch("(.*?)".join(re.escape(chunk) for chunk in chunks), html, re.DOTALL), html


def _reference_first_href(tag: str) -> tuple[int, int, bool] | None:
    """The HTML tokenizer's attribute states, one character at a time, for a tag starting "<a".

    Returns the span of the first href attribute's value and whether it was unquoted, or None when
    there is no href or the tag never ends.
    """
    ws = "\t\n\f\r "
    attributes: list[list[object]] = []  # [name, value_start, value_end, unquoted]
    i, n, state = 2, len(tag), "before_name"
    while True:
        c = tag[i] if i < n else ""
        if state == "before_name":
            if c == "":
                return None
            if c in ws or c == "/":
                i += 1
            elif c == ">":
                break
            else:
                attributes.append([c.lower() if c.isascii() else c, -1, -1, False])
                state, i = "name", i + 1
        elif state == "name":
            if c == "" or c in ws or c in "/>":
                state = "after_name"
            elif c == "=":
                state, i = "before_value", i + 1
            else:
                attributes[-1][0] = str(attributes[-1][0]) + (c.lower() if c.isascii() else c)
                i += 1
        elif state == "after_name":
            if c == "":
                return None
            if c in ws:
                i += 1
            elif c == "/":
                state, i = "self_closing", i + 1
            elif c == "=":
                state, i = "before_value", i + 1
            elif c == ">":
                break
            else:
                state = "before_name"
        elif state == "before_value":
            if c in ws and c:
                i += 1
            elif c == '"' or c == "'":
                attributes[-1][1] = attributes[-1][2] = i + 1
                state, i = ("dq" if c == '"' else "sq"), i + 1
            elif c == ">":
                break
            else:
                attributes[-1][1] = attributes[-1][2] = i
                attributes[-1][3] = True
                state = "unquoted"
        elif state in ("dq", "sq"):
            if c == "":
                return None
            if c == ('"' if state == "dq" else "'"):
                state, i = "after_quoted", i + 1
            else:
                i += 1
                attributes[-1][2] = i
        elif state == "unquoted":
            if c == "":
                return None
            if c in ws:
                state = "before_name"
            elif c == ">":
                break
            else:
                i += 1
                attributes[-1][2] = i
        elif state == "after_quoted":
            if c == "":
                return None
            if c in ws:
                state = "before_name"
            elif c == "/":
                state, i = "self_closing", i + 1
            elif c == ">":
                break
            else:
                state = "before_name"
        elif state == "self_closing":
            if c == "":
                return None
            if c == ">":
                break
            state = "before_name"
    for name, start, end, unquoted in attributes:
        if name == "href":
            assert isinstance(start, int) and isinstance(end, int) and isinstance(unquoted, bool)
            return start, end, unquoted
    return None


def test_first_href_is_found_the_way_the_html_tokenizer_finds_it() -> None:
    names = ["href", "HREF", "hReF", "data-href", "hrefx", "=href", "=", "alt", "x", '"href', "h"]
    values = ["https://u.example/", "https://v.example/a b", "https://w.example/'\"", " https://x.example/ ", "", ">",
              "mailto:m", "https://y.example/>z", "=https://z.example/"]  # fmt: skip
    glue = ["", " ", "  ", "\n", "\t", "/", " / ", "\f"]
    noise = ['"', "'", "=", ">", "<", "!", "href"]
    rng = random.Random(99)
    checked = 0
    for _ in range(20_000):
        parts = ["<a"]
        for index in range(rng.randrange(1, 5)):
            parts.append(rng.choice(glue[1:] if index == 0 else glue))  # "<ahref" would be another tag
            parts.append(rng.choice(names))
            if rng.random() < 0.8:
                parts.append(rng.choice(["=", " = ", "=\n", " ="]))
                quote = rng.choice(['"', "'", ""])
                parts.append(quote + rng.choice(values) + (quote if rng.random() < 0.95 else ""))
            if rng.random() < 0.1:
                parts.append(rng.choice(noise))
        html = "".join(parts) + rng.choice([">", ">", ">", "/>", " >", ""]) + "text</a>"
        expected = _reference_first_href(html)
        result = rewrite(html)
        value = None if expected is None else html[expected[0] : expected[1]]
        if value is None or not value.strip("\t\n\f\r ").startswith("https://"):
            assert result.links == [], html
            continue
        assert expected is not None
        start, end, unquoted = expected
        replacement = f'"{click(1)}"' if unquoted else click(1)
        assert body_of(result) == html[:start] + replacement + html[end:], repr(html)
        checked += 1
    assert checked > 3000


# -- the tenant's notice to recipients ---------------------------------------------------------------

NOTICE = render_notice("We count opens <and> clicks of this message: see https://example.com/why.", "en", BASE)


def test_notice_goes_right_before_the_beacons_inside_the_body() -> None:
    result = rewrite_html('<html><body><p><a href="https://example.com/a">A</a></p></body></html>', BASE, notice=NOTICE)
    assert result.template == f'<html><body><p><a href="{click(1)}">A</a></p>{NOTICE}{BEACONS}</body></html>'


def test_notice_link_is_neither_tracked_nor_rewritten() -> None:
    html = '<body><a href="https://example.com/a">A</a></body>'
    with_notice = rewrite_html(html, BASE, notice=NOTICE)
    assert with_notice.links == rewrite_html(html, BASE).links == [TrackedLink(1, "https://example.com/a", "A")]
    assert f'href="{BASE}/p/{TOKEN_PLACEHOLDER}"' in with_notice.template
    assert f"{BASE}/c/{TOKEN_PLACEHOLDER}/2" not in with_notice.template  # the notice got no click number
    assert "https://example.com/why" not in re.findall(r'href="([^"]*)"', with_notice.template)


@pytest.mark.parametrize(
    ("html", "kept_inert"),
    [
        ("<p>No body tag at all</p>", ""),
        ("<body><p>Hi</p><!-- a comment never closed <a href='https://x.example'>", "<!-- a comment never closed"),
        ("<body><p>Hi</p><style>p{color:red}", "<style>p{color:red}"),
    ],
)
def test_notice_is_live_markup_where_the_beacons_go_without_a_body_end(html: str, kept_inert: str) -> None:
    cut = html.find(kept_inert) if kept_inert else len(html)
    assert rewrite_html(html, BASE, notice=NOTICE).template == html[:cut] + NOTICE + BEACONS + html[cut:]
