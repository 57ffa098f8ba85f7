"""Every Lua script names what it takes, in the order its callers pass it.

The Python side builds each script's KEYS and ARGV from a dataclass whose fields are these
names in this order, so the names, their order and the headers that describe them must not
drift apart. No Redis needed: this reads the source.
"""

from __future__ import annotations

import dataclasses
import re

import pytest

from chalicelib import script_calls
from chalicelib.scripts import ScriptCall
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
    assert script_bindings("hand_on") == (["calls_key", "waiting_key", "state_key"], ["now_ms", "max_calls"])
    with pytest.raises(ValueError):
        script_bindings("agents/lib")


def _calls() -> dict[str, type[ScriptCall]]:
    calls = [cls for cls in vars(script_calls).values()
             if isinstance(cls, type) and issubclass(cls, ScriptCall) and cls is not ScriptCall]
    return {cls.script: cls for cls in calls}


def test_every_script_has_one_named_call_and_every_call_a_script() -> None:
    calls = [cls for cls in vars(script_calls).values()
             if isinstance(cls, type) and issubclass(cls, ScriptCall) and cls is not ScriptCall]
    assert sorted(cls.script for cls in calls) == sorted(SCRIPTS)
    assert len(_calls()) == len(calls)


@pytest.mark.parametrize("name", SCRIPTS)
def test_the_python_call_names_the_keys_and_args_as_the_script_binds_them(name: str) -> None:
    specs = [spec for spec in dataclasses.fields(_calls()[name]) if not spec.metadata.get("tail")]
    keys = [spec.name for spec in specs if spec.metadata.get("key")]
    args = [spec.name for spec in specs if not spec.metadata.get("key")]
    assert (keys, args) == script_bindings(name)


@pytest.mark.parametrize("name", SCRIPTS)
def test_a_variadic_script_s_repeated_part_comes_last(name: str) -> None:
    """A tail field (the repeated keys or arguments) must be the last of its kind, or its
    values would land before fixed ones in KEYS or ARGV."""
    specs = dataclasses.fields(_calls()[name])
    for kind in (True, False):
        of_kind = [spec for spec in specs if bool(spec.metadata.get("key")) is kind]
        tails = [i for i, spec in enumerate(of_kind) if spec.metadata.get("tail")]
        assert tails in ([], [len(of_kind) - 1]), f"{name}: a tail field is not last"


def test_a_call_sends_its_keys_and_args_in_order_with_the_tails_flattened() -> None:
    call = script_calls.ClaimDue(
        due_key="d", inflight_key="i", message_counts_key="c", item_keys=("h1", "h2"), until_ms=5, grace_ms=6,
        items=(("r1", "t1"), ("r2", "t2")),
    )
    assert call.keys() == ["d", "i", "c", "h1", "h2"]
    assert call.args() == [5, 6, "r1", "t1", "r2", "t2"]
