"""What a flow's process does once its modules are imported: keep the garbage collector out of the way.

Prefect, Great Expectations, pandas, pyarrow and numba leave about a million Python objects behind when
they are imported (classes, functions, type registries, schemas). None of them ever becomes garbage, yet
every full collection of the cyclic garbage collector walks them all: about 0.15-0.2 s each on these
machines. ``gc.freeze()`` moves every object alive now into a permanent generation that collections
skip; objects made later are collected as usual. Measured on an ingest of 20,000 rows (the benchmark's
per-run cost): 0.27-0.29 s in collections after its first task before, and boto3's first client took
0.28 s instead of 0.01 s (parsing its 1.2 MB of endpoint JSON set a full collection off).

The youngest generation is also collected every :data:`YOUNG_COLLECTION` allocations instead of every
700: loading the compiled kernels and building the first batches make hundreds of thousands of
short-lived and long-lived objects, and at 700 the collector ran 140 times in an ingest of 20,000 rows,
0.16 s of its 0.6 s canonicalise (0.01 s at 20,000). Garbage cycles still go, a little later; memory is
dominated by Arrow buffers, which the collector does not hold.

It is called when a flow module has been imported. It only freezes when modules were imported since the
last time, so in a long-lived process (the tests, a worker that runs flows in-process) later calls
change nothing and no garbage of earlier runs is frozen with them.
"""

from __future__ import annotations

import gc
import sys

#: Allocations (net of frees) between two collections of the youngest generation (Python's default: 700).
YOUNG_COLLECTION = 20_000
_modules_when_frozen = 0


def tune_gc_after_imports() -> bool:
    """Collect the young generation less often and move the objects alive now out of the collector's way
    (if modules were imported since the last time); returns whether it froze."""
    global _modules_when_frozen
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION, middle, old)
    loaded = len(sys.modules)
    if loaded == _modules_when_frozen:
        return False
    _modules_when_frozen = loaded
    gc.freeze()
    return True
