"""Every Lua script names what it takes, in the order its callers pass it.

The Python side builds each script's KEYS and ARGV from a dataclass whose fields are these
names in this order, so the names, their order and the headers that describe them must not
drift apart. No Redis needed: this reads the source.
"""

from __future__ import annotations

import re

import pytest

from tests.lua_bindings import (
    LITERAL_INDEX,
    LUA_DIR,
    include_names,
    layout,
    lua_names,
    script_bindings,
    script_names,
)

SCRIPTS = script_names()
INCLUDES = include_names()
SNAKE_CASE = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")


def test_scripts_and_include_files_are_found() -> None:
    assert set(SCRIPTS) | set(INCLUDES) == set(lua_names())
    assert {"claim_due", "agents/fire", "ws/disconnect"} <= set(SCRIPTS)
    assert {"sweep_marker", "agents/lib", "agents/report_checks"} <= set(INCLUDES)


@pytest.mark.parametrize("name", SCRIPTS)
def test_a_script_binds_its_keys_then_its_args_in_order(name: str) -> None:
    bindings = layout(name).bindings
    assert bindings, f"{name}.lua binds none of its KEYS and ARGV at its top"
    tables = [b.table for b in bindings]
    assert tables == sorted(tables, key=["KEYS", "ARGV"].index), f"{name}.lua binds an ARGV before a key"
    for table in ("KEYS", "ARGV"):
        indexes = [b.index for b in bindings if b.table == table]
        assert indexes == list(range(1, len(indexes) + 1)), f"{name}.lua binds {table} {indexes}"


@pytest.mark.parametrize("name", SCRIPTS)
def test_a_script_reads_no_key_or_arg_by_a_literal_index_below_its_bindings(name: str) -> None:
    body = layout(name).body
    stray = [f"line {number}: {line.strip()}" for number, line in body if LITERAL_INDEX.search(line)]
    assert not stray, f"{name}.lua should use the names it bound: " + "; ".join(stray)


@pytest.mark.parametrize("name", SCRIPTS)
def test_a_script_includes_before_its_bindings(name: str) -> None:
    # An included function defined after the bindings would see the script's locals, and could
    # use one by accident instead of taking it as a parameter.
    late = [line.strip() for _, line in layout(name).body if line.startswith("--#include")]
    assert not late, f"{name}.lua includes after its bindings: {late}"


@pytest.mark.parametrize("name", SCRIPTS)
def test_binding_names_follow_the_convention(name: str) -> None:
    keys, args = script_bindings(name)
    for local in keys + args:
        assert SNAKE_CASE.fullmatch(local), f"{name}.lua: {local} is not snake_case"
    assert all(local.endswith("_key") for local in keys), f"{name}.lua: a key local lacks _key: {keys}"
    assert not any(local.endswith("_key") for local in args), f"{name}.lua: an ARGV local ends in _key"
    assert len(set(keys + args)) == len(keys + args), f"{name}.lua binds a name twice"


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_binding_is_used(name: str) -> None:
    script = layout(name)
    below = "\n".join(line.split("--", 1)[0] for _, line in script.body)
    unused = [b.local for b in script.bindings if not re.search(rf"\b{b.local}\b", below)]
    assert not unused, f"{name}.lua binds but never uses {unused}"


@pytest.mark.parametrize("name", SCRIPTS)
def test_the_header_describes_the_keys_then_the_args_in_order(name: str) -> None:
    script = layout(name)
    mentions = [m for line in script.header for m in LITERAL_INDEX.finditer(line)]
    described = [(m.group(1), int(m.group(2))) for m in mentions]
    bound = [(b.table, b.index) for b in script.bindings]
    assert described == bound, f"{name}.lua's header describes {described}, but it binds {bound}"
    assert any(line.lstrip("- ").startswith("Returns") for line in script.header), (
        f"{name}.lua's header does not say what it returns"
    )


@pytest.mark.parametrize("name", INCLUDES)
def test_an_include_file_reads_no_keys_or_args(name: str) -> None:
    text = (LUA_DIR / f"{name}.lua").read_text()
    assert "KEYS[" not in text and "ARGV[" not in text, f"{name}.lua reads KEYS or ARGV itself"


@pytest.mark.parametrize("name", INCLUDES)
def test_an_include_file_holds_only_local_functions(name: str) -> None:
    # Top-level code in an include would run inside whichever script includes it.
    for line in (LUA_DIR / f"{name}.lua").read_text().splitlines():
        if line and not line[0].isspace():
            assert line.startswith(("--", "local function ", "end")), f"{name}.lua runs code: {line}"


def test_script_bindings_names_a_script_s_keys_and_args() -> None:
    assert script_bindings("begin_delivery") == (
        ["message_key", "inflight_key"],
        ["message_ref", "claim_token", "lease_deadline_ms"],
    )
    with pytest.raises(ValueError):
        script_bindings("agents/lib")
