"""String ``format`` of custom resources: whether a value is valid, decided as the API server's Go code does.

``FORMAT_DOC`` (https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/#format)
lists the formats a CRD schema may name (apiextensions-apiserver's ``supportedVersionedFormats``); the
JSONSchemaProps reference adds "Unknown formats are ignored" and names the Go parser behind each. The checks
are those kube-openapi pkg/validation/strfmt registers in ``strfmt.Default`` (with its third_party
govalidator): net.ParseIP (IPv4 with k8s.io/utils/net's leading zeros, IPv6 strict), ParseCIDRSloppy,
net.ParseMAC, net/url.ParseRequestURI, net/mail.ParseAddress, time.Parse and strfmt's ParseDuration. Names
match with dashes ignored, as strfmt does; ``quantity`` is ignored too (listed as supported, registered in no
strfmt registry). ``kube_cel`` walks the object and words the errors; this module only judges a value.
Not emulated: the RFC 2047 encoded words of e-mail display names.
"""

from __future__ import annotations

import calendar
import re
import unicodedata
from collections.abc import Callable
from fractions import Fraction

from tests.fakes.kube_emulator import CRD_DOC

FORMAT_DOC = CRD_DOC + "#format"

_WS = "\t\n\f\r "  # Go RE2's \s
_UUID = r"[0-9a-f]{8}-?[0-9a-f]{4}-?%s[0-9a-f]{3}-?%s[0-9a-f]{3}-?[0-9a-f]{12}"
_OCTET = r"(0|[1-9][0-9]?|1[0-9][0-9]?|2[0-4][0-9]|25[0-5])"
_SHORT_NAME = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
# HostnamePattern with \p{L} and \p{S} turned into the stand-ins "a" and "~" by ``_hostname``.
_HOSTNAME = re.compile(
    r"[a-zA-Z0-9~](-?[a-zA-Z0-9~]{0,62})?|([a-zA-Z0-9~]([a-zA-Z0-9\-~]{0,61}[a-zA-Z0-9~])?\.)+[a-zA-Z]{2,63}"
)
_TIME = re.compile(r"([0-9]{2}):([0-9]{2}):([0-9]{2})(.[0-9]+)?(z|[+-][0-9]{2}:[0-9]{2})")
_GO_DURATION = re.compile(r"[-+]?(0|((?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:ns|us|µs|μs|ms|s|m|h))+)")
_DURATION_PART = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|µs|μs|ms|s|m|h)")
_NS = {"ns": 1, "us": 10**3, "µs": 10**3, "μs": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}
_UNITS: tuple[tuple[str, ...], ...] = (("ns", "nano"), ("us", "µs", "micro"), ("ms", "milli"), ("s", "sec"))
_UNITS += (("m", "min"), ("h", "hr", "hour"), ("d", "day"), ("w", "wk", "week"))
_UNIT_NS = {"ns": 1, "us": 1e3, "ms": 1e6, "s": 1e9, "m": 6e10, "h": 3.6e12, "d": 8.64e13, "w": 6.048e14}
_CREDIT_CARD = (
    r"4[0-9]{12}([0-9]{3})?|5[1-5][0-9]{14}|6(011|5[0-9][0-9])[0-9]{12}|3[47][0-9]{13}|3(0[0-5]|[68][0-9])[0-9]{11}"
    r"|(2131|1800|35[0-9]{3})[0-9]{11}"
)


def _fullmatch(pattern: str, flags: int = 0) -> Callable[[str], bool]:
    compiled = re.compile(pattern, re.ASCII | flags)
    return lambda text: compiled.fullmatch(text) is not None


def _is_date(text: str) -> bool:
    """strfmt IsDate: ``time.Parse("2006-01-02", s)``, the day checked against its month."""
    found = re.fullmatch(r"([0-9]{4})-([0-9]{2})-([0-9]{2})", text)
    if not found:
        return False
    year, month, day = (int(part) for part in found.groups())
    last = calendar.monthrange(2000 + year % 400, month)[1] if 1 <= month <= 12 else 0
    return 1 <= day <= last


def _is_date_time(text: str) -> bool:
    """strfmt IsDateTime: a date, a "t", then the time pattern, checked field by field as strings."""
    parts = text.lower().split("t")
    if len(text.encode()) < 4 or len(parts) < 2 or not _is_date(parts[0]):
        return False
    found = _TIME.fullmatch(parts[1])
    return found is not None and found[1] <= "23" and found[2] <= "59" and found[3] <= "59"


