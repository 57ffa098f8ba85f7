"""Loads the Lua scripts in lua/ once per Redis client (EVALSHA, reloaded on NOSCRIPT)."""

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
        script = self._cache.get(name)
        if script is None:
            source = (_LUA_DIR / f"{name}.lua").read_text()
            script = self._client.register_script(source)
            self._cache[name] = script
        return script
