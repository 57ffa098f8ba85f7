"""The Redis client: redis-py's plain client, or its RedisCluster when the server runs in cluster mode.

REDIS_CLUSTER says which: `auto` (the default) asks the server (`INFO cluster`), `on` and `off`
skip the question. ElastiCache Serverless, MemoryDB, Redis Cluster and cluster-mode Valkey are
all in cluster mode: a plain client there meets MOVED on every key of another node's slots and
CROSSSLOT on any script whose keys span slots. The key layout follows the same answer
(keys.Keys.cluster), so the two never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import redis
from redis.backoff import ExponentialBackoff, ExponentialWithJitterBackoff
from redis.cluster import RedisCluster
from redis.driver_info import DriverInfo
from redis.retry import Retry

from .errors import Unavailable

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
        raise Unavailable(f"storage is unavailable: {exc}") from None
    finally:
        probe.close()


def connect(url: str, setting: ClusterSetting = ClusterSetting.AUTO) -> Connected:
    cluster = setting is ClusterSetting.ON or (setting is ClusterSetting.AUTO and in_cluster_mode(url))
    if cluster:
        return Connected(cluster_client(url), cluster=True)
    return Connected(plain_client(url), cluster=False)


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
