"""The pure-Python MaxMind DB writer, read back by maxminddb (C extension and pure Python)."""

from __future__ import annotations

import ipaddress
import json
import random
import time
from pathlib import Path
from typing import Any

import maxminddb
import pytest

from politetenant.tracker.cli import geoip_sample
from politetenant.tracker.cli.geoip_sample import SAMPLE_ADDRESSES, SAMPLE_NETWORKS, write_mmdb, write_sample
from politetenant.tracker.judging.geoip import UNKNOWN_PLACE, GeoLocator, GeoPlace
from politetenant.tracker.judging.judge import Judge
from politetenant.tracker.judging.useragent import UserAgentClassifier

# Both decoders: libmaxminddb (strict about metadata types) and the pure-Python reader.
READER_MODES = [maxminddb.MODE_MMAP_EXT, maxminddb.MODE_FILE]
CHROME = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"


def _city(name: str, country: str = "ZZ", region: str | None = None) -> dict[str, Any]:
    record: dict[str, Any] = {"city": {"names": {"en": name}}, "country": {"iso_code": country}}
    if region is not None:
        record["subdivisions"] = [{"names": {"en": region}}]
    return record


def _lookup_all(path: Path, addresses: list[str]) -> list[GeoPlace]:
    locator = GeoLocator(str(path))
    try:
        return [locator.lookup(address) for address in addresses]
    finally:
        locator.close()


@pytest.mark.parametrize("mode", READER_MODES)
def test_metadata_is_read_back(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "city.mmdb"
    before = int(time.time())
    write_mmdb(path, {"192.0.2.0/24": _city("A")}, database_type="Test-City", description="unit test")
    with maxminddb.open_database(str(path), mode) as reader:
        meta = reader.metadata()
        assert meta.binary_format_major_version == 2
        assert meta.binary_format_minor_version == 0
        assert meta.ip_version == 6
        assert meta.record_size == 28
        assert meta.database_type == "Test-City"
        assert meta.description == {"en": "unit test"}
        assert meta.languages == ["en"]
        assert before <= meta.build_epoch <= int(time.time())
        # 120 nodes on the path to ::c000:200/120, 15 more for the ::ffff:0:0/96 alias branch.
        assert meta.node_count == 120 + 15
        assert path.stat().st_size > meta.node_count * 7 + 16


def test_sample_database(tmp_path: Path) -> None:
    path = tmp_path / "sample.mmdb"
    write_sample(path)
    expected = {
        "Dublin": GeoPlace("IE", "Leinster", "Dublin"),
        "Frankfurt am Main": GeoPlace("DE", "Hesse", "Frankfurt am Main"),
        "Berlin": GeoPlace("DE", "Land Berlin", "Berlin"),
        "New York": GeoPlace("US", "New York", "New York"),
        "Ashburn": GeoPlace("US", "Virginia", "Ashburn"),
        "San Francisco": GeoPlace("US", "California", "San Francisco"),
        "Singapore": GeoPlace("SG", None, "Singapore"),
        "Sydney": GeoPlace("AU", "New South Wales", "Sydney"),
    }
    assert set(SAMPLE_ADDRESSES) == set(expected)
    cities = list(SAMPLE_ADDRESSES)
    assert _lookup_all(path, [SAMPLE_ADDRESSES[city] for city in cities]) == [expected[c] for c in cities]
    assert _lookup_all(path, ["2001:db8:1::1", "2001:db8:8:ffff::1", "::ffff:203.0.113.9"]) == [
        expected["Dublin"],
        expected["Sydney"],
        expected["New York"],
    ]
    with maxminddb.open_database(str(path)) as reader:
        assert reader.metadata().database_type == "GeoLite2-City"
        assert reader.get("192.0.2.1") == SAMPLE_NETWORKS["192.0.2.0/24"]


def test_sample_uses_only_documentation_and_reserved_ranges() -> None:
    allowed = [
        ipaddress.ip_network(cidr)
        for cidr in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "100.64.0.0/10", "2001:db8::/32")
    ]
    for cidr in SAMPLE_NETWORKS:
        network = ipaddress.ip_network(cidr)
        assert any(network.version == a.version and network.subnet_of(a) for a in allowed), cidr
    for address in SAMPLE_ADDRESSES.values():
        assert any(ipaddress.ip_address(address) in a for a in allowed), address


