"""Secrets read from AWS Secrets Manager or SSM Parameter Store when a container starts.

On AWS the API token, the webhook signing secret and the Redis AUTH token are not Lambda
environment variables (readable by anyone allowed lambda:GetFunctionConfiguration); the
environment names where they are kept instead:

| setting          | named by                | holds                                 |
|------------------|-------------------------|---------------------------------------|
| `API_TOKEN`      | `API_TOKEN_SECRET_ARN`  | the token                             |
| `WEBHOOK_SECRET` | `WEBHOOK_SECRET_ARN`    | the signing secret (`whsec_…`)        |
| Redis AUTH       | `REDIS_AUTH_SECRET_ARN` | the password, set into `REDIS_URL`    |

Each is a Secrets Manager secret (its ARN or name; the value is the SecretString as it is) or
an SSM SecureString parameter (its ARN, `arn:…:ssm:…:parameter/…`). A value is read once per
container and kept: settings are built once per container. Without these variables the plain
environment variables work as before (local runs, tests).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from urllib.parse import quote, urlsplit, urlunsplit

import boto3
from botocore.exceptions import BotoCoreError, ClientError

# setting -> the variable that names where it is kept
SECRET_REFERENCES = {"API_TOKEN": "API_TOKEN_SECRET_ARN", "WEBHOOK_SECRET": "WEBHOOK_SECRET_ARN"}
REDIS_AUTH_REFERENCE = "REDIS_AUTH_SECRET_ARN"


def _arn_parts(ref: str) -> tuple[str, str] | None:
    """(service, region) of an ARN; None for a bare name."""
    parts = ref.split(":", 5)
    return (parts[2], parts[3]) if ref.startswith("arn:") and len(parts) == 6 else None


@functools.cache
def read_secret(ref: str, default_region: str) -> str:
    """The value kept at `ref` (an SSM parameter ARN, else a Secrets Manager secret id)."""
    service, region = _arn_parts(ref) or ("secretsmanager", default_region)
    try:
        if service == "ssm":
            ssm = boto3.client("ssm", region_name=region or default_region)
            return str(ssm.get_parameter(Name=ref, WithDecryption=True)["Parameter"]["Value"])
        manager = boto3.client("secretsmanager", region_name=region or default_region)
        answer = manager.get_secret_value(SecretId=ref)
    except (BotoCoreError, ClientError) as exc:
        # The error names the secret and the reason (AccessDenied, ResourceNotFound), never a value.
        raise ValueError(f"could not read the secret {ref}: {exc}") from None
    if "SecretString" not in answer:
        raise ValueError(f"the secret {ref} holds binary data; store the value as a string")
    return str(answer["SecretString"])


def with_password(url: str, password: str) -> str:
    """`url` with its password (the AUTH token) replaced; an ACL user name is kept."""
    parts = urlsplit(url)
    user = quote(parts.username or "", safe="")
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}:{quote(password, safe='')}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def resolve(env: Mapping[str, str]) -> Mapping[str, str]:
    """`env` with every secret read from where its *_SECRET_ARN variable says; `env` itself when
    none is set. An empty variable counts as unset (the templates pass "" for none)."""
    refs = {name: env.get(var, "").strip() for name, var in SECRET_REFERENCES.items()}
    redis_ref = env.get(REDIS_AUTH_REFERENCE, "").strip()
    if not any(refs.values()) and not redis_ref:
        return env
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"
    resolved = dict(env)
    for name, ref in refs.items():
        if ref:
            resolved[name] = read_secret(ref, region)
    if redis_ref:
        url = env.get("REDIS_URL", "").strip()
        if not url:
            raise ValueError(f"{REDIS_AUTH_REFERENCE} needs REDIS_URL (the URL the password goes into)")
        resolved["REDIS_URL"] = with_password(url, read_secret(redis_ref, region))
    return resolved
