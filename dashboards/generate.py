#!/usr/bin/env python3
"""Writes vigil's Grafana dashboards (dashboards/*.json) from the panel list below.

    python3 dashboards/generate.py          # rewrite the JSON files
    python3 dashboards/generate.py --check  # exit 1 if a committed file differs

Every panel queries vigil through the datasource uid `vigil-sql`: Grafana's built-in InfluxDB
datasource in SQL mode, which speaks Flight SQL to vigil's port 50051 (datasources.yaml). The
SQL uses the macros that datasource expands ($__timeFilter, $__dateBin) and Grafana's own
variables ($__interval_ms, $__from, $__to, ${var:singlequote}); tests/tests/dashboards.rs runs
every query in that expanded form against a loaded vigil and fails on a panel that returns
nothing. The JSON is generated so that the ~50 panels stay consistent (units, links,
descriptions); edit this file, not the JSON.

Standard library only.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SQL_DS = {"type": "influxdb", "uid": "vigil-sql"}
TRACES_DS_UID = "vigil-traces"
SCHEMA_VERSION = 39

# Every alert vigil's analyzer raises (analyzer/src/detectors): a panel's description names the
# ones that watch what it shows, or says that none does.
ALERT_NAMES = (
    "GpuXidError", "GpuEccDoubleBitErrors", "GpuEccSingleBitStorm", "GpuRowsRemapped",
    "GpuPcieReplays", "GpuNvlinkErrors", "GpuThrottled", "GpuPcieLinkDowntrained", "GpuLost",
    "GpuStoppedReporting", "GpuHotterThanPeers", "GpuClockBelowPeers", "GpuClockBelowBaseline",
    "NcclStraggler", "NcclBusBandwidthDrop", "ModelDrift", "ModelStoppedReporting",
    "TooManyAlerts", "alert",
)

# ---------------------------------------------------------------------------------------------
# Panel builders


class Board:
    """One dashboard: panels laid out left to right, 24 columns wide."""

    def __init__(self, uid: str, title: str, description: str, tags: list[str]):
        self.uid = uid
        self.title = title
        self.description = description
        self.tags = tags
        self.panels: list[dict] = []
        self.variables: list[dict] = []
        self.x = 0
        self.y = 0
        self.row_height = 0
        self.next_id = 1

    def _place(self, width: int, height: int) -> dict:
        if self.x + width > 24:
            self.x = 0
            self.y += self.row_height
            self.row_height = 0
        pos = {"h": height, "w": width, "x": self.x, "y": self.y}
        self.x += width
        self.row_height = max(self.row_height, height)
        return pos

    def row(self, title: str) -> None:
        if self.x:
            self.y += self.row_height
        self.x, self.row_height = 0, 0
        self.panels.append(
            {
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y},
                "id": self._id(),
                "panels": [],
                "title": title,
                "type": "row",
            }
        )
        self.y += 1

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def panel(
        self,
        kind: str,
        title: str,
        description: str,
        sql: str,
        *,
        fmt: str = "time_series",
        unit: str | None = None,
        width: int = 12,
        height: int = 8,
        options: dict | None = None,
        overrides: list | None = None,
        decimals: int | None = None,
    ) -> None:
        if not any(name in description for name in ALERT_NAMES):
            description += " No vigil alert watches this directly."
        defaults: dict = {}
        if unit:
            defaults["unit"] = unit
        if decimals is not None:
            defaults["decimals"] = decimals
        panel = {
            "datasource": SQL_DS,
            "description": description,
            "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
            "gridPos": self._place(width, height),
            "id": self._id(),
            "options": options or {},
            "targets": [
                {
                    "datasource": SQL_DS,
                    "editorMode": "code",
                    "format": fmt,
                    "rawQuery": True,
                    "rawSql": " ".join(sql.split()),
                    "refId": "A",
                    "resultFormat": fmt,
                }
            ],
            "title": title,
            "type": kind,
        }
        self.panels.append(panel)

    def variable(self, name: str, label: str, sql: str, *, multi: bool = True) -> None:
        query = " ".join(sql.split())
        self.variables.append(
            {
                "datasource": SQL_DS,
                "includeAll": multi,
                "label": label,
                "multi": multi,
                "name": name,
                "options": [],
                "query": query,
                "refresh": 2,  # on time range change
                "sort": 1,
                "type": "query",
            }
        )

    def json(self) -> dict:
        return {
            "annotations": {"list": []},
            "description": self.description,
            "editable": True,
            "fiscalYearStartMonth": 0,
            "graphTooltip": 1,
            "links": [
                {
                    "asDropdown": True,
                    "icon": "external link",
                    "includeVars": False,
                    "keepTime": True,
                    "tags": ["vigil"],
                    "targetBlank": False,
                    "title": "vigil dashboards",
                    "tooltip": "",
                    "type": "dashboards",
                }
            ],
            "panels": self.panels,
            "refresh": "30s",
            "schemaVersion": SCHEMA_VERSION,
            "tags": self.tags,
            "templating": {"list": self.variables},
            "time": {"from": "now-1h", "to": "now"},
            "timepicker": {},
            "timezone": "browser",
            "title": self.title,
            "uid": self.uid,
            "version": 1,
        }


def trace_link(field: str = "trace_id") -> list:
    """A table column whose cells open the trace in the Jaeger datasource (vigil's trace API)."""
    return [
        {
            "matcher": {"id": "byName", "options": field},
            "properties": [
                {
                    "id": "links",
                    "value": [
                        {
                            "title": "Open trace",
                            "url": "",
                            "internal": {
                                "datasourceUid": TRACES_DS_UID,
                                "datasourceName": "vigil traces",
                                "query": {"query": "${__value.raw}", "queryType": ""},
                            },
                        }
                    ],
                }
            ],
        }
    ]


STAT = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}}
TABLE = {"showHeader": True, "cellHeight": "sm"}

