"""City-level geolocation from a MaxMind-format database (GeoLite2/GeoIP2 City layout).

The IP address is only ever an argument here: nothing is cached or logged, so dropping it after
judging really drops it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import maxminddb


@dataclass(frozen=True, slots=True)
class GeoPlace:
    """Where a request came from, as precise as the database knows (None where it does not)."""

    country: str | None = None
    region: str | None = None
    city: str | None = None


UNKNOWN_PLACE = GeoPlace()


def _name(node: Any) -> str | None:
    if not isinstance(node, dict):
        return None
    names = node.get("names")
    if isinstance(names, dict):
        value = names.get("en")
        if isinstance(value, str):
            return value
    return None


def place_from_record(record: Any) -> GeoPlace:
    """Read country ISO code, first subdivision name and city name from a City-layout record."""
    if not isinstance(record, dict):
        return UNKNOWN_PLACE
    country_node = record.get("country")
    country = country_node.get("iso_code") if isinstance(country_node, dict) else None
    subdivisions = record.get("subdivisions")
    region = _name(subdivisions[0]) if isinstance(subdivisions, list) and subdivisions else None
    return GeoPlace(
        country=country if isinstance(country, str) else None,
        region=region,
        city=_name(record.get("city")),
    )


class GeoLocator:
    """Looks up places; a missing path means every lookup is unknown (the tracker still runs)."""

    def __init__(self, path: str | None) -> None:
        self._reader: Any = maxminddb.open_database(path) if path else None

    def lookup(self, ip: str | None) -> GeoPlace:
        """Return the place of ``ip``; malformed or unknown addresses give ``UNKNOWN_PLACE``."""
        if self._reader is None or not ip:
            return UNKNOWN_PLACE
        try:
            record = self._reader.get(ip)  # the reader parses the text itself, faster than ipaddress
        except (ValueError, TypeError, maxminddb.InvalidDatabaseError):
            # A corrupt database's error quotes the address it was asked about: it must not escape.
            return UNKNOWN_PLACE
        return place_from_record(record) if record is not None else UNKNOWN_PLACE

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
