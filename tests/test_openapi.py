"""The OpenAPI document: valid 3.1, exactly the app's routes, true to their auth and error shapes."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from openapi_spec_validator import OpenAPIV31SpecValidator, validate

import app as app_module
from chalicelib import openapi
from tests.conftest import Harness

HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
DOC = openapi.document()


def documented_operations() -> set[tuple[str, str]]:
    paths = DOC["paths"].items()
    return {(path, method) for path, item in paths for method in item if method in HTTP_METHODS}


def chalice_operations() -> set[tuple[str, str]]:
    return {(path, method.lower()) for path, methods in app_module.app.routes.items() for method in methods}


def resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        _, *parts = node["$ref"].split("/")
        node = DOC
        for part in parts:
            node = node[part]
    return node


def operation(path: str, method: str) -> dict[str, Any]:
    return DOC["paths"][path][method]


def test_the_document_is_valid_openapi_3_1() -> None:
    assert DOC["openapi"].startswith("3.1.")
    validate(DOC, cls=OpenAPIV31SpecValidator)


def test_every_route_is_documented_and_nothing_else() -> None:
    documented, routed = documented_operations(), chalice_operations()
    assert routed - documented == set(), "routes missing from chalicelib/openapi.json"
    assert documented - routed == set(), "documented operations the app does not serve"


def test_operation_ids_are_unique() -> None:
    ids = [operation(p, m)["operationId"] for p, m in documented_operations()]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("path, method", sorted(documented_operations()))
def test_errors_are_documented_in_the_shape_of_their_api(path: str, method: str) -> None:
    shape = "ApiError" if path.startswith("/api/") else "Detail"
    errors = {code: resp for code, resp in operation(path, method)["responses"].items() if code[0] in "45"}
    if path not in {"/health", "/openapi.json", "/dashboard", "/dashboard/{asset}"}:
        assert "401" in errors  # every other route is behind a bearer token
    for code, response in errors.items():
        schema = resolve(response)["content"]["application/json"]["schema"]
        expected = {"$ref": f"#/components/schemas/{shape}"}
        assert schema == expected or expected in schema.get("anyOf", []), (path, method, code)


def _security(path: str, method: str) -> list[dict[str, list[str]]]:
    return operation(path, method).get("security", DOC["security"])


def _call(harness: Harness, path: str, method: str) -> Any:
    concrete = re.sub(r"\{[^}]+\}", "x", path.replace("{report}", "progress"))
    return harness.client.http.request(method.upper(), concrete, headers={}, body=b"{}")


@pytest.mark.parametrize("path, method", sorted(documented_operations()))
def test_documented_security_is_what_the_server_enforces(harness: Harness, path: str, method: str) -> None:
    response = _call(harness, path, method)
    security = _security(path, method)
    if security == [] or {} in security:  # no token needed ({}: a token is optional, /health)
        assert response.status_code != 401
    else:
        [scheme] = [name for requirement in security for name in requirement]
        definition = DOC["components"]["securitySchemes"][scheme]
        assert (definition["type"], definition["scheme"]) == ("http", "bearer")
        assert response.status_code == 401
        # The run reports ask for the run's own token, not the API token.
        expected = "callbackToken" if scheme == "callbackToken" else "API_TOKEN"
        assert expected in response.body.decode()


def test_served_without_a_token(harness: Harness) -> None:
    response = harness.client.http.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert json.loads(response.body) == DOC
