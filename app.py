"""Punctual's Lambda entry points. Each handler delegates to chalicelib."""

from __future__ import annotations

import os
from typing import Any

from chalice import Chalice, Rate, Response

from chalicelib import messages_api, services
from chalicelib.http import detail_error, handles_errors, json_response, require_token
from chalicelib.lambda_events import deadline_from

app = Chalice(app_name="punctual")

# Fixed when the app is packaged; the same name reaches the code as DISPATCH_QUEUE_NAME.
DISPATCH_QUEUE = os.environ.get("DISPATCH_QUEUE_NAME", "punctual-dispatch")


def _authorised() -> services.Services:
    svc = services.get()
    require_token(app.current_request.headers, svc.settings.api_token)
    return svc


@app.route("/health", methods=["GET"])
@handles_errors(detail_error)
def health() -> Response:
    body, status = messages_api.health(services.get())
    return json_response(body, status)


@app.route("/messages", methods=["POST"], content_types=["*/*"])
@handles_errors(detail_error)
def create_message() -> Response:
    return json_response(messages_api.create_message(_authorised(), app.current_request.raw_body))


@app.route("/messages", methods=["GET"])
@handles_errors(detail_error)
def list_messages() -> Response:
    svc = _authorised()
    return json_response(messages_api.list_messages(svc, app.current_request.query_params or {}))


@app.route("/messages/{message_id}", methods=["GET"])
@handles_errors(detail_error)
def get_message(message_id: str) -> Response:
    return json_response(messages_api.get_message(_authorised(), message_id))


@app.route("/messages/{message_id}", methods=["DELETE"])
@handles_errors(detail_error)
def delete_message(message_id: str) -> Response:
    return json_response(messages_api.delete_message(_authorised(), message_id))


@app.schedule(Rate(1, unit=Rate.MINUTES))
def tick(event: Any) -> dict[str, object]:
    svc = services.get()
    return svc.scheduler.tick(deadline_from(event.context, svc.clock)).to_dict()


@app.on_sqs_message(queue=DISPATCH_QUEUE, batch_size=10)
def dispatch(event: Any) -> None:
    svc = services.get()
    svc.dispatcher.handle_bodies(
        (record.body for record in event), lambda: deadline_from(event.context, svc.clock)
    )
