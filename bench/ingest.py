"""Ingest throughput: Kazi's read -> normalise -> check -> dedupe -> Parquet against a raw pyarrow copy.

Baseline: ``pyarrow.csv.open_csv`` (or ``pyarrow.json`` / ``ParquetFile.iter_batches``) streamed into a
``ParquetWriter``, with default options (threads, type inference): the least any ingest must do.
Kazi: :func:`flows.ingest.read.iter_batches` + :func:`flows.ingest.dedupe.ingest_batches`, writing the
items, quarantine and duplicates tables. Each side runs in its own process, so each peak RSS is its own.

Run: ``.venv/bin/python -m bench.ingest [--size 1000000] [--format csv|jsonl|parquet] [--gzip]``
"""

from __future__ import annotations

import argparse
import gzip
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pv
import pyarrow.fs as pafs
import pyarrow.json as pj
import pyarrow.parquet as pq

from flows.core.contracts import load_contract
from flows.core.models import SourceFormat, WorkOrder
from flows.ingest.dedupe import Reconciliation, SeenState, ingest_batches
from flows.ingest.read import iter_batches

_CHUNK = 250_000


def _rows(start: int, n: int, rng: np.random.Generator) -> pa.Table:
    i = np.arange(start, start + n)
    ids = np.char.add("IMG-", np.char.zfill(i.astype(str), 9))
    dup = rng.random(n) < 0.01  # 1% repeat an earlier id
    ids[dup] = np.char.add("img-", np.char.zfill((i[dup] // 2).astype(str), 9))
    uri = np.char.add(np.char.add("s3://client-bucket/images/batch-", (i % 977).astype(str)), "/photo_")
    uri = np.char.add(np.char.add(uri, i.astype(str)), ".jpg")
    bad = rng.random(n) < 0.001  # 0.1% malformed URIs
    uri[bad] = np.char.add("http://elsewhere/", i[bad].astype(str))
    caption = np.char.add(np.char.add("A photo of item ", i.astype(str)), ', taken at store — ünïcode, "quoted"')
    return pa.table(
        {
            "id": pa.array(ids.tolist()),
            "image": pa.array(uri.tolist()),
            "caption": pa.array(caption.tolist()),
            "score": pa.array(rng.integers(0, 10**6, n)),
        }
    )


def generate(path: Path, size: int, fmt: str, compress: bool) -> None:
    rng = np.random.default_rng(0)
    with path.open("wb") as raw:
        out = gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1) if compress else raw
        writer: pq.ParquetWriter | None = None
        for start in range(0, size, _CHUNK):
            t = _rows(start, min(_CHUNK, size - start), rng)
            if fmt == "csv":
                sink = pa.BufferOutputStream()
                pv.write_csv(t, sink, pv.WriteOptions(include_header=start == 0))
                out.write(sink.getvalue().to_pybytes())
            elif fmt == "jsonl":
                out.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in t.to_pylist()).encode("utf-8"))
            else:
                writer = writer or pq.ParquetWriter(path, t.schema)
                writer.write_table(t)
        if writer is not None:
            writer.close()
        if compress:
            out.close()


def run_baseline(src: Path, fmt: str, out: Path) -> int:
    rows = 0
    writer: pq.ParquetWriter | None = None
    if fmt == "csv":
        batches = pv.open_csv(pa.input_stream(str(src), compression="detect"))
    elif fmt == "parquet":
        batches = pq.ParquetFile(src).iter_batches()
    else:
        batches = pj.read_json(pa.input_stream(str(src), compression="detect")).to_batches()
    for b in batches:
        writer = writer or pq.ParquetWriter(out / "raw.parquet", b.schema)
        writer.write_batch(b)
        rows += b.num_rows
    if writer is not None:
        writer.close()
    return rows


