"""How the Lua scripts in chalicelib/lua/ name what they take, read from their source.

A script binds each key and argument it takes to a local, before any other code and in
order: `local run_key = KEYS[1]`, ..., then `local run_id = ARGV[1]`, .... A variadic script
binds its fixed leading keys and arguments so and loops over the rest. An include file (one
that some `--#include NAME` line names) holds only local functions, which take what they
need as parameters.

Scripts are named as `Scripts.get` names them: their path under chalicelib/lua/, without
`.lua` (`claim_due`, `agents/fire`).
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from pathlib import Path

LUA_DIR = Path(__file__).resolve().parent.parent / "chalicelib" / "lua"

BINDING = re.compile(r"local\s+(\w+)\s*=\s*(KEYS|ARGV)\[(\d+)\]\s*(?:--.*)?")
INCLUDE = re.compile(r"--#include\s+(\S+)")
# An index written as a literal; a loop's computed index (`KEYS[2 + i]`) is not one.
LITERAL_INDEX = re.compile(r"\b(KEYS|ARGV)\[\s*(\d+)\s*\]")


@dataclass(frozen=True)
class Binding:
    local: str
    table: str  # 'KEYS' or 'ARGV'
    index: int


@dataclass(frozen=True)
class Layout:
    """A script's source, split where its bindings start and end."""

    name: str
    header: list[str]  # the comment lines before the bindings, `--#include` lines left out
    bindings: list[Binding]
    body: list[tuple[int, str]]  # (line number, line) of each line after the bindings


def lua_names() -> list[str]:
    """Every .lua file under chalicelib/lua/, scripts and include files alike."""
    return sorted(path.relative_to(LUA_DIR).with_suffix("").as_posix() for path in LUA_DIR.rglob("*.lua"))


def include_names() -> list[str]:
    """The files some `--#include` line names (resolved, as scripts.py does, in its own folder)."""
    included = set()
    for name in lua_names():
        folder = Path(name).parent
        for line in _lines(name):
            match = INCLUDE.match(line)
            if match:
                included.add(posixpath.normpath((folder / match.group(1)).as_posix()))
    return sorted(included)


def script_names() -> list[str]:
    includes = set(include_names())
    return [name for name in lua_names() if name not in includes]


def layout(name: str) -> Layout:
    if name in include_names():
        raise ValueError(f"{name} is an include file, not a script")
    lines = _lines(name)
    header: list[str] = []
    at = 0
    while at < len(lines) and _is_blank_or_comment(lines[at]):
        if lines[at].strip() and not INCLUDE.match(lines[at]):
            header.append(lines[at])
        at += 1
    bindings: list[Binding] = []
    while at < len(lines):
        match = BINDING.fullmatch(lines[at].strip())
        if match:
            bindings.append(Binding(match.group(1), match.group(2), int(match.group(3))))
        elif not _is_blank_or_comment(lines[at]) or INCLUDE.match(lines[at]):
            break
        at += 1
    body = [(number + 1, lines[number]) for number in range(at, len(lines))]
    return Layout(name, header, bindings, body)


def script_bindings(name: str) -> tuple[list[str], list[str]]:
    """The locals a script binds its KEYS to and those it binds its ARGV to, each in order.

    For a variadic script, only its fixed leading keys and arguments.
    """
    bindings = layout(name).bindings
    return (
        [b.local for b in bindings if b.table == "KEYS"],
        [b.local for b in bindings if b.table == "ARGV"],
    )


def _lines(name: str) -> list[str]:
    return (LUA_DIR / f"{name}.lua").read_text().splitlines()


def _is_blank_or_comment(line: str) -> bool:
    stripped = line.strip()
    return not stripped or stripped.startswith("--")
