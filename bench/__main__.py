"""``python -m bench [name ...]``: run Kazi's benchmarks, each side by side with its baseline.

Without names it lists them. Benchmarks that talk to services use the stack named by the ``KAZI_*``
settings (``make bench`` starts the test stack's ports unless told otherwise).
"""

from __future__ import annotations

import runpy
import sys

BENCHES = {
    "ingest": "canonical ingest vs pyarrow read + Parquet write, local files (issue: ingest)",
    "ingest_s3": "the ingest flow on 5M+ rows in S3 vs pyarrow read + Parquet write to the same S3 (issue: ingest)",
    "task_creation": "Kazi task creation vs raw label-studio-sdk import_tasks, 50,000 tasks (issue: split)",
    "annotation_pull": "annotation pull of 20,000 annotated tasks vs one raw export call (issue: annotate)",
    "annotation_parse": "export parsing alone vs naive json + from_pylist (issue: annotate)",
    "consolidation": "Dawid-Skene vs crowd-kit, 100k and 1M items (issue: QA)",
    "validation": "Great Expectations validation of 1M consolidated items vs plain pandas (issue: QA)",
    "deliver_formats": "delivery writers vs per-row writers (issue: deliver)",
    "work_order_e2e": "100,000-item work order end to end: time per stage, Prefect's share (issue #8)",
}


def main(argv: list[str]) -> int:
    if not argv:
        print("Benchmarks (run: python -m bench NAME [args]):")
        for name, what in BENCHES.items():
            print(f"  {name:18} {what}")
        return 0
    name, args = argv[0], argv[1:]
    if name not in BENCHES:
        print(f"unknown benchmark {name!r}; choose from {', '.join(BENCHES)}", file=sys.stderr)
        return 2
    sys.argv = [f"bench.{name}", *args]
    runpy.run_module(f"bench.{name}", run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