# ---------------------------------------------------------------------------------------------
# SQL fragments

LLM = (
    "$__timeFilter(time) AND request_model IS NOT NULL"
    " AND service_name IN (${service:singlequote}) AND request_model IN (${model:singlequote})"
)
GPU_SCOPE = "attributes['Hostname'] IN (${instance:singlequote}) AND attributes['gpu'] IN (${gpu:singlequote})"
GPU_NAME = "concat(attributes['Hostname'], ' gpu ', attributes['gpu'])"


def gpu_gauge(metric: str, scale: str = "") -> str:
    return f"""SELECT $__dateBin(time) AS time, {GPU_NAME} AS gpu, avg(value){scale} AS value
        FROM metrics WHERE $__timeFilter(time) AND metric_name = '{metric}' AND {GPU_SCOPE}
        GROUP BY 1, 2 ORDER BY 1"""


def host_gauge(metric: str, scale: str = "") -> str:
    return f"""SELECT $__dateBin(time) AS time, concat('gpu ', attributes['gpu']) AS gpu,
        avg(value){scale} AS value FROM metrics WHERE $__timeFilter(time)
        AND metric_name = '{metric}' AND attributes['Hostname'] = '${{host}}'
        GROUP BY 1, 2 ORDER BY 1"""


def percentile(column: str, q: float) -> str:
    return f"approx_percentile_cont({q}) WITHIN GROUP (ORDER BY {column})"


# The latest state of each alert (one row per fingerprint), from the `alerts` table's history.
LATEST_ALERTS = """(SELECT *, row_number() OVER (PARTITION BY fingerprint ORDER BY time DESC) AS latest
    FROM alerts) AS a WHERE latest = 1"""
SUMMARY = "split_part(message, ' | evidence: ', 1) AS summary"
EVIDENCE = "split_part(message, ' | evidence: ', 2) AS evidence"

# ---------------------------------------------------------------------------------------------
# Dashboards


