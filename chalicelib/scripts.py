"""Loads the Lua scripts in lua/ once per Redis client (EVALSHA, reloaded on NOSCRIPT).

A script name may name a subfolder (`agents/fire`). A line `--#include NAME`
is replaced by the file NAME.lua from the same folder, so helpers shared by
several scripts are written once.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis
from redis.commands.core import Script
from redis.exceptions import NoScriptError

_LUA_DIR = Path(__file__).parent / "lua"


class Scripts:
    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._cache: dict[str, Script] = {}

    def __getattr__(self, name: str) -> Script:
        return self.get(name)

    def get(self, name: str) -> Script:
        script = self._cache.get(name)
        if script is None:
            script = self._client.register_script(_source(_LUA_DIR / f"{name}.lua"))
            self._cache[name] = script
        return script

    def run_many(self, name: str, calls: Sequence[tuple[Sequence[Any], Sequence[Any]]]) -> list[Any]:
        """Run one script once per (keys, args), all in one round trip.

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
                elif isinstance(answer, Exception):
                    raise answer
                else:
                    results[i] = answer
            if not missing:
                return results
            script.sha = self._client.script_load(script.script)
            todo = missing
        raise NoScriptError(f"script {name} could not be loaded")


def _source(path: Path) -> str:
    lines = []
    for line in path.read_text().splitlines():
        if line.startswith("--#include "):
            lines.append(_source(path.parent / f"{line.split()[1]}.lua"))
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"
