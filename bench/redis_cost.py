"""Benchmark: what one webhook costs Redis, end to end, and the dispatcher's Python per delivery.

    bash localstack/with_localstack.sh .venv/bin/python -u bench/redis_cost.py
    bash localstack/with_localstack.sh .venv/bin/python -u bench/redis_cost.py --redis cluster
    bash localstack/with_localstack.sh .venv/bin/python -u bench/redis_cost.py --redis-core  # Redis on CPU 0

A fresh local stack (as bench/webhooks.py starts it) gets a burst of webhooks: POST, claim (the
sweep or the tick), deliver, finish. Every Redis node's `INFO cpu` (used_cpu_sys + used_cpu_user)
is read before the first POST and after the last delivery is recorded; what Redis spends idle
(the tick's heartbeat, the stack's pings) is measured over a quiet spell first and taken off. The
worker processes' CPU (from /proc) over the delivery spell, per delivery, is the dispatcher's
Python cost. Target (issue 18): Redis <= 60 us per message.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import time
from pathlib import Path

import redis
from support import AsyncReceiver, iso, running
from webhooks import message, post_all

from emulator.launcher import Stack, descendants

QUIET_SECONDS = 5.0


def redis_nodes(url: str) -> list[redis.Redis]:
    """A client per node: every primary of a cluster, or the one server."""
    client = redis.Redis.from_url(url)
    if not client.info("cluster").get("cluster_enabled"):
        return [client]
    cluster = redis.RedisCluster.from_url(url)
    return [redis.Redis(host=node.host, port=node.port) for node in cluster.get_primaries()]


def node_cpu(node: redis.Redis) -> float:
    """CPU seconds a node has used since it started."""
    info = node.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def redis_cpu(nodes: list[redis.Redis]) -> float:
    """CPU seconds every node has used since it started."""
    return sum(node_cpu(node) for node in nodes)


def reset_command_stats(nodes: list[redis.Redis]) -> None:
    for node in nodes:
        node.config_resetstat()


def print_command_stats(nodes: list[redis.Redis], count: int, spell: str, top: int = 12) -> None:
    """Where Redis's time went, by command (scripts' own commands are counted apart), per message."""
    totals: dict[str, list[float]] = {}
    for node in nodes:
        for name, stat in node.info("commandstats").items():
            row = totals.setdefault(name.removeprefix("cmdstat_"), [0, 0.0])
            row[0] += int(stat["calls"])
            row[1] += float(stat["usec"])
    print(f"  {spell}: commands by time (calls and us per message; a script's own commands apart)")
    for name, (calls, usec) in sorted(totals.items(), key=lambda kv: -kv[1][1])[:top]:
        print(f"    {name:<18} {calls / count:6.2f}  {usec / count:7.1f}")


def worker_pids(stack: Stack) -> list[int]:
    pids = []
    for pid in descendants(stack.process.pid):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "emulator.workers" in command or "emulator/workers" in command:
            pids.append(pid)
    return pids


def process_cpu(pids: list[int]) -> float:
    """CPU seconds (user + system) the processes have used."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