def llm_overview() -> Board:
    b = Board(
        "vigil-llm-overview",
        "vigil / LLM overview",
        "LLM calls seen in GenAI spans: traffic, latency, time to first token, tokens, cost, "
        "errors and finish reasons, per model and service.",
        ["vigil", "llm"],
    )
    b.variable(
        "service",
        "Service",
        "SELECT DISTINCT service_name FROM spans WHERE $__timeFilter(time) AND request_model IS NOT NULL ORDER BY 1",
    )
    b.variable(
        "model",
        "Model",
        """SELECT DISTINCT request_model FROM spans WHERE $__timeFilter(time)
        AND request_model IS NOT NULL AND service_name IN (${service:singlequote}) ORDER BY 1""",
    )
    b.panel(
        "stat",
        "Requests/s",
        "LLM calls per second over the time range (spans with a request model). "
        "ModelStoppedReporting fires when a model that had traffic sends none.",
        f"SELECT count(*) * 1000.0 / ($__to - $__from) AS requests_per_s FROM spans WHERE {LLM}",
        fmt="table",
        unit="reqps",
        width=4,
        height=4,
        options=STAT,
    )
    b.panel(
        "stat",
        "p95 latency",
        "95th percentile of LLM call duration over the time range. ModelDrift watches its "
        "distribution per model against the trailing hour.",
        f"SELECT {percentile('duration_ns', 0.95)} / 1e9 AS p95 FROM spans WHERE {LLM}",
        fmt="table",
        unit="s",
        width=4,
        height=4,
        options=STAT,
    )
    b.panel(
        "stat",
        "p95 time to first token",
        "95th percentile of time to first token (streaming calls). ModelDrift watches it.",
        f"SELECT {percentile('ttft_ns', 0.95)} / 1e9 AS p95_ttft FROM spans WHERE {LLM} AND ttft_ns IS NOT NULL",
        fmt="table",
        unit="s",
        width=4,
        height=4,
        options=STAT,
    )
    b.panel(
        "stat",
        "Tokens/s",
        "Input plus output tokens per second over the time range.",
        f"""SELECT (coalesce(sum(input_tokens), 0) + coalesce(sum(output_tokens), 0)) * 1000.0
            / ($__to - $__from) AS tokens_per_s FROM spans WHERE {LLM}""",
        fmt="table",
        unit="short",
        width=4,
        height=4,
        options=STAT,
    )
    b.panel(
        "stat",
        "Cost per hour",
        "Spend per hour over the time range, from vigil's price table (models without a price "
        "count as zero).",
        f"SELECT coalesce(sum(cost_usd), 0) * 3600000.0 / ($__to - $__from) AS usd_per_hour FROM spans WHERE {LLM}",
        fmt="table",
        unit="currencyUSD",
        width=4,
        height=4,
        options=STAT,
    )
    b.panel(
        "stat",
        "Error rate",
        "Share of LLM calls with an error status or error.type. ModelDrift includes the error "
        "rate in its tests.",
        f"""SELECT avg(CASE WHEN lower(status_code) = 'error' OR error_type IS NOT NULL THEN 1.0 ELSE 0.0 END)
            AS error_rate FROM spans WHERE {LLM}""",
        fmt="table",
        unit="percentunit",
        width=4,
        height=4,
        options=STAT,
    )
    b.panel(
        "timeseries",
        "Requests/s by model",
        "LLM calls per second, per request model. ModelStoppedReporting fires when a line "
        "drops to nothing.",
        f"""SELECT $__dateBin(time) AS time, request_model AS model, count(*) * 1000.0 / $__interval_ms AS rps
            FROM spans WHERE {LLM} GROUP BY 1, 2 ORDER BY 1""",
        unit="reqps",
    )
    b.panel(
        "timeseries",
        "Error rate by model",
        "Share of calls per model that failed (span status ERROR or error.type set). ModelDrift "
        "tests the error rate (Fisher's exact test) against the reference.",
        f"""SELECT $__dateBin(time) AS time, request_model AS model,
            avg(CASE WHEN lower(status_code) = 'error' OR error_type IS NOT NULL THEN 1.0 ELSE 0.0 END) AS errors
            FROM spans WHERE {LLM} GROUP BY 1, 2 ORDER BY 1""",
        unit="percentunit",
    )
    for title, column, extra in (
        ("Latency by model (p50, p95, p99)", "duration_ns", ""),
        ("Time to first token by model (p50, p95, p99)", "ttft_ns", " AND ttft_ns IS NOT NULL"),
    ):
        b.panel(
            "timeseries",
            title,
            f"Percentiles of {column} per request model in each interval. ModelDrift compares "
            "this distribution in the last window with the trailing reference.",
            f"""SELECT $__dateBin(time) AS time, request_model AS model,
                {percentile(column, 0.5)} / 1e9 AS p50, {percentile(column, 0.95)} / 1e9 AS p95,
                {percentile(column, 0.99)} / 1e9 AS p99
                FROM spans WHERE {LLM}{extra} GROUP BY 1, 2 ORDER BY 1""",
            unit="s",
        )
    b.panel(
        "timeseries",
        "Tokens/s in and out",
        "Input (prompt) and output (completion) tokens per second. ModelDrift watches both "
        "distributions per call.",
        f"""SELECT $__dateBin(time) AS time, sum(input_tokens) * 1000.0 / $__interval_ms AS input,
            sum(output_tokens) * 1000.0 / $__interval_ms AS output
            FROM spans WHERE {LLM} GROUP BY 1 ORDER BY 1""",
        unit="short",
    )
    b.panel(
        "piechart",
        "Finish reasons",
        "Why generations ended (stop, length, tool_calls, content_filter …). A growing share "
        "of 'length' means answers are being cut off; ModelDrift tests this mix.",
        f"""SELECT reason, count(*) AS calls FROM (SELECT unnest(finish_reasons) AS reason FROM spans
            WHERE {LLM}) GROUP BY reason ORDER BY calls DESC""",
        fmt="table",
        options={"reduceOptions": {"calcs": ["lastNotNull"], "values": True}, "pieType": "donut"},
    )
    for title, group, label in (
        ("Cost per hour by model", "request_model", "model"),
        ("Cost per hour by service", "service_name", "service"),
    ):
        b.panel(
            "timeseries",
            title,
            f"Spend per hour per {label}, from vigil's price table (schemas/src/prices.toml, "
            "editable). Only models with a price appear.",
            f"""SELECT $__dateBin(time) AS time, {group} AS {label},
                sum(cost_usd) * 3600000.0 / $__interval_ms AS usd_per_hour
                FROM spans WHERE {LLM} AND cost_usd IS NOT NULL GROUP BY 1, 2 ORDER BY 1""",
            unit="currencyUSD",
        )
    b.panel(
        "table",
        "Slowest recent calls",
        "The 20 slowest LLM calls in the time range; the trace id opens the whole trace "
        "(vigil's Jaeger-compatible API, datasource 'vigil traces').",
        f"""SELECT time, service_name AS service, request_model AS model, duration_ns / 1e6 AS duration_ms,
            ttft_ns / 1e6 AS ttft_ms, input_tokens, output_tokens, cost_usd, status_code AS status, trace_id
            FROM spans WHERE {LLM} ORDER BY duration_ns DESC LIMIT 20""",
        fmt="table",
        width=24,
        height=9,
        options=TABLE,
        overrides=trace_link(),
    )
    return b


