"""How readable a message is: the visible text of its HTML, and its Flesch reading-ease score.

The score is 206.835 - 1.015 * (words / sentences) - 84.6 * (syllables / words): around 100 and above
reads easily, under 30 reads like a legal or academic text. Syllables come from an English heuristic
(vowel groups, a silent final "e", "-es" and "-ed" that add no syllable), good for comparing messages,
not for a dictionary. Every step is linear in the size of the input.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from html import unescape
from typing import Final

from politetenant.tracker.messages.html_rewrite import BREAKING_ELEMENTS, END, RAW, START, TEXT, HtmlScanner

# Raw-text elements whose content a reader sees; <script>, <style>, <title>, <iframe>, ... are dropped.
_VISIBLE_RAW: Final = frozenset({"textarea", "xmp", "plaintext"})
_RCDATA: Final = frozenset({"textarea", "title"})  # raw-text elements whose character references decode


def text_of_html(html: str) -> str:
    """The text a reader sees: no tags, comments, scripts, styles, title or templates; single spaces.

    Block elements and `<br>` separate words. What the head holds besides text is raw text or has
    none, so it drops out too (text a body writes inside `<head>` is shown by browsers, and kept).
    """
    parts: list[str] = []
    in_template = 0
    for kind, start, end, name, _closed in HtmlScanner(html):
        if kind == TEXT:
            if not in_template:
                parts.append(unescape(html[start:end]))
        elif kind == RAW:
            if name in _VISIBLE_RAW and not in_template:
                raw = html[start:end]
                parts.append(unescape(raw) if name in _RCDATA else raw)
        elif kind == START:
            if name == "template":
                in_template += 1
            elif name in BREAKING_ELEMENTS:
                parts.append(" ")
        elif kind == END:
            if name == "template":
                in_template = max(0, in_template - 1)
            elif name in BREAKING_ELEMENTS:
                parts.append(" ")
    return " ".join("".join(parts).split())


@dataclass(frozen=True, slots=True)
class Readability:
    """Counts behind the score; flesch_reading_ease is None when there are no words."""

    words: int
    sentences: int
    syllables: int
    flesch_reading_ease: float | None


_APOSTROPHES = "'\u2019"
# A word starts with a letter or digit (Unicode), then letters, digits and apostrophes ("don't").
_WORD = re.compile(rf"[^\W_]+(?:[{_APOSTROPHES}][^\W_]*)*")
_WORD_CHAR = re.compile(r"[^\W_]")
# A run of sentence-ending marks that no letter or digit follows ("3.14" and "example.com" go on).
_SENTENCE_END = re.compile(r"[.!?…。！？]+(?![^\W_])")
# Abbreviations whose period does not end a sentence (lowercase, without the final period).
_ABBREVIATIONS: Final = frozenset({"mr", "mrs", "ms", "dr", "prof", "sr", "jr", "vs", "e.g", "i.e", "cf", "approx"})
_ABBREVIATION_TAIL = re.compile(r"[^\W_]+(?:[.][^\W_]+)*\Z")

_VOWELS: Final = "aeiouyàáâãäåæèéêëìíîïòóôõöøùúûüýÿœ"
_VOWEL_GROUP = re.compile(f"[{_VOWELS}]+")
# "-es" after these is a syllable of its own ("boxes", "wishes", "places", "changes")
_SIBILANT_BEFORE_ES: Final = ("s", "x", "z", "ch", "sh", "c", "g")


def count_syllables(word: str) -> int:
    """Heuristic English syllables of one word (at least 1)."""
    w = word.lower()
    for apostrophe in _APOSTROPHES:
        w = w.replace(apostrophe, "")
    # "y" opens a word as a consonant ("yes", "you"), elsewhere it is a vowel ("sky", "system").
    count = len(_VOWEL_GROUP.findall(w, 1 if w.startswith("y") else 0))
    if count > 1:
        if w.endswith("e") and len(w) > 2 and w[-2] not in _VOWELS:
            # a silent final "e" ("make"), except a syllabic "-le" after a consonant ("table")
            if not (w[-2] == "l" and len(w) > 3 and w[-3] not in _VOWELS):
                count -= 1
        elif w.endswith("es") and len(w) > 3 and w[-3] not in _VOWELS:
            syllabic_le = w[-3] == "l" and len(w) > 4 and w[-4] not in _VOWELS  # "tables"
            if not syllabic_le and not w[:-2].endswith(_SIBILANT_BEFORE_ES):
                count -= 1
        elif w.endswith("ed") and len(w) > 3 and w[-3] not in _VOWELS and w[-3] not in "td":  # "jumped"
            count -= 1
    return max(count, 1)


def measure(text: str) -> Readability:
    """Words, sentences, syllables and the Flesch reading ease (1 decimal) of plain text.

    Words are runs of letters, digits and apostrophes. A sentence ends at ".", "!", "?" or "…" (a run
    of them counts once) that follows a word and is not followed by a letter or digit ("3.14",
    "example.com"), nor closes a common abbreviation ("Dr.", "e.g."); text after the last end is a
    sentence too, so there is at least one sentence whenever there is a word.
    """
    text = unicodedata.normalize("NFC", text)
    words = _WORD.findall(text)
    if not words:
        return Readability(words=0, sentences=0, syllables=0, flesch_reading_ease=None)
    syllables = sum(count_syllables(word) * n for word, n in Counter(map(str.lower, words)).items())
    sentences = 0
    seen_word = False  # a word since the last sentence end, before `last`
    last = 0
    for m in _SENTENCE_END.finditer(text):
        seen_word = seen_word or _WORD_CHAR.search(text, last, m.start()) is not None
        last = m.end()
        if seen_word and not (m.group() == "." and _is_abbreviation(text, m.start())):
            sentences += 1
            seen_word = False
    if seen_word or _WORD_CHAR.search(text, last) is not None:
        sentences += 1
    score = 206.835 - 1.015 * (len(words) / sentences) - 84.6 * (syllables / len(words))
    return Readability(words=len(words), sentences=sentences, syllables=syllables, flesch_reading_ease=round(score, 1))


def _is_abbreviation(text: str, period: int) -> bool:
    tail = _ABBREVIATION_TAIL.search(text, max(0, period - 8), period)
    return tail is not None and tail.group().lower() in _ABBREVIATIONS
