"""Health endpoints, request statistics and logging setup."""

from nessen.observability.health import HEALTH_PATHS, install_health_routes
from nessen.observability.logs import configure_logging
from nessen.observability.stats import RequestStats

__all__ = ["HEALTH_PATHS", "RequestStats", "configure_logging", "install_health_routes"]