def gpu_fleet() -> Board:
    b = Board(
        "vigil-gpu-fleet",
        "vigil / GPU fleet",
        "Every GPU that vigil gpu-exporter (or any dcgm-exporter-named OTLP sender) reports: "
        "dcgm-exporter's panels, throttling, errors, PCIe links, NCCL bandwidth and stragglers.",
        ["vigil", "gpu"],
    )
    b.variable(
        "instance",
        "Host",
        "SELECT DISTINCT attributes['Hostname'] FROM metrics WHERE $__timeFilter(time) AND metric_name = 'DCGM_FI_DEV_GPU_TEMP' ORDER BY 1",
    )
    b.variable(
        "gpu",
        "GPU",
        """SELECT DISTINCT attributes['gpu'] FROM metrics WHERE $__timeFilter(time)
        AND metric_name = 'DCGM_FI_DEV_GPU_TEMP' AND attributes['Hostname'] IN (${instance:singlequote}) ORDER BY 1""",
    )
    gauges = (
        ("GPU temperature", "DCGM_FI_DEV_GPU_TEMP", "", "celsius",
         "Core temperature. GpuHotterThanPeers fires on a GPU much hotter than its node's peers; "
         "GpuThrottled on thermal slowdown."),
        ("GPU power usage", "DCGM_FI_DEV_POWER_USAGE", "", "watt",
         "Board power draw. GpuThrottled fires on power-cap throttling."),
        ("GPU SM clocks", "DCGM_FI_DEV_SM_CLOCK", " * 1000000", "hertz",
         "Streaming-multiprocessor clock. GpuClockBelowBaseline fires when it falls below what "
         "this GPU's learned baseline predicts for its load; GpuClockBelowPeers against its peers."),
        ("GPU utilization", "DCGM_FI_DEV_GPU_UTIL", "", "percent",
         "Share of time a kernel was running."),
        ("Tensor core utilization", "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", "", "percentunit",
         "Share of cycles the tensor pipes were active (DCGM profiling field)."),
        ("GPU framebuffer memory used", "DCGM_FI_DEV_FB_USED", "", "decmbytes",
         "Framebuffer memory in use (MiB)."),
    )
    for title, metric, scale, unit, description in gauges:
        b.panel("timeseries", title, description, gpu_gauge(metric, scale), unit=unit, width=8)
    b.panel(
        "stat",
        "Total power",
        "Sum of the latest power draw of the selected GPUs.",
        f"""SELECT sum(value) AS watts FROM (SELECT value, row_number() OVER (PARTITION BY attributes['UUID']
            ORDER BY time DESC) AS latest FROM metrics WHERE $__timeFilter(time)
            AND metric_name = 'DCGM_FI_DEV_POWER_USAGE' AND {GPU_SCOPE}) WHERE latest = 1""",
        fmt="table",
        unit="watt",
        width=4,
        height=8,
        options=STAT,
    )
    b.panel(
        "timeseries",
        "Throttled GPUs by reason",
        "How many of the selected GPUs had each clock-throttle reason active "
        "(vigil_gpu_clock_throttle_active). GpuThrottled fires when power, thermal or "
        "reliability throttling holds for most of its window.",
        f"""SELECT $__dateBin(time) AS time, attributes['reason'] AS reason,
            count(DISTINCT CASE WHEN value > 0 THEN attributes['UUID'] END) AS gpus
            FROM metrics WHERE $__timeFilter(time) AND metric_name = 'vigil_gpu_clock_throttle_active'
            AND {GPU_SCOPE} GROUP BY 1, 2 ORDER BY 1""",
        unit="short",
        width=12,
    )
    errors = (
        ("ecc_dbe", "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL"),
        ("ecc_sbe", "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL"),
        ("xid", "vigil_gpu_xid_errors_total"),
        ("pcie_replays", "DCGM_FI_DEV_PCIE_REPLAY_COUNTER"),
        ("nvlink", "vigil_gpu_nvlink_errors_total"),
        ("remapped_rows", "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS"),
    )
    # Counters per GPU (and per XID code): increase = last - first within the range.
    columns = ", ".join(f"sum(CASE WHEN metric_name = '{m}' THEN increase END) AS {name}" for name, m in errors)
    names = ", ".join(f"'{m}'" for _, m in errors)
    b.panel(
        "table",
        "Errors in range (ECC, XID, PCIe replays, NVLink, row remaps)",
        "How much each error counter grew within the time range, per GPU, worst first. "
        "GpuEccDoubleBitErrors, GpuEccSingleBitStorm, GpuXidError, GpuPcieReplays, "
        "GpuNvlinkErrors and GpuRowsRemapped watch these counters.",
        f"""SELECT host, gpu, {columns} FROM (SELECT attributes['Hostname'] AS host, attributes['gpu'] AS gpu,
            metric_name, coalesce(attributes['xid'], '') AS xid, max(value) - min(value) AS increase
            FROM metrics WHERE $__timeFilter(time) AND metric_name IN ({names}) AND {GPU_SCOPE}
            GROUP BY 1, 2, 3, 4) GROUP BY host, gpu
            ORDER BY coalesce(ecc_dbe, 0) + coalesce(xid, 0) + coalesce(nvlink, 0) + coalesce(pcie_replays, 0)
            + coalesce(ecc_sbe, 0) + coalesce(remapped_rows, 0) DESC, host, gpu""",
        fmt="table",
        width=12,
        options=TABLE,
    )
    b.panel(
        "table",
        "PCIe links (downtrained first)",
        "Each GPU's PCIe link generation and width against the maximum it supports; a link "
        "running below either is downtrained (GpuPcieLinkDowntrained).",
        f"""SELECT attributes['Hostname'] AS host, attributes['gpu'] AS gpu,
            max(CASE WHEN metric_name = 'vigil_gpu_pcie_link_downtrained' THEN value END) AS downtrained,
            min(CASE WHEN metric_name = 'DCGM_FI_DEV_PCIE_LINK_GEN' THEN value END) AS gen,
            max(CASE WHEN metric_name = 'DCGM_FI_DEV_PCIE_MAX_LINK_GEN' THEN value END) AS max_gen,
            min(CASE WHEN metric_name = 'DCGM_FI_DEV_PCIE_LINK_WIDTH' THEN value END) AS width,
            max(CASE WHEN metric_name = 'DCGM_FI_DEV_PCIE_MAX_LINK_WIDTH' THEN value END) AS max_width
            FROM metrics WHERE $__timeFilter(time) AND metric_name IN ('vigil_gpu_pcie_link_downtrained',
            'DCGM_FI_DEV_PCIE_LINK_GEN', 'DCGM_FI_DEV_PCIE_MAX_LINK_GEN', 'DCGM_FI_DEV_PCIE_LINK_WIDTH',
            'DCGM_FI_DEV_PCIE_MAX_LINK_WIDTH') AND {GPU_SCOPE}
            GROUP BY 1, 2 ORDER BY downtrained DESC, host, gpu""",
        fmt="table",
        width=12,
        options=TABLE,
    )
    b.panel(
        "timeseries",
        "NCCL bus bandwidth by operation and message size",
        "Mean bus bandwidth of the NCCL collectives seen (NCCL Inspector), per operation and "
        "message-size bucket. NcclBusBandwidthDrop fires when a node's bandwidth falls against "
        "its own recent past.",
        f"""SELECT $__dateBin(time) AS time, concat(attributes['coll'], ' ', attributes['msg_size']) AS op,
            avg(value) AS busbw FROM metrics WHERE $__timeFilter(time)
            AND metric_name = 'vigil_nccl_coll_busbw_gbs' AND attributes['Hostname'] IN (${{instance:singlequote}})
            GROUP BY 1, 2 ORDER BY 1""",
        unit="GBs",
    )
    b.panel(
        "table",
        "NCCL straggler scores",
        "Each rank's mean bus bandwidth over the range divided by the median of its "
        "communicator's ranks (1 = like its peers, lower = slower), slowest first. "
        "NcclStraggler fires on a rank well below its peers.",
        """WITH ranks AS (SELECT attributes['Hostname'] AS host, attributes['gpu'] AS gpu,
            attributes['comm'] AS comm, attributes['rank'] AS rank, avg(value) AS busbw
            FROM metrics WHERE $__timeFilter(time) AND metric_name = 'vigil_nccl_coll_busbw_gbs'
            GROUP BY 1, 2, 3, 4),
            peers AS (SELECT comm, median(busbw) AS peer_median FROM ranks GROUP BY comm)
            SELECT ranks.host, ranks.gpu, ranks.comm, ranks.rank, ranks.busbw, peers.peer_median,
            ranks.busbw / peers.peer_median AS score FROM ranks JOIN peers ON ranks.comm = peers.comm
            ORDER BY score ASC, ranks.host, ranks.rank LIMIT 32""",
        fmt="table",
        options=TABLE,
        decimals=2,
    )
    return b