def duration_ns(text: str) -> float | None:
    """strfmt ParseDuration: Go's ``time.ParseDuration``, else every "<n> <unit word>" it finds summed; in
    nanoseconds, None when invalid (``kube_cel`` also types a ``duration`` string for CEL with it)."""
    if _GO_DURATION.fullmatch(text):
        total = sum(Fraction(n or "0") * _NS[unit] for n, unit in _DURATION_PART.findall(text))
        total = -total if text.startswith("-") else total
        if -(2**63) <= total < 2**63:
            return float(total)
    found, total_ns = False, 0.0
    for match in re.finditer(rf"([0-9]+)[{_WS}]*([A-Za-zµ]+)", text):
        if int(match[1]) >= 2**63:  # strconv.Atoi fails: the whole value is refused
            return None
        unit = match[2].lower().strip(_WS)
        for variants in _UNITS:
            for i, variant in enumerate(variants):
                if (i == len(variants) - 1 and unit.startswith(variant)) or unit == variant:
                    found, total_ns = True, total_ns + int(match[1]) * _UNIT_NS[variants[0]]
    return total_ns if found else None


def _ipv4(text: str, sloppy: bool) -> bool:
    """Go's IPv4 parser: four decimal octets; ``sloppy`` (k8s.io/utils/net, Go 1.16) allows leading zeros."""
    octets = text.split(".")
    if len(octets) != 4 or not all(re.fullmatch("[0-9]+", octet) for octet in octets):
        return False
    return all(int(o) <= 255 and (sloppy or o == "0" or not o.startswith("0")) for o in octets)


def _ipv6(text: str, sloppy: bool) -> bool:
    """Go's IPv6 parser: hex fields, one ``::``, an optional trailing IPv4; strict (netip) allows 4 digits."""
    rest, ellipsis, filled = text, -1, 0
    if rest.startswith("::"):
        ellipsis, rest = 0, rest[2:]
        if not rest:
            return True
    while filled < 16:
        digits = re.match("[0-9a-fA-F]*", rest)
        hexa = digits.group() if digits else ""
        if not hexa or (not sloppy and len(hexa) > 4) or int(hexa, 16) > 0xFFFF:
            return False
        if rest[len(hexa) :].startswith("."):
            if (ellipsis < 0 and filled != 12) or filled + 4 > 16 or not _ipv4(rest, sloppy):
                return False
            rest, filled = "", filled + 4
            break
        filled, rest = filled + 2, rest[len(hexa) :]
        if not rest:
            break
        if rest[0] != ":" or len(rest) == 1:
            return False
        rest = rest[1:]
        if rest[0] == ":":
            if ellipsis >= 0:
                return False
            ellipsis, rest = filled, rest[1:]
            if not rest:
                break
    return not rest and (ellipsis >= 0 if filled < 16 else ellipsis < 0)


def _parse_ip(text: str, sloppy: bool) -> bool:
    """net.ParseIP: the first "." or ":" chooses the family (strict: "%" makes it invalid)."""
    first = re.search("[.:%]", text)
    if first is None or first.group() == "%":
        return False
    return _ipv4(text, sloppy) if first.group() == "." else "%" not in text and _ipv6(text, sloppy)


def _is_cidr(text: str) -> bool:
    """netutils.ParseCIDRSloppy: an address, "/", a decimal prefix no longer than the address."""
    address, slash, prefix = text.partition("/")
    bits = 32 if _ipv4(address, True) else 128 if _ipv6(address, True) else 0
    return bool(slash and bits and re.fullmatch("[0-9]+", prefix)) and int(prefix) <= bits


def _is_mac(text: str) -> bool:
    """net.ParseMAC: 6, 8 or 20 octets as xx:xx or xx-xx (one separator throughout), or xxxx.xxxx."""
    for count in (6, 8, 20):
        pairs = rf"[0-9a-fA-F]{{2}}([:-])[0-9a-fA-F]{{2}}(\1[0-9a-fA-F]{{2}}){{{count - 2}}}"
        if re.fullmatch(pairs, text) or re.fullmatch(
            rf"[0-9a-fA-F]{{4}}(\.[0-9a-fA-F]{{4}}){{{count // 2 - 1}}}", text
        ):
            return True
    return False


def _hostname(text: str) -> bool:
    """strfmt IsHostname: HostnamePattern, at most 255 bytes, labels of at most 63 bytes."""

    def stand_in(char: str) -> str:
        if char.isascii() and (char.isalnum() or char in "-."):
            return char
        category = unicodedata.category(char)
        return "a" if category.startswith("L") else "~" if category.startswith("S") else "\0"

    mapped = "".join(stand_in(char) for char in text)
    encoded = text.encode()
    return bool(_HOSTNAME.fullmatch(mapped)) and len(encoded) <= 255 and all(len(p) <= 63 for p in encoded.split(b"."))


