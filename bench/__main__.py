"""``make bench``: every benchmark in this folder, each printing ratios measured in the same run."""

from __future__ import annotations

import runpy
import sys

BENCHMARKS = [
    "bench.tracker_http",
    "bench.ingest",
    "bench.register_message",
    "bench.report_large",
    "bench.operator_scale",
]

for name in BENCHMARKS:
    print(f"\n## {name}", flush=True)
    sys.argv = [name]
    runpy.run_module(name, run_name="__main__")
