"""What a worker process holds of SQS, written down so that what a dead one held comes back at once.

A batch a poller receives stays invisible in its queue for the visibility timeout (90 s) unless
it is deleted. When the process holding it dies (killed, out of memory), SQS hands it out again
only then; so does AWS when a Lambda container dies mid-batch. The local stack knows better: each
worker process appends the receipt handles of the batches its invocations hold to a file of its
own, and holds an exclusive lock on that file while it lives. The kernel lets go of the lock when
the process dies, however it dies, so a worker that can take another's lock knows its holder is
gone, and makes what it held visible again (ChangeMessageVisibility to 0): the stack's new worker
process does this as it starts, and every worker process every few seconds.

No duplicate follows from it. A batch handed back is received by another process, whose
dispatcher must claim each item in Redis with the claim token the SQS message carries: an item
the dead process had begun delivering is no longer `queued`, so it finds nothing to claim and
waits for its lease to expire, as before; only what the dead process had not begun is delivered,
once. A receipt handle that SQS no longer knows (the batch was deleted, or received since) is
refused by SQS and skipped.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

log = logging.getLogger("punctual.workers")

SUFFIX = ".held"
# The log is rewritten with only what is still held once this much has been appended.
COMPACT_BYTES = 1 << 20
SQS_BATCH = 10  # entries per ChangeMessageVisibilityBatch call


class HeldLog:
    """This process's receipts in hand, as an append-only file locked while the process lives."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._directory = directory
        self._path = directory / f"{os.getpid()}-{uuid.uuid4().hex[:8]}{SUFFIX}"
        self._held: dict[str, str] = {}  # receipt handle -> queue URL
        self._lock = threading.Lock()
        self._fd = self._locked_file()
        self._appended = 0

    @property
    def path(self) -> Path:
        return self._path

    def _locked_file(self) -> int:
        """A new file under this log's name, locked before it has the name: a sweeper that finds
        the name can take the lock only once this process is gone."""
        temporary = self._directory / f".{self._path.name}.{uuid.uuid4().hex[:8]}"
        fd = os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_APPEND, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.rename(temporary, self._path)
        return fd

    def hold(self, queue_url: str, receipts: Iterable[str]) -> None:
        lines = []
        with self._lock:
            for receipt in receipts:
                self._held[receipt] = queue_url
                lines.append(f"+\t{queue_url}\t{receipt}\n")
            self._write("".join(lines))

    def let_go(self, receipts: Iterable[str]) -> None:
        with self._lock:
            lines = [f"-\t{receipt}\n" for receipt in receipts if self._held.pop(receipt, None)]
            self._write("".join(lines))
            if self._appended >= COMPACT_BYTES:
                self._compact()

    def _write(self, text: str) -> None:
        if text:
            data = text.encode()
            os.write(self._fd, data)  # O_APPEND: one write, whole lines, even from many threads
            self._appended += len(data)

    def _compact(self) -> None:
        """Start the file afresh with what is still held (called with the lock held)."""
        old = self._fd
        self._fd = self._locked_file()  # renamed over the old one: never a moment without a lock
        os.close(old)
        self._appended = 0
        self._write("".join(f"+\t{q}\t{r}\n" for r, q in self._held.items()))

    def close(self) -> None:
        """Stopping: an empty log goes; one that still names receipts (an invocation cut off by the
        shutdown) stays, unlocked, for the next worker process to hand back."""
        with self._lock:
            if not self._held:
                self._path.unlink(missing_ok=True)
            os.close(self._fd)


def read_held(text: str) -> dict[str, str]:
    """The receipts a log says are held, by receipt handle: its queue URL."""
    held: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split("\t")
        if parts[0] == "+" and len(parts) == 3:
            held[parts[2]] = parts[1]
        elif parts[0] == "-" and len(parts) == 2:
            held.pop(parts[1], None)
    return held  # a line cut short by the death is ignored


def release_orphans(directory: Path, sqs: Any) -> int:
    """Make visible again what dead worker processes held; returns how many messages."""
    released = 0
    for path in sorted(directory.glob(f"*{SUFFIX}")):
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue  # swept by another process meanwhile
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)  # its process lives (or another sweeper has it)
            continue
        try:
            if not _still_named(fd, path):
                continue  # compacted or swept since it was opened
            with os.fdopen(os.dup(fd), encoding="utf-8", errors="replace") as file:
                held = read_held(file.read())
            released += _make_visible(sqs, held)
            path.unlink(missing_ok=True)
        finally:
            os.close(fd)
    return released


def _still_named(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == path.stat().st_ino
    except FileNotFoundError:
        return False


def _make_visible(sqs: Any, held: dict[str, str]) -> int:
    by_queue: dict[str, list[str]] = {}
    for receipt, queue_url in held.items():
        by_queue.setdefault(queue_url, []).append(receipt)
    released = 0
    for queue_url, receipts in by_queue.items():
        for start in range(0, len(receipts), SQS_BATCH):
            entries = [{"Id": str(i), "ReceiptHandle": r, "VisibilityTimeout": 0}
                       for i, r in enumerate(receipts[start:start + SQS_BATCH])]
            try:
                answer = sqs.change_message_visibility_batch(QueueUrl=queue_url, Entries=entries)
            except (BotoCoreError, ClientError) as exc:
                log.warning("could not hand back what a dead worker held (it comes back after its "
                            "visibility timeout): %s", exc)
                continue
            released += len(answer.get("Successful", []))
    return released