def _isbn(text: str, version: int) -> bool:
    """govalidator IsISBN: spaces and dashes dropped, then the ISBN-10 or ISBN-13 check digit."""
    digits = re.sub(rf"[{_WS}-]+", "", text)
    if version == 10 and re.fullmatch("[0-9]{9}X|[0-9]{10}", digits):
        values = [10 if char == "X" else int(char) for char in digits]
        return sum((i + 1) * v for i, v in enumerate(values)) % 11 == 0
    if version == 13 and re.fullmatch("[0-9]{13}", digits):
        checksum = sum((1, 3)[i % 2] * int(char) for i, char in enumerate(digits[:12]))
        return int(digits[12]) == (10 - checksum % 10) % 10
    return False


def _credit_card(text: str) -> bool:
    """govalidator IsCreditCard: the digits (anything else dropped) match a card pattern and pass Luhn."""
    digits = re.sub("[^0-9]+", "", text)
    if not re.fullmatch(_CREDIT_CARD, digits):
        return False
    doubled = [int(d) * (2 if i % 2 else 1) for i, d in enumerate(reversed(digits))]
    return sum(d - 9 if d >= 10 else d for d in doubled) % 10 == 0


def _unescapes(text: str, host: bool) -> bool:
    """net/url unescape: well-formed %XX; in a host only %25 or non-ASCII escapes and the host characters."""
    i = 0
    while i < len(text):
        if text[i] == "%":
            if i + 2 >= len(text) or not re.fullmatch("[0-9a-fA-F]{2}", text[i + 1 : i + 3]):
                return False
            if host and int(text[i + 1], 16) < 8 and text[i : i + 3] != "%25":
                return False
            i += 3
            continue
        if host and text[i].isascii() and not (text[i].isalnum() or text[i] in "-_.~!$&'()*+,;=:[]<>\""):
            return False
        i += 1
    return True


def _is_uri(text: str) -> bool:
    """govalidator IsRequestURI, i.e. Go's ``url.ParseRequestURI``: absolute URI or absolute path."""
    if text == "*":
        return True
    if not text or any(ord(char) < 0x20 or ord(char) == 0x7F for char in text) or text.startswith(":"):
        return False
    scheme = re.match(r"[A-Za-z][A-Za-z0-9+.\-]*:", text)
    rest = text[scheme.end() :] if scheme else text
    rest = rest[:-1] if rest.endswith("?") and rest.count("?") == 1 else rest.partition("?")[0]
    if not rest.startswith("/"):
        return scheme is not None
    if scheme and rest.startswith("//"):
        authority, slash, path = rest[2:].partition("/")
        rest = slash + path
        user, at, host = authority.rpartition("@")
        bracket = host.rfind("]") if host.startswith("[") else -2
        port = host[bracket + 1 :] if bracket >= -1 else host[host.rfind(":") :] if ":" in host else ""
        if bracket == -1 or not re.fullmatch("(:[0-9]*)?", port) or not _unescapes(host, True):
            return False
        if at and not (re.fullmatch(r"[A-Za-z0-9\-._:~!$&'()*+,;=%@]*", user) and _unescapes(user, False)):
            return False
    return _unescapes(rest, False)


FORMATS: dict[str, Callable[[str], bool]] = {
    "bsonobjectid": _fullmatch("[0-9a-fA-F]{24}"),
    "uri": _is_uri,
    "email": lambda text: _Mail(text).single(),
    "hostname": _hostname,
    "ipv4": lambda text: "." in text and _parse_ip(text, sloppy=True),
    "ipv6": lambda text: ":" in text and _parse_ip(text, sloppy=False),
    "cidr": _is_cidr,
    "mac": _is_mac,
    "uuid": _fullmatch(_UUID % ("[0-9a-f]", "[0-9a-f]"), re.I),
    "uuid3": _fullmatch(_UUID % ("3", "[0-9a-f]"), re.I),
    "uuid4": _fullmatch(_UUID % ("4", "[89ab]"), re.I),
    "uuid5": _fullmatch(_UUID % ("5", "[89ab]"), re.I),
    "isbn": lambda text: _isbn(text, 10) or _isbn(text, 13),
    "isbn10": lambda text: _isbn(text, 10),
    "isbn13": lambda text: _isbn(text, 13),
    "creditcard": _credit_card,
    "ssn": lambda text: len(text.encode()) == 11 and bool(re.fullmatch("[0-9]{3}[- ]?[0-9]{2}[- ]?[0-9]{4}", text)),
    "hexcolor": _fullmatch("#?([0-9a-fA-F]{3}|[0-9a-fA-F]{6})"),
    "rgbcolor": _fullmatch(rf"rgb\([{_WS}]*{_OCTET}[{_WS}]*,[{_WS}]*{_OCTET}[{_WS}]*,[{_WS}]*{_OCTET}[{_WS}]*\)"),
    "byte": _fullmatch(r"([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=|[A-Za-z0-9+/]{4})"),
    "password": lambda text: True,
    "date": _is_date,
    "duration": lambda text: duration_ns(text) is not None,
    "datetime": _is_date_time,
    "k8sshortname": lambda text: len(text) <= 63 and bool(re.fullmatch(_SHORT_NAME, text)),
    "k8slongname": lambda text: len(text) <= 253 and bool(re.fullmatch(rf"{_SHORT_NAME}(\.{_SHORT_NAME})*", text)),
}


