"""Per-tenant cryptography as a tenant notices it: sealed fields, blind indexes, tokens, key files."""

from __future__ import annotations

import base64
import json
import os
import random
import re
import stat
import unicodedata
from pathlib import Path

import pytest

from politetenant.crypto import (
    KeyMaterialError,
    Keyring,
    KeySet,
    LocalKeyProvider,
    Sealer,
    SealError,
    TokenCodec,
    VerifiedToken,
    blind_index,
    blind_indexes,
    link_row,
    new_record_id,
    normalise_email,
    provider_from_url,
    recipient_row,
)
from politetenant.crypto.tokens import RECORD_ID_BYTES, TOKEN_BYTES, TOKEN_CHARS

EMAIL = "dana.whitfield@example.com"
PLAINTEXT = EMAIL.encode()
B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def keyset(version: int = 1) -> KeySet:
    return KeySet(version=version, dek=os.urandom(32), token_key=os.urandom(32), index_key=os.urandom(32))


def keyring(tenant: str = "acme", *sets: KeySet) -> Keyring:
    return Keyring(tenant, sets or (keyset(1),))


def b64url_decode(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def b64url_encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


# --------------------------------------------------------------------------------------------------
# Sealing


def test_sealed_value_opens_to_the_original_bytes_and_text() -> None:
    sealer = Sealer(keyring())
    sealed = sealer.seal("recipient.email", PLAINTEXT)
    assert sealer.open("recipient.email", sealed) == PLAINTEXT
    assert sealer.open_text("recipient.email", sealer.seal_text("recipient.email", "Zoë Ångström")) == "Zoë Ångström"
    assert sealer.seal_optional("recipient.name", None) is None
    assert sealer.open_optional("recipient.name", None) is None
    assert sealer.open_optional("recipient.name", sealer.seal_optional("recipient.name", "Dana")) == "Dana"
    assert sealer.open("x", sealer.seal("x", b"")) == b""


def test_sealed_value_does_not_contain_the_plaintext() -> None:
    sealed = Sealer(keyring()).seal("recipient.email", PLAINTEXT)
    assert PLAINTEXT not in sealed
    assert len(sealed) == 2 + 12 + len(PLAINTEXT) + 16


def test_sealed_value_carries_its_key_version() -> None:
    ring = keyring("acme", keyset(1), keyset(7))
    sealed = Sealer(ring).seal("recipient.email", PLAINTEXT)
    assert Sealer.version_of(sealed) == 7
    assert sealed[:2] == b"\x00\x07"


def test_value_sealed_for_one_tenant_does_not_open_at_another() -> None:
    keys = keyset(1)
    sealed = Sealer(Keyring("acme", [keys])).seal("recipient.email", PLAINTEXT)
    with pytest.raises(SealError):
        Sealer(Keyring("globex", [keys])).open("recipient.email", sealed)


def test_value_sealed_under_one_field_does_not_open_under_another() -> None:
    sealer = Sealer(keyring())
    sealed = sealer.seal("recipient.email", PLAINTEXT)
    with pytest.raises(SealError, match="does not open"):
        sealer.open("recipient.name", sealed)


def test_any_single_bit_flip_in_a_sealed_value_is_refused() -> None:
    sealer = Sealer(keyring())
    sealed = sealer.seal("recipient.email", PLAINTEXT)
    for position in range(len(sealed)):
        for bit in range(8):
            tampered = bytearray(sealed)
            tampered[position] ^= 1 << bit
            with pytest.raises(SealError):
                sealer.open("recipient.email", bytes(tampered))


def test_truncated_sealed_value_is_refused() -> None:
    sealer = Sealer(keyring())
    sealed = sealer.seal("recipient.email", PLAINTEXT)
    for length in range(len(sealed)):
        with pytest.raises(SealError):
            sealer.open("recipient.email", sealed[:length])
    with pytest.raises(SealError, match="too short"):
        sealer.open("recipient.email", sealed[:29])


def test_value_sealed_before_a_rotation_still_opens_after_and_new_values_use_the_new_version() -> None:
    v1 = keyset(1)
    before = Sealer(Keyring("acme", [v1])).seal("recipient.email", PLAINTEXT)
    after_rotation = Sealer(Keyring("acme", [v1, keyset(2)]))
    assert after_rotation.open("recipient.email", before) == PLAINTEXT
    fresh = after_rotation.seal("recipient.email", PLAINTEXT)
    assert Sealer.version_of(before) == 1
    assert Sealer.version_of(fresh) == 2
    assert after_rotation.open("recipient.email", fresh) == PLAINTEXT


def test_value_sealed_with_a_version_that_is_not_loaded_names_the_version() -> None:
    v1 = keyset(1)
    sealed = Sealer(Keyring("acme", [v1, keyset(2)])).seal("recipient.email", PLAINTEXT)
    with pytest.raises(SealError, match=r"key version 2\b.*not loaded"):
        Sealer(Keyring("acme", [v1])).open("recipient.email", sealed)


def test_two_seals_of_the_same_plaintext_differ() -> None:
    sealer = Sealer(keyring())
    first, second = sealer.seal("f", PLAINTEXT), sealer.seal("f", PLAINTEXT)
    assert first != second
    assert first[2:14] != second[2:14]  # the nonces
    assert sealer.open("f", first) == sealer.open("f", second) == PLAINTEXT


def test_seal_errors_never_contain_the_plaintext() -> None:
    keys = keyset(1)
    sealer = Sealer(Keyring("acme", [keys]))
    sealed = sealer.seal("recipient.email", PLAINTEXT)
    attempts = [
        lambda: sealer.open("recipient.name", sealed),
        lambda: Sealer(Keyring("globex", [keys])).open("recipient.email", sealed),
        lambda: sealer.open("recipient.email", sealed[:-1]),
        lambda: sealer.open("recipient.email", sealed[:10]),
        lambda: sealer.open("recipient.email", b"\x00\x09" + sealed[2:]),
        lambda: sealer.open("recipient.email", sealed[:20] + bytes([sealed[20] ^ 1]) + sealed[21:]),
    ]
    for attempt in attempts:
        with pytest.raises(SealError) as info:
            attempt()
        text = f"{info.value} {info.value!r} {info.value.__cause__!r}"
        assert EMAIL not in text
        assert "dana" not in text.lower()


# --------------------------------------------------------------------------------------------------
# Sealing bound to a row (issue 13): a value copied into another row of its column does not open

LINK_ROW = link_row("msg_aaaa", 1)
OTHER_LINK_ROW = link_row("msg_bbbb", 1)


def test_row_bound_value_opens_for_its_row_only_and_the_error_names_the_field_not_the_value() -> None:
    sealer = Sealer(keyring())
    url = sealer.seal_text("link.url", "https://intranet.example.com/policy", row=LINK_ROW)
    assert sealer.open_text("link.url", url, row=LINK_ROW) == "https://intranet.example.com/policy"
    for wrong in (OTHER_LINK_ROW, link_row("msg_aaaa", 2), LINK_ROW.encode() + b"\x00", ""):
        with pytest.raises(SealError, match=r"sealed link\.url does not open for this tenant, field and row") as info:
            sealer.open_text("link.url", url, row=wrong)
        assert "intranet" not in f"{info.value} {info.value.__cause__!r}"
    with pytest.raises(SealError, match=r"sealed link\.url is bound to its row"):
        sealer.open_text("link.url", url)  # a caller that does not say which row gets nothing


def test_rows_given_as_text_and_as_bytes_are_the_same_identity_and_record_ids_work_as_bytes() -> None:
    sealer = Sealer(keyring())
    record_id = new_record_id()
    sealed = sealer.seal("record.attributes", b'{"department":"Legal"}', row=record_id)
    assert sealer.open("record.attributes", sealed, row=record_id) == b'{"department":"Legal"}'
    with pytest.raises(SealError):
        sealer.open("record.attributes", sealed, row=new_record_id())
    text_row = sealer.seal_text("message.subject", "Pay review", row="msg_aaaa")
    assert sealer.open_text("message.subject", text_row, row=b"msg_aaaa") == "Pay review"


def test_row_identities_name_the_message_link_and_blind_index_never_the_address() -> None:
    index = blind_index(keyring(), EMAIL)
    assert link_row("msg_aaaa", 3) == "msg_aaaa/3"
    assert recipient_row("msg_aaaa", index) == "msg_aaaa/" + index.hex()
    assert "dana" not in recipient_row("msg_aaaa", index)


def test_row_bound_value_marks_its_header_and_still_carries_its_key_version() -> None:
    ring = keyring("acme", keyset(1), keyset(7))
    bound = Sealer(ring).seal("recipient.email", PLAINTEXT, row="msg_aaaa/00")
    legacy = Sealer(ring).seal("recipient.email", PLAINTEXT)
    assert bound[:2] == b"\x80\x07" and legacy[:2] == b"\x00\x07"
    assert Sealer.version_of(bound) == Sealer.version_of(legacy) == 7
    assert Sealer.head_of(bound[:2]) == (7, True) and Sealer.head_of(legacy[:2]) == (7, False)
    assert Sealer.is_row_bound(bound) and not Sealer.is_row_bound(legacy)
    assert len(bound) == len(legacy)  # binding the row costs no byte at rest


def test_legacy_value_sealed_without_a_row_still_opens_with_or_without_one() -> None:
    """Rows written before this change stay readable until ``reseal`` binds them."""
    sealer = Sealer(keyring())
    legacy = sealer.seal_text("link.url", "https://hr.example.com/faq")
    assert sealer.open_text("link.url", legacy) == "https://hr.example.com/faq"
    assert sealer.open_text("link.url", legacy, row=LINK_ROW) == "https://hr.example.com/faq"
    assert sealer.open_text("link.url", legacy, row=OTHER_LINK_ROW) == "https://hr.example.com/faq"  # the flaw
    with pytest.raises(SealError):
        sealer.open_text("link.text", legacy, row=LINK_ROW)  # the field is still bound, as before


def test_flipping_the_row_bit_never_lets_a_value_open_elsewhere() -> None:
    sealer = Sealer(keyring())
    bound = sealer.seal("link.url", PLAINTEXT, row=LINK_ROW)
    downgraded = bytes([bound[0] & 0x7F]) + bound[1:]  # posing as legacy, to open in any row
    for row in (None, LINK_ROW, OTHER_LINK_ROW):
        with pytest.raises(SealError, match="does not open"):
            sealer.open("link.url", downgraded, row=row)
    legacy = sealer.seal("link.url", PLAINTEXT)
    upgraded = bytes([legacy[0] | 0x80]) + legacy[1:]
    with pytest.raises(SealError, match="does not open"):
        sealer.open("link.url", upgraded, row=LINK_ROW)


def test_any_single_bit_flip_in_a_row_bound_value_is_refused() -> None:
    sealer = Sealer(keyring())
    sealed = sealer.seal("recipient.email", PLAINTEXT, row="msg_aaaa/00")
    for position in range(len(sealed)):
        for bit in range(8):
            tampered = bytearray(sealed)
            tampered[position] ^= 1 << bit
            with pytest.raises(SealError):
                sealer.open("recipient.email", bytes(tampered), row="msg_aaaa/00")


def test_repeated_places_stay_row_free_and_shared() -> None:
    sealer = Sealer(keyring())
    city = sealer.seal_repeated("event.city", "Dublin")
    assert sealer.seal_repeated("event.city", "Dublin") is city
    assert not Sealer.is_row_bound(city)
    assert sealer.open_text("event.city", city) == "Dublin"


# --------------------------------------------------------------------------------------------------
# Blind index


def test_blind_index_ignores_case_surrounding_space_and_full_width_characters() -> None:
    ring = keyring()
    expected = blind_index(ring, "dana@example.com")
    assert len(expected) == 32
    for variant in (
        "Dana@Example.COM",
        "  dana@example.com\t\n",
        "ｄａｎａ＠ｅｘａｍｐｌｅ．ｃｏｍ",  # full-width
        "\u3000ＤＡＮＡ@example.com ",  # ideographic space, full-width capitals
    ):
        assert blind_index(ring, variant) == expected, variant
    assert blind_index(ring, "dana2@example.com") != expected
    assert blind_index(ring, "da na@example.com") != expected


def test_normalising_an_ascii_address_skips_nfkc_and_gives_what_nfkc_gives() -> None:
    rng = random.Random(7)
    ascii_chars = [chr(c) for c in range(128)]
    samples = ["".join(rng.choices(ascii_chars, k=rng.randint(0, 40))) for _ in range(2_000)]
    samples += [" Dana@Example.COM\t", "\x1fDANA@example.com\x0b", "dana@EXAMPLE.com  "]
    for email in samples:
        assert normalise_email(email) == unicodedata.normalize("NFKC", email).strip().casefold(), repr(email)


def test_blind_index_differs_between_tenants_and_between_keys() -> None:
    keys = keyset(1)
    acme = blind_index(Keyring("acme", [keys]), EMAIL)
    assert blind_index(Keyring("acme", [keys]), EMAIL) == acme
    assert blind_index(Keyring("globex", [keys]), EMAIL) != acme
    assert blind_index(Keyring("acme", [keyset(1)]), EMAIL) != acme


def test_blind_index_does_not_contain_the_address() -> None:
    assert EMAIL.encode() not in blind_index(keyring(), EMAIL)


def test_blind_indexes_gives_one_index_per_loaded_version_newest_by_default() -> None:
    ring = Keyring("acme", [keyset(1), keyset(2), keyset(3)])
    indexes = blind_indexes(ring, EMAIL)
    assert indexes == [blind_index(ring, EMAIL, 1), blind_index(ring, EMAIL, 2), blind_index(ring, EMAIL, 3)]
    assert len(set(indexes)) == 3
    assert blind_index(ring, EMAIL) == indexes[2]
    with pytest.raises(ValueError, match="key version 9 is not loaded"):
        blind_index(ring, EMAIL, 9)


# --------------------------------------------------------------------------------------------------
# Tokens


def test_token_round_trip_names_the_record() -> None:
    codec = TokenCodec(keyring())
    record_id = new_record_id()
    assert len(record_id) == RECORD_ID_BYTES
    token = codec.issue(record_id)
    assert codec.verify(token) == VerifiedToken(version=1, record_id=record_id)


def test_token_has_a_fixed_url_safe_length() -> None:
    codec = TokenCodec(keyring())
    assert TOKEN_CHARS == 35
    for _ in range(50):
        token = codec.issue(new_record_id())
        assert len(token) == TOKEN_CHARS
        assert set(token) <= set(B64URL)
        assert len(b64url_decode(token)) == TOKEN_BYTES


def test_issue_refuses_a_record_id_of_the_wrong_size() -> None:
    codec = TokenCodec(keyring())
    with pytest.raises(ValueError, match="12 bytes"):
        codec.issue(b"\x00" * 11)


def test_forged_token_is_rejected() -> None:
    codec = TokenCodec(keyring())
    record_id = new_record_id()
    # Right layout, right version, right record id, a made-up tag.
    forged = b64url_encode(b"\x00\x01" + record_id + os.urandom(12))
    assert codec.verify(forged) is None
    assert codec.verify(b64url_encode(b"\x00\x01" + record_id + b"\x00" * 12)) is None
    assert codec.verify("A" * TOKEN_CHARS) is None


def test_truncated_extended_and_padded_tokens_are_rejected() -> None:
    codec = TokenCodec(keyring())
    token = codec.issue(new_record_id())
    for cut in range(len(token)):
        assert codec.verify(token[:cut]) is None
    assert codec.verify(token + "A") is None
    assert codec.verify(token + "AAAA") is None
    assert codec.verify(token + "=") is None
    assert codec.verify(token[:-1] + "=") is None
    assert codec.verify(" " + token) is None
    assert codec.verify(token + "\n") is None


def test_token_with_any_bit_flipped_is_rejected() -> None:
    codec = TokenCodec(keyring())
    token = codec.issue(new_record_id())
    raw = b64url_decode(token)
    for position in range(len(raw)):
        for bit in range(8):
            tampered = bytearray(raw)
            tampered[position] ^= 1 << bit
            assert codec.verify(b64url_encode(bytes(tampered))) is None, (position, bit)


def test_token_with_any_character_replaced_is_rejected() -> None:
    codec = TokenCodec(keyring())
    token = codec.issue(new_record_id())
    for position in range(len(token)):
        for replacement in "A_-9z!.~ +/=é":
            if replacement == token[position]:
                continue
            altered = token[:position] + replacement + token[position + 1 :]
            assert codec.verify(altered) is None, (position, replacement)


def test_token_written_with_standard_base64_characters_is_rejected() -> None:
    codec = TokenCodec(keyring())
    for _ in range(1000):
        token = codec.issue(new_record_id())
        if "-" in token and "_" in token:
            break
    else:  # pragma: no cover - probability far below 1e-100
        pytest.fail("no token with both '-' and '_' was issued")
    standard = token.replace("-", "+").replace("_", "/")
    assert base64.b64decode(standard + "=") == b64url_decode(token)  # the same bytes, another alphabet
    assert codec.verify(standard) is None
    assert codec.verify(token.replace("-", "+", 1)) is None
    assert codec.verify(token) is not None


def test_non_canonical_token_is_rejected() -> None:
    codec = TokenCodec(keyring())
    token = codec.issue(new_record_id())
    last = B64URL.index(token[-1])
    assert last & 0b11 == 0  # 26 bytes leave the last character's two low bits unused
    for low_bits in (1, 2, 3):
        variant = token[:-1] + B64URL[last | low_bits]
        assert b64url_decode(variant) == b64url_decode(token)  # the same bytes...
        assert codec.verify(variant) is None  # ...but not the token that was issued


def test_token_of_another_tenant_never_verifies() -> None:
    keys = keyset(1)
    token = TokenCodec(Keyring("acme", [keys])).issue(new_record_id())
    assert TokenCodec(Keyring("acme", [keys])).verify(token) is not None
    assert TokenCodec(Keyring("globex", [keys])).verify(token) is None


def test_token_signed_with_another_token_key_never_verifies() -> None:
    old = keyset(1)
    token = TokenCodec(Keyring("acme", [old])).issue(new_record_id())
    rekeyed = KeySet(version=1, dek=old.dek, token_key=os.urandom(32), index_key=old.index_key)
    assert TokenCodec(Keyring("acme", [rekeyed])).verify(token) is None


def test_token_issued_before_a_rotation_still_verifies_after() -> None:
    v1 = keyset(1)
    record_id = new_record_id()
    old_token = TokenCodec(Keyring("acme", [v1])).issue(record_id)
    rotated = TokenCodec(Keyring("acme", [v1, keyset(2)]))
    assert rotated.verify(old_token) == VerifiedToken(version=1, record_id=record_id)
    new_token = rotated.issue(record_id)
    assert new_token != old_token
    assert rotated.verify(new_token) == VerifiedToken(version=2, record_id=record_id)
    # a tracker that has not loaded version 2 does not accept tokens made with it
    assert TokenCodec(Keyring("acme", [v1])).verify(new_token) is None


def test_token_of_an_unknown_version_is_rejected_even_with_a_valid_layout() -> None:
    keys = keyset(1)
    token = TokenCodec(Keyring("acme", [keys])).issue(new_record_id())
    raw = b64url_decode(token)
    relabelled = b64url_encode(b"\x00\x02" + raw[2:])
    assert TokenCodec(Keyring("acme", [keys])).verify(relabelled) is None


def test_verify_never_raises_for_arbitrary_strings() -> None:
    codec = TokenCodec(keyring())
    rng = random.Random(20240611)
    alphabets = [
        B64URL,
        B64URL + "+/=",
        "".join(chr(c) for c in range(128)),
        "éß漢字🙂\u0000\u200b\ufeff\U0010ffff" + B64URL,
    ]
    samples = ["", "=", "==", "====", "\ud800" * TOKEN_CHARS, "A" * 10_000_000, "é" * TOKEN_CHARS]
    for _ in range(400):
        alphabet = rng.choice(alphabets)
        length = rng.choice([TOKEN_CHARS, TOKEN_CHARS, TOKEN_CHARS - 1, TOKEN_CHARS + 1, rng.randrange(0, 200)])
        samples.append("".join(rng.choice(alphabet) for _ in range(length)))
    for sample in samples:
        assert codec.verify(sample) is None


# --------------------------------------------------------------------------------------------------
# Local key provider


def test_first_load_creates_a_private_key_file_with_version_1(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "acme.json"
    sets = LocalKeyProvider(path).load()
    assert [s.version for s in sets] == [1]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    doc = json.loads(path.read_text())
    assert doc["format"] == 1
    assert [v["version"] for v in doc["versions"]] == [1]
    keys = sets[0]
    # the file holds wrapped keys, never the plaintext ones
    raw = path.read_bytes()
    for key in (keys.dek, keys.token_key, keys.index_key):
        assert base64.b64encode(key) not in raw
        assert key.hex().encode() not in raw


def test_a_second_provider_on_the_same_file_loads_the_same_keys(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    first = LocalKeyProvider(path).load()
    second = LocalKeyProvider(path).load()
    assert [(s.version, s.dek, s.token_key, s.index_key) for s in first] == [
        (s.version, s.dek, s.token_key, s.index_key) for s in second
    ]
    assert len({first[0].dek, first[0].token_key, first[0].index_key}) == 3


def test_rotate_adds_version_2_and_keeps_version_1_identical(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    provider = LocalKeyProvider(path)
    (v1,) = provider.load()
    rotated = provider.rotate()
    assert [s.version for s in rotated] == [1, 2]
    assert (rotated[0].dek, rotated[0].token_key, rotated[0].index_key) == (v1.dek, v1.token_key, v1.index_key)
    assert rotated[1].dek != v1.dek and rotated[1].token_key != v1.token_key
    reloaded = LocalKeyProvider(path).load()
    assert [(s.version, s.dek) for s in reloaded] == [(s.version, s.dek) for s in rotated]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # data sealed before the rotation opens with the rotated keyring
    sealed = Sealer(Keyring("acme", [v1])).seal("f", PLAINTEXT)
    assert Sealer(Keyring("acme", reloaded)).open("f", sealed) == PLAINTEXT


def test_rotate_on_a_fresh_file_creates_versions_1_and_2(tmp_path: Path) -> None:
    assert [s.version for s in LocalKeyProvider(tmp_path / "k.json").rotate()] == [1, 2]


def _corrupt(path: Path, change: object) -> tuple[Path, str]:
    """Write a corrupted copy of a real key file; returns it and the original file's text."""
    original = path.read_text()
    doc = json.loads(original)
    bad = path.with_name("bad.json")
    if callable(change):
        change(doc)
        bad.write_text(json.dumps(doc))
    else:
        bad.write_text(str(change))
    return bad, original


def _alter_wrapped_dek(doc: dict) -> None:
    blob = bytearray(base64.b64decode(doc["versions"][0]["dek"]))
    blob[20] ^= 0x01
    doc["versions"][0]["dek"] = base64.b64encode(bytes(blob)).decode()


def _replace_kek(doc: dict) -> None:
    doc["kek"] = base64.b64encode(os.urandom(32)).decode()


def _no_key_material(message: str, original: str, keys: KeySet) -> None:
    doc = json.loads(original)
    secrets = [doc["kek"]] + [doc["versions"][0][p] for p in ("dek", "token_key", "index_key")]
    for key in (keys.dek, keys.token_key, keys.index_key):
        secrets += [base64.b64encode(key).decode(), key.hex(), repr(key)]
    for secret in secrets:
        assert secret not in message


CORRUPTIONS = {
    "not json": "{this is not json",
    "wrong format": json.dumps({"format": 99, "kek": "", "versions": []}),
    "not an object": "[1, 2, 3]",
    "no versions": lambda doc: doc.__setitem__("versions", []),
    "short kek": lambda doc: doc.__setitem__("kek", base64.b64encode(b"short").decode()),
    "kek not base64": lambda doc: doc.__setitem__("kek", "%%%not base64%%%"),
    "wrapped key altered": _alter_wrapped_dek,
    "kek replaced": _replace_kek,
}


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_corrupted_key_file_raises_key_material_error_without_key_material(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "keys.json"
    (keys,) = LocalKeyProvider(path).load()
    bad, original = _corrupt(path, CORRUPTIONS[kind])
    with pytest.raises(KeyMaterialError) as info:
        LocalKeyProvider(bad).load()
    _no_key_material(str(info.value), original, keys)


@pytest.mark.parametrize(
    "kind",
    [
        "not json",
        "wrong format",
        "not an object",
        "no versions",
        "short kek",
        pytest.param(
            "kek not base64",
        ),
        pytest.param(
            "wrapped key altered",
        ),
        pytest.param(
            "kek replaced",
        ),
    ],
)
def test_corrupted_key_file_error_names_the_file(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "keys.json"
    LocalKeyProvider(path).load()
    bad, _ = _corrupt(path, CORRUPTIONS[kind])
    with pytest.raises(KeyMaterialError) as info:
        LocalKeyProvider(bad).load()
    assert str(bad) in str(info.value)


def test_truncated_wrapped_key_raises_key_material_error(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    LocalKeyProvider(path).load()
    bad, _ = _corrupt(path, lambda doc: doc["versions"][0].__setitem__("dek", "AAAA"))
    with pytest.raises(KeyMaterialError):
        LocalKeyProvider(bad).load()


def test_key_file_entry_without_a_version_raises_key_material_error(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    LocalKeyProvider(path).load()
    bad, _ = _corrupt(path, lambda doc: doc["versions"][0].pop("version"))
    with pytest.raises(KeyMaterialError):
        LocalKeyProvider(bad).load()


def test_a_corrupted_file_is_not_overwritten_with_fresh_keys(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text("{this is not json")
    with pytest.raises(KeyMaterialError):
        LocalKeyProvider(path).load()
    with pytest.raises(KeyMaterialError):
        LocalKeyProvider(path).rotate()
    assert path.read_text() == "{this is not json"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("local:./polite-data/keys.json", Path("polite-data/keys.json")),
        ("local:keys.json", Path("keys.json")),
        ("local:/abs/path/keys.json", Path("/abs/path/keys.json")),
        ("local:///abs/path/keys.json", Path("/abs/path/keys.json")),
    ],
)
def test_provider_from_url_reads_local_paths(url: str, expected: Path) -> None:
    provider = provider_from_url(url)
    assert isinstance(provider, LocalKeyProvider)
    assert provider.path == expected
    assert provider.describe() == f"local:{expected}"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("vault://vault.example:8200/acme", "not a Vault address"),
        ("file:/tmp/keys.json", "unknown key provider 'file'"),
        ("/tmp/keys.json", "unknown key provider '/tmp/keys.json'"),
        ("", "unknown key provider ''"),
        ("local:", "needs a file path"),
        ("local://", "needs a file path"),
    ],
)
def test_provider_from_url_refuses_unknown_schemes_and_empty_paths(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        provider_from_url(url)


def test_keyset_and_keyring_repr_never_show_key_bytes() -> None:
    keys = keyset(3)
    ring = Keyring("acme", [keyset(1), keys])
    assert repr(keys) == "KeySet(version=3)"
    assert str(keys) == "KeySet(version=3)"
    assert repr(ring) == "Keyring(tenant_id='acme', versions=[1, 3])"
    shown = repr([keys, ring]) + str(ring) + f"{keys!s}{keys!r}"
    for key in (keys.dek, keys.token_key, keys.index_key):
        for form in (repr(key), key.hex(), base64.b64encode(key).decode(), str(key)):
            assert form not in shown


def test_keyset_refuses_wrong_sizes_and_versions() -> None:
    with pytest.raises(KeyMaterialError, match="dek must be 32 bytes"):
        KeySet(version=1, dek=b"\x00" * 16, token_key=os.urandom(32), index_key=os.urandom(32))
    with pytest.raises(KeyMaterialError, match=r"outside 1\.\.65535"):
        KeySet(version=0, dek=os.urandom(32), token_key=os.urandom(32), index_key=os.urandom(32))
    with pytest.raises(KeyMaterialError):
        Keyring("acme", [])
    with pytest.raises(KeyMaterialError):
        Keyring("", [keyset(1)])
