"""Settings, read once from the environment (a `.env` is loaded by the local runner)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from .aws_secrets import resolve as resolve_secrets
from .backoff import RetryPolicy
from .destinations import BreakerPolicy
from .redis_client import ClusterSetting
from .shards import MAX_SHARDS
from .standard_webhooks import EXAMPLE, check_secrets

# The queues' names unless DISPATCH_QUEUE_NAME / FANOUT_QUEUE_NAME say otherwise; the packaged
# stack (deploy/) creates queues of these names.
DEFAULT_DISPATCH_QUEUE = "punctual-dispatch"
DEFAULT_FANOUT_QUEUE = "punctual-fanout"
# Four containers' delivery threads (dispatcher.DELIVERY_THREADS): a destination that hangs holds
# at most that many across the fleet, and a burst to one healthy destination is not slowed by it
# (README, Delivery: lower limits measured).
DEFAULT_DESTINATION_MAX_CALLS = 256
# WebSocket caps (WS_MAX_CONNECTIONS_PER_TOKEN, WS_MAX_SUBSCRIPTIONS_PER_CONNECTION; 0: none):
# room for the 1,000-subscriber fan-out benchmark on one token, and for a dashboard that watches
# every agent of a large fleet on one connection (README, Security: WebSocket limits).
DEFAULT_WS_MAX_CONNECTIONS_PER_TOKEN = 2000
DEFAULT_WS_MAX_SUBSCRIPTIONS_PER_CONNECTION = 1000
# The stage that refuses to run without WEBHOOK_SECRET (PUNCTUAL_STAGE, set per stage in
# .chalice/config.json).
PROD_STAGE = "prod"


def _int(
    env: Mapping[str, str], name: str, default: int, minimum: int = 0, maximum: int | None = None
) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be at most {maximum}, got {value}")
    return value


def _shards(env: Mapping[str, str]) -> int | None:
    if not env.get("REDIS_SHARDS", "").strip():
        return None  # the default follows the kind of Redis (Services.build)
    return _int(env, "REDIS_SHARDS", 1, minimum=1, maximum=MAX_SHARDS)


def _flag(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _local_mode(env: Mapping[str, str]) -> bool:
    local = _flag(env, "PUNCTUAL_LOCAL")
    # Local mode lets targets reach loopback and private addresses: on Lambda that is the VPC and
    # the runtime API. `chalice deploy --stage local` would ship it, so it stops the start.
    if local and env.get("AWS_LAMBDA_FUNCTION_NAME", "").strip():
        raise ValueError(
            "PUNCTUAL_LOCAL is set on Lambda (AWS_LAMBDA_FUNCTION_NAME is "
            f"{env['AWS_LAMBDA_FUNCTION_NAME'].strip()!r}): local mode lets webhooks and agents call "
            "loopback and private addresses and is for the local stack only; deploy a stage "
            "without it (not `--stage local`)"
        )
    return local


def _public_api_url(env: Mapping[str, str]) -> str:
    explicit = env.get("PUBLIC_API_URL", "").strip().rstrip("/")
    if explicit:
        return explicit
    host = env.get("API_HOST", "127.0.0.1").strip() or "127.0.0.1"
    if host in {"0.0.0.0", "::"}:
        host = "127.0.0.1"
    return f"http://{host}:{env.get('API_PORT', '8000').strip() or '8000'}"


@dataclass(frozen=True)
class Settings:
    redis_url: str
    api_token: str
    aws_region: str
    aws_endpoint_url: str | None
    dispatch_queue_name: str
    dispatch_queue_url: str | None
    fanout_queue_name: str
    fanout_queue_url: str | None
    local_mode: bool
    # One `whsec_` secret, or two space-separated while receivers change over (the new one first).
    webhook_secret: str | None
    webhook_timeout_seconds: int
    webhook_max_retries: int
    # Webhook calls under way at once to one destination (scheme, host and port), across every
    # dispatcher; 0: no limit. What is over it waits without holding a thread.
    destination_max_calls: int
    retry_base_seconds: int
    retry_max_delay_seconds: int
    retention_seconds: int
    tick_window_seconds: int
    # How early a queued item should arrive before its due instant.
    lead_seconds: int
    # A queued item that has not been claimed this long after it was due is
    # presumed lost in transit and re-sent by the tick.
    queue_grace_seconds: int
    key_prefix: str
    max_concurrent_agents: int
    agent_max_retries: int
    agent_retry_base_seconds: int
    agent_retry_max_delay_seconds: int
    # A run's HTTP call must answer within this; longer work answers 202 and reports back.
    agent_call_timeout_seconds: int
    # Where agents send their reports (the callbackUrl in every run request).
    public_api_url: str
    # The API Gateway management API that pushes WebSocket frames: an explicit
    # endpoint (the local gateway), else derived from the WebSocket API's id.
    ws_management_endpoint: str | None
    ws_api_id: str | None
    ws_stage: str
    # Where an agent that was never registered runs when it is first scheduled or run: a URL in
    # which `{agentId}` stands for its id. None: such an agent is a 404.
    agent_endpoint_template: str | None = None
    # Whether Redis runs in cluster mode: asked of the server (auto), or said (on, off).
    redis_cluster: ClusterSetting = ClusterSetting.AUTO
    # How many hash-slot shards webhook messages spread over (shards.py); None: 1 on a plain
    # Redis, shards.CLUSTER_DEFAULT_SHARDS on a cluster.
    redis_shards: int | None = None
    # A destination's circuit breaker (destinations.py): failed calls in a row that open it
    # (0: never), and its first and longest cool-downs.
    breaker_failures: int = 5
    breaker_cooldown_seconds: int = 30
    breaker_max_cooldown_seconds: int = 300
    # The Chalice stage this runs as (PUNCTUAL_STAGE); '' when not said.
    stage: str = ""
    ws_max_connections_per_token: int = DEFAULT_WS_MAX_CONNECTIONS_PER_TOKEN
    ws_max_subscriptions_per_connection: int = DEFAULT_WS_MAX_SUBSCRIPTIONS_PER_CONNECTION
    # How long a connect ticket (POST /api/ws-ticket) may wait for its connection.
    ws_ticket_seconds: int = 30

    def __post_init__(self) -> None:
        # Checked here, at start, not at the first delivery: a secret that does not decode would
        # fail every delivery until each message gave up, and an empty key lets anyone sign.
        if self.webhook_secret is not None:
            object.__setattr__(self, "webhook_secret", check_secrets(self.webhook_secret, "WEBHOOK_SECRET"))
        elif self.stage == PROD_STAGE:
            raise ValueError(
                f"WEBHOOK_SECRET is required in the {PROD_STAGE} stage: without it webhooks and agent "
                f"calls (which carry their callbackToken) go out unsigned; set e.g. {EXAMPLE}"
            )

    @property
    def webhook_retries(self) -> RetryPolicy:
        return RetryPolicy(self.webhook_max_retries, self.retry_base_seconds, self.retry_max_delay_seconds)

    @property
    def agent_retries(self) -> RetryPolicy:
        return RetryPolicy(self.agent_max_retries, self.agent_retry_base_seconds,
                           self.agent_retry_max_delay_seconds)

    @property
    def breaker(self) -> BreakerPolicy:
        return BreakerPolicy(self.breaker_failures, self.breaker_cooldown_seconds * 1000,
                             max(self.breaker_cooldown_seconds, self.breaker_max_cooldown_seconds) * 1000)

    @property
    def queue_grace_ms(self) -> int:
        return self.queue_grace_seconds * 1000

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        # On AWS the secrets are read from Secrets Manager or SSM (aws_secrets.py).
        env = resolve_secrets(os.environ if env is None else env)
        redis_url = env.get("REDIS_URL", "").strip()
        if not redis_url:
            host = env.get("REDIS_HOST", "127.0.0.1").strip() or "127.0.0.1"
            port = _int(env, "REDIS_PORT", 6379, minimum=1)
            db = _int(env, "REDIS_DB", 0)
            redis_url = f"redis://{host}:{port}/{db}"
        return cls(
            redis_url=redis_url,
            api_token=env.get("API_TOKEN", ""),
            aws_region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
            aws_endpoint_url=env.get("AWS_ENDPOINT_URL") or None,
            dispatch_queue_name=env.get("DISPATCH_QUEUE_NAME", DEFAULT_DISPATCH_QUEUE),
            dispatch_queue_url=env.get("DISPATCH_QUEUE_URL") or None,
            fanout_queue_name=env.get("FANOUT_QUEUE_NAME", DEFAULT_FANOUT_QUEUE),
            fanout_queue_url=env.get("FANOUT_QUEUE_URL") or None,
            local_mode=_local_mode(env),
            webhook_secret=env.get("WEBHOOK_SECRET", "").strip() or None,
            webhook_timeout_seconds=_int(env, "WEBHOOK_TIMEOUT_SECONDS", 10, minimum=1),
            webhook_max_retries=_int(env, "WEBHOOK_MAX_RETRIES", 3),
            destination_max_calls=_int(env, "DESTINATION_MAX_CALLS", DEFAULT_DESTINATION_MAX_CALLS),
            retry_base_seconds=_int(env, "WEBHOOK_RETRY_BASE_SECONDS", 1, minimum=1),
            retry_max_delay_seconds=_int(env, "WEBHOOK_RETRY_MAX_DELAY_SECONDS", 300, minimum=1),
            retention_seconds=_int(env, "RETENTION_SECONDS", 86_400, minimum=1),
            # SQS delays a message by 900 s at most: what the tick claims further ahead would reach
            # a dispatcher early and hold it past its timeout waiting for the instant.
            tick_window_seconds=_int(env, "TICK_WINDOW_SECONDS", 120, minimum=61, maximum=900),
            lead_seconds=_int(env, "DISPATCH_LEAD_SECONDS", 2),
            queue_grace_seconds=_int(env, "QUEUE_GRACE_SECONDS", 120, minimum=10),
            key_prefix=env.get("REDIS_KEY_PREFIX", "punctual"),
            max_concurrent_agents=_int(env, "MAX_CONCURRENT_AGENTS", 5, minimum=1),
            agent_max_retries=_int(env, "AGENT_MAX_RETRIES", 3),
            agent_retry_base_seconds=_int(env, "AGENT_RETRY_BASE_SECONDS", 1, minimum=1),
            agent_retry_max_delay_seconds=_int(env, "AGENT_RETRY_MAX_DELAY_SECONDS", 300, minimum=1),
            agent_call_timeout_seconds=_int(env, "AGENT_CALL_TIMEOUT_SECONDS", 30, minimum=1),
            public_api_url=_public_api_url(env),
            ws_management_endpoint=env.get("WS_MANAGEMENT_ENDPOINT", "").strip().rstrip("/") or None,
            ws_api_id=env.get("WS_API_ID", "").strip() or None,
            ws_stage=env.get("WS_STAGE", "").strip() or "api",
            agent_endpoint_template=env.get("AGENT_ENDPOINT_TEMPLATE", "").strip() or None,
            redis_cluster=ClusterSetting.parse(env.get("REDIS_CLUSTER", "")),
            redis_shards=_shards(env),
            breaker_failures=_int(env, "BREAKER_FAILURES", 5),
            breaker_cooldown_seconds=_int(env, "BREAKER_COOLDOWN_SECONDS", 30, minimum=1),
            breaker_max_cooldown_seconds=_int(env, "BREAKER_MAX_COOLDOWN_SECONDS", 300, minimum=1),
            stage=env.get("PUNCTUAL_STAGE", "").strip(),
            ws_max_connections_per_token=_int(env, "WS_MAX_CONNECTIONS_PER_TOKEN",
                                              DEFAULT_WS_MAX_CONNECTIONS_PER_TOKEN),
            ws_max_subscriptions_per_connection=_int(env, "WS_MAX_SUBSCRIPTIONS_PER_CONNECTION",
                                                     DEFAULT_WS_MAX_SUBSCRIPTIONS_PER_CONNECTION),
            ws_ticket_seconds=_int(env, "WS_TICKET_SECONDS", 30, minimum=1, maximum=300),
        )
