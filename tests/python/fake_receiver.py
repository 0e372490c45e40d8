#!/usr/bin/env python3
"""Tiny OTLP receiver for debugging send_otel.py without the Rust collector.

Listens on 127.0.0.1 only: gRPC (Trace/Metrics/Logs services) and HTTP/protobuf
(POST /v1/traces, /v1/metrics, /v1/logs). Every received request is decoded
with opentelemetry-proto's classes and written as one JSON line (protobuf JSON
mapping, so ids are base64 and 64-bit ints are strings) to --out (default
stdout):  {"transport": "grpc"|"http", "signal": "traces"|..., "request": {...}}

    python fake_receiver.py --grpc-port 14317 --http-port 14318 --out /tmp/otlp.jsonl

Stops on SIGINT/SIGTERM, or by itself after --max-seconds (default 300).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2 as logs_pb
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc as logs_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as metrics_pb
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc as metrics_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as trace_pb
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as trace_grpc

_lock = threading.Lock()
_out = sys.stdout


def _record(transport: str, signal_name: str, msg) -> None:
    line = json.dumps({"transport": transport, "signal": signal_name, "request": MessageToDict(msg)})
    with _lock:
        _out.write(line + "\n")
        _out.flush()


class _Trace(trace_grpc.TraceServiceServicer):
    def Export(self, request, context):  # noqa: N802
        _record("grpc", "traces", request)
        return trace_pb.ExportTraceServiceResponse()


class _Metrics(metrics_grpc.MetricsServiceServicer):
    def Export(self, request, context):  # noqa: N802
        _record("grpc", "metrics", request)
        return metrics_pb.ExportMetricsServiceResponse()


class _Logs(logs_grpc.LogsServiceServicer):
    def Export(self, request, context):  # noqa: N802
        _record("grpc", "logs", request)
        return logs_pb.ExportLogsServiceResponse()


_HTTP_ROUTES = {
    "/v1/traces": ("traces", trace_pb.ExportTraceServiceRequest, trace_pb.ExportTraceServiceResponse),
    "/v1/metrics": ("metrics", metrics_pb.ExportMetricsServiceRequest, metrics_pb.ExportMetricsServiceResponse),
    "/v1/logs": ("logs", logs_pb.ExportLogsServiceRequest, logs_pb.ExportLogsServiceResponse),
}


class _HTTPHandler(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802
        route = _HTTP_ROUTES.get(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if route is None or self.headers.get("Content-Type") != "application/x-protobuf":
            self.send_response(404 if route is None else 415)
            self.end_headers()
            return
        name, req_cls, resp_cls = route
        req = req_cls()
        req.ParseFromString(body)
        _record("http", name, req)
        payload = resp_cls().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):  # silence per-request access log
        pass


def main() -> int:
    global _out  # pylint: disable=global-statement
    ap = argparse.ArgumentParser()
    ap.add_argument("--grpc-port", type=int, default=14317)
    ap.add_argument("--http-port", type=int, default=14318)
    ap.add_argument("--out", default="-")
    ap.add_argument("--max-seconds", type=float, default=300)
    args = ap.parse_args()
    if args.out != "-":
        _out = open(args.out, "a", encoding="utf-8")  # pylint: disable=consider-using-with

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_grpc.add_TraceServiceServicer_to_server(_Trace(), server)
    metrics_grpc.add_MetricsServiceServicer_to_server(_Metrics(), server)
    logs_grpc.add_LogsServiceServicer_to_server(_Logs(), server)
    server.add_insecure_port(f"127.0.0.1:{args.grpc_port}")
    server.start()

    httpd = ThreadingHTTPServer(("127.0.0.1", args.http_port), _HTTPHandler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    print(f"fake_receiver: grpc 127.0.0.1:{args.grpc_port} http 127.0.0.1:{args.http_port}", file=sys.stderr, flush=True)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait(args.max_seconds)
    httpd.shutdown()
    server.stop(grace=1).wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
