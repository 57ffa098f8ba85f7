"""The Redis client: redis-py's plain client, or its RedisCluster when the server runs in cluster mode.

REDIS_CLUSTER says which: `auto` (the default) asks the server (`INFO cluster`), `on` and `off`
skip the question. ElastiCache Serverless, MemoryDB, Redis Cluster and cluster-mode Valkey are
all in cluster mode: a plain client there meets MOVED on every key of another node's slots and
CROSSSLOT on any script whose keys span slots. The key layout follows the same answer
(keys.Keys.cluster), so the two never disagree.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum

import redis
from redis.backoff import ExponentialBackoff, ExponentialWithJitterBackoff
from redis.cluster import RedisCluster
from redis.driver_info import DriverInfo
from redis.retry import Retry

from .errors import EvictingStorage, PunctualError, StorageFull, Unavailable

log = logging.getLogger(__name__)
REDIS_MAX_CONNECTIONS = 256  # per node
_DRIVER_INFO = DriverInfo(name="redis-py", lib_version=redis.__version__)

# Errors that mean the storage could not be reached or is failing over: a 503, not a 500.
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.exceptions.ClusterError,
    redis.exceptions.TryAgainError,
    redis.exceptions.RedisClusterException,
)


class ClusterSetting(StrEnum):
    AUTO = "auto"
    ON = "on"
    OFF = "off"

    @classmethod
    def parse(cls, raw: str) -> ClusterSetting:
        try:
            return cls((raw.strip() or "auto").lower())
        except ValueError:
            raise ValueError(f"REDIS_CLUSTER must be auto, on or off, got {raw!r}") from None


@dataclass(frozen=True)
class Connected:
    client: redis.Redis  # a RedisCluster when `cluster`
    cluster: bool


def in_cluster_mode(url: str) -> bool:
    """Whether the server at `url` runs in cluster mode (one round trip, on a throwaway client)."""
    if url.startswith("unix://"):
        return False  # a cluster is never reached through a unix socket (nor can RedisCluster)
    probe = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5, decode_responses=True)
    try:
        try:
            return bool(probe.info("cluster").get("cluster_enabled"))
        except redis.ResponseError:
            # INFO can be refused (ACLs, renamed commands); CLUSTER INFO is an error exactly
            # when cluster support is off.
            try:
                probe.execute_command("CLUSTER INFO")
                return True
            except redis.ResponseError:
                return False
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise _unavailable(exc) from None
    finally:
        probe.close()


def connect(url: str, setting: ClusterSetting = ClusterSetting.AUTO) -> Connected:
    """A client for `url`; refused (EvictingStorage) when the server would evict keys."""
    cluster = setting is ClusterSetting.ON or (setting is ClusterSetting.AUTO and in_cluster_mode(url))
    client = cluster_client(url) if cluster else plain_client(url)
    try:
        with storage_errors():
            policies = eviction_policies(client)
    except Unavailable:
        client.close()
        raise
    problem = eviction_problem(policies)
    if problem is not None:
        client.close()
        log.error("refusing to start: %s", problem)
        raise EvictingStorage(problem, eviction_summary(policies))
    return Connected(client, cluster=cluster)


# -- errors -------------------------------------------------------------------------------------

OUT_OF_MEMORY = "Redis is out of memory: the request was not stored; retry later"


def _unavailable(exc: Exception) -> Unavailable:
    # The exception's text names the server (host, port): it goes to the log, never to a caller,
    # some of whose routes (the run reports, /health) need no API token.
    log.warning("storage is unavailable: %s", exc)
    return Unavailable("storage is unavailable")


def storage_error(exc: BaseException) -> PunctualError | None:
    """The error a caller is answered for a Redis failure (None when `exc` is none):
    out of memory is a 503 that says so, a lost connection a 503 that names no server."""
    if isinstance(exc, redis.exceptions.OutOfMemoryError):
        log.error("Redis refused a write, out of memory: %s", exc)
        return StorageFull(OUT_OF_MEMORY)
    if isinstance(exc, UNAVAILABLE_ERRORS):
        return _unavailable(exc)
    return None


@contextmanager
def storage_errors() -> Iterator[None]:
    """Redis failures inside become the PunctualError a caller is answered (see storage_error)."""
    try:
        yield
    except redis.RedisError as exc:
        translated = storage_error(exc)
        if translated is None:
            raise
        raise translated from None


# -- eviction -----------------------------------------------------------------------------------

NO_EVICTION = "noeviction"


def _node_policy(node: redis.Redis) -> str | None:
    """One server's maxmemory-policy: CONFIG GET where allowed, else INFO memory (ElastiCache
    refuses CONFIG); None when neither tells (ElastiCache Serverless hides it)."""
    try:
        policy = node.config_get("maxmemory-policy").get("maxmemory-policy")
        if policy:
            return str(policy)
    except redis.ResponseError:
        pass
    try:
        policy = node.info("memory").get("maxmemory_policy")
    except redis.ResponseError:
        return None
    return str(policy) if policy else None


def eviction_policies(client: redis.Redis, skip_unreachable: bool = False) -> list[str | None]:
    """The maxmemory-policy of every primary (one on a plain server). With `skip_unreachable`,
    a cluster's primary that does not answer counts as not known (/health names the shards it
    fails instead)."""
    if not isinstance(client, RedisCluster):
        return [_node_policy(client)]
    policies = []
    for node in client.get_primaries():
        try:
            policies.append(_node_policy(client.get_redis_connection(node)))
        except (redis.ConnectionError, redis.TimeoutError):
            if not skip_unreachable:
                raise
            policies.append(None)
    return policies


def eviction_summary(policies: list[str | None]) -> str | None:
    """The policy to report: an evicting one when any primary has one, else `noeviction` when
    every primary says so, else None (not known)."""
    evicting = [p for p in policies if p is not None and p != NO_EVICTION]
    if evicting:
        return evicting[0]
    return NO_EVICTION if policies and all(p == NO_EVICTION for p in policies) else None


def eviction_problem(policies: list[str | None]) -> str | None:
    """Why this Redis is unfit to hold accepted messages, or None.

    Any policy but noeviction is refused, whatever maxmemory is now: an evicting policy drops
    message hashes and the due index once memory runs short (and maxmemory can be set at any
    time), so accepted messages would never fire, silently. A policy that cannot be read is let
    through (and shown as unknown in /health): ElastiCache Serverless hides it.
    """
    policy = eviction_summary(policies)
    if policy is None or policy == NO_EVICTION:
        return None
    return (f"Redis evicts keys when memory runs short (maxmemory-policy {policy}), which would "
            f"silently lose accepted messages; set maxmemory-policy to {NO_EVICTION}")


def _common() -> dict[str, object]:
    return dict(
        # One Lambda handles one event at a time, but a dispatch batch delivers in parallel
        # and the local stack runs many invocations in one process: threads wait for a
        # connection (up to 5 s) instead of failing at redis-py's default limit.
        connection_pool_class=redis.BlockingConnectionPool,
        max_connections=REDIS_MAX_CONNECTIONS,
        timeout=5,
        decode_responses=True,
        socket_timeout=5,
        socket_connect_timeout=2,
        health_check_interval=30,
        # Else every new connection looks redis-py's version up in the installed package
        # metadata: a burst that opens dozens of connections at once spends that CPU on its
        # first deliveries.
        driver_info=_DRIVER_INFO,
    )


def plain_client(url: str) -> redis.Redis:
    options = _common()
    pool_class = options.pop("connection_pool_class")
    pool = pool_class.from_url(  # type: ignore[attr-defined]
        url,
        # A request fails in well under a second when Redis is down, rather than hanging on
        # redis-py's default retries.
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), retries=2),
        **options,
    )
    return redis.Redis(connection_pool=pool)


def cluster_client(url: str) -> RedisCluster:
    """A RedisCluster that rides out a resharding (MOVED, ASK) and a failover.

    Its retries (each after a topology refresh) span the seconds a replica takes to be
    promoted; a command answered MOVED or ASK did not run and is simply re-sent to the new
    owner. Pipelines resend only the commands that were not answered.
    """
    return RedisCluster.from_url(
        url,
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), retries=8),
        # The first connection may reach a node that is failing over; the others are found.
        require_full_coverage=True,
        **_common(),
    )
