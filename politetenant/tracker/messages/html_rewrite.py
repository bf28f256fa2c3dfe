"""Rewrite a message body for the tracker: tracked links go through `/c/{token}/{n}`, beacons added.

The body is read the way a browser's HTML tokenizer reads it (WHATWG HTML, "Tokenization"), as far as
it matters for links: comments (including `<!-->` and `--!>`), bogus comments and DOCTYPEs, the raw
text of `<script>` (with its `<!--` escape states), `<style>`, `<textarea>`, `<title>`, `<xmp>`,
`<iframe>`, `<noembed>`, `<noframes>` and `<plaintext>`, quoted and unquoted attribute values,
duplicate attributes (the first wins), character references in attributes (where `&not=` stays
literal) and the URL parser's trimming (outer C0 controls and spaces, inner tabs and newlines). Each
step is a compiled regular expression or `str.find` applied once per token, with atomic groups where
a pattern could otherwise backtrack, so the pass is linear in the size of the body and never raises.

What is rewritten is exactly the value of the first `href` attribute of each `<a>` and `<area>` start
tag that points to an http(s) URL not listed as untracked; a tag cut off by the end of the body is
not a tag to a browser and is left alone. Every other character of the body is kept as it was, and
the beacon block (after the tenant's notice to recipients, when it has one) is inserted at one place:
immediately before the last real `</body>` end tag (one inside a comment or a script does not
count); without one, at the end of the body or, when the body ends inside a construct it never closes
(a comment, a cut-off tag, `<style>` without `</style>`, `<plaintext>`), right before that construct,
where the beacons are live markup and what follows stays exactly as inert as it was.

Not modelled: SVG/MathML foreign content (where `<style>` and `<script>` hold markup, not raw text),
the `<select>` insertion mode that ignores most tags, and Outlook's conditional comments
(`<!--[if mso]>`), which are comments to every other client and are left alone like any other.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from html import escape as _escape
from html import unescape as _unescape
from html.entities import html5 as _HTML5_ENTITIES
from typing import Final

TOKEN_PLACEHOLDER: Final = "{{polite_token}}"
HONEYPOT_LINK: Final = 0
LINK_TEXT_LIMIT: Final = 300


@dataclass(frozen=True, slots=True)
class TrackedLink:
    """One rewritten link: its number in the click path, where it really goes, and what it said."""

    number: int
    url: str
    text: str


@dataclass(frozen=True, slots=True)
class RewriteResult:
    """The body with rewritten links and beacons (holding TOKEN_PLACEHOLDER), and the tracked links."""

    template: str
    links: list[TrackedLink]


# --------------------------------------------------------------------------------------------------
# Tokenizer

TEXT: Final = 0
START: Final = 1
END: Final = 2
COMMENT: Final = 3  # comments, bogus comments, DOCTYPEs, `</>`: never visible, never markup
RAW: Final = 4  # the content of a raw-text / RCDATA element (name = that element)

Token = tuple[int, int, int, str, bool]
"""(kind, start, end, name, closed): name is the ASCII-lowercased tag name for START, END and RAW;
closed is False only for a construct that runs to the end of the input without being closed."""

_SEPARATORS = r"[\t\n\f\r /]*+"
_NAME = r"[^\t\n\f\r />][^\t\n\f\r />=]*+"  # a name may start with "=" (a parse error browsers accept)
_NAME_END = r"(?![^\t\n\f\r />=])"
_VALUE_PREFIX = r"[\t\n\f\r ]*+=[\t\n\f\r ]*+"
_ANY_VALUE = r"(?:\"[^\"]*+\"?|'[^']*+'?|[^\t\n\f\r >]*+)"
_VALUE = r"(?:\"(?P<dq>[^\"]*+)\"?|'(?P<sq>[^']*+)'?|(?P<uq>[^\t\n\f\r >]*+))"

# A whole tag from "<" (or "</") up to, not including, its ">" (or the end of the input). Every round
# is atomic and consumes at least one character, so matching is linear and never backtracks.
_TAG = re.compile(
    rf"</?([A-Za-z][^\t\n\f\r />]*+)(?>{_SEPARATORS}{_NAME}(?>{_VALUE_PREFIX}{_ANY_VALUE})?)*+{_SEPARATORS}"
)


def _first_attribute(name: str) -> re.Pattern[str]:
    """From the end of a tag name: skip every attribute but `name`, then match the first `name`."""
    other = rf"(?>{_SEPARATORS}(?!{name}{_NAME_END}){_NAME}(?>{_VALUE_PREFIX}{_ANY_VALUE})?)*+"
    return re.compile(rf"{other}{_SEPARATORS}{name}{_NAME_END}(?:{_VALUE_PREFIX}{_VALUE})?", re.I | re.A)


_FIRST_HREF = _first_attribute("href")
_FIRST_ALT = _first_attribute("alt")
_MARKUP = re.compile(r"<[A-Za-z!?/]")  # any other "<" is text
_COMMENT_END = re.compile(r"--!?>")

_DELIMITER = r"[\t\n\f\r />]"
_FLAGS = re.IGNORECASE | re.ASCII
_RAW_TEXT_END = {
    name: re.compile(rf"</{name}{_DELIMITER}", _FLAGS)
    for name in ("style", "textarea", "title", "xmp", "iframe", "noembed", "noframes")
}
_SCRIPT_DATA = re.compile(rf"(</script{_DELIMITER})|<!--", _FLAGS)
_SCRIPT_ESCAPED = re.compile(rf"(</script{_DELIMITER})|(<script{_DELIMITER})|-->", _FLAGS)
_SCRIPT_DOUBLE_ESCAPED = re.compile(rf"(</script{_DELIMITER})|-->", _FLAGS)


def _script_end(s: str, pos: int) -> int:
    """Where `<script>` content starting at pos ends: the index of its `</script`, or len(s)."""
    state = 0  # 0 script data, 1 escaped (after "<!--"), 2 double escaped (after "<!--<script>")
    while True:
        if state == 0:
            m = _SCRIPT_DATA.search(s, pos)
            if m is None:
                return len(s)
            if m.group(1):
                return m.start()
            state, pos = 1, m.start() + 2  # the dashes of "<!--" may also end it: "<!-->"
        elif state == 1:
            m = _SCRIPT_ESCAPED.search(s, pos)
            if m is None:
                return len(s)
            if m.group(1):
                return m.start()
            state, pos = (2 if m.group(2) else 0), m.end()
        else:
            m = _SCRIPT_DOUBLE_ESCAPED.search(s, pos)
            if m is None:
                return len(s)
            state, pos = (1 if m.group(1) else 0), m.end()


_QUOTES: Final = {"dq": '"', "sq": "'", "uq": ""}


def _first_attribute_value(pattern: re.Pattern[str], s: str, name_end: int) -> tuple[int, int, str] | None:
    """(start, end, quote) of the value of the first attribute `pattern` looks for, or None.

    quote is '"', "'" or "" (unquoted); an attribute present without a value gives an empty value.
    """
    m = pattern.match(s, name_end)
    if m is None:
        return None
    group = m.lastgroup  # only the value groups are named, and at most one of them takes part
    if group is not None:
        return m.start(group), m.end(group), _QUOTES[group]
    return m.end(), m.end(), ""


class HtmlScanner:
    """Splits HTML into tokens in one pass.

    After iteration, `open_at` is where a construct that the input never closes begins (a comment,
    a tag cut off by the end, a raw-text element without its end tag, `<plaintext>`), or len(input)
    when the input ends in plain markup. Inserting markup at `open_at` puts it in the data state, and
    leaves what follows exactly as inert as it was.
    """

    __slots__ = ("_s", "open_at")

    def __init__(self, s: str) -> None:
        self._s = s
        self.open_at = len(s)

    def __iter__(self) -> Iterator[Token]:
        s = self._s
        n = len(s)
        find = s.find
        search = _MARKUP.search
        pos = text_start = 0
        raw_owner = -1  # start tag of the raw-text element whose end tag comes next
        while True:
            found = search(s, pos)
            if found is None:
                break
            lt = found.start()
            if lt > text_start:
                yield TEXT, text_start, lt, "", True
                text_start = lt
            c = s[lt + 1]
            after = s[lt + 2 : lt + 3] if c == "/" else c
            if after.isascii() and after.isalpha():
                m = _TAG.match(s, lt)
                assert m is not None  # "<" or "</" and an ASCII letter always start a tag
                kind = END if c == "/" else START
                name = m.group(1)
                name = name.lower() if name.isascii() else name  # browsers lowercase ASCII only
                end = m.end()
                if end >= n:  # cut off: browsers drop the whole tag (a raw-text element stays open)
                    self.open_at = raw_owner if raw_owner >= 0 else lt
                    yield kind, lt, n, name, False
                    return
                end += 1  # the ">": nothing else can follow the last attribute round
                yield kind, lt, end, name, True
                pos = text_start = end
                raw_owner = -1
                if kind == START:
                    if name == "script":
                        raw_end = _script_end(s, end)
                    elif name == "plaintext":
                        raw_end = n
                    elif (pattern := _RAW_TEXT_END.get(name)) is not None:
                        closing = pattern.search(s, end)
                        raw_end = closing.start() if closing else n
                    else:
                        continue
                    if raw_end > end:
                        yield RAW, end, raw_end, name, raw_end < n
                    if raw_end >= n:
                        self.open_at = lt
                        return
                    pos = text_start = raw_end
                    raw_owner = lt
                continue
            if c == "!" and s.startswith("--", lt + 2):
                if s.startswith(">", lt + 4):  # "<!-->"
                    end = lt + 5
                elif s.startswith("->", lt + 4):  # "<!--->"
                    end = lt + 6
                else:
                    closing = _COMMENT_END.search(s, lt + 4)
                    end = closing.end() if closing else -1
            elif c == "/" and after == ">":  # "</>" is dropped
                end = lt + 3
            else:  # bogus comment, DOCTYPE, "<![CDATA[", "<?xml", "</ x": up to the first ">"
                gt = find(">", lt + 2)
                end = gt + 1 if gt >= 0 else -1
            if end < 0:  # never closed ("</" alone at the end too: whatever follows would close it)
                self.open_at = lt
                yield COMMENT, lt, n, "", False
                return
            yield COMMENT, lt, end, "", True
            pos = text_start = end
        if n > text_start:
            yield TEXT, text_start, n, "", True


# --------------------------------------------------------------------------------------------------
# Character references and URLs

_CHARREF = re.compile(r"&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[A-Za-z0-9]+;?)")
_LEGACY_MAX = max(len(name) for name in _HTML5_ENTITIES if not name.endswith(";"))


def _attribute_charref(m: re.Match[str]) -> str:
    ref = m.group(1)
    if ref[0] == "#":
        return _unescape(m.group(0))
    if ref.endswith(";") and ref in _HTML5_ENTITIES:
        return _HTML5_ENTITIES[ref]
    name = ref.rstrip(";")
    for size in range(min(len(name), _LEGACY_MAX), 1, -1):
        legacy = name[:size]
        if legacy in _HTML5_ENTITIES:
            # In an attribute, a reference without ";" followed by "=" or an alphanumeric is literal,
            # so "?a=1&not=2" keeps its "&not".
            following = name[size] if size < len(name) else m.string[m.end() : m.end() + 1]
            if size < len(name) or following == "=":
                return m.group(0)
            return _HTML5_ENTITIES[legacy] + ref[size:]
    return m.group(0)


def unescape_attribute(value: str) -> str:
    """Decode an attribute value the way a browser does: character references, and NUL to U+FFFD."""
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    if "&" not in value:
        return value
    return _CHARREF.sub(_attribute_charref, value)


_C0_OR_SPACE = "".join(chr(i) for i in range(0x21))
_TAB_OR_NEWLINE = re.compile(r"[\t\n\r]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HTTP = re.compile(r"https?://", re.IGNORECASE | re.ASCII)


def normalize_url(url: str) -> str:
    """The URL a browser would follow, as far as its characters go.

    Leading and trailing C0 controls and spaces, and every tab and newline, are removed (the URL
    parser does so); any other control character left is percent-encoded, as the parser does in a
    path or query, so the stored URL is safe to put in a Location header.
    """
    url = url.strip(_C0_OR_SPACE)
    if "\t" in url or "\n" in url or "\r" in url:
        url = _TAB_OR_NEWLINE.sub("", url)
    if _CONTROL.search(url) is not None:
        url = _CONTROL.sub(lambda m: f"%{ord(m.group()):02X}", url)
    return url


def _collapse(text: str) -> str:
    return " ".join(text.split())


# --------------------------------------------------------------------------------------------------
# Rewriting

# Elements whose boundaries separate words in link text (a browser renders a break there).
BREAKING_ELEMENTS: Final = frozenset(
    {"br", "p", "div", "li", "ul", "ol", "dl", "dt", "dd", "tr", "td", "th", "table", "hr", "blockquote"}
    | {"h1", "h2", "h3", "h4", "h5", "h6", "section", "article", "header", "footer", "center", "pre"}
)
_WHITESPACE_RUN = re.compile(r"\s+")


class _LinkText:
    """Collects an anchor's text, in bounded memory however long the anchor runs."""

    __slots__ = ("alt", "parts", "size")

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.size = 0
        self.alt = ""

    def add(self, text: str) -> None:
        if self.size < 0:  # already more than the limit
            return
        self.parts.append(text)
        self.size += len(text)
        if self.size > 4 * LINK_TEXT_LIMIT:
            joined = _WHITESPACE_RUN.sub(" ", "".join(self.parts))
            self.parts = [joined]
            self.size = len(joined)
            if len(joined.strip()) > LINK_TEXT_LIMIT:
                self.size = -1

    def text(self) -> str:
        if not self.parts:
            return self.alt
        text = _collapse("".join(self.parts))[:LINK_TEXT_LIMIT].rstrip()
        return text or self.alt


