"""``make bench``: every benchmark in this folder, each printing ratios measured in the same run.

Ends with the wall time of each (the whole run is meant to stay under 10 minutes on 2 cores).
"""

from __future__ import annotations

import runpy
import sys
import time

BENCHMARKS = [
    "bench.tracker_http",
    "bench.ingest",
    "bench.register_message",
    "bench.report_large",
    "bench.operator_scale",
]

seconds: dict[str, float] = {}
for name in BENCHMARKS:
    print(f"\n## {name}", flush=True)
    sys.argv = [name]
    started = time.monotonic()
    runpy.run_module(name, run_name="__main__")
    seconds[name] = time.monotonic() - started

print("\n## wall time")
for name, spent in seconds.items():
    print(f"{name:<26} {spent:>6.0f} s")
print(f"{'total':<26} {sum(seconds.values()):>6.0f} s")
