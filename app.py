"""Punctual's Lambda entry points. Each handler delegates to chalicelib."""

from __future__ import annotations

import os
from typing import Any

from chalice import Chalice, Rate, Response

from chalicelib import agents_api, dashboard, messages_api, observability, openapi, services
from chalicelib.config import DEFAULT_DISPATCH_QUEUE, DEFAULT_FANOUT_QUEUE
from chalicelib.events import best_effort
from chalicelib.http import (
    api_error,
    bearer_token,
    detail_error,
    handles_errors,
    json_response,
    require_token,
)
from chalicelib.lambda_events import deadline_from
from chalicelib.live import management_endpoint

app = Chalice(app_name="punctual")
app.experimental_feature_flags.update(["WEBSOCKETS"])

# Fixed when the app is packaged; the same names reach the code as DISPATCH_QUEUE_NAME and
# FANOUT_QUEUE_NAME.
DISPATCH_QUEUE = os.environ.get("DISPATCH_QUEUE_NAME", DEFAULT_DISPATCH_QUEUE)
FANOUT_QUEUE = os.environ.get("FANOUT_QUEUE_NAME", DEFAULT_FANOUT_QUEUE)
ANY_BODY = ["*/*"]  # bodies are read as JSON whatever their declared type


def _authorised() -> services.Services:
    svc = services.get()
    require_token(app.current_request.headers, svc.settings.api_token)
    return svc


def _body() -> bytes | None:
    return app.current_request.raw_body


def _params() -> dict[str, str]:
    return app.current_request.query_params or {}


@app.middleware("all")
def write_metrics(event: Any, get_response: Any) -> Any:
    with observability.invocation():
        return get_response(event)


@app.middleware("http")
def log_request(event: Any, get_response: Any) -> Any:
    return observability.logged_request(event, get_response)


# -- webhooks (spec: webhook-scheduler-api.md) ----------------------------------------


@app.route("/health", methods=["GET"])
@handles_errors(detail_error)
def health() -> Response:
    report = messages_api.health(app.current_request.headers)
    return json_response(report.body, report.status)


@app.route("/openapi.json", methods=["GET"])
@handles_errors(detail_error)
def openapi_document() -> Response:
    # The contract is public, like /health: no token.
    return json_response(openapi.document())


@app.route("/dashboard", methods=["GET"])
@handles_errors(detail_error)
def dashboard_page() -> Response:
    # Public like /openapi.json: the page holds no data and asks for the token itself.
    return dashboard.page(services.get().settings)


@app.route("/dashboard/{asset}", methods=["GET"])
@handles_errors(detail_error)
def dashboard_asset(asset: str) -> Response:
    return dashboard.asset(asset)


@app.route("/messages", methods=["POST"], content_types=ANY_BODY)
@handles_errors(detail_error)
def create_message() -> Response:
    return json_response(messages_api.create_message(_authorised(), _body()))


@app.route("/messages", methods=["GET"])
@handles_errors(detail_error)
def list_messages() -> Response:
    return json_response(messages_api.list_messages(_authorised(), _params()))


@app.route("/messages/{message_id}", methods=["GET"])
@handles_errors(detail_error)
def get_message(message_id: str) -> Response:
    return json_response(messages_api.get_message(_authorised(), message_id))


@app.route("/messages/{message_id}", methods=["DELETE"])
@handles_errors(detail_error)
def delete_message(message_id: str) -> Response:
    return json_response(messages_api.delete_message(_authorised(), message_id))


@app.route("/messages/{message_id}/replay", methods=["POST"], content_types=ANY_BODY)
@handles_errors(detail_error)
def replay_message(message_id: str) -> Response:
    return json_response(messages_api.replay_message(_authorised(), message_id, _body()))


@app.route("/stats", methods=["GET"])
@handles_errors(detail_error)
def stats() -> Response:
    return json_response(messages_api.get_stats(_authorised()))


@app.route("/destinations", methods=["GET"])
@handles_errors(detail_error)
def list_destinations() -> Response:
    return json_response(messages_api.list_destinations(_authorised(), _params()))


# -- agents (spec: agent-scheduling-api.md) ---------------------------------------------


@app.route("/api/agents", methods=["POST"], content_types=ANY_BODY)
@handles_errors(api_error)
def create_agent() -> Response:
    return json_response(agents_api.create_agent(_authorised(), _body()), 201)


@app.route("/api/agents", methods=["GET"])
@handles_errors(api_error)
def list_agents() -> Response:
    return json_response(agents_api.list_agents(_authorised(), _params()))


@app.route("/api/agents/{agentId}", methods=["GET"])
@handles_errors(api_error)
def get_agent(agentId: str) -> Response:  # noqa: N803 (the spec's path parameter)
    return json_response(agents_api.get_agent(_authorised(), agentId))


@app.route("/api/agents/{agentId}", methods=["PATCH"], content_types=ANY_BODY)
@handles_errors(api_error)
def update_agent(agentId: str) -> Response:  # noqa: N803
    return json_response(agents_api.update_agent(_authorised(), agentId, _body()))


@app.route("/api/agents/{agentId}", methods=["DELETE"])
@handles_errors(api_error)
def delete_agent(agentId: str) -> Response:  # noqa: N803
    return json_response(agents_api.delete_agent(_authorised(), agentId))


