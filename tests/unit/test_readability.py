"""Readability as an analyst reads it: the visible text of a message and its Flesch reading ease."""

from __future__ import annotations

import pytest

from politetenant.tracker.messages.readability import Readability, count_syllables, measure, text_of_html


def flesch(words: int, sentences: int, syllables: int) -> float:
    return round(206.835 - 1.015 * (words / sentences) - 84.6 * (syllables / words), 1)


def test_the_cat_sat_on_the_mat_reads_very_easily() -> None:
    result = measure("The cat sat on the mat.")
    assert result == Readability(words=6, sentences=1, syllables=6, flesch_reading_ease=116.1)
    assert result.flesch_reading_ease == flesch(6, 1, 6)


def test_dense_academic_sentence_reads_hard() -> None:
    text = (
        "The implementation of comprehensive organizational methodologies necessitates considerable "
        "institutional deliberation."
    )
    # the 1, im-ple-men-ta-tion 5, of 1, com-pre-hen-sive 4, or-gan-i-za-tion-al 6, meth-od-ol-o-gies 5,
    # ne-ces-si-tates 4, con-sid-er-a-ble 5, in-sti-tu-tion-al 5, de-lib-er-a-tion 5
    result = measure(text)
    assert (result.words, result.sentences, result.syllables) == (10, 1, 41)
    assert result.flesch_reading_ease == flesch(10, 1, 41) == -150.2


def test_plain_office_message_scores_in_between() -> None:
    # we 1, moved 1, the 1, meet-ing 2, to 1, Fri-day 2 / please 1, bring 1, your 1, notes 1
    result = measure("We moved the meeting to Friday. Please bring your notes.")
    assert (result.words, result.sentences, result.syllables) == (10, 2, 12)
    assert result.flesch_reading_ease == flesch(10, 2, 12) == 100.2


def test_no_words_gives_no_score() -> None:
    assert measure("") == Readability(words=0, sentences=0, syllables=0, flesch_reading_ease=None)
    assert measure("  ... !!! — ").flesch_reading_ease is None


def test_text_without_punctuation_is_one_sentence() -> None:
    result = measure("see you at the party")
    assert (result.words, result.sentences) == (5, 1)


def test_sentence_ends_are_counted_once_per_run() -> None:
    assert measure("Really?! Yes... Fine. Go").sentences == 4
    assert measure("Hello. . .").sentences == 1


def test_decimal_numbers_addresses_and_abbreviations_do_not_end_sentences() -> None:
    result = measure("Dr. Smith paid 3.50 at example.com today, e.g. by card. Mr. Jones did not.")
    assert result.sentences == 2
    assert result.words == 17  # "3.50", "example.com" and "e.g" are two words each


def test_words_are_letters_digits_and_apostrophes_in_any_script() -> None:
    assert measure("Don't stop, it's 2024!").words == 4
    assert measure("Ça va très bien. Über alles, naïve café.").words == 8
    assert measure("Привет мир").words == 2
    assert measure("snake_case").words == 2


@pytest.mark.parametrize(
    ("word", "syllables"),
    [
        ("cat", 1),
        ("the", 1),
        ("make", 1),  # silent final e
        ("table", 2),  # ...but a syllabic -le
        ("little", 2),
        ("agree", 2),
        ("jumped", 1),  # -ed after a consonant other than t/d adds nothing
        ("wanted", 2),
        ("cakes", 1),
        ("boxes", 2),  # -es after a sibilant is a syllable
        ("places", 2),
        ("tables", 2),
        ("yes", 1),  # y opening a word is a consonant
        ("sky", 1),
        ("people", 2),
        ("beautiful", 3),
        ("don't", 1),
        ("2024", 1),  # at least one
        ("rhythm", 1),
    ],
)
def test_syllable_heuristic(word: str, syllables: int) -> None:
    assert count_syllables(word) == syllables


def test_text_of_html_keeps_only_what_a_reader_sees() -> None:
    html = """<!DOCTYPE html><html><head><title>Subject line</title>
    <style>p { color: red }</style><meta name="x" content="hidden"></head>
    <body><!-- a comment --><p>Hello&nbsp;<b>wor</b>ld &amp; friends</p>
    <script>var hidden = "<p>not text</p>";</script>
    <p>Second<br>line</p><div>Third</div><template><p>inert</p></template>
    <img src="x.png" alt="not visible text"></body></html>"""
    assert text_of_html(html) == "Hello world & friends Second line Third"


def test_text_of_html_of_plain_text_is_the_text() -> None:
    assert text_of_html("  just   some\n\ntext  ") == "just some text"
    assert text_of_html("") == ""
    assert text_of_html("a < b and c > d") == "a < b and c > d"


def test_text_of_html_survives_garbage() -> None:
    for garbage in ["<", "<!--", "<script>", "<a href='", "</", "<!", "&", "<style>x", "<p>unclosed <b>tags"]:
        assert isinstance(text_of_html(garbage), str)
    assert text_of_html("<p>unclosed <b>tags") == "unclosed tags"
    assert text_of_html("visible<!-- never closed") == "visible"


def test_measure_of_a_message_body() -> None:
    html = "<html><body><h1>Welcome aboard</h1><p>The cat sat on the mat.</p></body></html>"
    text = text_of_html(html)
    assert text == "Welcome aboard The cat sat on the mat."
    # wel-come 2, a-board 2, then six words of one syllable; one sentence (the heading has no period)
    assert measure(text) == Readability(words=8, sentences=1, syllables=10, flesch_reading_ease=flesch(8, 1, 10))


def test_five_megabyte_message_is_measured() -> None:
    paragraph = "<p>We moved the meeting to Friday. Please bring your notes.</p><script>var x = 1;</script>\n"
    html = "<html><body>" + paragraph * (5_000_000 // len(paragraph) + 1) + "</body></html>"
    copies = 5_000_000 // len(paragraph) + 1
    text = text_of_html(html)
    result = measure(text)
    assert (result.words, result.sentences, result.syllables) == (10 * copies, 2 * copies, 12 * copies)
    assert result.flesch_reading_ease == 100.2
