"""DRF throttles keyed on the real client: X-Forwarded-For only from a trusted proxy; counts in
the shared cache, and a lost cache lets requests through rather than failing them."""

import ipaddress
import logging
import secrets

from django.conf import settings
from django.core.cache import DEFAULT_CACHE_ALIAS, caches
from django.core.cache import cache as default_cache
from django.core.cache.backends.redis import RedisCache
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


# DRF's sliding window (requests in the last `duration` seconds), kept in Redis as a sorted set
# of request times and checked and recorded in one round trip. DRF's own throttle reads and
# rewrites a pickled list of every request time of the window: two round trips, and for a busy
# user (50,000/hour) a list of tens of thousands of floats unpickled and pickled per request
# (bench/, B1). A refused request is not recorded, as in DRF.
_RECORD = """
local key, now, duration, limit = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', key, '-inf', ARGV[5])
local count = redis.call('ZCARD', key)
if count >= limit then
  local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  return {0, count, oldest[2]}
end
redis.call('ZADD', key, ARGV[1], ARGV[4])
redis.call('EXPIRE', key, duration)
return {1, count + 1, ''}
"""


class _SharedCounts:
    # Not DRF's key: a window kept by DRF's own code (a pickled list) may still be in the cache.
    cache_format = "throttle_%(scope)s_%(ident)s:times"

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


class _RedisWindow(throttling.SimpleRateThrottle):
    """SimpleRateThrottle's check, in Redis when the cache is Redis (below DRF's Anon, User and
    Scoped throttles, which pick the rate and the key first)."""

    _script = None

    def allow_request(self, request, view) -> bool:
        backend = caches[DEFAULT_CACHE_ALIAS] if self.cache is default_cache else self.cache
        if not isinstance(backend, RedisCache):
            return super().allow_request(request, view)
        if self.rate is None:
            return True
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return True
        key = backend.make_and_validate_key(self.key)
        client = backend._cache.get_client(key, write=True)
        if _RedisWindow._script is None:
            _RedisWindow._script = client.register_script(_RECORD)
        self.now = self.timer()
        member = f"{self.now!r}-{secrets.token_hex(4)}"
        since = repr(self.now - self.duration)
        arguments = [repr(self.now), self.duration, self.num_requests, member, since]
        allowed, self._count, oldest = _RedisWindow._script(
            keys=[key], args=arguments, client=client
        )
        self._oldest = float(oldest) if oldest else None
        return bool(allowed)

    def wait(self) -> float | None:
        if not hasattr(self, "_count"):
            return super().wait()
        # DRF's formula, from the window's size and its oldest request.
        if self._oldest is not None:
            remaining = self.duration - (self.now - self._oldest)
        else:
            remaining = self.duration
        available = self.num_requests - self._count + 1
        return remaining / available if available > 0 else None


class AnonRateThrottle(_SharedCounts, throttling.AnonRateThrottle, _RedisWindow):
    pass


class UserRateThrottle(_SharedCounts, throttling.UserRateThrottle, _RedisWindow):
    pass


class ScopedRateThrottle(_SharedCounts, throttling.ScopedRateThrottle, _RedisWindow):
    pass
