"""A throwaway Redis Cluster on free ports, from `redis-server --cluster-enabled yes` and
`redis-cli --cluster create` (tests, benchmarks, `make run-cluster`).

Two shapes: `primaries` primaries with `replicas` replicas each (3 and 0 unless told), or one
node that holds every slot (`one_node=True`), which is how ElastiCache Serverless presents
itself to a client. Nothing is kept on disk.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from .ports import free_port
from .processes import _die_with_parent

CLUSTER_BUS_OFFSET = 10_000  # a node's cluster bus listens on its port + 10000
SLOTS = 16_384


def _free_node_port() -> int:
    """A free port whose cluster bus port is free too."""
    for _ in range(100):
        port = free_port()
        if port + CLUSTER_BUS_OFFSET > 65_535:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + CLUSTER_BUS_OFFSET))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


class LocalCluster:
    def __init__(self, primaries: int = 3, replicas: int = 0, one_node: bool = False,
                 node_timeout_ms: int = 2000, options: tuple[str, ...] = ()) -> None:
        """`options`: more redis-server arguments for every node."""
        self._options = options
        for binary in ("redis-server", "redis-cli"):
            if shutil.which(binary) is None:
                raise RuntimeError(f"{binary} is not installed; `make setup` installs it")
        self.dir = Path(tempfile.mkdtemp(prefix="punctual-cluster-"))
        count = 1 if one_node else primaries * (1 + replicas)
        self.ports = [_free_node_port() for _ in range(count)]
        self.processes = [self._spawn(port, node_timeout_ms) for port in self.ports]
        try:
            for port in self.ports:
                self._wait_until_answers(port)
            if one_node:
                self.node(self.ports[0]).execute_command("CLUSTER ADDSLOTSRANGE", 0, SLOTS - 1)
            else:
                self._create(replicas)
            self._wait_until_ok(replicas)
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}"

    def node(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, decode_responses=True, socket_timeout=5)

    def primary_of(self, key: str) -> int:
        """The port of the primary that holds `key`'s slot now."""
        client = self.node(self.ports[0])
        slot = int(client.execute_command("CLUSTER KEYSLOT", key))
        for start, end, primary, *_ in client.execute_command("CLUSTER SLOTS"):
            if start <= slot <= end:
                return int(primary[1])
        raise RuntimeError(f"slot {slot} is not served")

    def replica_of(self, primary_port: int) -> int:
        client = self.node(primary_port)
        replicas = client.info("replication")
        return int(replicas["slave0"]["port"])

    def fail_over(self, primary_port: int, takeover: bool = False) -> int:
        """Promote a replica of `primary_port` (CLUSTER FAILOVER on it); returns the new primary's port."""
        replica = self.replica_of(primary_port)
        args = ["CLUSTER FAILOVER"] + (["TAKEOVER"] if takeover else [])
        self.node(replica).execute_command(*args)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.node(replica).info("replication")["role"] == "master":
                return replica
            time.sleep(0.05)
        raise RuntimeError(f"the replica on {replica} was not promoted")

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _spawn(self, port: int, node_timeout_ms: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.dir), "--cluster-enabled", "yes",
             "--cluster-config-file", f"nodes-{port}.conf", "--cluster-node-timeout", str(node_timeout_ms),
             *self._options],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent,
        )

    def _create(self, replicas: int) -> None:
        nodes = [f"127.0.0.1:{port}" for port in self.ports]
        done = subprocess.run(
            ["redis-cli", "--cluster", "create", *nodes, "--cluster-replicas", str(replicas),
             "--cluster-yes"],
            capture_output=True, text=True, timeout=60,
        )
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{done.stdout}{done.stderr}")

    def _wait_until_answers(self, port: int) -> None:
        client = self.node(port)
        for _ in range(300):
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.02)
        raise RuntimeError(f"redis-server on {port} did not start")

    def _wait_until_ok(self, replicas: int) -> None:
        """Every node says the cluster is ok and knows every node (a client's first topology read
        may go to any of them), and every replica has synced (else it cannot be failed over to)."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if all(self._sees_whole_cluster(port) for port in self.ports) and (
                    not replicas or all(self._synced(port) for port in self.ports)):
                return
            time.sleep(0.05)
        raise RuntimeError("the cluster did not come up")

    def _synced(self, port: int) -> bool:
        replication = self.node(port).info("replication")
        return replication["role"] == "master" or replication.get("master_link_status") == "up"

    def _sees_whole_cluster(self, port: int) -> bool:
        fields = self.node(port).cluster("INFO")
        known = int(fields.get("cluster_known_nodes", 0))
        return fields.get("cluster_state") == "ok" and known == len(self.ports)
