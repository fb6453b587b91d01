"""Exporters: the embedded JSONL file exporter (no server needed) and the factory that picks one.

The file format is the OpenTelemetry *OTLP JSON* encoding, one ``ExportTraceServiceRequest`` per line
(the format of the spec's OTLP file exporter, readable by the Collector's ``otlpjsonfile`` receiver):
``{"resourceSpans": [{"resource": ..., "scopeSpans": [{"scope": ..., "spans": [...]}]}]}`` with hex trace and
span ids. ``read_spans`` turns such a file back into flat dicts for ``effagent report``.

Console and OTLP exporters are the SDK's own; OTLP honours the standard ``OTEL_EXPORTER_OTLP_*`` variables
(endpoint, headers, protocol, timeout, certificates), read by the SDK exporters themselves.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from effagent.files import InputFileError, append_line, json_lines, json_value, read_bytes

log = logging.getLogger("effagent.telemetry")

_ID_KEYS = {"traceId", "spanId", "parentSpanId"}


def _hex_ids(node: Any) -> Any:
    """protobuf's JSON mapping writes bytes as base64; OTLP/JSON wants trace and span ids as hex."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k in _ID_KEYS and isinstance(v, str):
                out[k] = base64.b64decode(v).hex() if v else ""
            else:
                out[k] = _hex_ids(v)
        return out
    if isinstance(node, list):
        return [_hex_ids(v) for v in node]
    return node


def _otlp_json(message: Any) -> str:
    from google.protobuf.json_format import MessageToDict

    return json.dumps(_hex_ids(MessageToDict(message)), separators=(",", ":"), ensure_ascii=False)


class _JsonlWriter:
    """Appends whole lines to a file under a lock (one ``write`` per batch, so lines never interleave)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._closed = False

    def write(self, line: str) -> bool:
        with self._lock:
            if self._closed:
                return False
            try:  # O_NONBLOCK: a FIFO (or other special file) put at the path is refused, never waited on
                append_line(self.path, line + "\n")
                return True
            except (OSError, InputFileError) as e:
                log.warning("effagent telemetry: cannot write %s: %s", self.path, e)
                return False

    def close(self) -> None:
        with self._lock:
            self._closed = True


class JsonlFileSpanExporter(SpanExporter):
    """A :class:`SpanExporter` writing OTLP JSON lines to ``path`` (appending; parent folders created)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._writer = _JsonlWriter(path)

    @property
    def path(self) -> Path:
        return self._writer.path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if not spans:
            return SpanExportResult.SUCCESS
        try:
            from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

            line = _otlp_json(encode_spans(spans))
        except Exception:  # never let a bad span break the export thread
            log.exception("effagent telemetry: cannot encode %d span(s)", len(spans))
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS if self._writer.write(line) else SpanExportResult.FAILURE

    def shutdown(self) -> None:
        self._writer.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True  # every export is written through


