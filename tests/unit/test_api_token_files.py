"""Reading the operator's token Secret and naming tokens to revoke: precise errors, never the token."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from politetenant.tracker.http.auth import Role, read_bootstrap_tokens, token_id_of

TOKEN = f"ptk_{'a1' * 6}_{'x' * 43}"


def secret_dir(tmp_path: Path, **files: str) -> Path:
    directory = tmp_path / "api-tokens"
    directory.mkdir()
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory


def all_roles() -> dict[str, str]:
    return {role.value: f"ptk_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}" for role in Role}


def test_one_token_per_role_is_read_as_id_and_hash_only(tmp_path: Path) -> None:
    files = all_roles()
    files["privacy"] += "\n"  # as `kubectl create secret --from-file` of an edited file has it
    tokens = read_bootstrap_tokens(secret_dir(tmp_path, **files))
    assert [t.role for t in tokens] == list(Role)
    assert [t.token_id for t in tokens] == [files[role.value].split("_")[1] for role in Role]
    for token in tokens:
        secret = files[token.role.value].strip().split("_", 2)[2]
        assert secret not in repr(token) and secret.encode() != token.secret_hash


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("", "malformed"),
        ("ptk_ABCDEF012345_" + "x" * 43, "malformed"),  # upper-case id
        (TOKEN + "x", "malformed"),
        (TOKEN + "\n" + TOKEN, "malformed"),  # two tokens
        ("Bearer " + TOKEN, "malformed"),
    ],
)
def test_a_malformed_file_names_the_file_and_the_role_never_the_content(
    tmp_path: Path, content: str, problem: str
) -> None:
    files = {**all_roles(), "analyst": content}
    with pytest.raises(ValueError) as excinfo:
        read_bootstrap_tokens(secret_dir(tmp_path, **files))
    message = str(excinfo.value)
    assert str(tmp_path / "api-tokens" / "analyst") in message and "analyst token" in message and problem in message
    assert TOKEN not in message and "x" * 43 not in message


def test_a_missing_file_or_directory_says_what_is_missing(tmp_path: Path) -> None:
    files = all_roles()
    del files["privacy"]
    with pytest.raises(ValueError, match=r"api-tokens/privacy: missing: the privacy token"):
        read_bootstrap_tokens(secret_dir(tmp_path, **files))
    with pytest.raises(ValueError, match=r"--api-tokens-dir .*nowhere: not a directory"):
        read_bootstrap_tokens(tmp_path / "nowhere")


def test_revoke_takes_the_id_part_or_the_whole_token() -> None:
    assert token_id_of("ptk_a1a1a1a1a1a1") == "a1a1a1a1a1a1"
    assert token_id_of(TOKEN) == "a1a1a1a1a1a1"
    for bad in ("a1a1a1a1a1a1", "ptk_a1a1", "ptk_a1a1a1a1a1a1_short", TOKEN + "y", ""):
        with pytest.raises(ValueError) as excinfo:
            token_id_of(bad)
        assert "ptk_<12 lowercase hex>" in str(excinfo.value) and (not bad or bad not in str(excinfo.value))
