"""The transparent GIFs the beacons answer with, built once at import."""

from __future__ import annotations

# The classic 43-byte 1x1 transparent GIF.
PIXEL = bytes.fromhex("47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b")
assert len(PIXEL) == 43

# Read-time beacon: a header, then one 1x1 transparent frame per tick, then the trailer. A client
# keeps the connection open while frames arrive, so the time until it hangs up is the read time.
STREAM_HEADER = bytes.fromhex("474946383961010001008000000000000000ffffff")  # GIF89a, 2-colour table
STREAM_FRAME = bytes.fromhex("21f904050a0000002c0000000001000100000202440100")  # delay 0.1 s, transparent
STREAM_TRAILER = b";"
