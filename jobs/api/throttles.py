"""DRF throttles keyed on the real client: X-Forwarded-For only from a trusted proxy; counts in
the shared cache, and a lost cache lets requests through rather than failing them."""

import ipaddress
import logging

from django.conf import settings
from redis.exceptions import RedisError
from rest_framework import throttling

log = logging.getLogger(__name__)


def _trusted(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    return any(ip in network for network in settings.TRUSTED_PROXY_NETWORKS)


def client_address(request) -> str:
    """The address of whoever sent the request: REMOTE_ADDR, unless that is a trusted proxy;
    then the right-most X-Forwarded-For hop that is not one (hops further left are whatever
    the client chose to send)."""
    remote = request.META.get("REMOTE_ADDR", "")
    if not _trusted(remote):
        return remote
    hops = [hop.strip() for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
    hops = [hop for hop in hops if hop]
    for hop in reversed(hops):
        if not _trusted(hop):
            return hop[:64]
    return hops[0][:64] if hops else remote


class _SharedCounts:
    def get_ident(self, request) -> str:
        return client_address(request)

    def allow_request(self, request, view) -> bool:
        try:
            return super().allow_request(request, view)
        except (RedisError, OSError) as exc:
            # Throttling protects the service; a Redis outage must not turn every request into
            # a 500 (the broker outage tests submit jobs meanwhile).
            scope = getattr(self, "scope", "")
            log.warning("throttle %s: cache unavailable (%s); request allowed", scope, exc)
            return True


class AnonRateThrottle(_SharedCounts, throttling.AnonRateThrottle):
    pass


class UserRateThrottle(_SharedCounts, throttling.UserRateThrottle):
    pass


class ScopedRateThrottle(_SharedCounts, throttling.ScopedRateThrottle):
    pass