def _beacons(base: str) -> str:
    style = "display:block;width:1px;height:1px;border:0;margin:0;padding:0"
    return (
        f'<img src="{base}/o/{TOKEN_PLACEHOLDER}.gif" width="1" height="1" alt="" style="{style}">'
        f'<img src="{base}/t/{TOKEN_PLACEHOLDER}.gif" width="1" height="1" alt="" style="{style}">'
        f'<a href="{base}/c/{TOKEN_PLACEHOLDER}/{HONEYPOT_LINK}" style="display:none" aria-hidden="true"'
        ' tabindex="-1"></a>'
    )


class _Untracked:
    __slots__ = ("exact", "prefixes")

    def __init__(self, urls: Collection[str]) -> None:
        exact: set[str] = set()
        prefixes: list[str] = []
        for entry in urls:
            entry = normalize_url(entry)
            if entry.endswith("*"):
                prefixes.append(entry[:-1])
            else:
                exact.add(entry)
        self.exact = frozenset(exact)
        self.prefixes = tuple(prefixes)

    def __contains__(self, url: str) -> bool:
        return url in self.exact or (bool(self.prefixes) and url.startswith(self.prefixes))


def _alt_text(s: str, name_end: int) -> str:
    alt = _first_attribute_value(_FIRST_ALT, s, name_end)
    if alt is None:
        return ""
    return _collapse(unescape_attribute(s[alt[0] : alt[1]]))[:LINK_TEXT_LIMIT].rstrip()