@pytest.mark.parametrize("record_size", [24, 28, 32])
@pytest.mark.parametrize("mode", READER_MODES)
def test_ipv4_and_ipv6_lookups(tmp_path: Path, record_size: int, mode: int) -> None:
    path = tmp_path / "city.mmdb"
    networks = {
        "192.0.2.0/24": _city("Dublin", "IE", "Leinster"),
        "198.51.100.0/24": _city("Berlin", "DE", "Land Berlin"),
        "2001:db8::/32": _city("Sydney", "AU", "New South Wales"),
        "2001:db8:ffff::/48": _city("Singapore", "SG"),
    }
    write_mmdb(path, networks, record_size=record_size)
    assert _lookup_all(path, ["192.0.2.77", "198.51.100.1", "2001:db8:1::5", "2001:db8:ffff::9"]) == [
        GeoPlace("IE", "Leinster", "Dublin"),
        GeoPlace("DE", "Land Berlin", "Berlin"),
        GeoPlace("AU", "New South Wales", "Sydney"),
        GeoPlace("SG", None, "Singapore"),
    ]
    with maxminddb.open_database(str(path), mode) as reader:
        assert reader.metadata().record_size == record_size
        assert reader.get_with_prefix_len("192.0.2.255") == (networks["192.0.2.0/24"], 24)
        assert reader.get_with_prefix_len("2001:db8:ffff::9") == (networks["2001:db8:ffff::/48"], 48)
        # IPv4 lives in ::/96, and ::ffff:0:0/96 is aliased to it, as in MaxMind's own databases.
        assert reader.get("::c000:0201") == networks["192.0.2.0/24"]
        assert reader.get("::ffff:198.51.100.3") == networks["198.51.100.0/24"]
        found = {str(network): record for network, record in reader}
    assert {cidr: record for cidr, record in found.items() if "." in cidr} == {
        cidr: record for cidr, record in networks.items() if "." in cidr
    }
    # The /48 punches a hole in the /32: 16 pieces of the /32 (/33 ... /48) plus the /48 itself.
    assert found["2001:db8:ffff::/48"] == networks["2001:db8:ffff::/48"]
    assert found["2001:db8::/33"] == found["2001:db8:fffe::/48"] == networks["2001:db8::/32"]
    assert len(found) == 2 + 16 + 1