def alerts_board() -> Board:
    b = Board(
        "vigil-alerts",
        "vigil / Alerts",
        "What vigil's detectors raised: the alerts firing now, their history, and model drift "
        "beside the distributions it tests.",
        ["vigil", "alerts"],
    )
    b.panel(
        "table",
        "Firing now",
        "Every alert whose latest state is firing, whatever the time range, with the evidence "
        "the detector recorded (the values that moved, windows, test statistics).",
        f"""SELECT time AS since, detector, severity, subject, score, threshold, {SUMMARY}, {EVIDENCE}
            FROM {LATEST_ALERTS} AND state = 'firing' ORDER BY severity, time DESC""",
        fmt="table",
        width=24,
        height=9,
        options=TABLE,
    )
    b.panel(
        "timeseries",
        "Alerts raised by detector",
        "How many alerts each detector raised (firing transitions) per interval.",
        """SELECT $__dateBin(time) AS time, detector, count(*) AS alerts FROM alerts
            WHERE $__timeFilter(time) AND state = 'firing' GROUP BY 1, 2 ORDER BY 1""",
        unit="short",
        options={"legend": {"calcs": ["sum"], "displayMode": "table", "placement": "right", "showLegend": True}},
    )
    b.panel(
        "table",
        "History",
        "Every state change in the time range, newest first.",
        f"""SELECT time, state, detector, severity, subject, {SUMMARY}, {EVIDENCE} FROM alerts
            WHERE $__timeFilter(time) ORDER BY time DESC LIMIT 200""",
        fmt="table",
        options=TABLE,
    )
    b.row("Model drift")
    b.variable(
        "model",
        "Model",
        "SELECT DISTINCT request_model FROM spans WHERE $__timeFilter(time) AND request_model IS NOT NULL ORDER BY 1",
    )
    b.panel(
        "table",
        "Drift alerts",
        "ModelDrift alerts in the range: which model and service, which tests moved and by "
        "how much (the evidence), against which reference window.",
        f"""SELECT time, state, labels['service'] AS service, labels['model'] AS model, score, threshold,
            {SUMMARY}, {EVIDENCE} FROM alerts WHERE $__timeFilter(time) AND detector = 'model_drift'
            ORDER BY time DESC""",
        fmt="table",
        width=24,
        options=TABLE,
    )
    scope = "$__timeFilter(time) AND request_model IN (${model:singlequote})"
    for title, column, unit in (
        ("Output tokens per call (median)", "output_tokens", "short"),
        ("Input tokens per call (median)", "input_tokens", "short"),
        ("Latency (median)", "duration_ns / 1e9", "s"),
    ):
        b.panel(
            "timeseries",
            title,
            f"The median of {column.split()[0]} per model: one of the distributions ModelDrift "
            "tests; a drift alert above shows when it moved.",
            f"""SELECT $__dateBin(time) AS time, request_model AS model, median({column}) AS value
                FROM spans WHERE {scope} GROUP BY 1, 2 ORDER BY 1""",
            unit=unit,
            width=8,
        )
    return b