def format_valid(name: str, value: str) -> bool | None:
    """Whether ``value`` is of format ``name`` (dashes ignored, as strfmt does); None for an ignored format."""
    check = FORMATS.get(name.replace("-", ""))
    return None if check is None else check(value)


class _Mail:
    """Go's ``net/mail.ParseAddress`` (strfmt IsEmail), as far as validity goes: an addr-spec or a
    display name and <addr-spec>, quoted strings, comments, domain literals holding an IP, groups."""

    def __init__(self, text: str) -> None:
        self.s = text

    def single(self) -> bool:
        count = self.address(group=True)
        return count == 1 and self.cfws() and not self.s

    def space(self) -> None:
        self.s = self.s.lstrip(" \t")

    def take(self, char: str) -> bool:
        found = self.s.startswith(char)
        self.s = self.s[1:] if found else self.s
        return found

    def atom(self, permissive: bool) -> str | None:
        def atext(c: str) -> bool:
            special = permissive if c in "()[];@\\," else c == "."
            return special if c in '()[];@\\,.<>":' else ("!" <= c <= "~" or ord(c) >= 0x80)

        size = next((i for i, c in enumerate(self.s) if not atext(c)), len(self.s))
        word, self.s = self.s[:size], self.s[size:]
        if not word or (not permissive and (word[0] == "." or word[-1] == "." or ".." in word)):
            self.s = word + self.s
            return None
        return word

    def quoted(self) -> str | None:
        escaped, out = False, ""
        for i, char in enumerate(self.s[1:], start=1):
            visible = "!" <= char <= "~" or ord(char) >= 0x80 or char in " \t"
            if escaped or (visible and char not in '"\\'):
                if not visible:
                    return None
                escaped, out = False, out + char
            elif char == '"':
                self.s = self.s[i + 1 :]
                return out
            elif char == "\\":
                escaped = True
            else:
                return None
        return None

    def comment(self) -> bool:
        depth = 1
        while self.s and depth:
            if self.s[0] == "\\" and len(self.s) > 1:
                self.s = self.s[1:]
            else:
                depth += {"(": 1, ")": -1}.get(self.s[0], 0)
            self.s = self.s[1:]
        return depth == 0

    def cfws(self) -> bool:
        self.space()
        while self.take("("):
            if not self.comment():
                return False
            self.space()
        return True

    def addr_spec(self) -> bool:
        saved = self.s
        self.space()
        local = (self.quoted() if self.s.startswith('"') else self.atom(False)) if self.s else None
        if local and self.take("@"):
            self.space()
            if self.take("["):
                literal, bracket, self.s = self.s.partition("]")
                if bracket and all(c not in "[\\" and ("!" <= c <= "~" or ord(c) >= 0x80) for c in literal):
                    if _parse_ip(literal, sloppy=False):
                        return True
            elif self.s and self.atom(False) is not None:
                return True
        self.s = saved
        return False

    def address(self, group: bool) -> int | None:
        self.space()
        if not self.s:
            return None
        if self.addr_spec():
            self.space()
            return 1 if not self.take("(") or self.comment() else None
        words = 0
        while not self.s.startswith("<"):
            if words and not self.cfws():
                return None
            self.space()
            word = (self.quoted() if self.s.startswith('"') else self.atom(True)) if self.s else None
            if word is None:
                break
            words += 1
        self.space()
        if not words and not self.s.startswith("<"):
            return None
        if group and self.take(":"):
            return self.group()
        return 1 if self.take("<") and self.addr_spec() and self.take(">") else None

    def group(self) -> int | None:
        count = 0
        self.space()
        if self.take(";"):
            return count if self.cfws() else None
        while True:
            self.space()
            found = self.address(group=False)
            if found is None or not self.cfws():
                return None
            count += found
            if self.take(";"):
                return count if self.cfws() else None
            if not self.take(","):
                return None
