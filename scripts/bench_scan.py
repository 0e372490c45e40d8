#!/usr/bin/env python3
"""Full-scan throughput of one spans table three ways, in one session, side by side:
vigil's Flight SQL (ADBC), vigil's /api/v1/sql as an Arrow IPC stream, and DuckDB reading the
same Parquet files. Prints one JSON object; scripts/bench-scan.sh starts the collector.

    bench_scan.py --flight grpc://HOST:PORT --http http://HOST:PORT --parquet DIR [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import urllib.request
import warnings

import adbc_driver_flightsql.dbapi as flight_sql
import duckdb
import pyarrow as pa
import pyarrow.ipc

SQL = "SELECT * FROM spans"


def flight(uri: str) -> tuple[int, int]:
    warnings.simplefilter("ignore")
    with flight_sql.connect(uri) as conn, conn.cursor() as cur:
        cur.execute(SQL)
        rows = nbytes = 0
        for batch in cur.fetch_record_batch():
            rows += batch.num_rows
            nbytes += batch.nbytes
        return rows, nbytes


def http(url: str) -> tuple[int, int]:
    request = urllib.request.Request(
        f"{url}/api/v1/sql",
        data=json.dumps({"sql": SQL}).encode(),
        headers={"content-type": "application/json", "accept": "application/vnd.apache.arrow.stream"},
    )
    with urllib.request.urlopen(request, timeout=600) as response:
        reader = pa.ipc.open_stream(response)
        rows = nbytes = 0
        for batch in reader:
            rows += batch.num_rows
            nbytes += batch.nbytes
        return rows, nbytes


def duck(parquet_dir: str) -> tuple[int, int]:
    con = duckdb.connect()
    reader = con.sql(f"SELECT * FROM read_parquet('{parquet_dir}/**/*.parquet')").fetch_record_batch()
    rows = nbytes = 0
    for batch in reader:
        rows += batch.num_rows
        nbytes += batch.nbytes
    return rows, nbytes


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--flight", required=True)
    parser.add_argument("--http", required=True)
    parser.add_argument("--parquet", required=True)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    results = {}
    for name, run in [
        ("flight_sql_adbc", lambda: flight(args.flight)),
        ("http_arrow_ipc", lambda: http(args.http)),
        ("duckdb_parquet", lambda: duck(args.parquet)),
    ]:
        seconds, rows, nbytes = [], 0, 0
        for _ in range(args.runs):
            started = time.perf_counter()
            rows, nbytes = run()
            seconds.append(time.perf_counter() - started)
        median = statistics.median(seconds)
        results[name] = {
            "rows": rows,
            "arrow_mb": round(nbytes / 1e6, 1),
            "seconds_median": round(median, 2),
            "seconds_runs": [round(s, 2) for s in seconds],
            "rows_per_second": round(rows / median),
            "mb_per_second": round(nbytes / 1e6 / median, 1),
        }
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