def model_on_gpu() -> Board:
    b = Board(
        "vigil-model-on-gpu",
        "vigil / Model on GPU",
        "The models served from one host beside that host's GPUs, so that a degraded GPU and "
        "the latency of the models on it sit on one screen (spans carry host.name).",
        ["vigil", "llm", "gpu"],
    )
    b.variable(
        "host",
        "Host",
        """SELECT DISTINCT resource_attributes['host.name'] FROM spans WHERE $__timeFilter(time)
        AND request_model IS NOT NULL AND resource_attributes['host.name'] IN (SELECT DISTINCT
        attributes['Hostname'] FROM metrics WHERE $__timeFilter(time) AND metric_name = 'DCGM_FI_DEV_GPU_UTIL')
        ORDER BY 1""",
        multi=False,
    )
    on_host = "$__timeFilter(time) AND request_model IS NOT NULL AND resource_attributes['host.name'] = '${host}'"
    b.panel(
        "table",
        "Models served from ${host}",
        "Each service and model with spans from this host in the range: calls, latency and "
        "errors.",
        f"""SELECT service_name AS service, request_model AS model, count(*) AS calls,
            {percentile('duration_ns', 0.5)} / 1e9 AS p50_s, {percentile('duration_ns', 0.95)} / 1e9 AS p95_s,
            avg(CASE WHEN lower(status_code) = 'error' OR error_type IS NOT NULL THEN 1.0 ELSE 0.0 END) AS error_rate
            FROM spans WHERE {on_host} GROUP BY 1, 2 ORDER BY calls DESC""",
        fmt="table",
        options=TABLE,
        decimals=3,
    )
    b.panel(
        "table",
        "GPU alerts on ${host}",
        "GPU alerts for this host in the range; their evidence names the models served from "
        "the host while the fault held.",
        f"""SELECT time, state, labels['alertname'] AS alert, labels['gpu'] AS gpu, {SUMMARY}, {EVIDENCE}
            FROM alerts WHERE $__timeFilter(time) AND labels['Hostname'] = '${{host}}' ORDER BY time DESC""",
        fmt="table",
        options=TABLE,
    )
    b.panel(
        "timeseries",
        "p95 latency by model on ${host}",
        "95th percentile latency of each model served from this host. ModelDrift watches each "
        "model's latency distribution.",
        f"""SELECT $__dateBin(time) AS time, request_model AS model,
            {percentile('duration_ns', 0.95)} / 1e9 AS p95 FROM spans WHERE {on_host} GROUP BY 1, 2 ORDER BY 1""",
        unit="s",
    )
    b.panel(
        "timeseries",
        "Model latency against the host's SM clock",
        "Per interval: the p95 latency of all LLM calls served from this host beside the mean "
        "SM clock of its GPUs (right axis). A clock that drops while latency climbs points at "
        "the GPU, not the model (GpuClockBelowBaseline watches the clock).",
        f"""WITH calls AS (SELECT $__dateBin(time) AS time, {percentile('duration_ns', 0.95)} / 1e9 AS p95_latency_s
            FROM spans WHERE {on_host} GROUP BY 1),
            gpus AS (SELECT $__dateBin(time) AS time, avg(value) AS sm_clock_mhz FROM metrics
            WHERE $__timeFilter(time) AND metric_name = 'DCGM_FI_DEV_SM_CLOCK' AND attributes['Hostname'] = '${{host}}'
            GROUP BY 1)
            SELECT calls.time, calls.p95_latency_s, gpus.sm_clock_mhz FROM calls JOIN gpus ON calls.time = gpus.time
            ORDER BY 1""",
        overrides=[
            {
                "matcher": {"id": "byName", "options": "sm_clock_mhz"},
                "properties": [
                    {"id": "custom.axisPlacement", "value": "right"},
                    {"id": "unit", "value": "none"},
                ],
            }
        ],
        unit="s",
    )
    for title, metric, scale, unit in (
        ("SM clock per GPU", "DCGM_FI_DEV_SM_CLOCK", " * 1000000", "hertz"),
        ("Utilization per GPU", "DCGM_FI_DEV_GPU_UTIL", "", "percent"),
        ("Temperature per GPU", "DCGM_FI_DEV_GPU_TEMP", "", "celsius"),
    ):
        b.panel(
            "timeseries",
            title,
            f"{metric} of each GPU on this host (see the GPU fleet dashboard for the alerts "
            "that watch it).",
            host_gauge(metric, scale),
            unit=unit,
            width=8,
        )
    return b