async def measure(stack: Stack, rcv: AsyncReceiver, nodes: list[redis.Redis], count: int) -> None:
    before_quiet = redis_cpu(nodes)
    await asyncio.sleep(QUIET_SECONDS)
    idle_per_second = (redis_cpu(nodes) - before_quiet) / QUIET_SECONDS

    due = int((time.time() + 60) * 1000) / 1000
    bodies = [message("c", i, due, rcv.url + "/cost") for i in range(count)]
    started = time.monotonic()
    reset_command_stats(nodes)
    cpu_before = redis_cpu(nodes)
    per_node_before = [node_cpu(node) for node in nodes]
    seconds, statuses = await post_all(stack.url, bodies)
    posted_cpu = redis_cpu(nodes) - cpu_before
    print_command_stats(nodes, count, "POST")
    reset_command_stats(nodes)
    print(f"  posted {count} in {seconds:.2f} s {dict(statuses)}; due {due - time.time():.1f} s later")
    workers = worker_pids(stack)
    await rcv.wait_for(lambda: time.time() >= due - 3, timeout=due - time.time())
    python_before = process_cpu(workers)
    await rcv.wait_for(lambda: len(rcv.arrivals) >= count, timeout=due + 60 - time.time())
    await asyncio.sleep(2)  # the last finishes are recorded
    python_spent = process_cpu(workers) - python_before
    spent = redis_cpu(nodes) - cpu_before
    idle = idle_per_second * (time.monotonic() - started)
    per_message = (spent - idle) / count * 1e6
    print(f"  delivered {len(rcv.arrivals)}/{count}")
    print(f"  redis CPU: {spent:.3f} s over {len(nodes)} node(s), of which idle {idle:.3f} s and POST "
          f"{posted_cpu:.3f} s")
    print(f"  redis CPU per message, end to end: {per_message:.1f} us "
          f"(POST {posted_cpu / count * 1e6:.1f} us, claim + deliver + finish "
          f"{(spent - idle - posted_cpu) / count * 1e6:.1f} us)")
    if len(nodes) > 1:  # how the work spread over the primaries (each holds a shard, one the agents)
        shares = [node_cpu(node) - before for node, before in zip(nodes, per_node_before, strict=True)]
        figures = ", ".join(f"{spent / count * 1e6:.1f} us" for spent in shares)
        print(f"  redis CPU per node, per message (idle included): {figures}")
    print_command_stats(nodes, count, "claim + deliver + finish")
    print(f"  dispatcher Python CPU per delivery ({len(workers)} worker processes): "
          f"{python_spent / count * 1e6:.0f} us")


def give_redis_a_core(nodes: list[redis.Redis]) -> None:
    """Redis on CPU 0 alone, everything else this bench runs (the stack, LocalStack, the
    receiver) on the others: as on ElastiCache, where Redis has a machine of its own, so that
    its CPU per message is not inflated by sharing a core with the stack's processes."""
    servers = {int(node.info("server")["process_id"]) for node in nodes}
    others = (descendants(os.getppid()) | {os.getpid()}) - servers
    rest = ",".join(str(cpu) for cpu in range(1, os.cpu_count() or 2))
    for pids, cpus in ((servers, "0"), (others, rest)):
        for pid in pids:
            subprocess.run(["taskset", "-a", "-p", "-c", cpus, str(pid)], capture_output=True, check=False)
    print(f"  redis-server on CPU 0 alone ({len(servers)} process(es)); "
          f"{len(others)} other processes on CPU {rest}")


async def main_async(count: int, redis_url: str | None, redis_core: bool, shards: int | None) -> None:
    rcv = AsyncReceiver()
    settings = {"REDIS_URL": redis_url} if redis_url else {}
    if shards:
        settings["REDIS_SHARDS"] = str(shards)
    async with running(rcv, **settings) as stack:
        nodes = redis_nodes(stack.redis_url)
        print(f"redis cost: a burst of {count} webhooks at {iso(time.time())}")
        if redis_core:
            give_redis_a_core(nodes)
        await measure(stack, rcv, nodes, count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--redis", choices=["plain", "cluster"], default="plain")
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--shards", type=int, help="REDIS_SHARDS (default: 1 plain, 3 on a cluster)")
    parser.add_argument("--redis-core", action="store_true",
                        help="pin redis-server to CPU 0 and everything else to the other CPUs")
    options = parser.parse_args()
    print(f"cpus: {os.cpu_count()}, redis: {options.redis}")
    cluster = None
    if options.redis == "cluster":
        from emulator.redis_cluster import LocalCluster

        cluster = LocalCluster()
    try:
        asyncio.run(main_async(options.count, cluster.url if cluster else None, options.redis_core,
                               options.shards))
    finally:
        if cluster is not None:
            cluster.stop()


if __name__ == "__main__":
    main()
