"""Which Celery queues have a worker listening: each worker announces its queues in Redis.

A `device: cuda` experiment is accepted even when no GPU worker is up (one may start later), but
the list and experiment pages say that nothing listens on its queue, so nobody waits for a run
that cannot start. Every worker writes one key per queue it consumes from, with a time to live of
a few announcement intervals: a worker that stops (or is killed) drops out by itself.
"""
from __future__ import annotations

import logging
import threading

from django.conf import settings

log = logging.getLogger(__name__)

KEY_PREFIX = "lotteryweb:listener:"


def _client(timeout: float = 2.0):
    import redis
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=timeout, socket_connect_timeout=timeout)


def announce(client, hostname: str, queues, ttl_seconds: float) -> None:
    """Say (for `ttl_seconds`) that worker `hostname` consumes from `queues`."""
    pipeline = client.pipeline()
    for queue in queues:
        pipeline.set(f"{KEY_PREFIX}{queue}:{hostname}", hostname, ex=max(1, int(ttl_seconds)))
    pipeline.execute()


def listening_queues() -> set[str] | None:
    """The queues with at least one live worker; None when Redis cannot be asked (the pages then say nothing)."""
    try:
        client = _client(timeout=0.5)
        keys = list(client.scan_iter(match=f"{KEY_PREFIX}*", count=500))
    except Exception:
        log.info("could not ask Redis which queues have workers", exc_info=True)
        return None
    queues = set()
    for key in keys:
        name = key.decode() if isinstance(key, bytes) else key
        queue, _, _host = name[len(KEY_PREFIX):].rpartition(":")
        if queue:
            queues.add(queue)
    return queues


def unserved_queue_notice(queue: str, listening: set[str] | None) -> str:
    """The page's notice for an experiment on `queue`, or "" when a worker listens (or nobody can tell)."""
    if listening is None or queue in listening:
        return ""
    return (f"no worker is listening on the '{queue}' queue: this experiment waits until one starts "
            f"(e.g. celery -A lotteryweb worker -Q {queue} --pool=solo)")


def start_announcer(hostname: str, queues) -> threading.Thread:
    """A worker's daemon thread announcing its queues every LOTTERYWEB_LISTENER_SECONDS."""
    interval = settings.LOTTERYWEB_LISTENER_SECONDS
    queues = sorted(queues)

    def loop() -> None:
        client = None
        while True:
            try:
                client = client or _client()
                announce(client, hostname, queues, ttl_seconds=3 * interval)
            except Exception:  # Redis is away right now: announce again next time
                client = None
                log.info("could not announce the worker's queues", exc_info=True)
            threading.Event().wait(interval)

    thread = threading.Thread(target=loop, name="queue-announcer", daemon=True)
    thread.start()
    return thread
