"""TrackerSettings as an operator or a laptop user configures it: YAML file, POLITE_* variables, errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from politetenant.settings import SettingsError, TrackerSettings, TrackingMode, load_settings

ALL_MODES = (TrackingMode.INDIVIDUAL, TrackingMode.ANONYMOUS, TrackingMode.AGGREGATE)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_are_the_published_ones() -> None:
    s = load_settings(None, {})
    assert s == TrackerSettings()
    assert s.tenant_id == "local"
    assert s.public_base_url == "http://127.0.0.1:8080"
    assert s.default_mode is TrackingMode.ANONYMOUS
    assert s.allowed_modes == ALL_MODES
    assert s.mode_locked is False
    assert s.modes == ALL_MODES
    assert s.min_segment_size == 10
    assert s.retention_interaction_days == 395
    assert s.retention_message_days == 730
    assert s.legal_hold is False
    assert s.scanner_networks == ()
    assert s.read_max_seconds == 30.0
    assert s.max_html_bytes == 6 * 1024 * 1024
    assert s.max_recipients == 250_000


def test_tracking_modes_have_the_wire_names() -> None:
    assert [m.value for m in TrackingMode] == ["individual", "anonymous", "aggregate"]


def test_yaml_file_is_read(tmp_path: Path) -> None:
    path = write(
        tmp_path / "tracker.yaml",
        "tenant_id: acme\n"
        "public_base_url: https://t.acme.example/\n"
        "default_mode: individual\n"
        "allowed_modes: [individual, anonymous]\n"
        "min_segment_size: 20\n"
        "legal_hold: true\n"
        "scanner_networks: ['203.0.113.0/24', '2001:db8::/32']\n",
    )
    s = load_settings(path, {})
    assert s.tenant_id == "acme"
    assert s.public_base_url == "https://t.acme.example"  # trailing slash dropped
    assert s.default_mode is TrackingMode.INDIVIDUAL
    assert s.allowed_modes == (TrackingMode.INDIVIDUAL, TrackingMode.ANONYMOUS)
    assert s.min_segment_size == 20
    assert s.legal_hold is True
    assert s.scanner_networks == ("203.0.113.0/24", "2001:db8::/32")


def test_environment_overlays_the_yaml_file_and_wins(tmp_path: Path) -> None:
    path = write(
        tmp_path / "tracker.yaml",
        "tenant_id: acme\nmin_segment_size: 20\nscanner_networks: ['203.0.113.0/24']\nlegal_hold: false\n",
    )
    env = {
        "POLITE_MIN_SEGMENT_SIZE": "25",
        "POLITE_SCANNER_NETWORKS": "192.0.2.0/24, 198.51.100.0/24",
        "POLITE_SCANNER_USER_AGENTS": "Barracuda,Mimecast ,",
        "POLITE_LEGAL_HOLD": "true",
        "POLITE_ALLOWED_MODES": "anonymous,aggregate",
        "HOME": "/root",  # variables without the prefix are not settings
    }
    s = load_settings(path, env)
    assert s.tenant_id == "acme"  # from the file
    assert s.min_segment_size == 25  # the environment wins
    assert s.scanner_networks == ("192.0.2.0/24", "198.51.100.0/24")
    assert s.scanner_user_agents == ("Barracuda", "Mimecast")
    assert s.legal_hold is True
    assert s.allowed_modes == (TrackingMode.ANONYMOUS, TrackingMode.AGGREGATE)


def test_environment_alone_configures_the_tracker() -> None:
    s = load_settings(
        None, {"POLITE_TENANT_ID": "globex", "POLITE_MODE_LOCKED": "1", "POLITE_DEFAULT_MODE": "aggregate"}
    )
    assert s.tenant_id == "globex"
    assert s.modes == (TrackingMode.AGGREGATE,)


def test_min_segment_size_below_five_is_refused_naming_the_field(tmp_path: Path) -> None:
    path = write(tmp_path / "tracker.yaml", "min_segment_size: 4\n")
    with pytest.raises(SettingsError) as info:
        load_settings(path, {})
    assert str(info.value).startswith(f"{path}: min_segment_size:")
    assert "greater than or equal to 5" in str(info.value)
    with pytest.raises(SettingsError, match="min_segment_size"):
        load_settings(None, {"POLITE_MIN_SEGMENT_SIZE": "3"})
    assert load_settings(None, {"POLITE_MIN_SEGMENT_SIZE": "5"}).min_segment_size == 5


def test_default_mode_outside_allowed_modes_is_refused() -> None:
    env = {"POLITE_DEFAULT_MODE": "aggregate", "POLITE_ALLOWED_MODES": "individual,anonymous"}
    with pytest.raises(SettingsError) as info:
        load_settings(None, env)
    message = str(info.value)
    assert "default_mode 'aggregate' is not in allowed_modes" in message
    assert "['individual', 'anonymous']" in message
    with pytest.raises(ValidationError):
        TrackerSettings(default_mode=TrackingMode.INDIVIDUAL, allowed_modes=(TrackingMode.ANONYMOUS,))


def test_unknown_mode_name_is_refused() -> None:
    with pytest.raises(SettingsError, match="default_mode"):
        load_settings(None, {"POLITE_DEFAULT_MODE": "stealth"})


def test_locked_tenant_offers_only_its_default_mode() -> None:
    locked = TrackerSettings(default_mode=TrackingMode.INDIVIDUAL, mode_locked=True)
    assert locked.modes == (TrackingMode.INDIVIDUAL,)
    assert locked.allowed_modes == ALL_MODES  # the allowed list is kept, the lock narrows it
    unlocked = TrackerSettings(default_mode=TrackingMode.INDIVIDUAL)
    assert unlocked.modes == ALL_MODES


def test_unknown_keys_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "tracker.yaml", "tenant_id: acme\nmin_segment_sise: 12\n")
    with pytest.raises(SettingsError) as info:
        load_settings(path, {})
    assert str(info.value) == f"{path}: min_segment_sise: Extra inputs are not permitted"
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        TrackerSettings.model_validate({"bogus": 1})


def test_settings_are_frozen() -> None:
    s = TrackerSettings()
    with pytest.raises(ValidationError):
        s.min_segment_size = 3  # type: ignore[misc]


def test_bad_yaml_gives_settings_error_naming_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "tracker.yaml", "tenant_id: [unclosed\n")
    with pytest.raises(SettingsError) as info:
        load_settings(path, {})
    assert str(info.value).startswith(f"{path}: not valid YAML")


def test_non_utf8_file_gives_settings_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "tracker.yaml"
    path.write_bytes(b"tenant_id: \xff\xfe\n")
    with pytest.raises(SettingsError, match="not valid YAML") as info:
        load_settings(path, {})
    assert str(path) in str(info.value)


@pytest.mark.parametrize("text", ["- tenant_id\n- acme\n", "just a string\n", "42\n"])
def test_yaml_that_is_not_a_mapping_gives_settings_error_naming_the_file(tmp_path: Path, text: str) -> None:
    path = write(tmp_path / "tracker.yaml", text)
    with pytest.raises(SettingsError) as info:
        load_settings(path, {})
    assert str(info.value) == f"{path}: expected a mapping of setting names to values"


def test_empty_yaml_file_gives_the_defaults(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path / "tracker.yaml", ""), {}) == TrackerSettings()


def test_missing_file_gives_settings_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.yaml"
    with pytest.raises(SettingsError) as info:
        load_settings(path, {})
    assert str(info.value) == f"{path}: file not found"


def test_directory_given_as_settings_file_gives_settings_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=re.escape(str(tmp_path))):
        load_settings(tmp_path, {})


def test_bad_scanner_network_is_named(tmp_path: Path) -> None:
    path = write(tmp_path / "tracker.yaml", "scanner_networks: ['10.0.0.0/8', 'not-a-network']\n")
    with pytest.raises(SettingsError) as info:
        load_settings(path, {})
    message = str(info.value)
    assert message.startswith(f"{path}: scanner_networks:")
    assert "'not-a-network' is not a CIDR network" in message
    with pytest.raises(SettingsError, match=re.escape("'10.0.0.300/8' is not a CIDR network")):
        load_settings(None, {"POLITE_SCANNER_NETWORKS": "192.0.2.0/24,10.0.0.300/8"})


def test_every_problem_is_reported_on_its_own_line(tmp_path: Path) -> None:
    path = write(tmp_path / "tracker.yaml", "min_segment_size: 1\nmax_recipients: 0\n")
    with pytest.raises(SettingsError) as info:
        load_settings(path, {})
    lines = str(info.value).splitlines()
    assert [line.split(":")[1].strip() for line in lines] == ["min_segment_size", "max_recipients"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("tenant_id", "Acme Corp"),
        ("tenant_id", "-acme"),
        ("public_base_url", "ftp://t.example"),
        ("public_base_url", "https://t.example/?x=1"),
    ],
)
def test_malformed_tenant_id_and_base_url_are_refused(field: str, value: str) -> None:
    with pytest.raises(SettingsError, match=f"settings: {field}:"):
        load_settings(None, {f"POLITE_{field.upper()}": value})
