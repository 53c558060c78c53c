"""Django's Redis cache, sharing a Redis database with the Celery broker safely."""

from django.core.cache.backends.redis import RedisCache as DjangoRedisCache


class RedisCache(DjangoRedisCache):
    """clear() removes this cache's keys only: Django's FLUSHDB would also drop the broker's
    queues and bindings when the cache lives in the broker's database (the default)."""

    def clear(self) -> bool:
        client = self._cache.get_client(write=True)
        prefix = "".join("\\" + c if c in "*?[]\\" else c for c in self.key_prefix)
        pattern = f"{prefix}:*"  # every version of every key of this cache
        batch = []
        for key in client.scan_iter(match=pattern, count=500):
            batch.append(key)
            if len(batch) >= 500:
                client.delete(*batch)
                batch = []
        if batch:
            client.delete(*batch)
        return True
