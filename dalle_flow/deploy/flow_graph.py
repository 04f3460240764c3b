"""The Flow's topology as a small graph: executors are nodes, `needs` are edges from parents to children.

Toggles never edit the topology case by case: an executor is removed by connecting its parents to its children
(`remove_executor`). It keeps `needs` minimal (no parent that is already an ancestor of another parent), so removing `dalle` leaves
`rerank` needing `diffusion` alone rather than `[gateway, diffusion]`, which would feed it the request twice.
"""
from __future__ import annotations

import copy

GATEWAY = "gateway"


def normalize_needs(executors: list[dict]) -> list[dict]:
    """Copies of the executors with explicit `needs` lists. Jina reads a missing `needs` as "the executor listed
    just before" (the gateway for the first), and a string as a one-element list."""
    result, previous = [], GATEWAY
    for executor in executors:
        executor = copy.deepcopy(executor)
        needs = executor.get("needs", previous)
        executor["needs"] = [needs] if isinstance(needs, str) else list(needs)
        result.append(executor)
        previous = executor["name"]
    _check(result)
    return result


def ancestors(executors: list[dict], name: str) -> set[str]:
    """Every node `name` depends on, directly or not (the gateway included)."""
    parents = {e["name"]: e["needs"] for e in executors}
    seen, stack = set(), list(parents.get(name, []))
    while stack:
        node = stack.pop()
        if node not in seen:
            seen.add(node)
            stack.extend(parents.get(node, []))
    return seen


def minimal_needs(executors: list[dict], needs: list[str]) -> list[str]:
    """`needs` without duplicates and without any parent that another parent already depends on."""
    unique = list(dict.fromkeys(needs))
    return [n for n in unique if not any(n in ancestors(executors, other) for other in unique if other != n)]


def remove_executor(executors: list[dict], name: str) -> list[dict]:
    """The Flow without `name`: whatever needed it now needs what `name` needed."""
    if name not in names(executors):
        raise ValueError(f"{name}: no such executor in the Flow (it has {', '.join(names(executors))})")
    removed = next(e for e in executors if e["name"] == name)
    rest = [copy.deepcopy(e) for e in executors if e["name"] != name]
    children = [e for e in rest if name in e["needs"]]
    for executor in children:
        spliced = []
        for need in executor["needs"]:
            spliced.extend(removed["needs"] if need == name else [need])
        executor["needs"] = spliced
    for executor in children:  # after every splice, so ancestry is read from the rewired graph
        executor["needs"] = minimal_needs(rest, executor["needs"])
    _check(rest)
    return rest


def sinks(executors: list[dict]) -> list[str]:
    """Executors nothing needs: the end of the Flow, whose output the gateway returns."""
    needed = {n for e in executors for n in e["needs"]}
    return [e["name"] for e in executors if e["name"] not in needed]


def names(executors: list[dict]) -> list[str]:
    return [e["name"] for e in executors]


def _check(executors: list[dict]):
    """Every need names an executor listed before it (or the gateway): no dangling edge, no cycle."""
    seen = {GATEWAY}
    for executor in executors:
        missing = [n for n in executor["needs"] if n not in seen]
        if missing:
            raise ValueError(f"{executor['name']}: needs {missing}, which is not listed before it in the Flow")
        if not executor["needs"]:
            raise ValueError(f"{executor['name']}: needs nothing; every executor needs the gateway or another one")
        seen.add(executor["name"])