@app.route("/api/agents/{agentId}/schedule", methods=["POST"], content_types=ANY_BODY)
@handles_errors(api_error)
def schedule_agent(agentId: str) -> Response:  # noqa: N803
    return json_response(agents_api.schedule_agent(_authorised(), agentId, _body()))


@app.route("/api/agents/{agentId}/schedule", methods=["GET"])
@handles_errors(api_error)
def get_schedule(agentId: str) -> Response:  # noqa: N803
    return json_response(agents_api.get_schedule(_authorised(), agentId))


@app.route("/api/agents/{agentId}/schedule", methods=["DELETE"])
@handles_errors(api_error)
def unschedule_agent(agentId: str) -> Response:  # noqa: N803
    return json_response(agents_api.unschedule_agent(_authorised(), agentId))


@app.route("/api/agents/{agentId}/schedule/{jobId}/pause", methods=["PATCH"], content_types=ANY_BODY)
@handles_errors(api_error)
def pause_job(agentId: str, jobId: str) -> Response:  # noqa: N803
    return json_response(agents_api.pause_job(_authorised(), agentId, jobId))


@app.route("/api/agents/{agentId}/schedule/{jobId}/resume", methods=["PATCH"], content_types=ANY_BODY)
@handles_errors(api_error)
def resume_job(agentId: str, jobId: str) -> Response:  # noqa: N803
    return json_response(agents_api.resume_job(_authorised(), agentId, jobId))


@app.route("/api/agents/schedule/status", methods=["GET"])
@handles_errors(api_error)
def scheduler_status() -> Response:
    return json_response(agents_api.scheduler_status(_authorised()))


@app.route("/api/agents/schedule/paused", methods=["GET"])
@handles_errors(api_error)
def paused_jobs() -> Response:
    return json_response(agents_api.paused_jobs(_authorised()))


@app.route("/api/agents/{agentId}/run", methods=["POST"], content_types=ANY_BODY)
@handles_errors(api_error)
def run_agent(agentId: str) -> Response:  # noqa: N803
    return json_response(agents_api.run_now(_authorised(), agentId), 202)


@app.route("/api/agents/{agentId}/runs", methods=["GET"])
@handles_errors(api_error)
def list_runs(agentId: str) -> Response:  # noqa: N803
    return json_response(agents_api.list_runs(_authorised(), agentId, _params()))


@app.route("/api/agents/{agentId}/runs/{runId}", methods=["GET"])
@handles_errors(api_error)
def get_run(agentId: str, runId: str) -> Response:  # noqa: N803
    return json_response(agents_api.get_run(_authorised(), agentId, runId))


@app.route("/api/agents/{agentId}/runs/{runId}/{report}", methods=["POST"], content_types=ANY_BODY)
@handles_errors(api_error)
def report_run(agentId: str, runId: str, report: str) -> Response:  # noqa: N803
    # Authorised by the run's own callback token, not the API token.
    token = bearer_token(app.current_request.headers, "callbackToken")
    return json_response(agents_api.report(services.get(), agentId, runId, report, token, _body()))


# -- live events (API Gateway WebSocket routes) -------------------------------------------


@app.route("/api/ws-ticket", methods=["POST"], content_types=ANY_BODY)
@handles_errors(api_error)
def ws_ticket() -> Response:
    # A one-time ticket to connect with (?ticket=), so the API token need not sit in a URL.
    return json_response(agents_api.ok(_authorised().ws_routes.access.issue_ticket()), 201)


@app.on_ws_connect()
def ws_connect(event: Any) -> dict[str, Any]:
    raw = event.to_dict()
    endpoint = management_endpoint(services.get().settings, event.domain_name, event.stage)
    return services.get().ws_routes.connect(
        event.connection_id, raw.get("queryStringParameters"), raw.get("headers"), endpoint
    )


@app.on_ws_message()
def ws_message(event: Any) -> None:
    endpoint = management_endpoint(services.get().settings, event.domain_name, event.stage)
    services.get().ws_routes.message(event.connection_id, event.body, endpoint)


@app.on_ws_disconnect()
def ws_disconnect(event: Any) -> None:
    services.get().ws_routes.disconnect(event.connection_id)


# -- the engine ----------------------------------------------------------------------------


@app.schedule(Rate(1, unit=Rate.MINUTES))
def tick(event: Any) -> dict[str, object]:
    svc = services.get()
    report = svc.scheduler.tick(deadline_from(event.context, svc.clock)).to_dict()
    best_effort("the Socket.IO heartbeat", svc.ws_routes.socketio.heartbeat)
    best_effort("closing connections of a rotated-away token", svc.ws_routes.close_rotated)
    return report


@app.on_sqs_message(queue=DISPATCH_QUEUE, batch_size=10)
def dispatch(event: Any) -> None:
    _dispatch(event)


# The shared-out chunks of a large WebSocket fan-out, one per invocation: sent together, they would
# otherwise arrive in one batch, in one container, and be sent one after another.
@app.on_sqs_message(queue=FANOUT_QUEUE, batch_size=1)
def fanout(event: Any) -> None:
    _dispatch(event)


def _dispatch(event: Any) -> None:
    svc = services.get()
    svc.dispatcher.handle_bodies(
        (record.body for record in event), lambda: deadline_from(event.context, svc.clock)
    )
