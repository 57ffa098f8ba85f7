"""Benchmark: what the webhook scripts alone cost Redis per message (no stack, no SQS, no HTTP).

    .venv/bin/python bench/redis_scripts.py              # 5000 messages
    .venv/bin/python bench/redis_scripts.py --count 20000 --rounds 5
    .venv/bin/python bench/redis_scripts.py --callgrind  # instructions, exact on a busy machine

A throwaway redis-server of its own (emulator/redis_server.py) takes N messages through the four
scripts of a webhook's life, called through chalicelib.store.Store as the API, the tick and the
dispatcher call them:

  ok        create -> claim -> begin -> finish (delivered), each phase's calls in pipelines of
            PIPELINE, so round trips do not count (the claim is batched as the tick batches it);
  threads   begin + finish from THREADS threads, as the dispatcher runs them (the scripts' group
            commit pipelines whatever the threads send at once);
  failing   begin -> finish (retry, a 5xx) -> begin -> finish (failed), pipelined; its breaker
            never opens (BREAKER_FAILURES=0), so every attempt takes its call.

The messages go to DESTINATIONS destinations, so no flow's calls fill up (DESTINATION_MAX_CALLS
stays at its default). Per phase it prints redis-server's CPU per message (INFO cpu,
used_cpu_sys + used_cpu_user, less what it spends idle) and the commands the scripts ran per
message (INFO commandstats: every command but EVALSHA and the benchmark's own INFO and CONFIG),
the most frequent first. Each figure is the lowest of --rounds rounds (3; other work on the machine
only adds to it). On a busy machine CPU time swings by a third from run to run: --callgrind runs
redis-server under valgrind and counts the instructions it executes per message instead, the
same from run to run (not time: cache misses and system calls are not in it).
Target (issue 18): the four scripts together ~35-40 us per message.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chalicelib.attempt_log import Attempt, AttemptKind
from chalicelib.claims import Claimed, Retry, WayIn, new_token
from chalicelib.config import Settings
from chalicelib.destinations import Health
from chalicelib.keys import Keys
from chalicelib.messages import Message, NewMessage
from chalicelib.scripts import ScriptCall
from chalicelib.store import Store
from emulator.redis_server import RedisServer

PIPELINE = 250
THREADS = 32
DESTINATIONS = 64
CLAIM_BATCH = 500  # the tick's batch
GRACE_MS = 120_000
LEASE_MS = 40_000
NOT_COUNTED = {"evalsha", "eval", "info", "config", "script"}


class CallgrindServer(RedisServer):
    """A throwaway redis-server under valgrind's callgrind: the instructions it executes are
    counted exactly, whatever else runs on the machine (it runs some 50 times slower)."""

    def __init__(self) -> None:
        super().__init__(runner=("valgrind", "--tool=callgrind", "--callgrind-out-file={dir}/out.%p"),
                         start_seconds=60)

    def _control(self, option: str) -> None:
        subprocess.run(["callgrind_control", option, str(self.process.pid)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def zero(self) -> None:
        self._control("-z")

    def instructions(self) -> int:
        """Those executed since `zero` (dumped, from the newest dump)."""
        self._control("-d")
        newest = max(Path(self.dir).glob("out.*"), key=lambda path: path.stat().st_mtime)
        for line in newest.read_text().splitlines():
            if line.startswith(("totals:", "summary:")):
                return int(line.split()[1])
        raise RuntimeError(f"no totals in {newest}")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)  # valgrind writes its last dump first
        shutil.rmtree(self.dir, ignore_errors=True)


@dataclass(frozen=True)
class Figures:
    cost: float  # redis-server CPU (us) per message, or thousands of its instructions
    calls: float  # commands the scripts ran per message
    by_command: dict[str, float]  # the same, per command


class Bench:
    def __init__(self, client: redis.Redis, count: int, callgrind: CallgrindServer | None = None) -> None:
        self.client = client
        self.count = count
        self.callgrind = callgrind
        self.store = Store(client, Keys())
        env = {"REDIS_URL": "redis://unused", "API_TOKEN": "x", "LOCAL_MODE": "1"}
        self.settings = Settings.from_env(env)
        self.failing_settings = Settings.from_env({**env, "BREAKER_FAILURES": "0"})
        self.idle_per_second = self._idle_rate()

    # -- measuring ------------------------------------------------------------------------------

    def _cpu(self) -> float:
        info = self.client.info("cpu")
        return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])

    def _idle_rate(self) -> float:
        if self.callgrind is not None:
            return 0.0
        before = self._cpu()
        time.sleep(1.0)
        return max(0.0, self._cpu() - before)

    def measure(self, run: Callable[[], Any]) -> tuple[Figures, Any]:
        self.client.config_resetstat()
        if self.callgrind is not None:
            self.callgrind.zero()
            result = run()
            cost = self.callgrind.instructions() / self.count / 1000
        else:
            started = time.monotonic()
            before = self._cpu()
            result = run()
            spent = self._cpu() - before - self.idle_per_second * (time.monotonic() - started)
            cost = spent / self.count * 1e6
        stats = self.client.info("commandstats")
        by_command = {name.removeprefix("cmdstat_"): int(stat["calls"]) / self.count
                      for name, stat in stats.items()}
        by_command = {name: calls for name, calls in by_command.items() if name not in NOT_COUNTED}
        return Figures(cost, sum(by_command.values()), by_command), result

    # -- the store's calls, pipelined -------------------------------------------------------------

    def pipelined(
        self, each: Callable[[Any], Any], items: list[Any], placeholder: Any
    ) -> tuple[Figures, list[Any]]:
        """`each(item)` for every item (a Store method that runs one script), its script calls
        sent in pipelines of PIPELINE; only those pipelines are measured. The Store method runs
        twice: once to note its calls (answered `placeholder`), once to read the real answers."""
        calls: list[ScriptCall] = []

        def note(call: ScriptCall) -> Any:
            calls.append(call)
            return placeholder

        store = self.store
        store.script = note  # type: ignore[method-assign]
        try:
            for item in items:
                each(item)

            def send() -> list[Any]:
                answers: list[Any] = []
                for i in range(0, len(calls), PIPELINE):
                    answers.extend(store.scripts.call_many(calls[i:i + PIPELINE]))
                return answers

            figures, answers = self.measure(send)
            replies: Iterator[Any] = iter(answers)
            store.script = lambda call: next(replies)  # type: ignore[method-assign]
            results = [each(item) for item in items]
        finally:
            del store.script  # the class's own again
        return figures, results

    # -- a message's life -------------------------------------------------------------------------

    def create(self, prefix: str, now_ms: int) -> Figures:
        def new(i: int) -> NewMessage:
            url = f"http://127.0.0.1:{9000 + i % DESTINATIONS}/hook"
            return NewMessage(f"{prefix}-{i}", now_ms, f'{{"n": {i}}}', url)

        def create_one(i: int) -> Any:
            message = new(i)
            # Its shard as Store.place finds it (one shard: the bare head's), without place's reads.
            return self.store.create_message(message, self.store.shards.home(message.id), now_ms, WayIn.TICK,
                                             new_token(), now_ms + GRACE_MS, 5000)

        figures, _ = self.pipelined(create_one, list(range(self.count)), 1)
        return figures

    def claim(self, now_ms: int) -> tuple[Figures, list[Claimed]]:
        def claim_all() -> list[Claimed]:
            claims: list[Claimed] = []
            more = True
            while more:
                batch, more = self.store.claim_due(now_ms, GRACE_MS, CLAIM_BATCH)
                claims.extend(batch)
            return claims

        figures, claims = self.measure(claim_all)
        assert len(claims) == self.count, f"claimed {len(claims)} of {self.count}"
        return figures, claims

    def begin(self, claims: list[Claimed], now_ms: int) -> tuple[Figures, list[Message]]:
        settings = self.settings

        def begin_one(claimed: Claimed) -> Any:
            return self.store.begin_delivery(claimed, now_ms + LEASE_MS, now_ms,
                                             settings.destination_max_calls, GRACE_MS)

        figures, began = self.pipelined(begin_one, claims, [])
        assert all(isinstance(m, Message) for m in began), "a begin did not go"
        return figures, began

    def finish(self, claims: list[Claimed], messages: list[Message], now_ms: int, outcome: str,
               settings: Settings) -> Figures:
        """Record each attempt: 'delivered' (a 200), 'retry' or 'failed' (a 500)."""

        def finish_one(pair: tuple[Claimed, Message]) -> Any:
            claimed, message = pair
            ok = outcome == "delivered"
            retry = None
            if outcome == "retry":
                retry = Retry(replace(claimed, due_ms=now_ms + 1000, token=new_token()),
                              now_ms + 1000 + GRACE_MS)
            attempt = Attempt(message.attempts, AttemptKind.DELIVERY, now_ms, 200 if ok else 500,
                              None if ok else "HTTP 500", 5, retry.claim.due_ms if retry else None)
            return self.store.finish_delivery(
                message, claimed, outcome, now_ms + 5, None if ok else "HTTP 500", settings,
                health=Health.OK if ok else Health.FAIL, attempt=attempt, lateness_ms=3, retry=retry)

        pairs = list(zip(claims, messages, strict=True))
        figures, finished = self.pipelined(finish_one, pairs, [1])
        assert all(f.recorded for f in finished), "a finish was not recorded"
        return figures

    def deliver_threaded(self, claims: list[Claimed], now_ms: int) -> Figures:
        settings = self.settings

        def deliver(claimed: Claimed) -> None:
            message = self.store.begin_delivery(claimed, now_ms + LEASE_MS, now_ms,
                                                settings.destination_max_calls, GRACE_MS)
            assert isinstance(message, Message)
            attempt = Attempt(message.attempts, AttemptKind.DELIVERY, now_ms, 200, None, 5, None)
            finished = self.store.finish_delivery(message, claimed, "delivered", now_ms + 5, None, settings,
                                                  health=Health.OK, attempt=attempt, lateness_ms=3)
            assert finished.recorded

        with ThreadPoolExecutor(THREADS) as pool:
            figures, _ = self.measure(lambda: list(pool.map(deliver, claims)))
        return figures


def retry_claims(store: Store, claims: list[Claimed]) -> list[Claimed]:
    """The claims the retries were sent on (their tokens, as finish_delivery stored them)."""
    pipe = store.client.pipeline(transaction=False)
    for claimed in claims:
        pipe.hmget(store.keys.item(claimed.ref), "token", "nextAttemptAt")
    return [replace(c, due_ms=int(due), token=token)
            for c, (token, due) in zip(claims, pipe.execute(), strict=True)]


def one_round(bench: Bench, now: int) -> list[tuple[str, str, Figures]]:
    """Every phase once: (scenario, phase, figures)."""
    rows: list[tuple[str, str, Figures]] = []
    client = bench.client
    ok = "ok (pipelined)"
    rows.append((ok, "create", bench.create("ok", now)))
    figures, claims = bench.claim(now)
    rows.append((ok, "claim", figures))
    figures, messages = bench.begin(claims, now)
    rows.append((ok, "begin", figures))
    rows.append((ok, "finish", bench.finish(claims, messages, now, "delivered", bench.settings)))

    client.flushall()
    bench.create("th", now)
    _, claims = bench.claim(now)
    threaded = bench.deliver_threaded(claims, now)
    rows.append((f"threads ({THREADS}, as the dispatcher)", "begin + finish", threaded))

    client.flushall()
    failing = "failing (pipelined: a retry, then failed)"
    bench.create("fail", now)
    _, claims = bench.claim(now)
    figures, messages = bench.begin(claims, now)
    rows.append((failing, "begin", figures))
    rows.append((failing, "finish retry",
                 bench.finish(claims, messages, now, "retry", bench.failing_settings)))
    retries = retry_claims(bench.store, claims)
    later = now + 1000
    figures, messages = bench.begin(retries, later)
    rows.append((failing, "begin (retry)", figures))
    rows.append((failing, "finish failed",
                 bench.finish(retries, messages, later, "failed", bench.failing_settings)))
    client.flushall()
    return rows


def report(name: str, figures: Figures, unit: str) -> None:
    top = sorted(figures.by_command.items(), key=lambda kv: -kv[1])
    shown = " ".join(f"{command} {calls:.2f}" for command, calls in top if calls >= 0.005)
    print(f"  {name:<16} {figures.cost:6.1f} {unit} {figures.calls:6.2f} calls   {shown}", flush=True)


def run(count: int, rounds: int, callgrind: bool) -> None:
    server = CallgrindServer() if callgrind else RedisServer()
    unit = "kI" if callgrind else "us"
    try:
        client = redis.Redis.from_url(server.url, decode_responses=True)
        bench = Bench(client, count, server if isinstance(server, CallgrindServer) else None)
        cost = "thousands of instructions (kI)" if callgrind else "CPU (us)"
        print(f"redis scripts: {count} messages, redis-server {client.info('server')['redis_version']}, "
              f"idle {bench.idle_per_second * 1e3:.1f} ms/s; per message: redis {cost} "
              f"(the lowest of {rounds} round(s)), commands run")
        now = int(time.time() * 1000)
        results = [one_round(bench, now) for _ in range(rounds)]
    finally:
        server.stop()
    scenario = ""
    for i, (where, phase, _) in enumerate(results[0]):
        if where != scenario:
            scenario = where
            print(scenario)
        # Other work on the machine only ever adds to a figure: the lowest is the closest.
        report(phase, min((rows[i][2] for rows in results), key=lambda figures: figures.cost), unit)
        if where.startswith("ok") and phase == "finish":
            best = [min(rows[j][2].cost for rows in results) for j in range(i + 1)]
            calls = sum(results[0][j][2].calls for j in range(i + 1))
            print(f"  {'all four':<16} {sum(best):6.1f} {unit} {calls:6.2f} calls")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, help="messages (5000; 1000 with --callgrind)")
    parser.add_argument("--rounds", type=int,
                        help="the lowest of each figure is shown (3; 1 with --callgrind)")
    parser.add_argument("--callgrind", action="store_true",
                        help="count redis-server's instructions under valgrind instead of timing its CPU")
    options = parser.parse_args()
    count = options.count or (1000 if options.callgrind else 5000)
    rounds = options.rounds or (1 if options.callgrind else 3)
    run(count, rounds, options.callgrind)


if __name__ == "__main__":
    main()