# vLLM's own metrics, as they arrive when vLLM's /metrics page is scraped by an OpenTelemetry
# Collector (prometheus receiver) and sent to vigil over OTLP: the name is kept (colons
# included), the job becomes service.name, the target service.instance.id and server.address.
VLLM_INSTANCE = "resource_attributes['service.instance.id']"
VLLM_HOST = "coalesce(resource_attributes['host.name'], resource_attributes['server.address'])"


def vllm_histogram_mean(names: str) -> str:
    """Mean of a cumulative histogram per interval: increases of sum over increases of count."""
    return f"""SELECT $__dateBin(time) AS time, instance, sum(d_sum) / sum(d_count) AS mean FROM (
        SELECT time, {VLLM_INSTANCE} AS instance,
        sum - lag(sum) OVER (PARTITION BY {VLLM_INSTANCE}, metric_name, attributes['model_name'] ORDER BY time) AS d_sum,
        CAST(count AS DOUBLE) - lag(CAST(count AS DOUBLE)) OVER (PARTITION BY {VLLM_INSTANCE}, metric_name,
        attributes['model_name'] ORDER BY time) AS d_count
        FROM metrics WHERE $__timeFilter(time) AND metric_name IN ({names})
        AND {VLLM_INSTANCE} IN (${{instance:singlequote}}))
        WHERE d_count > 0 GROUP BY 1, 2 ORDER BY 1"""


