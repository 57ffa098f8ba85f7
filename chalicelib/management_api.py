"""The API Gateway management API: post_to_connection and delete_connection through boto3."""

from __future__ import annotations

import logging
import threading
from typing import Any

import boto3
import boto3.session
import botocore
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from .config import Settings

log = logging.getLogger(__name__)

# The threads a fan-out sends from in one container (live.py), each with a kept-alive connection.
FANOUT_THREADS = 32


# A fan-out is one post_to_connection per subscriber, so botocore's per-call CPU is what a
# large one costs. Two settings cut it without changing the request: a fixed User-Agent (else
# botocore rebuilds its default one from some twenty components on every call) and no
# client-side parameter validation (the parameters are always a connection id from our own
# records and bytes we just encoded).
_USER_AGENT = f"punctual Boto3/{boto3.__version__} Botocore/{botocore.__version__}"


def management_endpoint(
    settings: Settings, domain: str | None = None, stage: str | None = None
) -> str | None:
    """Where post_to_connection goes: configured, else as AWS derives it."""
    if settings.ws_management_endpoint:
        return settings.ws_management_endpoint
    if settings.ws_api_id:
        return f"https://{settings.ws_api_id}.execute-api.{settings.aws_region}.amazonaws.com/{settings.ws_stage}"
    if domain and stage:
        return f"https://{domain}/{stage}"
    return None


class ManagementApi:
    """post_to_connection through boto3; one client per endpoint."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def client(self, endpoint: str) -> Any:
        client = self._clients.get(endpoint)
        if client is not None:
            return client
        # The first fan-out asks from up to 32 threads at once. boto3's default
        # session is not thread-safe, so each client comes from a session of its
        # own, made under the lock, and only one is made per endpoint.
        with self._lock:
            client = self._clients.get(endpoint)
            if client is None:
                client = boto3.session.Session().client(
                    "apigatewaymanagementapi",
                    endpoint_url=endpoint,
                    region_name=self._settings.aws_region,
                    config=BotoConfig(
                        # One kept-alive connection per fan-out thread: none waits for another's.
                        max_pool_connections=FANOUT_THREADS,
                        retries={"max_attempts": 2},
                        user_agent=_USER_AGENT,
                        parameter_validation=False,
                    ),
                )
                self._clients[endpoint] = client
        return client

    def send(self, endpoint: str, connection_id: str, data: bytes) -> bool:
        """Send one encoded frame; False when the connection is gone."""
        try:
            self.client(endpoint).post_to_connection(ConnectionId=connection_id, Data=data)
            return True
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code == "GoneException" or status == 410:
                return False
            log.warning("post_to_connection %s failed: %s", connection_id, exc)
            return True
        except BotoCoreError as exc:
            log.warning("post_to_connection %s failed: %s", connection_id, exc)
            return True

    def close(self, endpoint: str, connection_id: str) -> None:
        """Close a connection (API Gateway then runs $disconnect); one already gone is left be."""
        try:
            self.client(endpoint).delete_connection(ConnectionId=connection_id)
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") != 410:
                log.warning("delete_connection %s failed: %s", connection_id, exc)
        except BotoCoreError as exc:
            log.warning("delete_connection %s failed: %s", connection_id, exc)
