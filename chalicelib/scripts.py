"""Loads the Lua scripts in lua/ once per Redis client (EVALSHA, reloaded on NOSCRIPT).

A script name may name a subfolder (`agents/fire`). A line `--#include NAME`
is replaced by the file NAME.lua from the same folder, so helpers shared by
several scripts are written once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import redis
from redis.commands.core import Script
from redis.exceptions import NoScriptError

from .errors import PunctualError

_LUA_DIR = Path(__file__).parent / "lua"


Call = tuple[Sequence[Any], Sequence[Any]]  # a script's keys and args


def key() -> Any:
    """A ScriptCall field that goes to KEYS; the others go to ARGV."""
    return field(metadata={"key": True})


def keys_tail() -> Any:
    """The last KEYS field of a variadic script: a tuple of keys, one per repeated item."""
    return field(metadata={"key": True, "tail": True})


def args_tail() -> Any:
    """The last ARGV field of a variadic script: a tuple of items, each a value or a tuple of
    values (sent flat, in order)."""
    return field(metadata={"tail": True})


@dataclass(frozen=True)
class ScriptCall:
    """One call of a Lua script, with its keys and arguments named.

    A subclass is a frozen dataclass that names its script; its key fields, in order, are the
    script's KEYS, its other fields, in order, its ARGV, under the names the script binds them
    to (tests/test_lua_layout.py holds them to that).
    """

    script: ClassVar[str]

    def keys(self) -> list[Any]:
        return _flat_values(self, keys=True)

    def args(self) -> list[Any]:
        return _flat_values(self, keys=False)


# Per ScriptCall class: its KEYS fields and its ARGV fields, each as (name, is a tail), in order.
# Read once per class: dataclasses.fields() on every call cost more than the call's own Python.
_LAYOUTS: dict[type, tuple[tuple[tuple[str, bool], ...], tuple[tuple[str, bool], ...]]] = {}


def _layout(cls: type) -> tuple[tuple[tuple[str, bool], ...], tuple[tuple[str, bool], ...]]:
    layout = _LAYOUTS.get(cls)
    if layout is None:
        specs = fields(cls)
        layout = _LAYOUTS[cls] = tuple(
            tuple((spec.name, bool(spec.metadata.get("tail"))) for spec in specs
                  if bool(spec.metadata.get("key")) is kind)
            for kind in (True, False)
        )
    return layout


def _flat_values(call: ScriptCall, keys: bool) -> list[Any]:
    values: list[Any] = []
    for name, tail in _layout(type(call))[0 if keys else 1]:
        value = getattr(call, name)
        if tail:
            for item in value:
                values.extend(item if isinstance(item, tuple) else (item,))
        else:
            values.append(value)
    return values


# A script's refusal codes: the error each stands for, and its message (a str.format template).
Refusals = Mapping[int, tuple[type[PunctualError], str]]


def refuse(refusals: Refusals, code: Any, **names: object) -> None:
    """Raise what a script's answer `code` stands for, if it is one of its refusals."""
    refusal = refusals.get(code) if isinstance(code, int) else None
    if refusal is not None:
        error, message = refusal
        raise error(message.format(**names))


