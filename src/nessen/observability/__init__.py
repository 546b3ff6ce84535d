"""Health endpoints, metrics, telemetry sinks, the status page, statistics and logging setup.

``nessen.observability.metrics`` (Prometheus) is not imported here: the runtime imports it
when it starts serving with metrics on, so importing nessen does not import
prometheus-client (which reads ``PROMETHEUS_MULTIPROC_DIR`` when it is imported).
"""

from nessen.observability.health import (
    HEALTH_PATHS,
    METRICS_PATH,
    install_health_routes,
    install_metrics_route,
)
from nessen.observability.logs import configure_logging, configure_logging_for
from nessen.observability.process import ProcessSampler
from nessen.observability.sinks import (
    OTHER_METHOD,
    UNMATCHED,
    StatsdSink,
    Tags,
    Telemetry,
    TelemetrySink,
)
from nessen.observability.stats import LatencyWindow, RequestStats
from nessen.observability.status import STATUS_PATH, install_status_routes

__all__ = [
    "HEALTH_PATHS",
    "METRICS_PATH",
    "OTHER_METHOD",
    "STATUS_PATH",
    "UNMATCHED",
    "LatencyWindow",
    "ProcessSampler",
    "RequestStats",
    "StatsdSink",
    "Tags",
    "Telemetry",
    "TelemetrySink",
    "configure_logging",
    "configure_logging_for",
    "install_health_routes",
    "install_metrics_route",
    "install_status_routes",
]
