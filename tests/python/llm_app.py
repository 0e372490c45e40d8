#!/usr/bin/env python3
"""An LLM application's telemetry, sent the way a real one sends it: spans from the official
OpenTelemetry Python SDK with OpenLLMetry-style GenAI attributes, and vLLM's own metrics as an
OpenTelemetry Collector's prometheus receiver forwards them after scraping vLLM's /metrics page
(OTLP protobuf, names kept as vLLM writes them, colons included: the SDK cannot make those).

    llm_app.py --endpoint http://127.0.0.1:4318 --calls 600 --minutes 10 [--live-seconds 60]

Spans: two services on the simulated fleet's hosts (chat-api on sim-node-00, rag-worker on
sim-node-01), each request a SERVER span with one CLIENT span per LLM call, spread evenly over
the last --minutes. Models: a self-hosted Llama behind vLLM, gpt-4o and claude-3-5-sonnet;
streaming calls carry their time to first token; about 1 call in 25 fails (--error-ratio);
finish reasons mix stop, length and tool_calls. With --live-seconds, requests then keep coming
as they happen, and a labelled change can be made in them: from --slow-after seconds on,
--slow-model's calls (`*`: every model's) take --slow-factor times as long, fail at
--changed-error-ratio, or come at --changed-rate times the rate (the time of the change is
printed as a JSON line). --services 1 sends as chat-api only.
Metrics: one vLLM instance per host, a point every 5 s over the same --minutes.

Prints a JSON line once the history is sent, and one at the end with what was sent. Exit
code 1 if an export failed.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import urllib.request

from opentelemetry import trace as trace_api
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode

SERVICES = (("chat-api", "sim-node-00"), ("rag-worker", "sim-node-01"))
# (request model, provider, median latency s, whether it streams)
MODELS = (
    ("meta-llama/Llama-3.1-8B-Instruct", "vllm", 0.9, True),
    ("gpt-4o", "openai", 2.2, True),
    ("claude-3-5-sonnet-20241022", "anthropic", 2.8, False),
)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
ITL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5)


class CountingExporter(OTLPSpanExporter):
    failures = 0

    def export(self, spans):
        result = super().export(spans)
        if result is not SpanExportResult.SUCCESS:
            CountingExporter.failures += 1
        return result


def make_tracers(endpoint: str, services: int = 2):
    providers, tracers = [], []
    for service, host in SERVICES[:services]:
        provider = TracerProvider(
            resource=Resource.create({"service.name": service, "host.name": host, "deployment.environment": "test"})
        )
        exporter = CountingExporter(endpoint=f"{endpoint}/v1/traces")
        # A queue that holds a burst of history (the default 2,048 drops spans past it).
        provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=500, max_queue_size=1 << 17))
        providers.append(provider)
        tracers.append(provider.get_tracer("llm_app"))
    return providers, tracers


class Change:
    """A labelled change in the live calls of `model` (`*`: every model)."""

    def __init__(self, model: str, latency: float = 1.0, error_ratio: float | None = None, rate: float = 1.0):
        self.model, self.latency, self.error_ratio, self.rate = model, latency, error_ratio, rate


class Calls:
    """One request: a SERVER span and the CLIENT span of its LLM call."""

    def __init__(self, rng: random.Random, error_ratio: float = 0.04):
        self.rng = rng
        self.error_ratio = error_ratio
        self.per_model: dict[str, int] = {}
        self.errors = 0

    def one(self, tracer, begin_ns: int, change: Change | None = None, ends_at_ns: int | None = None) -> int | None:
        """Sends one request that starts at `begin_ns` (or, given `ends_at_ns`, that ends
        then, as an instrumented call's span is sent when the call ends); returns when it ends
        (ns), or None when `change` thinned its model's calls out and nothing was sent."""
        rng = self.rng
        model, provider_name, median_s, streams = MODELS[rng.randrange(len(MODELS))]
        duration_ns = int(rng.lognormvariate(0, 0.35) * median_s * 1e9)
        error_ratio = self.error_ratio
        if change is not None and change.model in (model, "*"):
            if rng.random() >= change.rate:
                return None
            duration_ns = int(duration_ns * change.latency)
            if change.error_ratio is not None:
                error_ratio = change.error_ratio
        if ends_at_ns is not None:
            begin_ns = ends_at_ns - duration_ns - 5_000_000
        root = tracer.start_span("POST /v1/answer", kind=SpanKind.SERVER, start_time=begin_ns)
        root.set_attribute("http.request.method", "POST")
        root.set_attribute("http.route", "/v1/answer")
        with trace_api.use_span(root, end_on_exit=False):
            call = tracer.start_span(f"chat {model}", kind=SpanKind.CLIENT, start_time=begin_ns + 2_000_000)
            call.set_attribute("gen_ai.operation.name", "chat")
            call.set_attribute("gen_ai.system", provider_name)
            call.set_attribute("gen_ai.request.model", model)
            call.set_attribute("gen_ai.response.model", model)
            call.set_attribute("gen_ai.request.temperature", 0.3)
            call.set_attribute("gen_ai.request.max_tokens", 1024)
            input_tokens = int(rng.lognormvariate(6.6, 0.5))
            finish = rng.choices(("stop", "length", "tool_calls"), weights=(80, 12, 8))[0]
            output_tokens = 1024 if finish == "length" else int(rng.lognormvariate(4.8, 0.6))
            call.set_attribute("gen_ai.usage.input_tokens", input_tokens)
            call.set_attribute("gen_ai.usage.output_tokens", output_tokens)
            if streams:
                call.set_attribute("gen_ai.response.time_to_first_chunk", duration_ns / 1e9 * rng.uniform(0.08, 0.2))
            if rng.random() < error_ratio:
                self.errors += 1
                call.set_attribute("error.type", "rate_limit_exceeded")
                call.set_status(Status(StatusCode.ERROR, "429 Too Many Requests"))
            else:
                call.set_attribute("gen_ai.response.finish_reasons", (finish,))
            call.end(end_time=begin_ns + 2_000_000 + duration_ns)
        end_ns = begin_ns + duration_ns + 5_000_000
        root.end(end_time=end_ns)
        self.per_model[model] = self.per_model.get(model, 0) + 1
        return end_ns


def send_history(tracers, calls: Calls, count: int, minutes: float, random_arrivals: bool = False) -> None:
    """`count` requests over the last `minutes`, services taking turns: evenly spread, or at
    random times (as independent users arrive)."""
    now_ns = time.time_ns()
    span_ns = int(minutes * 60e9)
    start_ns = now_ns - span_ns
    if random_arrivals:
        offsets = sorted(int(calls.rng.random() * span_ns) for _ in range(count))
    else:
        offsets = [i * (span_ns // max(count, 1)) for i in range(count)]
    for i, offset in enumerate(offsets):
        calls.one(tracers[i % len(tracers)], start_ns + offset)


def send_live(tracers, calls: Calls, seconds: float, rate: float, change: Change | None = None, change_after=0.0) -> int:
    """Requests as they happen, `rate` per second for `seconds`, each ending now; `change`
    from `change_after` seconds on (the time is printed as a JSON line)."""
    sent = 0
    started = time.monotonic()
    deadline = started + seconds
    next_round = started
    changed = False
    while time.monotonic() < deadline:
        active = None
        if change is not None and time.monotonic() - started >= change_after:
            active = change
            if not changed:
                print(json.dumps({"slow_from_unix": time.time(), "model": change.model}), flush=True)
                changed = True
        for tracer in tracers:
            # The call ends now, when an instrumented one's span would be sent.
            if calls.one(tracer, 0, active, ends_at_ns=time.time_ns()) is not None:
                sent += 1
        # Keep to the schedule, whatever sending took, so the rate is what was asked.
        next_round += len(tracers) / rate
        time.sleep(max(0.0, next_round - time.monotonic()))
    return sent


def attr(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def send_vllm_metrics(endpoint: str, minutes: float, rng: random.Random) -> int:
    """One request per instance with a point every 5 s, cumulative like a scraped page."""
    now_ns = time.time_ns()
    points = int(minutes * 60 / 5)
    begin_ns = now_ns - points * 5_000_000_000
    model = MODELS[0][0]
    sent = 0
    for _service, host in SERVICES:
        resource_attrs = [
            attr("service.name", "vllm"),
            attr("service.instance.id", f"{host}:8000"),
            attr("server.address", host),
            attr("server.port", "8000"),
        ]
        labels = [attr("model_name", model), attr("engine", "0")]
        running = metrics_pb2.Metric(name="vllm:num_requests_running", gauge=metrics_pb2.Gauge())
        waiting = metrics_pb2.Metric(name="vllm:num_requests_waiting", gauge=metrics_pb2.Gauge())
        kv = metrics_pb2.Metric(name="vllm:kv_cache_usage_perc", gauge=metrics_pb2.Gauge())
        tokens = metrics_pb2.Metric(
            name="vllm:generation_tokens_total",
            sum=metrics_pb2.Sum(aggregation_temporality=2, is_monotonic=True),
        )
        ttft = metrics_pb2.Metric(
            name="vllm:time_to_first_token_seconds",
            unit="s",
            histogram=metrics_pb2.Histogram(aggregation_temporality=2),
        )
        itl = metrics_pb2.Metric(
            name="vllm:inter_token_latency_seconds",
            unit="s",
            histogram=metrics_pb2.Histogram(aggregation_temporality=2),
        )
        generated = 0.0
        ttft_state = ([0] * (len(TTFT_BUCKETS) + 1), [0.0])
        itl_state = ([0] * (len(ITL_BUCKETS) + 1), [0.0])
        for p in range(points + 1):
            t = begin_ns + p * 5_000_000_000
            run = rng.randint(4, 24)
            running.gauge.data_points.add(time_unix_nano=t, as_double=run, attributes=labels)
            waiting.gauge.data_points.add(time_unix_nano=t, as_double=rng.randint(0, 6), attributes=labels)
            kv.gauge.data_points.add(time_unix_nano=t, as_double=min(0.98, run / 30 + rng.uniform(0, 0.1)), attributes=labels)
            generated += run * rng.uniform(180, 260)
            tokens.sum.data_points.add(
                start_time_unix_nano=begin_ns, time_unix_nano=t, as_double=generated, attributes=labels
            )
            for metric, bounds, state, median in ((ttft, TTFT_BUCKETS, ttft_state, 0.12), (itl, ITL_BUCKETS, itl_state, 0.02)):
                counts, total = state
                for _ in range(run):
                    v = rng.lognormvariate(0, 0.5) * median
                    total[0] += v
                    counts[next((k for k, b in enumerate(bounds) if v <= b), len(bounds))] += 1
                metric.histogram.data_points.add(
                    start_time_unix_nano=begin_ns,
                    time_unix_nano=t,
                    count=sum(counts),
                    sum=total[0],
                    explicit_bounds=bounds,
                    bucket_counts=list(counts),
                    attributes=labels,
                )
        request = ExportMetricsServiceRequest()
        rm = request.resource_metrics.add()
        rm.resource.attributes.extend(resource_attrs)
        sm = rm.scope_metrics.add()
        sm.scope.name = "otelcol/prometheusreceiver"
        sm.metrics.extend([running, waiting, kv, tokens, ttft, itl])
        http = urllib.request.Request(
            f"{endpoint}/v1/metrics",
            data=request.SerializeToString(),
            headers={"Content-Type": "application/x-protobuf"},
            method="POST",
        )
        with urllib.request.urlopen(http, timeout=30) as response:
            if response.status != 200:
                raise RuntimeError(f"/v1/metrics answered {response.status}")
        sent += 6 * (points + 1)
    return sent


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--endpoint", required=True, help="OTLP/HTTP base, e.g. http://127.0.0.1:4318")
    ap.add_argument("--calls", type=int, default=600)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--live-seconds", type=float, default=0.0, help="then keep sending, live, this long")
    ap.add_argument("--live-rate", type=float, default=5.0, help="requests per second while live")
    ap.add_argument("--random-arrivals", action="store_true", help="history at random times, not evenly spread")
    ap.add_argument("--services", type=int, choices=(1, 2), default=2, help="chat-api only, or rag-worker too")
    ap.add_argument("--error-ratio", type=float, default=0.04, help="share of calls that fail")
    ap.add_argument("--slow-model", help="while live, change this model's calls (`*`: every model's)...")
    ap.add_argument("--slow-after", type=float, default=0.0, help="...from this many seconds into the live part...")
    ap.add_argument("--slow-factor", type=float, default=2.0, help="...to take this many times as long...")
    ap.add_argument("--changed-error-ratio", type=float, help="...to fail at this ratio...")
    ap.add_argument("--changed-rate", type=float, default=1.0, help="...to come at this many times the rate")
    ap.add_argument("--no-metrics", action="store_true", help="send spans only")
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    endpoint = args.endpoint.rstrip("/")
    providers, tracers = make_tracers(endpoint, args.services)
    calls = Calls(rng, args.error_ratio)
    send_history(tracers, calls, args.calls, args.minutes, args.random_arrivals)
    vllm_points = 0 if args.no_metrics else send_vllm_metrics(endpoint, args.minutes, rng)
    # The history is in before the live part starts (a reader can wait for this line).
    for provider in providers:
        provider.force_flush()
    print(json.dumps({"history": args.calls, "vllm_points": vllm_points}), flush=True)
    live = (
        send_live(
            tracers,
            calls,
            args.live_seconds,
            args.live_rate,
            Change(args.slow_model, args.slow_factor, args.changed_error_ratio, args.changed_rate) if args.slow_model else None,
            args.slow_after,
        )
        if args.live_seconds > 0
        else 0
    )
    for provider in providers:
        provider.shutdown()
    summary = {
        "calls": args.calls + live,
        "live": live,
        "per_model": calls.per_model,
        "errors": calls.errors,
        "failed_exports": CountingExporter.failures,
    }
    print(json.dumps(summary))
    if CountingExporter.failures:
        print(f"{CountingExporter.failures} span exports failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