def run_kazi(src: Path, fmt: str, out: Path, threads: int = 2) -> int:
    order = WorkOrder.model_validate(
        {
            "id": "bench-0001",
            "client_id": "bench",
            "source": {"uri": "s3://bench-in/x", "format": fmt},
            "task_type": "image_classification",
            "columns": {"item_id": "id", "media_uri": "image", "text": "caption"},
            "label_schema": {"classes": ["cat", "dog"]},
            "deadline": "2030-01-01T00:00:00Z",
            "price_per_item": 0.1,
            "pay_per_task": 0.02,
            "delivery": {"uri": "s3://bench-out/x"},
        }
    )
    contract = load_contract(order.task_type)
    writers: dict[str, pq.ParquetWriter] = {}
    tally = Reconciliation()
    seen = SeenState()
    batches = iter_batches(pafs.LocalFileSystem(), str(src), SourceFormat(fmt))
    for b in ingest_batches(batches, order, contract, seen, threads=threads):
        for name, table in (("items", b.accepted), ("quarantine", b.quarantined), ("duplicates", b.duplicates)):
            if name not in writers:
                # Dictionary pages only where values repeat: for unique strings (ids, records, hashes)
                # Parquet's dictionary attempt is wasted work.
                writers[name] = pq.ParquetWriter(
                    out / f"{name}.parquet",
                    table.schema,
                    use_dictionary=["source_object", "duplicate_of_object", "kind"],
                )
            if table.num_rows:
                writers[name].write_table(table)
        tally = tally.add(b)
    for w in writers.values():
        w.close()
    tally.check()
    dedupe_mb = (seen.ids.nbytes + seen.contents.nbytes) / 1e6
    print(
        f"  kazi: read {tally.rows_read:,} = accepted {tally.accepted:,} + quarantined {tally.quarantined:,}"
        f" + duplicates {tally.duplicates:,}; dedupe memory {dedupe_mb:,.0f} MB"
        f" ({dedupe_mb * 1e6 / max(tally.rows_read, 1):.0f} B/row)",
        file=sys.stderr,
    )
    return tally.rows_read


def child(side: str, src: Path, fmt: str, threads: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        cpu = time.process_time()
        rows = run_kazi(src, fmt, Path(tmp), threads) if side == "kazi" else run_baseline(src, fmt, Path(tmp))
        seconds = time.perf_counter() - start
        cpu = time.process_time() - cpu
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"rows": rows, "seconds": seconds, "cpu": cpu, "peak_mb": peak_mb}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--format", choices=["csv", "jsonl", "parquet"], default="csv")
    parser.add_argument("--gzip", action="store_true")
    parser.add_argument("--repeat", type=int, default=1, help="runs per side, alternating; the best time counts")
    parser.add_argument(
        "--threads", type=int, default=2, help="ingest_batches threads: 0 none, 1 a reader, N a reader and N-1 workers"
    )
    parser.add_argument("--child", nargs=2, metavar=("SIDE", "FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]), args.format, args.threads)
        return

    with tempfile.TemporaryDirectory() as tmp:
        suffix = f".{args.format}" + (".gz" if args.gzip else "")
        src = Path(tmp) / f"source{suffix}"
        t0 = time.perf_counter()
        generate(src, args.size, args.format, args.gzip)
        print(
            f"{args.size:,} rows of {args.format}{' (gzip)' if args.gzip else ''}, "
            f"{src.stat().st_size / 1e6:,.0f} MB, generated in {time.perf_counter() - t0:.1f} s"
        )
        results: dict[str, dict[str, float]] = {}
        for _ in range(args.repeat):
            for side in ("baseline", "kazi"):
                cmd = [sys.executable, "-m", "bench.ingest", "--format", args.format, "--threads", str(args.threads)]
                cmd += ["--child", side, str(src)]
                got = json.loads(subprocess.run(cmd, check=True, stdout=subprocess.PIPE).stdout)
                if side not in results or got["seconds"] < results[side]["seconds"]:
                    results[side] = got
    base, kazi = results["baseline"], results["kazi"]
    print(f"{'side':<34}{'time s':>9}{'CPU s':>8}{'rows/s':>14}{'peak RSS MB':>13}")
    labels = {"baseline": "pyarrow read + parquet write (raw)", "kazi": "kazi ingest (checked, deduped)"}
    for side, r in results.items():
        rate = r["rows"] / r["seconds"]
        print(f"{labels[side]:<34}{r['seconds']:>9.2f}{r['cpu']:>8.2f}{rate:>14,.0f}{r['peak_mb']:>13,.0f}")
    ratio = (kazi["rows"] / kazi["seconds"]) / (base["rows"] / base["seconds"])
    print(
        f"kazi throughput / raw baseline: {ratio:.2f}x (goal >= 0.5x); "
        f"kazi peak {kazi['peak_mb']:,.0f} MB (goal < 1,500)"
    )


if __name__ == "__main__":
    main()
