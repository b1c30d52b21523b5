"""Ingest on S3: the whole ``ingest_flow`` against a raw pyarrow copy of the same objects, side by side.

The dataset is text-classification-like rows (id, text, channel, score, lang; 0.5 % repeated ids, 0.1 % blank
texts), split over ``--files`` objects, half CSV and half Parquet, in the workspace bucket under
``bench/ingest-s3/rows=<N>/``. It is generated once per size and kept: a ``_complete.json`` object, written
last, says which parameters made it, so reruns reuse it.

- **raw baseline**: for each object, ``pyarrow.csv.open_csv`` (default options: threads, type inference) or
  ``ParquetFile.iter_batches`` over ``store.filesystem``, streamed into a ``ParquetWriter`` (zstd, as Kazi
  writes) on the same S3. No validation, no dedupe, no hashing.
- **Kazi**: ``ingest_flow`` with a fresh work-order id, once over the CSV folder and once over the Parquet
  folder (a work order has one format), through the Prefect server. The time of each task (list sources,
  canonicalise, which also hashes each source as it reads it, validate + Data Docs) comes from the task runs'
  timestamps on the server. Every row is checked by the row checker; Great Expectations validates a
  20,000-item sample and the per-file counts (see ``flows.ingest.sample``).

The two cores are shared with whatever else runs: under load the wall-clock ratio follows the ratio of CPU
time, so the CPU seconds of each side (all its threads) are shown too.

A run of a small dataset (``--fixed-rows``, 20,000 by default) comes first: what each side spends on a run
whatever its size (Kazi: the Prefect flow and task runs, Great Expectations and its Data Docs, loading the
compiled kernels, opening the S3 clients). Each size then also shows the throughput *per row* beyond that,
``(rows - small rows) / (time - small time)``, side by side: how much of the gap is per run and how much
per row. The goal stays on the whole flow.

Each side runs in its own subprocess; its peak RSS is that process's ``ru_maxrss`` (``os.wait4``). Outputs
are deleted afterwards. Several ``--rows`` values run one after the other, to show whether peak memory
depends on the input size.

Run (test stack)::

    KAZI_STACK_PORT_BASE=28300 KAZI_STACK_DIR=/work/main/.state/test \\
    PREFECT_API_URL=http://127.0.0.1:28300/api .venv/bin/python -m bench.ingest_s3 --rows 1000000 5000000
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pv
import pyarrow.parquet as pq

from flows.core.models import SourceFormat, WorkOrder
from flows.core.s3 import ObjectStore
from flows.core.settings import load_settings

ROOT = "bench/ingest-s3"
GENERATOR = 1  # bump when the rows change, so stored datasets are regenerated
CHUNK = 250_000
CLASSES = ["positive", "negative", "neutral"]
_SENTENCES = [
    "I love the solar lamp, it works perfectly",
    "Asante sana, the agent in Nairobi was so helpful and patient with my questions about the invoice",
    "The delivery to Mombasa is late again",
    "Terrible service, nobody answered my calls for three days and the shop was closed when I went there",
    "Is the phone case available in blue?",
    "My M-Pesa transfer went through, thank you",
    "The maize flour arrived early — excellent quality, worth every shilling",
    "Why is my bill higher than last month? I was charged twice for the same order",
    "Zoë from Zürich says the app crashes on Android after the update 🙂",
    "Please change the phone number on my account",
]


def _rows(start: int, n: int, rng: np.random.Generator) -> pa.Table:
    number = np.arange(start, start + n, dtype=np.int64)
    repeat = rng.random(n) < 0.005  # an id seen a little earlier: an id duplicate
    number[repeat] = np.maximum(number[repeat] - rng.integers(1, 1000, int(repeat.sum())), 0)
    ids = pc.binary_join_element_wise("msg-", pc.utf8_lpad(pc.cast(pa.array(number), pa.string()), 10, "0"), "")
    sentence = pa.array(_SENTENCES).take(pa.array(rng.integers(0, len(_SENTENCES), n)))
    text = pc.binary_join_element_wise(sentence, " #", pc.cast(pa.array(np.arange(start, start + n)), pa.string()), "")
    blank = pa.array(rng.random(n) < 0.001)  # quarantined: text is required
    text = pc.if_else(blank, pa.scalar("  ", pa.string()), text)
    return pa.table(
        {
            "id": ids,
            "text": text,
            "channel": pa.array(["sms", "whatsapp", "email", "web"]).take(pa.array(rng.integers(0, 4, n))),
            "score": pa.array(rng.integers(0, 1_000_000, n)),
            "lang": pa.array(["en", "sw", "so", "fr", "de"]).take(pa.array(rng.integers(0, 5, n))),
        }
    )


def _layout(rows: int, files: int) -> list[tuple[str, SourceFormat, int, int]]:
    """(key, format, first row, rows) of each object: the first half CSV, the rest Parquet."""
    base = f"{ROOT}/rows={rows}"
    per = -(-rows // files)
    out = []
    for i in range(files):
        fmt = SourceFormat.CSV if i < files // 2 else SourceFormat.PARQUET
        first = i * per
        out.append((f"{base}/{fmt.value}/part-{i:02d}.{fmt.value}", fmt, first, max(0, min(per, rows - first))))
    return out


def ensure_dataset(store: ObjectStore, rows: int, files: int) -> None:
    """Generate the dataset unless a complete one with these parameters is stored."""
    bucket = store.settings.workspace_bucket
    marker = f"{ROOT}/rows={rows}/_complete.json"
    params = {"rows": rows, "files": files, "generator": GENERATOR}
    if store.head(bucket, marker) is not None and json.loads(store.get_bytes(bucket, marker)) == params:
        return
    store.delete_prefix(bucket, f"{ROOT}/rows={rows}/")
    t0 = time.perf_counter()
    fs = store.filesystem
    for key, fmt, first, n in _layout(rows, files):
        rng = np.random.default_rng(first)
        path = f"{bucket}/{key}"
        if fmt == SourceFormat.CSV:
            with fs.open_output_stream(path) as out:
                for s in range(first, first + n, CHUNK):
                    table = _rows(s, min(CHUNK, first + n - s), rng)
                    pv.write_csv(table, out, pv.WriteOptions(include_header=s == first))
        else:
            with pq.ParquetWriter(path, _rows(0, 1, rng).schema, filesystem=fs) as writer:
                for s in range(first, first + n, CHUNK):
                    writer.write_table(_rows(s, min(CHUNK, first + n - s), rng))
    store.put_bytes(bucket, marker, json.dumps(params).encode())
    print(f"generated {rows:,} rows in {files} objects in {time.perf_counter() - t0:.1f} s", flush=True)


# --- the two sides (each in its own process) ---------------------------------------------------------


def run_raw(store: ObjectStore, fmt: SourceFormat, rows: int, files: int, run: str) -> dict[str, Any]:
    bucket = store.settings.workspace_bucket
    fs = store.filesystem
    n = 0
    for i, (key, file_fmt, _, _) in enumerate(_layout(rows, files)):
        if file_fmt != fmt:
            continue
        batches: Any
        if fmt == SourceFormat.CSV:
            batches = pv.open_csv(fs.open_input_stream(f"{bucket}/{key}"))
        else:
            batches = pq.ParquetFile(fs.open_input_file(f"{bucket}/{key}")).iter_batches()
        writer: pq.ParquetWriter | None = None
        for batch in batches:
            if writer is None:
                out = f"{bucket}/{ROOT}/out/{run}/part-{i:02d}.parquet"
                writer = pq.ParquetWriter(out, batch.schema, filesystem=fs, compression="zstd")
            writer.write_batch(batch)
            n += batch.num_rows
        if writer is not None:
            writer.close()
    return {"rows": n}


def _work_order(run: str, bucket: str, rows: int, fmt: SourceFormat) -> WorkOrder:
    return WorkOrder.model_validate(
        {
            "id": f"bench-{run}-{fmt.value}",
            "client_id": "bench",
            "source": {"uri": f"s3://{bucket}/{ROOT}/rows={rows}/{fmt.value}/", "format": fmt.value},
            "task_type": "text_classification",
            "columns": {"item_id": "id", "text": "text"},
            "label_schema": {"classes": CLASSES},
            "deadline": "2030-01-01T00:00:00Z",
            "price_per_item": 0.05,
            "pay_per_task": 0.01,
            "delivery": {"uri": f"s3://{bucket}/{ROOT}/delivery"},
        }
    )


def _task_seconds(flow_run_id: Any) -> dict[str, float]:
    """Seconds of each task run of a flow run, from the server's timestamps."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    out: dict[str, float] = {}
    for r in runs:
        if r.start_time and r.end_time:
            # "<work order> / canonicalise <version>" -> "canonicalise"
            label = re.sub(r" [0-9a-f]{16}$", "", r.name.split(" / ", 1)[-1])
            out[label] = out.get(label, 0.0) + (r.end_time - r.start_time).total_seconds()
    return out


