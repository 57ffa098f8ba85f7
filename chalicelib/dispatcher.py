"""The SQS consumer: parses a batch, runs the scheduler's own work it carries, and starts each
item at its due instant (webhooks on webhook_delivery.py, runs on agent_runner.py)."""

from __future__ import annotations

import collections
import functools
import itertools
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

from . import threads
from .agent_runner import AgentRunner, Prepared
from .claims import Claimed, ItemKind, Step
from .clock import Clock
from .config import Settings
from .dispatch_queue import Handoff
from .errors import PunctualError
from .run_store import Begun
from .scheduler import Scheduler
from .sender import HttpSender
from .shares import SharedStarts, flow_of
from .store import Store
from .webhook_delivery import WebhookDelivery

log = logging.getLogger(__name__)


class WsSender(Protocol):
    """The WebSocket publisher's share of the dispatch queue's work."""

    def send_trailing_status(self) -> None: ...

    def send_trailing_progress(self, body: Mapping[str, Any]) -> None: ...

    def send_shared(self, body: Mapping[str, Any]) -> None: ...

    def send_open(self, body: Mapping[str, Any]) -> None: ...


# Deliveries and agent calls at once in one Lambda container. An SQS batch holds up to 10
# messages of up to dispatch_queue.GROUP_SIZE items; what cannot start in time is handed on.
DELIVERY_THREADS = 64
# At most this many of them for one destination at once (shares.py): a quarter stays for the
# others in the batch, so a destination whose calls hang cannot stall theirs.
DESTINATION_SHARE = DELIVERY_THREADS * 3 // 4


def _pool() -> ThreadPoolExecutor:
    """The container's delivery pool (one per container: its threads serve one invocation at a time)."""
    return threads.pool("deliver", DELIVERY_THREADS)

# Connections to the targets of a batch's first due instant are opened ahead of it (see
# Dispatcher._warm) when that instant is at least this far off, each within this long, for at
# most this many hosts.
WARM_MIN_LEAD_SECONDS = 0.1
WARM_CONNECT_TIMEOUT_SECONDS = 1.0
WARM_MAX_HOSTS = 8