def llm_serving() -> Board:
    b = Board(
        "vigil-llm-serving",
        "vigil / LLM serving (vLLM)",
        "vLLM's own metrics (scraped from its /metrics page and sent to vigil) beside the GPUs "
        "under it: queue, KV cache, time to first token and inter-token latency.",
        ["vigil", "llm", "gpu"],
    )
    b.variable(
        "instance",
        "vLLM instance",
        f"""SELECT DISTINCT {VLLM_INSTANCE} FROM metrics WHERE $__timeFilter(time)
        AND metric_name = 'vllm:num_requests_running' ORDER BY 1""",
    )
    scope = f"$__timeFilter(time) AND {VLLM_INSTANCE} IN (${{instance:singlequote}})"
    for title, names, unit, description in (
        ("Running requests", "'vllm:num_requests_running'", "short",
         "Requests being decoded on the GPU (vllm:num_requests_running)."),
        ("Waiting requests", "'vllm:num_requests_waiting'", "short",
         "Requests queued for a slot (vllm:num_requests_waiting): a queue that grows while "
         "running stays flat means the engine is saturated."),
        ("KV-cache usage", "'vllm:kv_cache_usage_perc', 'vllm:gpu_cache_usage_perc'", "percentunit",
         "Share of KV-cache blocks in use (vllm:kv_cache_usage_perc, vllm:gpu_cache_usage_perc "
         "before vLLM 0.10). Near 1, requests get preempted."),
    ):
        b.panel(
            "timeseries",
            title,
            description,
            f"""SELECT $__dateBin(time) AS time, {VLLM_INSTANCE} AS instance, avg(value) AS value
                FROM metrics WHERE {scope} AND metric_name IN ({names}) GROUP BY 1, 2 ORDER BY 1""",
            unit=unit,
            width=8,
        )
    b.panel(
        "timeseries",
        "Time to first token (mean)",
        "Mean TTFT per interval from vLLM's histogram vllm:time_to_first_token_seconds "
        "(increase of its sum over increase of its count; a counter reset drops the interval). "
        "The client-side view, per model, is on the LLM overview; ModelDrift watches it.",
        vllm_histogram_mean("'vllm:time_to_first_token_seconds'"),
        unit="s",
        width=8,
    )
    b.panel(
        "timeseries",
        "Inter-token latency (mean)",
        "Mean time between output tokens, from vllm:inter_token_latency_seconds "
        "(vllm:time_per_output_token_seconds before vLLM 0.10).",
        vllm_histogram_mean("'vllm:inter_token_latency_seconds', 'vllm:time_per_output_token_seconds'"),
        unit="s",
        width=8,
    )
    b.panel(
        "timeseries",
        "Generation tokens/s",
        "Output tokens per second generated by each instance (increase of "
        "vllm:generation_tokens_total).",
        f"""SELECT $__dateBin(time) AS time, instance, sum(d_value) / sum(d_seconds) AS tokens_per_s FROM (
            SELECT time, {VLLM_INSTANCE} AS instance,
            value - lag(value) OVER (PARTITION BY {VLLM_INSTANCE}, attributes['model_name'] ORDER BY time) AS d_value,
            (CAST(time AS BIGINT) - lag(CAST(time AS BIGINT)) OVER (PARTITION BY {VLLM_INSTANCE},
            attributes['model_name'] ORDER BY time)) / 1e9 AS d_seconds
            FROM metrics WHERE {scope}
            AND metric_name IN ('vllm:generation_tokens_total', 'vllm:generation_tokens'))
            WHERE d_value >= 0 AND d_seconds > 0 GROUP BY 1, 2 ORDER BY 1""",
        unit="short",
        width=8,
    )
    gpus_under = f"""attributes['Hostname'] IN (SELECT DISTINCT {VLLM_HOST} FROM metrics
        WHERE {scope} AND metric_name = 'vllm:num_requests_running')"""
    for title, metric, unit in (
        ("Utilization of the GPUs under vLLM", "DCGM_FI_DEV_GPU_UTIL", "percent"),
        ("Framebuffer memory used under vLLM", "DCGM_FI_DEV_FB_USED", "decmbytes"),
    ):
        b.panel(
            "timeseries",
            title,
            f"{metric} of every GPU on the hosts the selected vLLM instances run on.",
            f"""SELECT $__dateBin(time) AS time, {GPU_NAME} AS gpu, avg(value) AS value FROM metrics
                WHERE $__timeFilter(time) AND metric_name = '{metric}' AND {gpus_under}
                GROUP BY 1, 2 ORDER BY 1""",
            unit=unit,
        )
    return b


BOARDS = {
    "llm-overview.json": llm_overview,
    "gpu-fleet.json": gpu_fleet,
    "alerts.json": alerts_board,
    "model-on-gpu.json": model_on_gpu,
    "llm-serving.json": llm_serving,
}


def render(build) -> str:
    return json.dumps(build().json(), indent=2, ensure_ascii=False) + "\n"


def main() -> int:
    check = "--check" in sys.argv[1:]
    stale = []
    for name, build in BOARDS.items():
        path = HERE / name
        text = render(build)
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print(f"stale dashboards (run python3 dashboards/generate.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