def run_kazi(store: ObjectStore, fmt: SourceFormat, rows: int, files: int, run: str) -> dict[str, Any]:
    from flows.ingest.flow import ingest_flow  # imported by child() before the clock starts

    state = ingest_flow(_work_order(run, store.settings.workspace_bucket, rows, fmt), return_state=True)
    result = state.result()
    return {
        "rows": result.rows_read,
        "counts": result.model_dump(include={"accepted", "quarantined", "duplicates"}),
        "steps": _task_seconds(state.state_details.flow_run_id),
    }


def child(side: str, fmt: SourceFormat, rows: int, files: int, run: str) -> None:
    imports = 0.0
    if side == "kazi":
        # Importing Prefect and Great Expectations is process start-up, not ingest work: timed apart. So is
        # FastAPI's encoder, which Prefect imports on the first direct call of a flow (to send its parameters
        # to the server) and a deployment's run, whose parameters are already there, never does.
        start = time.perf_counter()
        import fastapi.encoders  # noqa: F401
        import great_expectations  # noqa: F401

        import flows.ingest.flow  # noqa: F401

        imports = time.perf_counter() - start
    store = ObjectStore(load_settings())
    start = time.perf_counter()
    cpu = time.process_time()
    work = run_kazi if side == "kazi" else run_raw
    got = work(store, fmt, rows, files, run)
    got["imports"] = imports
    got["seconds"] = time.perf_counter() - start
    got["cpu"] = time.process_time() - cpu
    print(json.dumps(got))


