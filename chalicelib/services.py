"""Builds the object graph once per Lambda container; tests swap it."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import boto3
import redis
from botocore.config import Config as BotoConfig
from redis.cluster import RedisCluster

from .agent_runner import AgentRunner
from .agent_store import AgentStore
from .clock import Clock, SystemClock
from .config import Settings
from .dispatch_queue import DispatchQueue, Handoff
from .dispatcher import Dispatcher
from .events import Events, Publisher
from .health import HealthCheck
from .keys import Keys
from .live import LiveHandlers, ManagementApi, WsPublisher
from .live_store import LiveStore
from .redis_client import connect as connect_redis
from .run_store import RunStore
from .scheduler import Scheduler
from .sender import HttpSender
from .shards import CLUSTER_DEFAULT_SHARDS
from .store import Store
from .targets import Resolver, system_resolver
from .webhook_delivery import WebhookDelivery


@dataclass(frozen=True)
class Services:
    settings: Settings
    clock: Clock
    message_store: Store  # webhook messages, and the due and inflight indexes every item goes through
    agent_store: AgentStore
    run_store: RunStore
    dispatch_queue: DispatchQueue
    scheduler: Scheduler
    dispatcher: Dispatcher
    resolver: Resolver
    runner: AgentRunner
    events: Events
    ws_routes: LiveHandlers  # what the WebSocket $connect, $default and $disconnect routes do
    health: HealthCheck

    @classmethod
    def build(
        cls,
        settings: Settings,
        clock: Clock | None = None,
        redis_client: redis.Redis | None = None,
        sqs_client: object | None = None,
        resolver: Resolver = system_resolver,
        publisher: Publisher | None = None,
    ) -> Services:
        clock = clock or SystemClock()
        if redis_client is None:
            redis_client = connect_redis(settings.redis_url, settings.redis_cluster).client
        if sqs_client is None:
            sqs_client = boto3.client(
                "sqs",
                region_name=settings.aws_region,
                endpoint_url=settings.aws_endpoint_url,
                config=BotoConfig(max_pool_connections=32, retries={"mode": "standard"}),
            )
        # The key layout follows the client: a RedisCluster gets hash-tagged keys (see keys.py),
        # and its messages spread over shards by default (shards.py).
        cluster = isinstance(redis_client, RedisCluster)
        shard_count = settings.redis_shards or (CLUSTER_DEFAULT_SHARDS if cluster else 1)
        store = Store(redis_client, Keys(settings.key_prefix, cluster=cluster), shard_count,
                      settings.retention_seconds)
        queue = DispatchQueue(
            sqs_client, settings.dispatch_queue_name, settings.dispatch_queue_url, clock,
            settings.lead_seconds,
        )
        # Chunks of a large fan-out go through a queue of their own, taken one per invocation.
        fanout_queue = DispatchQueue(
            sqs_client, settings.fanout_queue_name, settings.fanout_queue_url, clock, settings.lead_seconds
        )
        handoff = Handoff(queue, store, clock)
        sender = HttpSender(settings.webhook_timeout_seconds, allow_internal=settings.local_mode,
                            resolver=resolver)
        agents = AgentStore(store)
        runs = RunStore(store, agents)
        live = LiveStore(store)
        ws_publisher = WsPublisher(live, agents, ManagementApi(settings), queue, fanout_queue, clock,
                                   settings)
        events = Events(publisher or ws_publisher, clock)
        runner = AgentRunner(agents, runs, handoff, sender, events, clock, settings)
        scheduler = Scheduler(store, queue, handoff, clock, settings, runner)
        webhooks = WebhookDelivery(store, handoff, sender, clock, settings)
        dispatcher = Dispatcher(store, scheduler, handoff, webhooks, runner, ws_publisher, sender, clock,
                                settings)
        ws_routes = LiveHandlers(live, agents, ws_publisher, clock, settings)
        return cls(
            settings=settings, clock=clock, message_store=store, agent_store=agents, run_store=runs,
            dispatch_queue=queue, scheduler=scheduler, dispatcher=dispatcher, resolver=resolver,
            runner=runner, events=events, ws_routes=ws_routes, health=HealthCheck(store, queue, clock),
        )


_lock = threading.Lock()
_current: Services | None = None
_settings: Settings | None = None


def settings() -> Settings:
    """The settings in use, read once; also when the services could not be built (a refused
    Redis), so that /health can still tell the token's holder why."""
    global _settings
    current = _current
    if current is not None:
        return current.settings
    with _lock:
        if _settings is None:
            _settings = Settings.from_env()
        return _settings


def get() -> Services:
    """The services, built on first use. A build that fails (Redis down, or refused for its
    eviction policy) is not kept: the next call tries again, so fixing Redis needs no redeploy."""
    global _current
    if _current is None:
        built_settings = settings()
        with _lock:
            if _current is None:
                _current = Services.build(built_settings)
    return _current


def install(services: Services | None) -> None:
    """Replace the services (tests); None rebuilds from the environment on next use."""
    global _current, _settings
    with _lock:
        _current = services
        _settings = None