@pytest.mark.parametrize("mode", READER_MODES)
def test_nested_networks_pick_the_longest_prefix(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "nested.mmdb"
    networks = {  # deliberately longest first: the writer must not depend on input order
        "198.51.100.16/28": _city("Inner"),
        "198.51.100.0/24": _city("Middle"),
        "198.51.0.0/16": _city("Outer"),
        "2001:db8:1:2::/64": _city("V6 inner"),
        "2001:db8::/32": _city("V6 outer"),
    }
    write_mmdb(path, networks)
    # The prefix length a reader reports is that of the tree piece holding the address: an outer
    # network is split around the inner ones (198.51.100.0/24 minus the /28 leaves a /28, a /27...).
    cases = {
        "198.51.100.16": ("Inner", 28),
        "198.51.100.31": ("Inner", 28),
        "198.51.100.15": ("Middle", 28),
        "198.51.100.32": ("Middle", 27),
        "198.51.100.200": ("Middle", 25),
        "198.51.101.1": ("Outer", 24),
        "198.51.0.0": ("Outer", 18),
        "198.51.200.0": ("Outer", 17),
        "2001:db8:1:2::abcd": ("V6 inner", 64),
        "2001:db8:1:3::1": ("V6 outer", 64),
        "2001:db8:8000::1": ("V6 outer", 33),
    }
    places = _lookup_all(path, list(cases))
    assert [place.city for place in places] == [city for city, _ in cases.values()]
    with maxminddb.open_database(str(path), mode) as reader:
        for address, (city, prefix_len) in cases.items():
            record, found_len = reader.get_with_prefix_len(address)
            assert (record["city"]["names"]["en"], found_len) == (city, prefix_len), address
        assert reader.get("198.52.0.1") is None
        # Iteration shows the outer networks minus the holes punched by the inner ones.
        covered = {str(network): record["city"]["names"]["en"] for network, record in reader}
        assert covered["198.51.100.0/28"] == "Middle"
        assert covered["198.51.100.16/28"] == "Inner"
        assert covered["198.51.0.0/18"] == "Outer"


def test_addresses_outside_every_network_are_unknown(tmp_path: Path) -> None:
    path = tmp_path / "city.mmdb"
    write_mmdb(path, {"192.0.2.0/24": _city("A"), "2001:db8::/32": _city("B")})
    outside = ["192.0.3.0", "192.0.1.255", "10.0.0.1", "0.0.0.0", "255.255.255.255", "::1", "2001:db9::1"]
    assert _lookup_all(path, outside) == [UNKNOWN_PLACE] * len(outside)


def test_malformed_addresses_are_unknown_and_never_raise(tmp_path: Path) -> None:
    path = tmp_path / "city.mmdb"
    write_sample(path)
    malformed: list[Any] = ["", "not-an-ip", "999.1.1.1", None, "192.0.2.1/24", "192.0.2", "::g", " "]
    assert _lookup_all(path, malformed) == [UNKNOWN_PLACE] * len(malformed)
    assert GeoLocator(None).lookup("192.0.2.1") == UNKNOWN_PLACE


@pytest.mark.parametrize("mode", READER_MODES)
def test_non_ascii_names_round_trip(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "city.mmdb"
    zurich = {
        "city": {"names": {"en": "Zürich", "de": "Zürich", "fr": "Zurich"}},
        "country": {"iso_code": "CH", "names": {"en": "Switzerland", "de": "Schweiz"}},
        "subdivisions": [{"iso_code": "ZH", "names": {"en": "Zürich"}}],
    }
    munich = {
        "city": {"names": {"en": "Munich", "de": "München", "ja": "ミュンヘン"}},
        "country": {"iso_code": "DE"},
        "subdivisions": [{"iso_code": "BY", "names": {"en": "Bavaria", "de": "Bayern"}}],
    }
    networks = {"192.0.2.0/25": zurich, "2001:db8:42::/48": munich, "192.0.2.128/25": _city("München")}
    write_mmdb(path, networks, languages=["en", "de", "fr", "ja"])
    assert _lookup_all(path, ["192.0.2.5", "192.0.2.200", "2001:db8:42::1"]) == [
        GeoPlace("CH", "Zürich", "Zürich"),
        GeoPlace("ZZ", None, "München"),
        GeoPlace("DE", "Bavaria", "Munich"),
    ]
    with maxminddb.open_database(str(path), mode) as reader:
        assert reader.get("192.0.2.5") == zurich
        assert reader.get("2001:db8:42::1") == munich
        assert reader.metadata().languages == ["en", "de", "fr", "ja"]


@pytest.mark.parametrize("mode", READER_MODES)
def test_every_data_type_and_size_encoding_round_trips(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "types.mmdb"
    # String lengths straddle each size-encoding boundary (29, 285, 65 821 bytes).
    lengths = [0, 1, 28, 29, 30, 284, 285, 286, 65_820, 65_821, 65_822, 70_000]
    record: dict[str, Any] = {
        "strings": ["x" * n for n in lengths],
        "true": True,
        "false": False,
        "uints": [0, 1, 255, 256, 65_535, 65_536, 2**32 - 1, 2**32, 2**64 - 1, 2**64, 2**128 - 1],
        "negatives": [-1, -(2**31)],
        "doubles": [0.0, -33.8688, 151.2093, 1e300],
        "bytes": b"\x00\x01\xff",
        "empty": {"map": {}, "array": [], "string": ""},
        "wide map": {f"k{i}": i for i in range(300)},
        "long array": list(range(300)),
        "nested": [[{"a": [1, {"b": "ü"}]}]],
    }
    write_mmdb(path, {"203.0.113.0/24": record})
    with maxminddb.open_database(str(path), mode) as reader:
        found = reader.get("203.0.113.1")
    assert found == record
    # == alone would accept 1 for True: booleans must come back as booleans.
    assert found["true"] is True
    assert found["false"] is False
    assert isinstance(found["doubles"][0], float)


def test_large_data_section_uses_the_high_bits_of_28_bit_records(tmp_path: Path) -> None:
    # Fifteen /4 networks of 1.6 MB each (readers cap one lookup at 2 MiB) and 240.0.0.0/4 empty.
    # Records above 2**24 need the shared middle byte of a 28-bit node; sibling pairs mixing small
    # and large values (160/4 small + 176/4 large; 224/4 large + empty 240/4 small) catch a writer
    # that puts the left and right nibbles the wrong way round.
    networks = {f"{16 * i}.0.0.0/4": {"index": i, "pad": "p" * 1_600_000} for i in range(15)}
    path = tmp_path / "big.mmdb"
    write_mmdb(path, networks, record_size=28)
    for mode in READER_MODES:
        with maxminddb.open_database(str(path), mode) as reader:
            indexes = [reader.get(f"{16 * i + 1}.2.3.4")["index"] for i in range(15)]
            assert indexes == list(range(15))
            assert reader.get("241.2.3.4") is None
    with pytest.raises(ValueError, match="record_size 24"):
        write_mmdb(tmp_path / "too-big.mmdb", networks, record_size=24)


@pytest.mark.parametrize("mode", READER_MODES)
def test_two_thousand_random_networks_round_trip(tmp_path: Path, mode: int) -> None:
    rng = random.Random(20240601)
    v4 = {f"{ipaddress.IPv4Address(rng.getrandbits(24) << 8)}/24" for _ in range(2_000)}
    v6 = {f"{ipaddress.IPv6Address(rng.getrandbits(48) << 80)}/48" for _ in range(200)}
    networks = {cidr: _city(f"City {i}", "X" + str(i % 10)) for i, cidr in enumerate(sorted(v4 | v6))}
    assert len(networks) > 2_150
    path = tmp_path / "random.mmdb"
    write_mmdb(path, networks)
    with maxminddb.open_database(str(path), mode) as reader:
        found = {str(network): record for network, record in reader}
    # Exactly the input: every network, its exact prefix, its record; nothing else.
    assert found == networks
    addresses = [str(ipaddress.ip_network(cidr)[rng.randrange(256)]) for cidr in networks]
    places = _lookup_all(path, addresses)
    assert places == [
        GeoPlace(record["country"]["iso_code"], None, record["city"]["names"]["en"]) for record in networks.values()
    ]


def test_identical_records_are_stored_once(tmp_path: Path) -> None:
    shared = _city("Shared")
    one, many = tmp_path / "one.mmdb", tmp_path / "many.mmdb"
    write_mmdb(one, {"192.0.2.0/24": shared, "198.51.100.0/24": _city("Other")})
    write_mmdb(many, {"192.0.2.0/24": shared, "198.51.100.0/24": dict(shared), "203.0.113.0/24": shared})
    with maxminddb.open_database(str(many)) as reader:
        assert reader.get("198.51.100.1") == reader.get("203.0.113.1") == shared
        data_start = reader.metadata().node_count * 7 + 16
    raw = many.read_bytes()
    assert raw[data_start:].count(b"Shared") == 1


def test_output_is_deterministic_apart_from_build_epoch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(geoip_sample.time, "time", lambda: 1_700_000_000.25)
    first, second = tmp_path / "first.mmdb", tmp_path / "second.mmdb"
    write_sample(first)
    write_sample(second)
    assert first.read_bytes() == second.read_bytes()
    with maxminddb.open_database(str(first)) as reader:
        assert reader.metadata().build_epoch == 1_700_000_000


def test_write_is_atomic_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    path = tmp_path / "city.mmdb"
    write_mmdb(path, {"192.0.2.0/24": _city("Old")})
    original = path.read_bytes()
    with pytest.raises(TypeError):
        write_mmdb(path, {"192.0.2.0/24": {"bad": object()}})
    assert path.read_bytes() == original
    write_mmdb(str(path), {"192.0.2.0/24": _city("New")})
    assert _lookup_all(path, ["192.0.2.1"]) == [GeoPlace("ZZ", None, "New")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["city.mmdb"]


def test_failed_replace_keeps_the_old_file_and_removes_the_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "city.mmdb"
    write_mmdb(path, {"192.0.2.0/24": _city("Old")})
    original = path.read_bytes()

    def failing_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(geoip_sample.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        write_mmdb(path, {"192.0.2.0/24": _city("New")})
    assert path.read_bytes() == original
    assert sorted(p.name for p in tmp_path.iterdir()) == ["city.mmdb"]


@pytest.mark.parametrize(
    ("networks", "kwargs", "message"),
    [
        ({"192.0.2.1/24": {}}, {}, "host bits"),
        ({"2001:db8::/32": {}, "2001:0db8::/32": {}}, {}, "given twice"),
        ({"not-a-network": {}}, {}, "does not appear to be"),
        ({"192.0.2.0/24": {}}, {"record_size": 20}, "record_size"),
        ({"192.0.2.0/24": {"n": -(2**31) - 1}}, {}, "int32"),
    ],
)
def test_invalid_input_is_rejected(
    tmp_path: Path, networks: dict[str, Any], kwargs: dict[str, Any], message: str
) -> None:
    path = tmp_path / "city.mmdb"
    with pytest.raises(ValueError, match=message):
        write_mmdb(path, networks, **kwargs)
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


# -- MaxMind's own test database, with the JSON it was built from as the expected answers ----------
MAXMIND = Path(__file__).resolve().parents[3] / "shared" / "data" / "maxmind-test"
needs_maxmind = pytest.mark.skipif(not MAXMIND.is_dir(), reason=f"MaxMind test data not present at {MAXMIND}")


def _as_written(
    network: ipaddress.IPv4Network | ipaddress.IPv6Network,
) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """MaxMind's source writes IPv4 networks inside ::/96 ("::81.2.69.142/127"): the IPv4 network."""
    if network.version == 6 and network.prefixlen >= 96 and int(network.network_address) < 2**32:
        return ipaddress.ip_network(f"{ipaddress.IPv4Address(int(network.network_address))}/{network.prefixlen - 96}")
    return network


def _expected_places() -> dict[str, GeoPlace]:
    """One address inside every network of the source that names a country or city -> its place."""
    source = json.loads((MAXMIND / "GeoIP2-City-Test.json").read_text(encoding="utf-8"))
    records = {_as_written(ipaddress.ip_network(cidr)): record for entry in source for cidr, record in entry.items()}
    expected: dict[str, GeoPlace] = {}
    for network, record in records.items():
        if "country" not in record and "city" not in record:
            continue
        # The last address, unless a more specific network of the source holds it.
        inner = [other for other in records if other != network and other.version == network.version
                 and other.subnet_of(network)]  # type: ignore[arg-type]  # fmt: skip
        address = next(a for a in (network[-1], network[0]) if not any(a in other for other in inner))
        subdivisions = record.get("subdivisions") or [{}]
        expected[str(address)] = GeoPlace(
            record.get("country", {}).get("iso_code"),
            subdivisions[0].get("names", {}).get("en"),
            record.get("city", {}).get("names", {}).get("en"),
        )
    return expected


@needs_maxmind
def test_maxminds_own_test_database_gives_the_places_of_its_source() -> None:
    expected = _expected_places()
    assert len(expected) > 200
    assert expected["81.2.69.143"] == GeoPlace("GB", "England", "London")
    found = _lookup_all(MAXMIND / "GeoIP2-City-Test.mmdb", list(expected))
    wrong = {address: (place, expected[address]) for address, place in zip(expected, found, strict=True)
             if place != expected[address]}  # fmt: skip
    assert wrong == {}


@needs_maxmind
def test_a_corrupt_database_never_takes_judging_down() -> None:
    """MaxMind's deliberately broken file: refused when opened, or every place is unknown; either way
    the judge answers, and no exception (whose text would carry the address) escapes it."""
    broken = str(MAXMIND / "GeoIP2-City-Test-Broken-Double-Format.mmdb")
    locator = GeoLocator(broken)  # its metadata reads fine: the damage shows in every look-up
    judge = Judge(locator, UserAgentClassifier())
    try:
        for address in ("81.2.69.143", "2001:218::1", "89.160.20.113", "216.160.83.57"):
            # The reader's error quotes the address: the locator itself must not let it out.
            assert locator.lookup(address) == UNKNOWN_PLACE
            verdict = judge.judge(address, CHROME)
            assert (verdict.country, verdict.region, verdict.city, verdict.browser) == (None, None, None, "Chrome")
    finally:
        locator.close()