class Dispatcher:
    def __init__(
        self,
        store: Store,
        scheduler: Scheduler,
        handoff: Handoff,
        webhooks: WebhookDelivery,
        runner: AgentRunner,
        ws_publisher: WsSender,
        sender: HttpSender,
        clock: Clock,
        settings: Settings,
    ) -> None:
        self._store = store
        self._scheduler = scheduler
        self._handoff = handoff
        self._webhooks = webhooks
        self._runner = runner
        self._ws_publisher = ws_publisher
        self._sender = sender
        self._clock = clock
        self._settings = settings

    def handle_bodies(self, bodies: Iterable[str], deadline_ms: Callable[[], int]) -> None:
        """Handle one SQS batch: its items (single or grouped) are started as each falls due, on
        the container's delivery pool; the scheduler's own work runs beside them."""
        items: list[Claimed] = []
        controls: list[Callable[[], None]] = []
        for body in bodies:
            try:
                parsed = self._parse(json.loads(body), deadline_ms)
            except (ValueError, KeyError, TypeError, AttributeError):
                # Not ours to retry: a malformed body would fail the same way forever.
                log.error("dropping malformed dispatch message %r", body[:200])
                continue
            if callable(parsed):
                controls.append(parsed)
            else:
                items += parsed
        if items:
            # The container's delivery threads start now, while the items are not yet due (a
            # batch of fan-out chunks or control messages needs none of them).
            _pool()
        if not controls:
            self._run_items(items, deadline_ms)
            return
        with ThreadPoolExecutor(max_workers=len(controls)) as side:
            done = [side.submit(control) for control in controls]
            self._run_items(items, deadline_ms)
            for future in done:
                future.result()  # a failure fails the batch, which SQS then hands out again

    def _parse(
        self, data: dict[str, object], deadline_ms: Callable[[], int]
    ) -> list[Claimed] | Callable[[], None]:
        kind = str(data.get("kind", ""))
        if kind == "group":
            rows = data["items"]
            if not isinstance(rows, list):
                raise TypeError("a group's items must be a list")
            items = [Claimed.from_row(row) for row in rows]
        elif "ref" in data:
            items = [Claimed.from_body(data)]
        elif kind in ("fanout", "progress", "socketio-open"):
            return self._ws_work(kind, data)
        else:
            return self._control(kind, int(str(data.get("due") or 0)), str(data.get("shard") or ""),
                                 deadline_ms)
        for item in items:  # refuse an unknown item before any of the batch runs
            item.check()
        return items

    def _ws_work(self, kind: str, data: Mapping[str, Any]) -> Callable[[], None]:
        """The WebSocket publisher's share: a fan-out's chunk, a run's trailing agent:progress, or
        a Socket.IO connection's open packet."""
        if kind == "fanout":
            if not isinstance(data["connections"], list) or not isinstance(data["frames"], dict):
                raise TypeError("a fan-out chunk needs a list of connections and their frames")
            if not data["id"] or not data["endpoint"]:
                raise ValueError("a fan-out chunk needs its fan-out's id and endpoint")
            return lambda: self._ws_publisher.send_shared(data)
        if kind == "progress":
            if not data["agent"] or not data["run"]:
                raise ValueError("a trailing progress send needs its agent and run")

            def send() -> None:
                self._clock.sleep_until(int(str(data.get("due") or 0)))
                self._ws_publisher.send_trailing_progress(data)

            return send
        if not data["connection"] or not data["endpoint"]:
            raise ValueError("an open packet needs its connection and endpoint")
        return lambda: self._ws_publisher.send_open(data)

    def _control(self, kind: str, due: int, shard: str, deadline_ms: Callable[[], int]) -> Callable[[], None]:
        """The scheduler's own work: the rest of a tick, a trailing scheduler:status, or the
        sweep of one second's messages (claimed as soon as it arrives, so they can be handed
        out as groups before they fall due)."""
        if kind == "sweep":
            return lambda: self._scheduler.sweep(due, shard)
        controls: dict[str, Callable[[], object]] = {
            "tick": lambda: self._scheduler.tick(deadline_ms()),
            "status": self._ws_publisher.send_trailing_status,
        }
        action = controls[kind]

        def control() -> None:
            self._clock.sleep_until(due)
            action()

        return control

    def _run_items(self, items: list[Claimed], deadline_ms: Callable[[], int]) -> None:
        """Start items in due order, each when it falls due, and wait for all of them.

        Pool threads never sleep on a future item: this thread waits out each due instant, so a
        thread freed by one delivery is at once free for whatever is due next. Runs falling due
        together fire together, in one round trip; those that get a concurrency slot are called
        on the pool.
        """
        pending = sorted(items, key=lambda item: item.due_ms)
        fires = [item for item in pending if item.is_fire]
        prepared = self._runner.prepare_fires(fires) if fires else {}
        if pending:
            self._warm(pending, prepared)
        starts = SharedStarts(_pool(), DESTINATION_SHARE)
        started = []
        for due, wave in itertools.groupby(pending, key=lambda item: item.due_ms):
            self._clock.sleep_until(due)
            now_due: list[Claimed] = []
            fired: list[Claimed] = []
            for item in wave:
                (fired if item.is_fire else now_due).append(item)
            started += [self._start(starts, item, deadline_ms) for item in now_due]
            if fired:
                # Runs that get a slot are begun as they fire only when this invocation has the
                # time to call them; else they are handed on as start claims.
                begin = deadline_ms() - self._clock.now_ms() >= self._time_needed_ms(fired[0])
                for begun in self._runner.fire_group(fired, prepared, begin):
                    started += [self._start(starts, item, deadline_ms) for item in begun]
        errors = [error for error in (future.exception() for future in started) if error]
        if errors:
            raise errors[0]  # the batch fails and SQS hands it out again; claims stop repeats

    def _start(
        self, starts: SharedStarts, item: Begun | Claimed, deadline_ms: Callable[[], int]
    ) -> Future[None]:
        # Runs name no destination: they share one count (the concurrency limit holds them anyway).
        flow = flow_of(item) if isinstance(item, Claimed) else ""
        return starts.submit(flow, functools.partial(self._run_item, item, deadline_ms))

    def _warm(self, pending: list[Claimed], prepared: Prepared) -> None:
        """Open the connections the first due instant's requests will need, while there is time.

        At most as many per host as can go out at once: the delivery threads for webhooks, the
        concurrency limit for agent runs.
        """
        def lead_s() -> float:
            return (pending[0].due_ms - self._clock.now_ms()) / 1000

        if lead_s() < WARM_MIN_LEAD_SECONDS:
            return
        first = [item for item in pending if item.due_ms == pending[0].due_ms]
        webhooks = [item for item in first if item.is_delivery]
        try:
            wanted: collections.Counter[str] = collections.Counter(self._store.webhook_urls(webhooks))
        except PunctualError as exc:  # an optimisation only: the deliveries report Redis's state
            log.warning("not opening connections ahead: %s", exc)
            return
        agents = collections.Counter(
            agent.endpoint_url
            for agent in (prepared[item.ref].agent for item in first if item.is_fire)
            if agent is not None  # deleted since its slot was claimed
        )
        for url, count in agents.items():
            wanted[url] += min(count, self._settings.max_concurrent_agents)
        for url, count in wanted.most_common(WARM_MAX_HOSTS):
            # Hosts in turn, each bounded so the last connect ends before the instant it is for.
            left = lead_s()
            if left < WARM_MIN_LEAD_SECONDS:
                return
            timeout = min(WARM_CONNECT_TIMEOUT_SECONDS, left - WARM_MIN_LEAD_SECONDS / 2)
            self._sender.warm(url, min(count, DELIVERY_THREADS), timeout, _pool())

    def _run_item(self, item: Begun | Claimed, deadline_ms: Callable[[], int]) -> None:
        """Run an item, then the waiting runs it leaves this thread to start (a run that ends
        frees its concurrency slot, and this thread is free to call the run that takes it)."""
        todo: list[Claimed] = self._runner.call(item) if isinstance(item, Begun) else [item]
        while todo:
            claimed = todo.pop()
            if deadline_ms() - self._clock.now_ms() < self._time_needed_ms(claimed):
                # This invocation would time out mid-call: another one takes it, with the same
                # claim token, so it is still this item's only claim.
                log.warning("handing %s on: too little time left in this invocation", claimed.ref)
                self._handoff.send([claimed])
                continue
            todo += self._handler_for(claimed)(claimed) or []

    def _time_needed_ms(self, item: Claimed) -> int:
        settings = self._settings
        if item.item is ItemKind.MESSAGE:
            return settings.webhook_timeout_seconds * 1000
        if item.step in (Step.DUE, Step.START):
            return settings.agent_call_timeout_seconds * 1000
        return 0

    def _handler_for(self, claimed: Claimed) -> Callable[[Claimed], list[Claimed] | None]:
        """What runs an item on the pool (runs that fall due are fired in waves instead)."""
        if claimed.is_delivery:
            return self._webhooks.deliver
        if claimed.item is ItemKind.RUN and claimed.step is Step.START:
            return self._runner.start
        if claimed.item is ItemKind.RUN and claimed.step is Step.TIMEOUT:
            return self._runner.check_timeout
        raise ValueError(f"no handler for {claimed.ref!r} at step {claimed.step.value!r}")
