#!/usr/bin/env python3
"""Send a fixed, deterministic set of traces, metrics and logs to an OTLP
collector using the OFFICIAL OpenTelemetry Python SDK and OTLP exporters.

Used by vigil's Rust integration test: it runs this script against a live
collector and then checks the stored rows by SQL, so everything emitted here
is exact and documented.

    send_otel.py --protocol grpc --endpoint http://127.0.0.1:4317 --run-id RUN
    send_otel.py --protocol http --endpoint http://127.0.0.1:4318 --run-id RUN

Per run (per protocol) this sends:
  * 4 spans in ONE trace: "workflow" (INTERNAL root) with children
    "chat gpt-4o", "anthropic.completion", "azure chat" (all CLIENT).
  * exactly ONE data point per metric name, CUMULATIVE temporality
    (see METRIC_POINTS_EXPECTED and the comment in send_metrics()).
  * 2 log records ("token budget exceeded for alice" WARN,
    "upstream failed" ERROR), both inside the "workflow" span context.

Exit code 0 only if every export reported success; otherwise 1 with a message
on stderr. The last stdout line is a one-line JSON summary.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import threading
import warnings

# Make the run hermetic: OTEL_* environment variables (resource attributes,
# temporality preference, exporter endpoints/headers, internal SDK metrics...)
# would change what is sent. Drop them before the SDK reads them.
# The CA file for an https:// endpoint is kept: it is how the SDK is told to trust a test CA.
for _k in [k for k in os.environ if k.startswith("OTEL_") and k != "OTEL_EXPORTER_OTLP_CERTIFICATE"]:
    del os.environ[_k]

from opentelemetry import trace  # noqa: E402
from opentelemetry.metrics import CallbackOptions, Observation  # noqa: E402
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler  # noqa: E402
from opentelemetry.sdk._logs.export import (  # noqa: E402
    BatchLogRecordProcessor,
    LogRecordExporter,
    LogRecordExportResult,
)
from opentelemetry.sdk.metrics import (  # noqa: E402
    Counter,
    Histogram,
    MeterProvider,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics.export import (  # noqa: E402
    AggregationTemporality,
    MetricExporter,
    MetricExportResult,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.metrics.view import (  # noqa: E402
    ExplicitBucketHistogramAggregation,
    ExponentialBucketHistogramAggregation,
    View,
)
from opentelemetry.sdk.resources import Resource  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import (  # noqa: E402
    BatchSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import SpanKind, Status, StatusCode  # noqa: E402

SCOPE = "vigil-test"
TIMEOUT_S = 10.0
FLUSH_TIMEOUT_MS = 30_000

EXPECTED_SPANS = 4
EXPECTED_LOGS = 2
# One data point per metric name: exactly one collection+export happens
# (MeterProvider.force_flush); shutdown does not export again because the
# reader's interval is math.inf (no background thread, so no final collection).
METRIC_POINTS_EXPECTED = {
    "vigil_test_requests": 1,  # Sum, monotonic, cumulative, as_int 5, {route=/chat}
    "vigil_test_inflight": 1,  # Sum, non-monotonic, cumulative, as_int 2, no attributes
    "vigil_test_temperature": 1,  # Gauge, as_double 71.5, {gpu=0}
    "vigil_test_latency": 1,  # Histogram, cumulative, count 3 sum 0.7 min 0.1 max 0.4
    "vigil_test_tokens": 1,  # ExponentialHistogram, cumulative, count 3 sum 1110
}
LATENCY_BOUNDARIES = (0.05, 0.15, 0.3, 1.0)


# --------------------------------------------------------------------------
# Exporter wrappers that record every export result. The SDK's force_flush()
# return values do not reflect export failures (the metric reader's always
# returns True, the batch processors return True once the queue is drained
# even when the export itself failed), so success is judged from these.
# --------------------------------------------------------------------------
class RecordingSpanExporter(SpanExporter):
    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self.lock = threading.Lock()
        self.ok_items = 0
        self.failures: list[str] = []

    def export(self, spans):
        try:
            result = self.inner.export(spans)
        except Exception as exc:  # pylint: disable=broad-except
            result = None
            err = f"exception {exc!r}"
        else:
            err = f"result {result}"
        with self.lock:
            if result == SpanExportResult.SUCCESS:
                self.ok_items += len(spans)
            else:
                self.failures.append(f"span export of {len(spans)} span(s) failed: {err}")
        return result if result is not None else SpanExportResult.FAILURE

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class RecordingLogExporter(LogRecordExporter):
    def __init__(self, inner: LogRecordExporter) -> None:
        self.inner = inner
        self.lock = threading.Lock()
        self.ok_items = 0
        self.failures: list[str] = []

    def export(self, batch):
        try:
            result = self.inner.export(batch)
        except Exception as exc:  # pylint: disable=broad-except
            result = None
            err = f"exception {exc!r}"
        else:
            err = f"result {result}"
        with self.lock:
            if result == LogRecordExportResult.SUCCESS:
                self.ok_items += len(batch)
            else:
                self.failures.append(f"log export of {len(batch)} record(s) failed: {err}")
        return result if result is not None else LogRecordExportResult.FAILURE

    def shutdown(self):
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class RecordingMetricExporter(MetricExporter):
    def __init__(self, inner: MetricExporter) -> None:
        # The periodic reader takes temporality/aggregation from its exporter.
        super().__init__(
            preferred_temporality=inner._preferred_temporality,  # pylint: disable=protected-access
            preferred_aggregation=inner._preferred_aggregation,  # pylint: disable=protected-access
        )
        self.inner = inner
        self.lock = threading.Lock()
        self.exports = 0
        self.points: dict[str, int] = {}
        self.failures: list[str] = []

    def export(self, metrics_data, timeout_millis: float = 10_000, **kwargs):
        points: dict[str, int] = {}
        for rm in metrics_data.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    points[m.name] = points.get(m.name, 0) + len(m.data.data_points)
        try:
            result = self.inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        except Exception as exc:  # pylint: disable=broad-except
            result = None
            err = f"exception {exc!r}"
        else:
            err = f"result {result}"
        with self.lock:
            self.exports += 1
            if result == MetricExportResult.SUCCESS:
                for k, v in points.items():
                    self.points[k] = self.points.get(k, 0) + v
            else:
                self.failures.append(f"metric export of {sum(points.values())} point(s) failed: {err}")
        return result if result is not None else MetricExportResult.FAILURE

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self.inner.force_flush(timeout_millis=timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs) -> None:
        self.inner.shutdown(timeout_millis=timeout_millis, **kwargs)


# --------------------------------------------------------------------------
def make_exporters(protocol: str, endpoint: str):
    # Explicit CUMULATIVE for every instrument kind (this is also the OTLP
    # exporters' default, but stating it keeps the data independent of
    # OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE).
    temporality = {
        Counter: AggregationTemporality.CUMULATIVE,
        UpDownCounter: AggregationTemporality.CUMULATIVE,
        Histogram: AggregationTemporality.CUMULATIVE,
        ObservableCounter: AggregationTemporality.CUMULATIVE,
        ObservableUpDownCounter: AggregationTemporality.CUMULATIVE,
        ObservableGauge: AggregationTemporality.CUMULATIVE,
    }
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        # An https:// endpoint means TLS, with the CA from OTEL_EXPORTER_OTLP_CERTIFICATE.
        insecure = not endpoint.startswith("https://")
        spans = OTLPSpanExporter(endpoint=endpoint, insecure=insecure, timeout=TIMEOUT_S)
        metrics = OTLPMetricExporter(
            endpoint=endpoint, insecure=insecure, timeout=TIMEOUT_S, preferred_temporality=temporality
        )
        logs = OTLPLogExporter(endpoint=endpoint, insecure=insecure, timeout=TIMEOUT_S)
    else:
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        base = endpoint.rstrip("/")
        spans = OTLPSpanExporter(endpoint=f"{base}/v1/traces", timeout=TIMEOUT_S)
        metrics = OTLPMetricExporter(
            endpoint=f"{base}/v1/metrics", timeout=TIMEOUT_S, preferred_temporality=temporality
        )
        logs = OTLPLogExporter(endpoint=f"{base}/v1/logs", timeout=TIMEOUT_S)
    return RecordingSpanExporter(spans), RecordingMetricExporter(metrics), RecordingLogExporter(logs)


def send_traces_and_logs(tracer, py_logger):
    """4 spans in one trace; the 2 log records are emitted in the root's context.
    Returns the trace id and the root span (its context is where an exemplar is recorded)."""
    with tracer.start_as_current_span("workflow", kind=SpanKind.INTERNAL) as root:
        trace_id = format(root.get_span_context().trace_id, "032x")

        # 1. Current GenAI semantic conventions.
        with tracer.start_as_current_span("chat gpt-4o", kind=SpanKind.CLIENT) as span:
            span.set_attribute("gen_ai.provider.name", "openai")
            span.set_attribute("gen_ai.operation.name", "chat")
            span.set_attribute("gen_ai.request.model", "gpt-4o")
            span.set_attribute("gen_ai.response.model", "gpt-4o-2024-08-06")
            span.set_attribute("gen_ai.usage.input_tokens", 1200)
            span.set_attribute("gen_ai.usage.output_tokens", 300)
            span.set_attribute("gen_ai.request.temperature", 0.2)
            span.set_attribute("gen_ai.request.max_tokens", 512)
            span.set_attribute("gen_ai.response.finish_reasons", ("stop",))
            span.set_attribute("gen_ai.response.time_to_first_chunk", 0.25)
            span.set_attribute(
                "gen_ai.input.messages",
                '[{"role":"user","parts":[{"type":"text","content":"hi"}]}]',
            )
            span.set_attribute("app.feature", "summarize")

        # 2. Older OpenLLMetry / Traceloop attribute names.
        with tracer.start_as_current_span("anthropic.completion", kind=SpanKind.CLIENT) as span:
            span.set_attribute("gen_ai.system", "Anthropic")
            span.set_attribute("llm.request.type", "completion")
            span.set_attribute("gen_ai.request.model", "claude-3-5-sonnet-20241022")
            span.set_attribute("gen_ai.usage.prompt_tokens", 40)
            span.set_attribute("gen_ai.usage.completion_tokens", 10)
            span.set_attribute("llm.usage.total_tokens", 50)
            span.set_attribute("gen_ai.prompt.0.role", "user")
            span.set_attribute("gen_ai.prompt.0.content", "write to me at alice@example.com")
            span.set_attribute("gen_ai.completion.0.role", "assistant")
            span.set_attribute("gen_ai.completion.0.content", "ok")
            span.set_attribute("gen_ai.completion.0.finish_reason", "end_turn")
            span.set_attribute("traceloop.workflow.name", "support")

        # 3. Failed call to a model with no known price.
        with tracer.start_as_current_span("azure chat", kind=SpanKind.CLIENT) as span:
            span.set_attribute("gen_ai.system", "az.ai.openai")
            span.set_attribute("gen_ai.request.model", "my-finetune-v1")
            span.set_attribute("gen_ai.usage.input_tokens", 10)
            span.set_attribute("gen_ai.usage.output_tokens", 0)
            span.set_attribute("error.type", "rate_limit_exceeded")
            span.record_exception(RuntimeError("rate limited"))
            span.set_status(Status(StatusCode.ERROR, "429 from upstream"))

        # Logs: emitted while "workflow" is the active span, so both records
        # carry its trace_id and span_id.
        py_logger.warning("token budget exceeded for alice", extra={"tenant": "acme"})
        py_logger.error("upstream failed")
    return trace_id, root


def send_metrics(meter, root) -> None:
    requests = meter.create_counter("vigil_test_requests", unit="1", description="test requests")
    requests.add(5, {"route": "/chat"})

    inflight = meter.create_up_down_counter("vigil_test_inflight", unit="{request}", description="in flight")
    inflight.add(3)
    inflight.add(-1)

    def temperature_cb(_options: CallbackOptions):
        yield Observation(71.5, {"gpu": "0"})

    meter.create_observable_gauge(
        "vigil_test_temperature", callbacks=[temperature_cb], unit="Cel", description="gpu temperature"
    )

    latency = meter.create_histogram("vigil_test_latency", unit="s", description="latency")
    for v in (0.1, 0.2):
        latency.record(v)
    # Recorded in the workflow span's context: the SDK's default (trace-based) exemplar filter
    # keeps it as the (0.3, 1] bucket's exemplar, with the span's trace and span ids.
    with trace.use_span(root, end_on_exit=False):
        latency.record(0.4)

    tokens = meter.create_histogram("vigil_test_tokens", unit="{token}", description="tokens")
    for v in (10, 100, 1000):
        tokens.record(v)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--protocol", choices=("grpc", "http"), required=True)
    ap.add_argument("--endpoint", required=True, help="grpc: http://HOST:4317, http: base http://HOST:4318")
    ap.add_argument("--run-id", required=True, help="value of resource attribute vigil.test.run")
    args = ap.parse_args(argv)

    service_name = f"pysdk-{args.protocol}"
    resource = Resource.create({"service.name": service_name, "vigil.test.run": args.run_id})
    span_exp, metric_exp, log_exp = make_exporters(args.protocol, args.endpoint)

    # --- providers (local, not global, so nothing else can emit into them) ---
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(span_exp))
    tracer = tracer_provider.get_tracer(SCOPE)

    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(BatchLogRecordProcessor(log_exp))
    with warnings.catch_warnings():
        # The SDK's LoggingHandler is deprecated in favour of the one in
        # opentelemetry-instrumentation-logging, but still works.
        warnings.simplefilter("ignore", DeprecationWarning)
        handler = LoggingHandler(level=logging.NOTSET, logger_provider=logger_provider)
    py_logger = logging.getLogger(SCOPE)  # also becomes the OTel log scope name
    py_logger.setLevel(logging.INFO)
    py_logger.propagate = False
    py_logger.addHandler(handler)

    # math.inf: no background thread, so the only collection is our explicit
    # force_flush() and shutdown() does not collect/export a second time.
    reader = PeriodicExportingMetricReader(metric_exp, export_interval_millis=math.inf)
    meter_provider = MeterProvider(
        resource=resource,
        metric_readers=[reader],
        views=[
            View(
                instrument_name="vigil_test_latency",
                aggregation=ExplicitBucketHistogramAggregation(boundaries=LATENCY_BOUNDARIES),
            ),
            View(instrument_name="vigil_test_tokens", aggregation=ExponentialBucketHistogramAggregation()),
        ],
    )
    meter = meter_provider.get_meter(SCOPE)

    # --- emit ---
    trace_id, root = send_traces_and_logs(tracer, py_logger)
    send_metrics(meter, root)

    # --- flush everything, then shut down ---
    errors: list[str] = []
    if not tracer_provider.force_flush(FLUSH_TIMEOUT_MS):
        errors.append("TracerProvider.force_flush timed out")
    py_logger.removeHandler(handler)
    if not logger_provider.force_flush(FLUSH_TIMEOUT_MS):
        errors.append("LoggerProvider.force_flush timed out")
    try:
        meter_provider.force_flush(FLUSH_TIMEOUT_MS)  # raises on reader errors, else True
    except Exception as exc:  # pylint: disable=broad-except
        errors.append(f"MeterProvider.force_flush failed: {exc!r}")
    tracer_provider.shutdown()
    logger_provider.shutdown()
    meter_provider.shutdown()

    errors += span_exp.failures + log_exp.failures + metric_exp.failures
    if span_exp.ok_items != EXPECTED_SPANS:
        errors.append(f"exported {span_exp.ok_items} spans, expected {EXPECTED_SPANS}")
    if log_exp.ok_items != EXPECTED_LOGS:
        errors.append(f"exported {log_exp.ok_items} log records, expected {EXPECTED_LOGS}")
    if metric_exp.points != METRIC_POINTS_EXPECTED:
        errors.append(f"exported metric points {metric_exp.points}, expected {METRIC_POINTS_EXPECTED}")
    if metric_exp.exports != 1:
        errors.append(f"{metric_exp.exports} metric exports happened, expected exactly 1")

    summary = {
        "protocol": args.protocol,
        "service_name": service_name,
        "run_id": args.run_id,
        "trace_id": trace_id,
        "spans": span_exp.ok_items,
        "metric_points_expected": METRIC_POINTS_EXPECTED,
        "metric_points_exported": metric_exp.points,
        "logs": log_exp.ok_items,
        "ok": not errors,
    }
    for e in errors:
        print(f"send_otel.py: ERROR: {e}", file=sys.stderr)
    print(json.dumps(summary, sort_keys=True), flush=True)
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
