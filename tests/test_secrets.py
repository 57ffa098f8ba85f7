"""Secrets read from Secrets Manager or SSM SecureString at cold start (issue 21, finding 5),
against moto; plain environment variables keep working."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import redis
from chalice.test import Client

import app as app_module
from chalicelib import aws_secrets, services
from chalicelib.config import Settings
from emulator.redis_server import RedisServer
from tests.conftest import message

TOKEN = "a-token-that-lives-in-secrets-manager"
WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
REDIS_PASSWORD = "p@ss/w:rd+1"  # characters a URL would otherwise misread


@pytest.fixture
def aws_secret_stores(aws: Any) -> Iterator[tuple[Any, Any]]:
    aws_secrets.read_secret.cache_clear()
    region = "us-east-1"
    yield boto3.client("secretsmanager", region_name=region), boto3.client("ssm", region_name=region)
    aws_secrets.read_secret.cache_clear()


def _secret(manager: Any, name: str, value: str) -> str:
    return str(manager.create_secret(Name=name, SecretString=value)["ARN"])


def _parameter(ssm: Any, name: str, value: str) -> str:
    ssm.put_parameter(Name=name, Value=value, Type="SecureString", Overwrite=True)
    return str(ssm.get_parameter(Name=name)["Parameter"]["ARN"])


def test_secrets_come_from_secrets_manager_and_ssm(aws_secret_stores: tuple[Any, Any]) -> None:
    manager, ssm = aws_secret_stores
    env = {
        "API_TOKEN": "a-stale-plain-value",  # the kept secret wins over a plain variable
        "API_TOKEN_SECRET_ARN": _secret(manager, "punctual/api-token-1", TOKEN),
        "WEBHOOK_SECRET_ARN": _parameter(ssm, "/punctual/webhook-secret", WEBHOOK_SECRET),
        "REDIS_URL": "rediss://default@cache.example:6379/0",
        "REDIS_AUTH_SECRET_ARN": _parameter(ssm, "/punctual/redis-auth", REDIS_PASSWORD),
    }
    settings = Settings.from_env(env)
    assert settings.api_token == TOKEN
    assert settings.webhook_secret == WEBHOOK_SECRET
    url = redis.connection.parse_url(settings.redis_url)
    assert (url["username"], url["password"], url["host"], url["port"]) == (
        "default", REDIS_PASSWORD, "cache.example", 6379)


def test_a_secret_is_read_once_per_container(aws_secret_stores: tuple[Any, Any]) -> None:
    manager, _ = aws_secret_stores
    arn = _secret(manager, "punctual/api-token-2", TOKEN)
    assert Settings.from_env({"API_TOKEN_SECRET_ARN": arn}).api_token == TOKEN
    manager.delete_secret(SecretId=arn, ForceDeleteWithoutRecovery=True)
    assert Settings.from_env({"API_TOKEN_SECRET_ARN": arn}).api_token == TOKEN


def test_plain_variables_still_work_and_call_no_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_aws(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("AWS was called")

    monkeypatch.setattr(aws_secrets.boto3, "client", no_aws)
    env = {"API_TOKEN": "plain", "WEBHOOK_SECRET": WEBHOOK_SECRET, "API_TOKEN_SECRET_ARN": ""}
    settings = Settings.from_env(env)
    assert (settings.api_token, settings.webhook_secret) == ("plain", WEBHOOK_SECRET)


def test_a_secret_that_cannot_be_read_stops_the_start_naming_it(
    aws_secret_stores: tuple[Any, Any]
) -> None:
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:punctual/missing-AbCdEf"
    with pytest.raises(ValueError, match=r"could not read the secret arn:aws:secretsmanager:.*/missing"):
        Settings.from_env({"API_TOKEN_SECRET_ARN": arn})
    with pytest.raises(ValueError, match="REDIS_AUTH_SECRET_ARN needs REDIS_URL"):
        Settings.from_env({"REDIS_AUTH_SECRET_ARN": _secret(aws_secret_stores[0], "punctual/r", "x")})


def test_the_app_runs_on_secrets_it_reads_at_start(
    aws_secret_stores: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    manager, ssm = aws_secret_stores
    server = RedisServer("--requirepass", REDIS_PASSWORD)
    try:
        monkeypatch.delenv("API_TOKEN", raising=False)
        monkeypatch.setenv("PUNCTUAL_LOCAL", "1")
        monkeypatch.setenv("REDIS_URL", server.url.replace("redis://", "redis://default@"))
        monkeypatch.setenv("API_TOKEN_SECRET_ARN", _secret(manager, "punctual/api-token-3", TOKEN))
        monkeypatch.setenv("REDIS_AUTH_SECRET_ARN", _parameter(ssm, "/punctual/redis-auth-2", REDIS_PASSWORD))
        services.install(None)
        with Client(app_module.app) as client:
            new = json.dumps(message("m", "2030-01-01T01:00:00Z", "http://127.0.0.1:9/hook"))
            headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
            assert client.http.post("/messages", headers=headers, body=new).status_code == 200
            wrong = {**headers, "Authorization": "Bearer a-stale-plain-value"}
            assert client.http.post("/messages", headers=wrong, body=new).status_code == 401
    finally:
        services.install(None)
        server.stop()