def hash_of(flat: Sequence[str]) -> dict[str, str]:
    """A hash a script returned as HGETALL does: a flat field, value list."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


class Scripts:
    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._cache: dict[str, Script] = {}
        self._groups: dict[str, _GroupCommit] = {}
        self._groups_lock = threading.Lock()

    def get(self, name: str) -> Script:
        script = self._cache.get(name)
        if script is None:
            script = self._client.register_script(_source(_LUA_DIR / f"{name}.lua"))
            self._cache[name] = script
        return script

    def call(self, call: ScriptCall) -> Any:
        """Run one script call (see `run`)."""
        return self.run(call.script, call.keys(), call.args())

    def call_many(self, calls: Sequence[ScriptCall]) -> list[Any]:
        """Calls of one script, all in one round trip (see `run_many`)."""
        if not calls:
            return []
        return self.run_many(calls[0].script, [(call.keys(), call.args()) for call in calls])

    def run_many(self, name: str, calls: Sequence[Call]) -> list[Any]:
        """Run one script once per (keys, args), all in one round trip; the first error raises."""
        answers = self._answers(name, calls)
        for answer in answers:
            if isinstance(answer, Exception):
                raise answer
        return answers

    def run(self, name: str, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """Run one script once, in one round trip with whatever other threads run of it now.

        Every script call goes this way. A burst runs the same script from dozens of threads at
        once. Sent one by one, each call pays redis-py's pool checkout, a poll, a send and a
        receive, more when the threads contend for the GIL; in a pipeline a small fraction of
        that (README, Benchmarks). A call that finds no other in flight is sent at once, so a
        lone call waits for nothing.
        """
        group = self._groups.get(name)
        if group is None:
            with self._groups_lock:
                group = self._groups.setdefault(name, _GroupCommit(lambda calls: self._answers(name, calls)))
        return group.call((keys, args))

    def _answers(self, name: str, calls: Sequence[Call]) -> list[Any]:
        """Each call's answer, or the error Redis gave that call.

        redis-py's pipeline asks SCRIPT EXISTS before every pipeline that runs a script: a
        second round trip, which counts when a minute's thousands of slots fire. This sends
        EVALSHA alone; the calls Redis answers NOSCRIPT did not run, and run again once the
        script is loaded.
        """
        script = self.get(name)
        results: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        for _ in range(2):
            pipe = self._client.pipeline(transaction=False)
            for i in todo:
                keys, args = calls[i]
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            answers = pipe.execute(raise_on_error=False)
            missing = []
            for i, answer in zip(todo, answers, strict=True):
                if isinstance(answer, NoScriptError):
                    missing.append(i)
                else:
                    results[i] = answer
            if not missing:
                return results
            script.sha = self._client.script_load(script.script)
            todo = missing
        raise NoScriptError(f"script {name} could not be loaded")


class _Pending:
    __slots__ = ("answer", "call", "leads", "ready")

    def __init__(self, call: Call) -> None:
        self.call = call
        self.answer: Any = None
        # Released once, when the call is answered or its caller is to send the next group.
        # A bare lock, not an Event: an Event is a Condition written in Python, several times
        # the work per hand-over, and a burst hands over thousands of times a second.
        self.ready = threading.Lock()
        self.ready.acquire()
        self.leads = False


class _GroupCommit:
    """Group commit: the calls that arrive while a group is in flight go together in the next.

    One caller at a time sends; it hands the lead to the longest-waiting caller when its group
    is answered, so no caller sends groups on behalf of others after its own is answered.
    """

    def __init__(self, send: Callable[[list[Call]], list[Any]]) -> None:
        self._send = send
        self._lock = threading.Lock()
        self._waiting: list[_Pending] = []
        self._in_flight = False

    def call(self, call: Call) -> Any:
        me = _Pending(call)
        with self._lock:
            self._waiting.append(me)
            me.leads = not self._in_flight
            self._in_flight = True
        if not me.leads:
            me.ready.acquire()
        if me.leads:
            self._send_group(me)
        if isinstance(me.answer, BaseException):
            raise me.answer
        return me.answer

    def _send_group(self, me: _Pending) -> None:
        with self._lock:
            group, self._waiting = self._waiting, []
        try:
            answers = self._send([pending.call for pending in group])
        except BaseException as exc:
            # The connection failed, or this thread is being stopped: every call of the group
            # fails with it, and the lead still passes on, so no caller waits forever.
            answers = [exc] * len(group)
        with self._lock:
            if self._waiting:
                self._waiting[0].leads = True
                self._waiting[0].ready.release()
            else:
                self._in_flight = False
        for pending, answer in zip(group, answers, strict=True):
            pending.answer = answer
            if pending is not me:
                pending.ready.release()


def _source(path: Path) -> str:
    lines = []
    for line in path.read_text().splitlines():
        if line.startswith("--#include "):
            lines.append(_source(path.parent / f"{line.split()[1]}.lua"))
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"
