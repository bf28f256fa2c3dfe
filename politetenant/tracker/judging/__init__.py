"""Judging a request as it arrives: where it came from (client address, GeoIP city), what sent it
(OS, device, browser) and whether a person or a machine did.

The verdict is all that is kept: the IP address and user agent end here. Pure look-ups over data
loaded at start; imports nothing from the rest of the tracker.
"""
