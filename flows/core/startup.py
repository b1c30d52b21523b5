"""What a flow's process does once its modules are imported: keep the garbage collector off them.

Prefect, Great Expectations, pandas, pyarrow and numba leave about a million Python objects behind when
they are imported (classes, functions, type registries, schemas). None of them ever becomes garbage, yet
every full collection of the cyclic garbage collector walks them all: about 0.15-0.2 s each on these
machines, and a run triggers several (an ingest of 20,000 rows spent 0.27-0.29 s in collections after
its first task, most of it in one full collection; boto3's first client, which parses 1.2 MB of endpoint
JSON, took 0.28 s instead of 0.01 s because the parse set one off). ``gc.freeze()`` moves every object
alive now into a permanent generation that collections skip; objects made later are collected as usual.

It is called when a flow module has been imported and after the lazy imports that are as large
(Great Expectations). It only freezes when modules were imported since the last time, so in a
long-lived process (the tests, a worker that runs flows in-process) later calls change nothing and no
garbage of earlier runs is frozen with them.
"""

from __future__ import annotations

import gc
import sys

_modules_when_frozen = 0


def freeze_imported_objects() -> bool:
    """Move the objects alive now out of the collector's way, if modules were imported since the last
    time; returns whether it froze."""
    global _modules_when_frozen
    loaded = len(sys.modules)
    if loaded == _modules_when_frozen:
        return False
    _modules_when_frozen = loaded
    gc.freeze()
    return True
