"""Registering a message and reporting on it, as pure functions: modes, rows, tokens, limits, thresholds."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import pytest

from politetenant.crypto import Keyring, KeySet, Sealer, TokenCodec, blind_index, link_row, recipient_row
from politetenant.settings import TrackerSettings, TrackingMode
from politetenant.tracker.http.errors import PayloadTooLarge, Unprocessable
from politetenant.tracker.judging.verdicts import Reason
from politetenant.tracker.messages.api_models import MessageIn
from politetenant.tracker.messages.registration import PreparedMessage, check_limits, prepare_message, resolve_mode
from politetenant.tracker.reports.build import build_report, headline
from politetenant.tracker.reports.report_data import ReportInputs, Tally
from politetenant.tracker.reports.thresholds import ALL
from politetenant.tracker.storage.rows import LinkRow, MessageRow

BASE = "https://t.acme.example"
SUBJECT = "Quarterly all-hands: new parental leave policy"
FROM_NAME = "Dana Whitfield"
FROM_EMAIL = "dana.whitfield@example.com"
LIST_NAME = "All staff Dublin"
POLICY_URL = "https://intranet.example.com/policy?id=7"
FAQ_URL = "https://hr.example.com/faq"
UNTRACKED_URL = "https://example.com/unsubscribe"
HTML = (
    "<html><body><p>The cat sat on the mat. The dog ran.</p>"
    f'<p><a href="{POLICY_URL}">Read more</a> <a href="{FAQ_URL}">FAQ</a> '
    f'<a href="{UNTRACKED_URL}">Leave</a></p></body></html>'
)
DEPARTMENTS = ["Finance Treasury", "Engineering Platform", "Sales Benelux"]


def email_of(i: int) -> str:
    return f"zq-recipient-{i:04d}@corp-mail.example"


def name_of(i: int) -> str:
    return f"Quillon Recipient{i:04d}"


def body(count: int = 12, **extra: Any) -> MessageIn:
    data: dict[str, Any] = {
        "subject": SUBJECT,
        "from_name": FROM_NAME,
        "from_email": FROM_EMAIL,
        "list_name": LIST_NAME,
        "html": HTML,
        "no_track_urls": [UNTRACKED_URL],
        "recipients": [
            {
                "email": email_of(i),
                "name": name_of(i),
                "attributes": {"department": DEPARTMENTS[i % 3], "site": f"Building-{i % 4}-North"},
            }
            for i in range(count)
        ],
    }
    data.update(extra)
    return MessageIn.model_validate(data)


@pytest.fixture(scope="module")
def keyring() -> Keyring:
    keys = KeySet(version=1, dek=os.urandom(32), token_key=os.urandom(32), index_key=os.urandom(32))
    return Keyring("acme", [keys])


@pytest.fixture(scope="module")
def sealer(keyring: Keyring) -> Sealer:
    return Sealer(keyring)


@pytest.fixture(scope="module")
def codec(keyring: Keyring) -> TokenCodec:
    return TokenCodec(keyring)


SETTINGS = TrackerSettings(tenant_id="acme", public_base_url=BASE)


def prepare(
    keyring: Keyring,
    sealer: Sealer,
    codec: TokenCodec,
    mode: TrackingMode,
    message: MessageIn | None = None,
    objected: set[int] | None = None,
    settings: TrackerSettings = SETTINGS,
) -> PreparedMessage:
    message = message or body()
    return prepare_message(message, mode, settings, sealer, codec, objected or set(), "tok_sender1")


# Records keep the department (5 recipients each in body(15)); "site" is not a segment: dropped.
SEGMENTED = TrackerSettings(
    tenant_id="acme", public_base_url=BASE, segment_attributes=("department",), min_segment_size=5
)


def record_ids_of(codec: TokenCodec, tokens: list[str | None]) -> list[bytes]:
    ids = []
    for token in tokens:
        assert token is not None
        verified = codec.verify(token)
        assert verified is not None
        ids.append(verified.record_id)
    return ids


# --------------------------------------------------------------------------------------------------
# Choosing the mode


def test_message_without_a_mode_gets_the_tenant_default() -> None:
    assert resolve_mode(None, TrackerSettings()) is TrackingMode.ANONYMOUS
    assert resolve_mode(None, TrackerSettings(default_mode=TrackingMode.AGGREGATE)) is TrackingMode.AGGREGATE


def test_allowed_mode_is_kept_as_asked() -> None:
    for mode in TrackingMode:
        assert resolve_mode(mode, TrackerSettings()) is mode


def test_mode_the_tenant_does_not_allow_is_refused_naming_the_allowed_modes() -> None:
    settings = TrackerSettings(allowed_modes=(TrackingMode.ANONYMOUS, TrackingMode.AGGREGATE))
    with pytest.raises(Unprocessable) as info:
        resolve_mode(TrackingMode.INDIVIDUAL, settings)
    assert info.value.status == 422
    assert info.value.code == "mode_not_allowed"
    assert info.value.message == ("mode 'individual' is not allowed for this tenant; allowed: anonymous, aggregate")


def test_locked_tenant_refuses_every_mode_but_its_default() -> None:
    settings = TrackerSettings(default_mode=TrackingMode.AGGREGATE, mode_locked=True)
    assert resolve_mode(None, settings) is TrackingMode.AGGREGATE
    assert resolve_mode(TrackingMode.AGGREGATE, settings) is TrackingMode.AGGREGATE
    for mode in (TrackingMode.INDIVIDUAL, TrackingMode.ANONYMOUS):
        with pytest.raises(Unprocessable) as info:
            resolve_mode(mode, settings)
        assert info.value.code == "mode_not_allowed"
        assert "locked" in info.value.message
        assert info.value.message.endswith("allowed: aggregate")


# --------------------------------------------------------------------------------------------------
# Limits


def test_html_over_the_tenant_limit_is_too_large() -> None:
    settings = TrackerSettings(max_html_bytes=1024)
    check_limits(body(2, html="x" * 1024), settings)
    with pytest.raises(PayloadTooLarge) as info:
        check_limits(body(2, html="x" * 1025), settings)
    assert info.value.status == 413
    assert info.value.message == "html: 1025 bytes; this tenant accepts at most 1024"
    with pytest.raises(PayloadTooLarge, match="1026 bytes"):  # counted in UTF-8 bytes, not characters
        check_limits(body(2, html="é" * 513), settings)


def test_too_many_recipients_is_refused() -> None:
    settings = TrackerSettings(max_recipients=2)
    check_limits(body(2), settings)
    with pytest.raises(Unprocessable) as info:
        check_limits(body(3), settings)
    assert info.value.status == 422
    assert info.value.code == "too_many_recipients"
    assert info.value.message == "recipients: 3 given; at most 2 per message"


# --------------------------------------------------------------------------------------------------
# Rows per mode


def test_anonymous_message_has_one_unlinked_record_per_recipient(
    keyring: Keyring, sealer: Sealer, codec: TokenCodec
) -> None:
    message = body(15)
    prepared = prepare(keyring, sealer, codec, TrackingMode.ANONYMOUS, message, settings=SEGMENTED)
    assert prepared.message.mode == "anonymous"
    assert len(prepared.records) == 15
    assert len(set(prepared.tokens)) == 15
    assert all(r.subject_index is None for r in prepared.records)
    assert sorted(record_ids_of(codec, prepared.tokens)) == sorted(r.id for r in prepared.records)
    recipient_indexes = {r.email_index for r in prepared.recipients}
    for record in prepared.records:
        assert record.message_id == prepared.message.id
        assert len(record.id) == 12
        assert record.id not in recipient_indexes
    # the tenant's segment attributes travel with the record, and nothing else the sender passed
    opened = sorted(sealer.open_text("record.attributes", r.attributes, row=r.id) for r in prepared.records)
    expected = sorted(
        json.dumps({"department": r.attributes["department"]}, separators=(",", ":")) for r in message.recipients
    )
    assert opened == expected


def test_records_keep_no_attribute_the_tenant_does_not_name_as_a_segment(
    keyring: Keyring, sealer: Sealer, codec: TokenCodec
) -> None:
    for mode in (TrackingMode.ANONYMOUS, TrackingMode.INDIVIDUAL):
        prepared = prepare(keyring, sealer, codec, mode, body(15))  # SETTINGS names no segment
        assert [r.attributes for r in prepared.records] == [None] * 15
        # the recipient rows keep the whole map: the person's own data, for an access request
        assert all(r.attributes is not None for r in prepared.recipients)


def test_anonymous_records_are_not_stored_in_recipient_order(
    keyring: Keyring, sealer: Sealer, codec: TokenCodec
) -> None:
    prepared = prepare(keyring, sealer, codec, TrackingMode.ANONYMOUS, body(200))
    in_token_order = record_ids_of(codec, prepared.tokens)
    stored_order = [r.id for r in prepared.records]
    assert set(stored_order) == set(in_token_order)
    assert stored_order != in_token_order
    assert stored_order != in_token_order[::-1]


def test_individual_records_carry_the_recipients_blind_index(
    keyring: Keyring, sealer: Sealer, codec: TokenCodec
) -> None:
    message = body(15)
    prepared = prepare(keyring, sealer, codec, TrackingMode.INDIVIDUAL, message, settings=SEGMENTED)
    assert prepared.message.mode == "individual"
    by_id = {r.id: r for r in prepared.records}
    assert len(by_id) == 15
    for recipient, record_id in zip(message.recipients, record_ids_of(codec, prepared.tokens), strict=True):
        record = by_id[record_id]
        assert record.subject_index == blind_index(keyring, recipient.email)
        attributes = json.loads(sealer.open_text("record.attributes", record.attributes, row=record.id))
        assert attributes == {"department": recipient.attributes["department"]}


def test_aggregate_message_has_one_record_and_one_token_for_everyone(
    keyring: Keyring, sealer: Sealer, codec: TokenCodec
) -> None:
    prepared = prepare(keyring, sealer, codec, TrackingMode.AGGREGATE, body(12))
    assert prepared.message.mode == "aggregate"
    assert len(prepared.records) == 1
    (record,) = prepared.records
    assert record.subject_index is None
    assert record.attributes is None
    assert len(prepared.tokens) == 12
    assert len(set(prepared.tokens)) == 1
    assert record_ids_of(codec, prepared.tokens) == [record.id] * 12
    assert prepared.message.tracked == 12


@pytest.mark.parametrize("mode", [TrackingMode.ANONYMOUS, TrackingMode.INDIVIDUAL])
def test_objected_recipients_get_no_token_and_no_record(
    keyring: Keyring, sealer: Sealer, codec: TokenCodec, mode: TrackingMode
) -> None:
    prepared = prepare(keyring, sealer, codec, mode, body(12), objected={1, 5, 11})
    assert [i for i, t in enumerate(prepared.tokens) if t is None] == [1, 5, 11]
    assert len(prepared.records) == 9
    assert sorted(record_ids_of(codec, [t for t in prepared.tokens if t])) == sorted(r.id for r in prepared.records)
    assert len(prepared.recipients) == 12  # who it was sent to is still kept
    assert prepared.message.recipients == 12
    assert prepared.message.tracked == 9
    if mode is TrackingMode.INDIVIDUAL:
        objected_indexes = {blind_index(keyring, email_of(i)) for i in (1, 5, 11)}
        assert not objected_indexes & {r.subject_index for r in prepared.records}


def test_aggregate_objected_recipients_get_no_token(keyring: Keyring, sealer: Sealer, codec: TokenCodec) -> None:
    prepared = prepare(keyring, sealer, codec, TrackingMode.AGGREGATE, body(4), objected={0, 2})
    assert prepared.tokens[0] is None and prepared.tokens[2] is None
    assert prepared.tokens[1] is not None and prepared.tokens[1] == prepared.tokens[3]
    assert len(prepared.records) == 1
    assert prepared.message.tracked == 2


def test_aggregate_message_where_everyone_objected_has_no_record(
    keyring: Keyring, sealer: Sealer, codec: TokenCodec
) -> None:
    prepared = prepare(keyring, sealer, codec, TrackingMode.AGGREGATE, body(3), objected={0, 1, 2})
    assert prepared.records == []
    assert prepared.tokens == [None, None, None]
    assert prepared.message.tracked == 0
    assert len(prepared.recipients) == 3


@pytest.mark.parametrize("mode", list(TrackingMode))
def test_recipient_rows_hold_a_sealed_address_and_its_blind_index(
    keyring: Keyring, sealer: Sealer, codec: TokenCodec, mode: TrackingMode
) -> None:
    message = body(5)
    prepared = prepare(keyring, sealer, codec, mode, message)
    assert len(prepared.tokens) == len(prepared.recipients) == 5
    for i, row in enumerate(prepared.recipients):
        assert row.message_id == prepared.message.id
        rid = recipient_row(row.message_id, row.email_index)
        assert sealer.open_text("recipient.email", row.email, row=rid) == email_of(i)
        assert row.email_index == blind_index(keyring, email_of(i))
        assert sealer.open_text("recipient.name", row.name, row=rid) == name_of(i)
        attributes = json.loads(sealer.open_text("recipient.attributes", row.attributes, row=rid))
        assert attributes == message.recipients[i].attributes


def test_recipient_without_name_or_attributes_stores_none(keyring: Keyring, sealer: Sealer, codec: TokenCodec) -> None:
    message = body(1, recipients=[{"email": email_of(0)}])
    prepared = prepare(keyring, sealer, codec, TrackingMode.ANONYMOUS, message)
    assert prepared.recipients[0].name is None
    assert prepared.recipients[0].attributes is None
    assert prepared.records[0].attributes is None


def _all_values(prepared: PreparedMessage) -> list[Any]:
    values: list[Any] = [getattr(prepared.message, f.name) for f in dataclasses.fields(prepared.message)]
    for row in [*prepared.recipients, *prepared.records, *prepared.links]:
        values.extend(row)
    return values


@pytest.mark.parametrize("mode", list(TrackingMode))
def test_no_personal_plaintext_is_in_any_stored_row(
    keyring: Keyring, sealer: Sealer, codec: TokenCodec, mode: TrackingMode
) -> None:
    prepared = prepare(keyring, sealer, codec, mode, body(6))
    secrets = [SUBJECT, FROM_NAME, FROM_EMAIL, "dana.whitfield", LIST_NAME, POLICY_URL, FAQ_URL, "intranet.example"]
    secrets += ["Read more", *DEPARTMENTS, "Building-", "Finance", "Quillon", "zq-recipient", "corp-mail"]
    for i in range(6):
        secrets += [email_of(i), name_of(i)]
    shown = repr(prepared.message) + repr(prepared.recipients) + repr(prepared.records) + repr(prepared.links)
    raw = b"".join(v for v in _all_values(prepared) if isinstance(v, bytes))
    text = " ".join(v for v in _all_values(prepared) if isinstance(v, str))
    for secret in secrets:
        assert secret not in shown, secret
        assert secret.lower() not in shown.lower(), secret
        assert secret.encode() not in raw, secret
        assert secret not in text, secret


def test_links_start_with_the_honeypot_then_the_tracked_links_in_order(
    keyring: Keyring, sealer: Sealer, codec: TokenCodec
) -> None:
    prepared = prepare(keyring, sealer, codec, TrackingMode.ANONYMOUS)
    message_id = prepared.message.id
    assert prepared.links[0] == LinkRow(message_id, 0, None, None)
    assert [link.link_no for link in prepared.links] == [0, 1, 2]
    rows = [link_row(message_id, link.link_no) for link in prepared.links[1:]]
    urls = [sealer.open_text("link.url", link.url, row=row) for link, row in zip(prepared.links[1:], rows, strict=True)]
    texts = [
        sealer.open_text("link.text", link.text, row=row) for link, row in zip(prepared.links[1:], rows, strict=True)
    ]
    assert (urls, texts) == ([POLICY_URL, FAQ_URL], ["Read more", "FAQ"])
    assert all(link.message_id == message_id for link in prepared.links)
    assert prepared.message.link_count == 2


def test_template_holds_beacons_and_rewritten_links_not_the_tracked_urls(
    keyring: Keyring, sealer: Sealer, codec: TokenCodec
) -> None:
    template = prepare(keyring, sealer, codec, TrackingMode.ANONYMOUS).html_template
    assert f"{BASE}/o/{{{{polite_token}}}}.gif" in template
    assert f"{BASE}/t/{{{{polite_token}}}}.gif" in template
    assert f'href="{BASE}/c/{{{{polite_token}}}}/1"' in template
    assert f'href="{BASE}/c/{{{{polite_token}}}}/2"' in template
    assert POLICY_URL not in template and FAQ_URL not in template
    assert f'href="{UNTRACKED_URL}"' in template  # listed as not to track


def test_message_row_holds_sealed_headers_counts_and_readability(
    keyring: Keyring, sealer: Sealer, codec: TokenCodec
) -> None:
    prepared = prepare(keyring, sealer, codec, TrackingMode.INDIVIDUAL, body(12), objected={4})
    m = prepared.message
    assert m.id.startswith("msg_") and len(m.id) == 24
    assert sealer.open_text("message.subject", m.subject, row=m.id) == SUBJECT
    assert sealer.open_text("message.from_name", m.from_name, row=m.id) == FROM_NAME
    assert sealer.open_text("message.from_email", m.from_email, row=m.id) == FROM_EMAIL
    assert sealer.open_text("message.list_name", m.list_name, row=m.id) == LIST_NAME
    assert (m.recipients, m.tracked) == (12, 11)
    # "The cat sat on the mat. The dog ran. Read more FAQ Leave": 13 one-syllable words, 3 sentences
    assert m.word_count == 13
    assert m.flesch == 117.8
    assert m.created_by == "tok_sender1"


def test_each_message_gets_its_own_id(keyring: Keyring, sealer: Sealer, codec: TokenCodec) -> None:
    ids = {prepare(keyring, sealer, codec, TrackingMode.AGGREGATE, body(1)).message.id for _ in range(20)}
    assert len(ids) == 20


# --------------------------------------------------------------------------------------------------
# Reports


def message_row(recipients: int, mode: str = "anonymous", tracked: int | None = None) -> MessageRow:
    return MessageRow(
        id="msg_0123456789abcdef0123",
        created_at=1_700_000_000_000,
        mode=mode,
        subject=b"sealed",
        from_name=b"sealed",
        from_email=b"sealed",
        list_name=b"sealed",
        recipients=recipients,
        tracked=recipients if tracked is None else tracked,
        word_count=13,
        flesch=117.8,
        link_count=2,
        created_by="tok_sender1",
    )


def inputs(**figures: int) -> ReportInputs:
    """A whole message's raw figures, as the accumulator would give them."""
    tally = Tally()
    for name, value in figures.items():
        setattr(tally, name, value)
    return ReportInputs({ALL: tally})


