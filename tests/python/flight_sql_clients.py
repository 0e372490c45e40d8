#!/usr/bin/env python3
"""Query vigil's Flight SQL door with two clients nobody here wrote: the ADBC Flight SQL driver
(adbc-driver-flightsql, the Go driver behind DBAPI) and pyarrow's plain Flight client (which knows
nothing of Flight SQL: the commands are packed by hand as protobuf `Any` messages, as any Flight
client would).

    flight_sql_clients.py --uri grpc://127.0.0.1:50051 --run-id RUN [--token TOKEN]
        [--tls-root-certs CA.pem]   (with --uri grpc+tls://...)

Prints one JSON object on stdout with what each client saw; the Rust test compares it with the
answers of /api/v1/sql. Exit code 1 with a message on stderr if a client fails.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings

import adbc_driver_flightsql
import adbc_driver_flightsql.dbapi as flight_sql
import pyarrow as pa
import pyarrow.flight as flight
import pyarrow.ipc  # noqa: F401  (pa.ipc)

TYPE_PREFIX = "type.googleapis.com/arrow.flight.protocol.sql."


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def packed(message: str, body: bytes) -> bytes:
    """google.protobuf.Any{type_url, value}."""
    return field(1, (TYPE_PREFIX + message).encode()) + field(2, body)


def adbc(uri: str, run_id: str, token: str | None, root_certs: str | None) -> dict:
    db_kwargs = {}
    if token:
        db_kwargs[adbc_driver_flightsql.DatabaseOptions.AUTHORIZATION_HEADER.value] = f"Bearer {token}"
    if root_certs:
        db_kwargs[adbc_driver_flightsql.DatabaseOptions.TLS_ROOT_CERTS.value] = root_certs
    kwargs = {"db_kwargs": db_kwargs} if db_kwargs else {}
    warnings.simplefilter("ignore")  # "Cannot disable autocommit": vigil is read-only
    with flight_sql.connect(uri, **kwargs) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT service_name, count(*) AS n FROM spans "
            f"WHERE resource_attributes['loadgen.run'] = '{run_id}' GROUP BY 1 ORDER BY 1"
        )
        by_service = {row[0]: row[1] for row in cur.fetchall()}
        # A prepared statement with a parameter.
        cur.execute(
            "SELECT count(*) AS n FROM spans WHERE resource_attributes['loadgen.run'] = $1",
            parameters=(run_id,),
        )
        with_parameter = cur.fetchone()[0]
        cur.execute("SELECT count(*) FROM spans WHERE service_name = $1 AND input_tokens > $2",
                    parameters=("chat-api", 100))
        two_parameters = cur.fetchone()[0]
        cur.execute("SELECT time FROM spans LIMIT 1")
        time_type = str(cur.fetch_arrow_table().schema.field("time").type)
        objects = conn.adbc_get_objects(depth="all").read_all().to_pylist()
        tables = sorted(
            f"{c['catalog_name']}.{s['db_schema_name']}.{t['table_name']}"
            for c in objects
            for s in c["catalog_db_schemas"]
            for t in s["db_schema_tables"]
        )
        spans_schema = conn.adbc_get_table_schema("spans")
        info = conn.adbc_get_info()
        return {
            "spans_by_service": by_service,
            "with_parameter": with_parameter,
            "two_parameters": two_parameters,
            "time_type": time_type,
            "tables": tables,
            "table_types": conn.adbc_get_table_types(),
            "spans_columns": spans_schema.names,
            "vendor_name": info.get("vendor_name"),
        }


def plain_flight(uri: str, run_id: str, token: str | None, root_certs: str | None) -> dict:
    client = flight.FlightClient(uri, tls_root_certs=root_certs.encode() if root_certs else None)
    options = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {token}".encode())] if token else [])

    def run(command: bytes):
        info = client.get_flight_info(flight.FlightDescriptor.for_command(command), options)
        tables = [client.do_get(endpoint.ticket, options).read_all() for endpoint in info.endpoints]
        return info, tables

    query = f"SELECT count(*) AS n FROM spans WHERE resource_attributes['loadgen.run'] = '{run_id}'"
    info, tables = run(packed("CommandStatementQuery", field(1, query.encode())))
    catalogs_info, catalogs = run(packed("CommandGetCatalogs", b""))
    # CommandGetTables{include_schema = true}: field 5, varint 1.
    tables_info, table_list = run(packed("CommandGetTables", varint(5 << 3 | 0) + varint(1)))
    listed = table_list[0].to_pylist()
    spans_row = next(r for r in listed if r["table_name"] == "spans")
    spans_schema = pa.ipc.read_schema(pa.py_buffer(spans_row["table_schema"]))
    sql_info_info, sql_info = run(packed("CommandGetSqlInfo", b""))
    codes = {row["info_name"]: row["value"] for row in sql_info[0].to_pylist()}
    return {
        "endpoints": len(info.endpoints),
        "count": tables[0].column("n")[0].as_py(),
        "catalogs": [r["catalog_name"] for r in catalogs[0].to_pylist()],
        "tables": sorted(f"{r['catalog_name']}.{r['db_schema_name']}.{r['table_name']}" for r in listed),
        "spans_schema_has_time": "time" in spans_schema.names,
        "sql_info_codes": sorted(codes),
        "keywords": len(codes.get(508) or []),
        "numeric_functions": len(codes.get(509) or []),
        "string_functions": len(codes.get(510) or []),
        "datetime_functions": len(codes.get(512) or []),
        "read_only": codes.get(3),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--uri", required=True)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--token")
    parser.add_argument("--tls-root-certs", help="a PEM file of CA certificates to trust")
    args = parser.parse_args()
    roots = open(args.tls_root_certs).read() if args.tls_root_certs else None
    try:
        result = {
            "adbc": adbc(args.uri, args.run_id, args.token, roots),
            "flight": plain_flight(args.uri, args.run_id, args.token, roots),
        }
    except Exception as error:  # the test shows the client's own words
        print(f"{type(error).__name__}: {error}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
