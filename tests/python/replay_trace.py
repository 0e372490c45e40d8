#!/usr/bin/env python3
"""Replay a real trace of LLM requests (the Azure LLM inference traces' CSV:
TIMESTAMP,ContextTokens,GeneratedTokens) into an OTLP/HTTP collector with the
official OpenTelemetry Python SDK, as OpenLLMetry-style chat spans, at their
original spacing but ending now: the trace back to back `--times` times, the
last request just before the script started. So a collector sees, at once,
the hours of real traffic a drift detector judges.

    replay_trace.py --endpoint http://127.0.0.1:4318 --trace conv.csv \
        --service steady --times 2
    replay_trace.py ... --service shifted --shift 1.25 --shift-last-seconds 660

Spans: one CLIENT span "chat trace" per request (gen_ai.request/response.model
"trace"), input and output tokens from the trace (output x --shift in the last
--shift-last-seconds), latency 250 ms + 25 ms per output token (the traces carry
none), finish reason "stop". The last stdout line is a JSON summary.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from datetime import datetime, timezone

for _k in [k for k in os.environ if k.startswith("OTEL_")]:
    del os.environ[_k]

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: E402
from opentelemetry.sdk.resources import Resource  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult  # noqa: E402
from opentelemetry.trace import SpanKind  # noqa: E402


class CountingExporter(OTLPSpanExporter):
    failed = 0

    def export(self, spans):
        result = super().export(spans)
        if result != SpanExportResult.SUCCESS:
            CountingExporter.failed += len(spans)
        return result


def read_trace(path: str) -> list[tuple[int, int, int]]:
    rows = []
    with open(path, newline="") as f:
        for number, row in enumerate(csv.DictReader(f), start=2):
            try:
                at = datetime.strptime(row["TIMESTAMP"][:26], "%Y-%m-%d %H:%M:%S.%f")
                at = at.replace(tzinfo=timezone.utc)
                rows.append((int(at.timestamp() * 1e9), int(row["ContextTokens"]), int(row["GeneratedTokens"])))
            except (KeyError, ValueError) as e:
                raise SystemExit(f"{path}:{number}: {e}")
    rows.sort()
    first = rows[0][0]
    return [(t - first, i, o) for t, i, o in rows]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--trace", required=True)
    parser.add_argument("--service", required=True)
    parser.add_argument("--times", type=int, default=2)
    parser.add_argument("--shift", type=float, default=1.0)
    parser.add_argument("--shift-last-seconds", type=float, default=0.0)
    args = parser.parse_args(argv)

    rows = read_trace(args.trace)
    period = rows[-1][0] + 1_000_000_000
    end = time.time_ns() - 1_000_000_000
    start = end - period * args.times
    shift_from = end - int(args.shift_last_seconds * 1e9)

    provider = TracerProvider(resource=Resource.create({"service.name": args.service}))
    exporter = CountingExporter(endpoint=args.endpoint.rstrip("/") + "/v1/traces")
    provider.add_span_processor(
        BatchSpanProcessor(exporter, schedule_delay_millis=200, max_queue_size=1 << 18, max_export_batch_size=4096)
    )
    tracer = provider.get_tracer("vigil-trace-replay")
    sent = 0
    for round_ in range(args.times):
        for offset, input_tokens, output_tokens in rows:
            begin = start + round_ * period + offset
            if begin > end:
                break
            if args.shift != 1.0 and begin >= shift_from:
                output_tokens = round(output_tokens * args.shift)
            span = tracer.start_span("chat trace", kind=SpanKind.CLIENT, start_time=begin)
            span.set_attribute("gen_ai.operation.name", "chat")
            span.set_attribute("gen_ai.system", "openai")
            span.set_attribute("gen_ai.request.model", "trace")
            span.set_attribute("gen_ai.response.model", "trace")
            span.set_attribute("gen_ai.usage.input_tokens", input_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", output_tokens)
            span.set_attribute("gen_ai.response.finish_reasons", ("stop",))
            span.end(end_time=begin + (250 + 25 * output_tokens) * 1_000_000)
            sent += 1
    ok = provider.force_flush(timeout_millis=120_000)
    provider.shutdown()
    print(json.dumps({"service": args.service, "spans": sent, "failed": CountingExporter.failed}))
    if not ok or CountingExporter.failed:
        print(f"replay_trace.py: {CountingExporter.failed} spans not exported", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
