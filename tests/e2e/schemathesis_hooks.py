"""Schemathesis hooks for test_openapi_e2e.py, loaded by its CLI run (SCHEMATHESIS_HOOKS).

The test passes what they need in the environment: FUZZ_RECEIVER_URL (where the generated
webhooks and agents are pointed), FUZZ_API_TOKEN, and optionally FUZZ_RUN, a live run
({"agentId", "runId", "callbackToken"}) for the run report routes.
"""

from __future__ import annotations

import json
import os
from typing import Any

import schemathesis

from chalicelib.errors import BadRequest
from chalicelib.targets import check_target_url

URL_FIELDS = ("webhookUrl", "endpointUrl")


def keep_on_this_machine(case: schemathesis.Case, receiver_url: str) -> None:
    """Point every URL the server would accept at the local receiver.

    Generated URLs name arbitrary hosts, and the stack would POST to them. A URL the server
    refuses stays as generated, so the refusals are exercised too.
    """
    if not isinstance(case.body, dict):
        return
    for field in URL_FIELDS:
        try:
            check_target_url(case.body.get(field), field, allow_internal=True)
        except BadRequest:
            continue
        case.body[field] = receiver_url + "/generated"


@schemathesis.hook
def before_call(context: schemathesis.HookContext, case: schemathesis.Case, kwargs: dict[str, Any]) -> None:
    keep_on_this_machine(case, os.environ["FUZZ_RECEIVER_URL"])
    token = os.environ["FUZZ_API_TOKEN"]
    if case.operation.path.endswith("/{report}") and os.environ.get("FUZZ_RUN"):
        # Reports are authorised by a run's own token and refused (404) for an unknown run: aim
        # them at the live run, so that the report bodies reach the code that reads them.
        run = json.loads(os.environ["FUZZ_RUN"])
        live = {"agentId": run["agentId"], "runId": run["runId"]}
        case.path_parameters = {**(case.path_parameters or {}), **live}
        token = run["callbackToken"]
    case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}
