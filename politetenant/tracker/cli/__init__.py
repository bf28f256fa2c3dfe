"""``polite-tracker``: serve, migrate, purge, token, reseal, keys, audit verify and the demo (with the
MaxMind-format writer that makes its sample GeoIP database). The top room: nothing imports it.
"""