def _spawn(side: str, fmt: SourceFormat, rows: int, files: int, run: str) -> dict[str, Any]:
    """Run one side on one format's objects in a fresh process; its own peak RSS comes from wait4."""
    env = dict(os.environ, PREFECT_LOGGING_LEVEL="WARNING")
    cmd = [sys.executable, "-m", "bench.ingest_s3", "--child", side, fmt.value, str(rows), str(files), run]
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(cmd, stdout=out, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise SystemExit(f"{side} side on {fmt.value} failed (exit {proc.returncode})")
        out.seek(0)
        got: dict[str, Any] = json.loads(out.read().decode().strip().splitlines()[-1])
    got["peak_mb"] = usage.ru_maxrss / 1024
    return got


def _cleanup(store: ObjectStore, run: str) -> None:
    bucket = store.settings.workspace_bucket
    store.delete_prefix(bucket, f"{ROOT}/out/{run}/")
    for fmt in SourceFormat:
        store.delete_prefix(bucket, f"work-orders/bench-{run}-{fmt.value}/")


Results = dict[tuple[str, SourceFormat], dict[str, Any]]
FORMATS = (SourceFormat.CSV, SourceFormat.PARQUET)


def bench(store: ObjectStore, rows: int, files: int) -> tuple[Results, dict[SourceFormat, float]]:
    """Both sides on each format's objects, raw first; returns the results and the MB of each format."""
    ensure_dataset(store, rows, files)
    bucket = store.settings.workspace_bucket
    mb = {
        fmt: sum(o.size for o in store.list_objects(bucket, f"{ROOT}/rows={rows}/{fmt.value}/")) / 1e6
        for fmt in FORMATS
    }
    run = uuid.uuid4().hex[:8]
    results: Results = {}
    try:
        for fmt in FORMATS:
            for side in ("raw", "kazi"):
                results[side, fmt] = _spawn(side, fmt, rows, files, run)
    finally:
        _cleanup(store, run)
    return results, mb


def _line(label: str, n: int, seconds: float, cpu: float | None, mb: float, peak: float | None) -> str:
    cpu_text = f"{cpu:>8.2f}" if cpu is not None else f"{'':>8}"
    peak_text = f"{peak:>13,.0f}" if peak is not None else ""
    return f"{label:<40}{n:>11,}{seconds:>9.2f}{cpu_text}{n / seconds:>11,.0f}{mb / seconds:>8.1f}{peak_text}"


def report(rows: int, files: int, results: Results, mb: dict[SourceFormat, float]) -> None:
    load = os.getloadavg()
    print(f"\n{rows:,} rows in {files} objects ({files // 2} CSV, {sum(mb.values()):,.0f} MB in all)")
    print(f"{'side':<40}{'rows':>11}{'time s':>9}{'CPU s':>8}{'rows/s':>11}{'MB/s':>8}{'peak RSS MB':>13}")
    totals: dict[str, list[float]] = {}
    for fmt in FORMATS:
        raw, kazi = results["raw", fmt], results["kazi", fmt]
        steps = kazi["steps"]
        print(_line(f"raw, {fmt.value}", raw["rows"], raw["seconds"], raw["cpu"], mb[fmt], raw["peak_mb"]))
        print(
            _line(
                f"kazi ingest_flow, {fmt.value}", kazi["rows"], kazi["seconds"], kazi["cpu"], mb[fmt], kazi["peak_mb"]
            )
        )
        print(_line(f"  kazi canonicalise task, {fmt.value}", kazi["rows"], steps["canonicalise"], None, mb[fmt], None))
        rest = kazi["seconds"] - sum(steps.values())
        print(
            "    steps (s, task-run timestamps): "
            + ", ".join(f"{k} {v:.2f}" for k, v in sorted(steps.items()))
            + f", rest of the flow {rest:.2f} (imports before the clock {kazi['imports']:.1f}); "
            + ", ".join(f"{k} {v:,}" for k, v in kazi["counts"].items())
        )
        for key, value in (
            ("raw_s", raw["seconds"]),
            ("kazi_s", kazi["seconds"]),
            ("canon_s", steps["canonicalise"]),
            ("raw_rows", raw["rows"]),
            ("kazi_rows", kazi["rows"]),
        ):
            totals.setdefault(key, []).append(value)
        totals.setdefault("raw_peak", []).append(raw["peak_mb"])
        totals.setdefault("kazi_peak", []).append(kazi["peak_mb"])
    for side in ("raw", "kazi"):
        totals[f"{side}_cpu"] = [results[side, f]["cpu"] for f in FORMATS]
    raw_rate = sum(totals["raw_rows"]) / sum(totals["raw_s"])
    kazi_rate = sum(totals["kazi_rows"]) / sum(totals["kazi_s"])
    canon_rate = sum(totals["kazi_rows"]) / sum(totals["canon_s"])
    print(
        f"both formats: raw {raw_rate:,.0f} rows/s, kazi {kazi_rate:,.0f} rows/s whole flow, "
        f"{canon_rate:,.0f} rows/s canonicalise"
    )
    print(
        f"kazi / raw throughput: {kazi_rate / raw_rate:.2f}x whole flow, {canon_rate / raw_rate:.2f}x canonicalise "
        f"alone (goal >= 0.5x); peak RSS raw {max(totals['raw_peak']):,.0f} MB, kazi {max(totals['kazi_peak']):,.0f} "
        f"MB (goal < 1,500); load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    print(
        f"CPU seconds per million rows: raw {sum(totals['raw_cpu']) / sum(totals['raw_rows']) * 1e6:.2f}, kazi "
        f"{sum(totals['kazi_cpu']) / sum(totals['kazi_rows']) * 1e6:.2f} whole flow "
        f"(raw / kazi {sum(totals['raw_cpu']) / sum(totals['kazi_cpu']):.2f}x)"
    )


#: Rows of the small run that measures what a run costs whatever its size.
FIXED_ROWS = 20_000


def _totals(results: Results, side: str) -> tuple[int, float]:
    """(rows, seconds) of one side over both formats."""
    return (
        sum(results[side, f]["rows"] for f in FORMATS),
        sum(results[side, f]["seconds"] for f in FORMATS),
    )


def per_run(small: Results) -> str:
    """What each side spends on a run of a tiny dataset: set-up, validation, flow overhead."""
    parts = []
    for side in ("raw", "kazi"):
        each = ", ".join(f"{f.value} {small[side, f]['seconds']:.2f} s" for f in FORMATS)
        parts.append(f"{side} {each}")
        if side == "kazi":
            steps = small[side, FORMATS[0]]["steps"]
            parts[-1] += " (" + ", ".join(f"{k} {v:.2f}" for k, v in sorted(steps.items())) + f" on {FORMATS[0].value})"
    return "; ".join(parts)


def marginal(small: Results, big: Results) -> None:
    """Throughput per row beyond a run's fixed cost: (rows_big - rows_small) / (time_big - time_small)."""
    rates = {}
    for side in ("raw", "kazi"):
        (n_small, t_small), (n_big, t_big) = _totals(small, side), _totals(big, side)
        rates[side] = (n_big - n_small) / (t_big - t_small)
    print(
        f"per-row throughput (beyond each run's fixed cost): raw {rates['raw']:,.0f} rows/s, kazi "
        f"{rates['kazi']:,.0f} rows/s, kazi / raw {rates['kazi'] / rates['raw']:.2f}x "
        "(the goal is on the whole flow, above; this says how much of the gap is per run, not per row)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000], help="dataset sizes, run in turn")
    parser.add_argument("--files", type=int, default=10, help="objects per dataset, half CSV and half Parquet")
    parser.add_argument(
        "--fixed-rows",
        type=int,
        default=FIXED_ROWS,
        help="a small dataset run first, to split each side's time into a cost per run and a cost per row (0: off)",
    )
    parser.add_argument("--child", nargs=5, metavar=("SIDE", "FORMAT", "ROWS", "FILES", "RUN"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        side, fmt, rows, files, run = args.child
        child(side, SourceFormat(fmt), int(rows), int(files), run)
        return
    if args.files < 2:
        parser.error("--files must be at least 2 (half CSV, half Parquet)")
    store = ObjectStore(load_settings())
    print(
        f"S3 {store.settings.s3_endpoint_url}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    small: Results | None = None
    if args.fixed_rows:
        small, _ = bench(store, args.fixed_rows, args.files)
        print(f"\nper-run cost ({args.fixed_rows:,} rows, both formats): " + per_run(small))
    summary = []
    for rows in args.rows:
        results, mb = bench(store, rows, args.files)
        report(rows, args.files, results, mb)
        if small is not None:
            marginal(small, results)
        summary.append((rows, results))
    if len(summary) > 1:
        print("\npeak RSS by input size (MB), per format (each run is one work order of half the rows):")
        for rows, results in summary:
            peaks = "   ".join(
                f"{f.value}: raw {results['raw', f]['peak_mb']:>5,.0f} kazi {results['kazi', f]['peak_mb']:>6,.0f}"
                for f in FORMATS
            )
            print(f"  {rows:>12,} rows   {peaks}")


if __name__ == "__main__":
    main()
