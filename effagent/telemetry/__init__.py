"""OpenTelemetry tracing and metrics for effagent (see docs/tracing.md).

```python
from effagent.telemetry import observer_from_policy
observer = observer_from_policy(policy)        # what the policy's ``telemetry`` section asks for
```

Provider rules: when the application already installed a global TracerProvider / MeterProvider, effagent
uses it (its exporters, sampler and resource) and adds nothing. Otherwise effagent builds a *private*
provider with the policy's exporter (``file`` by default: OTLP JSON lines at ``telemetry.path``, read by
``effagent report``) and never sets the global one. ``OTEL_SDK_DISABLED=true`` turns everything off.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics as otel_metrics
from opentelemetry import trace

from effagent.observe import NullObserver, Observer
from effagent.telemetry.otel import OTelObserver, split_model

if TYPE_CHECKING:
    from effagent.policy import Policy, Telemetry

__all__ = ["OTelObserver", "app_has_meter_provider", "app_has_tracer_provider", "observer_from_policy",
           "split_model"]

log = logging.getLogger("effagent.telemetry")

_PROVIDERS: dict[tuple[Any, ...], tuple[Any, Any]] = {}
_PROVIDERS_LOCK = threading.Lock()


def app_has_tracer_provider() -> bool:
    """True when the application installed its own global TracerProvider."""
    tp = trace.get_tracer_provider()
    return not isinstance(tp, trace.ProxyTracerProvider | trace.NoOpTracerProvider)


def app_has_meter_provider() -> bool:
    mp = otel_metrics.get_meter_provider()
    return not (isinstance(mp, otel_metrics.NoOpMeterProvider) or type(mp).__name__ == "_ProxyMeterProvider")


def _sdk_disabled() -> bool:
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


def _resource(tel: Telemetry) -> Any:
    from opentelemetry.sdk.resources import Resource

    attrs: dict[str, Any] = {"openinference.project.name": tel.project or tel.service_name}
    if not os.environ.get("OTEL_SERVICE_NAME"):
        attrs["service.name"] = tel.service_name
    return Resource.create(attrs)


def _private_providers(tel: Telemetry) -> tuple[Any, Any]:
    """effagent's own TracerProvider and MeterProvider for the policy's exporter, one pair per exporter
    configuration in this process (so several agents share one file writer / OTLP connection)."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    from effagent.telemetry.exporters import build_metric_exporter, build_span_exporter, otlp_protocol

    path = str(Path(tel.path).resolve()) if tel.exporter == "file" else None
    # the SDK's standard switch: OTEL_METRICS_EXPORTER=none (e.g. for a backend such as Phoenix that takes
    # traces but no OTLP metrics)
    no_metrics = os.environ.get("OTEL_METRICS_EXPORTER", "").strip().lower() == "none"
    key = (tel.exporter, path, tel.service_name, tel.project, no_metrics,
           otlp_protocol("traces") if tel.exporter == "otlp" else None,
           os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") if tel.exporter == "otlp" else None)
    with _PROVIDERS_LOCK:
        if key in _PROVIDERS:
            return _PROVIDERS[key]
        resource = _resource(tel)
        tp = TracerProvider(resource=resource)
        span_exporter = build_span_exporter(tel.exporter, path)
        if span_exporter is not None:
            proc = SimpleSpanProcessor if tel.exporter == "console" else BatchSpanProcessor
            tp.add_span_processor(proc(span_exporter))
        metric_exporter = None if no_metrics else build_metric_exporter(tel.exporter, path)
        readers = [PeriodicExportingMetricReader(metric_exporter)] if metric_exporter is not None else []
        mp = MeterProvider(resource=resource, metric_readers=readers)
        _PROVIDERS[key] = (tp, mp)
        return tp, mp


def observer_from_policy(policy: Policy, *, tracer_provider: Any = None, meter_provider: Any = None) -> Observer:
    """The observer the policy's ``telemetry`` section asks for; a NullObserver when telemetry is disabled
    (``enabled: false``, ``OTEL_SDK_DISABLED=true``, or ``exporter: none`` with no application provider).
    Never raises: a telemetry set-up problem is logged and yields a NullObserver."""
    tel = policy.telemetry
    if not tel.enabled or _sdk_disabled():
        return NullObserver()
    try:
        tp, mp = tracer_provider, meter_provider
        if tp is None and app_has_tracer_provider():
            tp = trace.get_tracer_provider()
        if mp is None and app_has_meter_provider():
            mp = otel_metrics.get_meter_provider()
        own = False
        if tp is None or mp is None:
            if tel.exporter == "none":
                if tp is None:
                    return NullObserver()
                mp = mp or otel_metrics.NoOpMeterProvider()
            else:
                own_tp, own_mp = _private_providers(tel)
                own = tp is None
                tp = tp or own_tp
                mp = mp or own_mp
        return OTelObserver(policy, tracer_provider=tp, meter_provider=mp,
                            flush_on_run_end=own and tel.exporter == "file")
    except Exception:
        log.warning("effagent telemetry: could not set up %s export; tracing is off", tel.exporter, exc_info=True)
        return NullObserver()
