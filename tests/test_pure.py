"""Pure functions: parsing, backoff, URL rules, SQS delays. No clock, no I/O."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook

from chalicelib.backoff import backoff_seconds, parse_retry_after, retry_delay_seconds
from chalicelib.config import Settings
from chalicelib.dispatch_queue import delay_seconds
from chalicelib.errors import BadRequest, PayloadTooLarge
from chalicelib.messages import MAX_PAYLOAD_BYTES, parse_new_message
from chalicelib.sender import classify
from chalicelib.standard_webhooks import webhook_headers
from chalicelib.store import decode_cursor, encode_cursor
from chalicelib.targets import check_target_url
from chalicelib.timeutil import format_instant, parse_instant

T0 = 1_893_456_000_000  # 2030-01-01T00:00:00Z


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2030-01-01T00:00:00Z", T0),
        ("2030-01-01T00:00:00.250Z", T0 + 250),
        ("2030-01-01T00:00:00.250999Z", T0 + 250),
        ("2030-01-01T02:00:00+02:00", T0),
        ("2029-12-31T21:00:00-03:00", T0),
        ("2030-01-01T00:00:00+00:00", T0),
        (" 2030-01-01T00:00:00Z ", T0),
        ("2030-01-01t00:00:00z", T0),  # RFC 3339 (OpenAPI's date-time) allows lower case
    ],
)
def test_parse_instant(text: str, expected: int) -> None:
    assert parse_instant(text, "scheduleTo") == expected


@pytest.mark.parametrize(
    "value, fragment",
    [
        ("2030-01-01T00:00:00", "no UTC offset"),
        ("2030-01-01", "no UTC offset"),
        ("tomorrow", "not an ISO 8601"),
        ("2030-13-01T00:00:00Z", "not an ISO 8601"),
        ("", "must be an ISO 8601"),
        (1893456000, "must be an ISO 8601"),
        (None, "must be an ISO 8601"),
    ],
)
def test_parse_instant_refuses(value: object, fragment: str) -> None:
    with pytest.raises(BadRequest, match=fragment) as info:
        parse_instant(value, "scheduleTo")
    assert "scheduleTo" in info.value.message


def test_format_instant() -> None:
    assert format_instant(T0 + 7) == "2030-01-01T00:00:00.007Z"
    assert format_instant(None) is None


@pytest.mark.parametrize(
    "retry, base, cap, expected",
    [(1, 1, 300, 1), (2, 1, 300, 2), (3, 1, 300, 4), (9, 1, 300, 256), (10, 1, 300, 300),
     (200, 1, 300, 300), (3, 2, 300, 8)],
)
def test_backoff(retry: int, base: int, cap: int, expected: int) -> None:
    assert backoff_seconds(retry, base, cap) == expected


@pytest.mark.parametrize(
    "header, expected",
    [("7", 7.0), (None, None), ("", None), ("soon", None),
     ("Tue, 01 Jan 2030 00:00:30 GMT", 30.0), ("Mon, 31 Dec 2029 00:00:00 GMT", 0.0)],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header, T0) == expected


def test_retry_after_is_honoured_within_the_cap() -> None:
    assert retry_delay_seconds(1, 1, 300, 30.0) == 30.0
    assert retry_delay_seconds(3, 1, 300, 1.0) == 4.0
    assert retry_delay_seconds(1, 1, 300, 3600.0) == 300.0


@pytest.mark.parametrize(
    "due_offset_ms, lead, expected",
    [(0, 2, 0), (-5000, 2, 0), (1999, 2, 0), (3000, 2, 1), (60_500, 2, 58),
     (2_000_000, 2, 900)],
)
def test_delay_seconds(due_offset_ms: int, lead: int, expected: int) -> None:
    assert delay_seconds(T0 + due_offset_ms, T0, lead) == expected


def resolver_of(table: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            raise OSError("no such host")
        return table[host]

    return resolve


DNS = resolver_of({
    "example.com": ["93.184.216.34"],
    "internal.example.com": ["10.1.2.3"],
    "mixed.example.com": ["93.184.216.34", "127.0.0.1"],
    "v6.example.com": ["2606:2800:220:1::1"],
    "mapped.example.com": ["::ffff:127.0.0.1"],
    "cgnat.example.com": ["100.72.1.1"],
})


@pytest.mark.parametrize(
    "url",
    ["https://example.com/hook", "http://example.com:8080/x?y=1", "https://v6.example.com",
     "http://93.184.216.34/"],
)
def test_public_targets_allowed(url: str) -> None:
    assert check_target_url(url, "webhookUrl", allow_internal=False, resolver=DNS) == url


@pytest.mark.parametrize(
    "url, fragment",
    [
        ("ftp://example.com/x", "http or https"),
        ("example.com/hook", "http or https"),
        ("http:///nohost", "no host"),
        ("", "non-empty"),
        (42, "non-empty"),
        ("http://localhost:8000/x", "does not resolve"),
        ("http://127.0.0.1/x", "internal address"),
        ("http://10.0.0.8/x", "internal address"),
        ("http://169.254.169.254/latest/meta-data", "internal address"),
        ("http://[::1]/x", "internal address"),
        ("http://[fd00:ec2::254]/x", "internal address"),
        ("http://internal.example.com/x", "internal address"),
        ("http://mixed.example.com/x", "internal address"),
        ("http://mapped.example.com/x", "internal address"),
        ("http://metadata.google.internal/x", "metadata"),
        # Shared address space (100.64.0.0/10) is not "private" but not public either;
        # Alibaba Cloud's metadata service answers at 100.100.100.200.
        ("http://100.100.100.200/latest/meta-data", "internal address"),
        ("http://100.64.0.1/x", "internal address"),
        ("http://[::ffff:100.100.100.200]/x", "internal address"),
        ("http://cgnat.example.com/x", "internal address"),
        ("http://example.com:99999/x", "not a valid URL"),
        ("http://nowhere.invalid/x", "does not resolve"),
        # urllib3, which sends, reads the host as 127.0.0.1 / 169.254.169.254; urllib.parse as
        # example.com.
        ("http://127.0.0.1:8000\\@example.com/hook", "holds .* percent-encode"),
        ("http://169.254.169.254\\@example.com/", "percent-encode"),
        ("http://example.com/a\tb", "holds '\\\\t'"),
        ("http://user:secret@10.0.0.1/x", "internal address"),
    ],
)
def test_internal_and_malformed_targets_refused(url: object, fragment: str) -> None:
    with pytest.raises(BadRequest, match=fragment):
        check_target_url(url, "webhookUrl", allow_internal=False, resolver=DNS)


def test_local_mode_allows_internal_targets() -> None:
    url = "http://127.0.0.1:9000/hook"
    assert check_target_url(url, "webhookUrl", allow_internal=True, resolver=DNS) == url
    with pytest.raises(BadRequest, match="http or https"):
        check_target_url("file:///etc/passwd", "webhookUrl", allow_internal=True, resolver=DNS)


def body(**fields: object) -> bytes:
    base: dict[str, object] = {
        "id": "m1", "scheduleTo": "2030-01-01T00:00:00Z", "payload": {"a": 1},
        "webhookUrl": "https://example.com/hook",
    }
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not ...}).encode()


@pytest.mark.parametrize(
    "raw, fragment",
    [
        (b"", "empty"),
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"id": "x", "scheduleTo": NaN}', "not valid JSON"),
        (body(payload={"a": "\ud800"}), "unpaired UTF-16 surrogate"),
        (body(id="\udfff"), "unpaired UTF-16 surrogate"),
        (body(id=...), "missing required field(s): id"),
        (body(id=..., webhookUrl=...), "id, webhookUrl"),
        (body(id=""), "id must not be empty"),
        (body(id=7), "id is required and must be a string"),
        (body(id="a" * 257), "at most 256"),
        (body(id="a/b"), "must not contain '/'"),
        (body(id="a\nb"), "must not contain '\\n'"),
        (body(id="nel\u0085x"), "must not contain '\\x85'"),
        # Sent as the webhook-id header, which holds Latin-1 only.
        (body(id="check\u2713"), "must not contain '\u2713'; it may hold letters, digits"),
        # '?', '#', '%' and spaces reach the API encoded by some clients and not others.
        (body(id="a b"), "must not contain ' '"),
        (body(id="q?x"), "must not contain '?'"),
        (body(id="100%"), "must not contain '%'"),
        (body(id=".."), "must not be '..'"),
        (body(payload="text"), "payload must be a JSON object, got str"),
        # Valid JSON, but no double: it would be stored, and sent on, as Infinity.
        (body(payload=...)[:-1] + b', "payload": {"x": 1e400}}', "the number 1e400 is out of range"),
        (b"[" * 5000 + b"]" * 5000, "nested too deeply"),
        (body(payload=...)[:-1] + b', "payload": ' + b'{"a":' * 2000 + b"1}" + b"}" * 2000,
         "nested too deeply"),
        (body(payload=[1]), "payload must be a JSON object, got list"),
        (body(payload=None), "payload must be a JSON object, got NoneType"),
        (body(scheduleTo="2030-01-01T00:00:00"), "no UTC offset"),
        (body(webhookUrl="ftp://example.com"), "webhookUrl must use http or https"),
        (body(webhookUrl="http://10.0.0.1/"), "webhookUrl resolves to an internal address"),
    ],
)
def test_new_message_refused(raw: bytes, fragment: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_new_message(raw, allow_internal=False, resolver=DNS)
    assert fragment in info.value.message


def test_new_message_accepts_id_of_256_and_payload_at_the_limit() -> None:
    filler = "x" * (MAX_PAYLOAD_BYTES - len('{"f":""}'))
    new = parse_new_message(body(id="a" * 256, payload={"f": filler}), allow_internal=False, resolver=DNS)
    assert len(new.payload_json.encode()) == MAX_PAYLOAD_BYTES
    with pytest.raises(PayloadTooLarge, match="limit is 262144 bytes"):
        parse_new_message(body(payload={"f": filler + "x"}), allow_internal=False, resolver=DNS)


def test_cursor_round_trip_and_garbage() -> None:
    assert decode_cursor(encode_cursor(T0, "a:b/c")) == (T0, "a:b/c")
    for garbage in ["", "!!!", encode_cursor(T0, "x")[:-3] + "zzz", "WzEsMl0", encode_cursor(10**400, "x")]:
        with pytest.raises(BadRequest, match="cursor"):
            decode_cursor(garbage)


def test_signature_verifies_with_the_standard_webhooks_library() -> None:
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    payload = b'{"hello":"world"}'
    headers = webhook_headers("msg_1", T0 // 1000, payload, secret)
    expected = Webhook(secret).sign("msg_1", datetime.fromtimestamp(T0 // 1000, tz=UTC),
                                    payload.decode())
    assert headers["webhook-signature"] == expected
    assert headers["webhook-id"] == "msg_1" and headers["webhook-timestamp"] == str(T0 // 1000)
    assert "webhook-signature" not in webhook_headers("msg_1", T0 // 1000, payload, None)


@pytest.mark.parametrize(
    "status, ok, retryable",
    [(200, True, False), (204, True, False), (301, False, False), (400, False, False),
     (404, False, False), (408, False, True), (429, False, True), (500, False, True),
     (503, False, True)],
)
def test_classify(status: int, ok: bool, retryable: bool) -> None:
    result = classify(status)
    assert (result.ok, result.retryable) == (ok, retryable)


def test_prestart_starts_a_pools_threads_once_without_waiting_for_them() -> None:
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from chalicelib import threads

    pool = ThreadPoolExecutor(max_workers=6, thread_name_prefix="prestart-test")
    try:
        def started() -> int:
            return sum(t.name.startswith("prestart-test") for t in threading.enumerate())

        assert started() == 0
        threads.prestart(pool, 6)
        assert started() == 6
        threads.prestart(pool, 6)  # once per pool: no second round of waiting tasks
        assert pool.submit(lambda: 42).result(timeout=5) == 42
        assert started() == 6
    finally:
        pool.shutdown()


@pytest.mark.parametrize(
    "env, message",
    [
        ({"TICK_WINDOW_SECONDS": "60"}, "TICK_WINDOW_SECONDS must be at least 61, got 60"),
        # SQS delays a message 900 s at most: claimed further ahead, it would arrive early.
        ({"TICK_WINDOW_SECONDS": "901"}, "TICK_WINDOW_SECONDS must be at most 900, got 901"),
        ({"TICK_WINDOW_SECONDS": "two"}, "TICK_WINDOW_SECONDS must be a whole number"),
    ],
)
def test_settings_out_of_range_are_refused_at_start(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings.from_env({"REDIS_URL": "redis://127.0.0.1:6379/0", **env})