def _trackable(url: str) -> bool:
    return _HTTP.match(url) is not None


def rewrite_html(html: str, base_url: str, no_track_urls: Collection[str] = (), *, notice: str = "") -> RewriteResult:
    """Route every http(s) link of the body through the tracker and add the beacons.

    The n-th tracked link (document order, n from 1) becomes `{base}/c/{{polite_token}}/{n}`; link 0 is
    the hidden honeypot in the beacon block. `no_track_urls` entries match a URL exactly, or as a
    prefix when they end with "*". `notice` (markup from `notice.render_notice`) goes right before the
    beacons: it is added after the body was read, so its link is never tracked nor rewritten.
    """
    s = html
    base = _escape(base_url.strip().rstrip("/"), quote=True)
    untracked = _Untracked(no_track_urls)
    edits: list[tuple[int, int, str]] = []  # (start, end, replacement), in document order
    pending: list[tuple[int, str, _LinkText | str]] = []
    current: _LinkText | None = None
    body_end = -1
    scanner = HtmlScanner(s)
    for kind, start, end, name, closed in scanner:
        if kind == TEXT or (kind == RAW and name == "textarea"):  # a textarea's text is visible too
            if current is not None:
                current.add(_unescape(s[start:end]))
        elif kind == START:
            if name == "a" or name == "area":
                if name == "a":
                    current = None  # an <a> start tag closes the open one
                if not closed:
                    continue  # cut off by the end of the input: browsers drop it
                name_end = start + 1 + len(name)
                href = _first_attribute_value(_FIRST_HREF, s, name_end)
                if href is None:
                    continue
                value_start, value_end, quote = href
                url = normalize_url(unescape_attribute(s[value_start:value_end]))
                if not _trackable(url) or url in untracked:
                    continue
                number = len(pending) + 1
                target = f"{base}/c/{TOKEN_PLACEHOLDER}/{number}"
                edits.append((value_start, value_end, target if quote else f'"{target}"'))
                if name == "a":
                    current = _LinkText()
                    pending.append((number, url, current))
                else:
                    pending.append((number, url, _alt_text(s, name_end)))
            elif current is not None:
                if name == "img":
                    if not current.alt:
                        current.alt = _alt_text(s, start + 4)
                elif name in BREAKING_ELEMENTS:
                    current.add(" ")
        elif kind == END:
            if name == "a":
                current = None
            elif name == "body" and closed:
                body_end = start
            elif current is not None and name in BREAKING_ELEMENTS:
                current.add(" ")

    at = body_end if body_end >= 0 else scanner.open_at
    edits.insert(bisect_left(edits, (at, at, "")), (at, at, notice + _beacons(base)))
    out: list[str] = []
    copied = 0
    for start, end, replacement in edits:
        out.append(s[copied:start])
        out.append(replacement)
        copied = end
    out.append(s[copied:])
    links = [TrackedLink(n, url, text if isinstance(text, str) else text.text()) for n, url, text in pending]
    return RewriteResult(template="".join(out), links=links)