def gateway_scanned() -> ReportInputs:
    """7 openers of 10; the gateway scanned every copy (network) and two were fetched by Apple."""
    figures = inputs(tracked=10, opens_total=30, opens_unique=7, reads_unique=5, clicks_total=9, clicks_unique=4,
                     machine_records=10, machine_opens=10, machine_clicks=20, privacy_opens_total=2,
                     privacy_opens_unique=2)  # fmt: skip
    figures.tallies[ALL].reason_records[Reason.SCANNER_NETWORK] = 10
    figures.tallies[ALL].reason_masks[1 << Reason.SCANNER_NETWORK] = 10
    return figures


def test_report_below_the_minimum_segment_shows_no_figures() -> None:
    assert build_report(message_row(9), gateway_scanned(), 10) == {"id": "msg_0123456789abcdef0123", "suppressed": True}
    assert build_report(message_row(1), inputs(), 5) == {"id": "msg_0123456789abcdef0123", "suppressed": True}


def test_report_at_the_minimum_segment_shows_every_figure_it_safely_can() -> None:
    report = build_report(message_row(10, tracked=10), gateway_scanned(), 10)
    assert headline(report) == {
        "id": "msg_0123456789abcdef0123",
        "suppressed": False,
        "mode": "anonymous",
        "created_at": 1_700_000_000_000,
        "recipients": 10,
        "tracked": 10,
        "opens": {"unique": 7, "total": 30},
        "clicks": {"unique": 4, "total": 9},
        "reads": {"unique": 5},
        "proxied_opens": {"unique": 0, "total": 0},
        "privacy_proxy_opens": None,  # two of ten: below the threshold
        "machine": {
            "records": 10,
            "opens": 10,
            "clicks": 20,
            "by_reason": {"buckets": [{"label": "scanner_network", "records": 10}], "other": None},
        },
        "bots": {"opens": 10, "clicks": 20},  # Apple's two fetches are hidden, so not added in
        "content": {"links": 2, "word_count": 13, "flesch_reading_ease": 117.8},
    }
    assert report["rates"] == {"open": 0.7, "click": 0.4, "click_to_open": 0.5714, "read": 0.7143}


def test_report_threshold_follows_the_tenant_setting() -> None:
    assert build_report(message_row(25), gateway_scanned(), 25)["suppressed"] is False
    assert build_report(message_row(25), gateway_scanned(), 26) == {
        "id": "msg_0123456789abcdef0123",
        "suppressed": True,
    }


def test_aggregate_report_has_no_unique_figures() -> None:
    report = build_report(message_row(40, mode="aggregate"), gateway_scanned(), 10)
    assert report["opens"] == {"unique": None, "total": 30}
    assert report["clicks"] == {"unique": None, "total": 9}
    assert report["reads"] == {"unique": None}
    assert report["machine"] == {"records": None, "opens": 10, "clicks": 20, "by_reason": None}
    assert report["privacy_proxy_opens"] == {"unique": None, "total": 2}
    assert report["bots"] == {"opens": 12, "clicks": 20}
    assert report["mode"] == "aggregate"


def test_threshold_holds_for_the_tracked_people_not_the_recipient_list() -> None:
    # Nine of ten objected: the sender knows who the one tracked person is, so nothing may show.
    message = message_row(10, tracked=1)
    assert build_report(message, inputs(opens_unique=1, opens_total=1), 10) == {
        "id": message.id,
        "suppressed": True,
    }