class JsonlFileMetricExporter(MetricExporter):
    """A :class:`MetricExporter` writing OTLP JSON lines (``ExportMetricsServiceRequest``) to ``path``."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__()
        self._writer = _JsonlWriter(path)

    @property
    def path(self) -> Path:
        return self._writer.path

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        try:
            from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics

            line = _otlp_json(encode_metrics(metrics_data))
        except Exception:
            log.exception("effagent telemetry: cannot encode metrics")
            return MetricExportResult.FAILURE
        return MetricExportResult.SUCCESS if self._writer.write(line) else MetricExportResult.FAILURE

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self._writer.close()


# ---------------------------------------------------------------------------------------------------
# Factory
# ---------------------------------------------------------------------------------------------------
def otlp_protocol(signal: str = "traces") -> str:
    """The OTLP protocol the standard variables ask for: ``OTEL_EXPORTER_OTLP_<SIGNAL>_PROTOCOL``, then
    ``OTEL_EXPORTER_OTLP_PROTOCOL``, default ``http/protobuf`` (the spec's default)."""
    raw = (os.environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL")
           or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf")
    proto = raw.strip().lower()
    if proto == "http/json":
        log.warning("effagent telemetry: the Python OTLP exporter has no http/json; using http/protobuf")
        return "http/protobuf"
    if proto not in ("grpc", "http/protobuf"):
        log.warning("effagent telemetry: unknown OTLP protocol %r; using http/protobuf", raw)
        return "http/protobuf"
    return proto


def metrics_path(traces_path: str | os.PathLike[str]) -> Path:
    """Where the file exporter writes metrics: ``traces.jsonl`` -> ``traces.metrics.jsonl``."""
    p = Path(traces_path)
    return p.with_name(p.stem + ".metrics" + (p.suffix or ".jsonl"))


def build_span_exporter(kind: str, path: str | os.PathLike[str] | None = None) -> SpanExporter | None:
    """``file`` | ``console`` | ``otlp`` | ``none`` -> a span exporter (None for ``none``)."""
    if kind == "none":
        return None
    if kind == "file":
        return JsonlFileSpanExporter(path or "effagent-out/traces.jsonl")
    if kind == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter(service_name="effagent")
    if kind == "otlp":
        if otlp_protocol("traces") == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

            return GrpcExporter()
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

        return HttpExporter()
    raise ValueError(f"unknown telemetry exporter {kind!r}; use file, console, otlp or none")


def build_metric_exporter(kind: str, path: str | os.PathLike[str] | None = None) -> MetricExporter | None:
    """The metric exporter matching :func:`build_span_exporter` (file metrics go next to the traces)."""
    if kind == "none":
        return None
    if kind == "file":
        return JsonlFileMetricExporter(metrics_path(path or "effagent-out/traces.jsonl"))
    if kind == "console":
        from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

        return ConsoleMetricExporter()
    if kind == "otlp":
        if otlp_protocol("metrics") == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcExporter

            return GrpcExporter()
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpExporter

        return HttpExporter()
    raise ValueError(f"unknown telemetry exporter {kind!r}; use file, console, otlp or none")


# ---------------------------------------------------------------------------------------------------
# Reading the file back
# ---------------------------------------------------------------------------------------------------
def _any_value(v: dict[str, Any]) -> Any:
    if "stringValue" in v:
        return v["stringValue"]
    if "boolValue" in v:
        return bool(v["boolValue"])
    if "intValue" in v:
        return int(v["intValue"])
    if "doubleValue" in v:
        return float(v["doubleValue"])
    if "arrayValue" in v:
        return [_any_value(x) for x in (v["arrayValue"].get("values") or [])]
    if "kvlistValue" in v:
        return _attrs(v["kvlistValue"].get("values") or [])
    if "bytesValue" in v:
        return v["bytesValue"]
    return None


def _attrs(kvs: list[dict[str, Any]]) -> dict[str, Any]:
    return {kv["key"]: _any_value(kv.get("value") or {}) for kv in kvs if "key" in kv}


_KINDS = {"SPAN_KIND_INTERNAL": "INTERNAL", "SPAN_KIND_SERVER": "SERVER", "SPAN_KIND_CLIENT": "CLIENT",
          "SPAN_KIND_PRODUCER": "PRODUCER", "SPAN_KIND_CONSUMER": "CONSUMER"}


def _span(sp: dict[str, Any], resource: dict[str, Any], scope: str) -> dict[str, Any]:
    status = sp.get("status") or {}
    code = str(status.get("code", "STATUS_CODE_UNSET")).replace("STATUS_CODE_", "")
    return {
        "name": str(sp.get("name", "")),
        "trace_id": str(sp.get("traceId", "")),
        "span_id": str(sp.get("spanId", "")),
        "parent_span_id": sp.get("parentSpanId") or None,
        "kind": _KINDS.get(sp.get("kind", ""), "INTERNAL"),
        "start_ns": int(sp.get("startTimeUnixNano") or 0),
        "end_ns": int(sp.get("endTimeUnixNano") or 0),
        "status": code,
        "status_message": str(status.get("message", "")),
        "attributes": _attrs(sp.get("attributes") or []),
        "events": [{"name": e.get("name", ""), "attributes": _attrs(e.get("attributes") or [])}
                   for e in sp.get("events") or []],
        "resource": resource,
        "scope": scope,
    }


def _finite(value: Any) -> bool:
    """No NaN or infinity anywhere in a parsed attribute value."""
    if isinstance(value, float):
        return value == value and value not in (float("inf"), float("-inf"))
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    return True


def scan_spans(path: str | os.PathLike[str]) -> tuple[list[dict[str, Any]], int, str]:
    """The spans of an OTLP-JSON-lines file (see :func:`iter_spans`), how many non-blank lines were not OTLP
    JSON (not UTF-8, not JSON, the wrong shape, NaN or infinite numbers) and the first such line's problem."""
    data = read_bytes(path, "trace file")
    out: list[dict[str, Any]] = []
    skipped, first = 0, ""
    for n, raw in json_lines(data):
        try:
            doc = json_value(raw)
            spans = []
            for rs in doc.get("resourceSpans") or []:
                resource = _attrs((rs.get("resource") or {}).get("attributes") or [])
                for ss in rs.get("scopeSpans") or []:
                    scope = str((ss.get("scope") or {}).get("name", ""))
                    spans += [_span(sp, resource, scope) for sp in ss.get("spans") or []]
            if not all(_finite(sp["attributes"]) for sp in spans):
                raise ValueError("a NaN or infinite number")
        except (ValueError, TypeError, AttributeError, KeyError, RecursionError) as e:
            skipped += 1
            first = first or f"line {n}: {str(e)[:120]}"
            continue
        out += spans
    return out, skipped, first


def iter_spans(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Yield each span of an OTLP-JSON-lines file as a flat dict: name, trace_id, span_id, parent_span_id,
    kind, start_ns, end_ns, status ('OK'|'ERROR'|'UNSET'), status_message, attributes, resource, scope.
    Lines that are not OTLP JSON are skipped with one warning. A path that is not a regular file (a directory,
    a FIFO) raises :class:`effagent.files.InputFileError` without blocking."""
    spans, skipped, first = scan_spans(path)
    if skipped:
        log.warning("%s: %d line(s) not OTLP JSON, skipped (%s)", path, skipped, first)
    yield from spans


def read_spans(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    return list(iter_spans(path))
