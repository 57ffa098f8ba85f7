"""Loads the Lua scripts in lua/ once per Redis client (EVALSHA, reloaded on NOSCRIPT).

A script name may name a subfolder (`agents/fire`). A line `--#include NAME`
is replaced by the file NAME.lua from the same folder, so helpers shared by
several scripts are written once.
"""

from __future__ import annotations

from pathlib import Path

import redis
from redis.commands.core import Script

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


def _source(path: Path) -> str:
    lines = []
    for line in path.read_text().splitlines():
        if line.startswith("--#include "):
            lines.append(_source(path.parent / f"{line.split()[1]}.lua"))
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"
