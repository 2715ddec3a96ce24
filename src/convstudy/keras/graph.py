"""A Keras functional graph as a chain with residual blocks: one path from input to output, except forks that
meet again in an `Add` (a branch, and the identity or a 1x1 `Conv2D` (+ `BatchNormalization`) shortcut); anything
else is one UserError line naming the layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from convstudy.errors import UserError

Entry = tuple[int, dict[str, Any]]  # (1-based position in the file's layer list, the layer's JSON entry)


@dataclass
class Block:
    """A fork that meets again in an Add: the branch (entries or nested blocks), the shortcut path, the activation."""

    branch: list
    shortcut: list[Entry]
    add: Entry
    act: Entry | None


def _history(value: Any) -> list[str]:
    """The layer names of the Keras 3 tensors in a node's arguments, in order."""
    if isinstance(value, dict):
        if value.get("class_name") == "__keras_tensor__":
            history = (value.get("config") or {}).get("keras_history")
            return [history[0]] if isinstance(history, list) and history and isinstance(history[0], str) else []
        return [n for v in value.values() for n in _history(v)]
    if isinstance(value, list):
        return [n for v in value for n in _history(v)]
    return []


def _inputs(entry: dict[str, Any], where: str) -> list[str]:
    nodes = entry.get("inbound_nodes") or []
    if not isinstance(nodes, list):
        raise UserError(f"{where}: inbound_nodes is not a list")
    if len(nodes) > 1:
        raise UserError(f"{where}: the layer is called {len(nodes)} times; shared layers are not supported")
    if not nodes:
        return []
    node = nodes[0]
    if isinstance(node, dict):  # Keras 3: {"args": [...], "kwargs": {...}}
        return _history(node.get("args"))
    if isinstance(node, list):  # Keras 2: [[name, node_index, tensor_index, kwargs], ...]
        return [t[0] for t in node if isinstance(t, list) and t and isinstance(t[0], str)]
    raise UserError(f"{where}: inbound node {type(node).__name__} is not a Keras node")


def functional_chain(entries: list[Any], source: str) -> list:
    """The layers of a functional model in order, with `Block`s for residual additions."""
    by_name: dict[str, Entry] = {}
    wheres: dict[str, str] = {}
    for i, entry in enumerate(entries, 1):
        if not isinstance(entry, dict) or not isinstance(entry.get("config", {}), dict):
            raise UserError(f"{source}: layer {i}: not a Keras layer entry (an object with class_name and config)")
        name = entry.get("name") or (entry.get("config") or {}).get("name")
        if not isinstance(name, str) or name in by_name:
            raise UserError(f"{source}: layer {i}: a missing or repeated layer name")
        by_name[name] = (i, entry)
        wheres[name] = f'{source}: layer {i} "{name}" ({entry.get("class_name")})'
    inputs = {name: _inputs(entry, wheres[name]) for name, (_, entry) in by_name.items()}
    consumers: dict[str, list[str]] = {name: [] for name in by_name}
    for name, ins in inputs.items():
        for src in ins:
            if src not in by_name:
                raise UserError(f'{wheres[name]}: its input "{src[:60]}" is not a layer of the model')
            consumers[src].append(name)
    starts = [n for n, ins in inputs.items() if not ins]
    if len(starts) != 1:
        raise UserError(f"{source}: {len(starts)} inputs; only models with one input can be imported")
    kind = {name: entry.get("class_name") for name, (_, entry) in by_name.items()}

    def follow(name: str) -> Entry:
        if len(inputs[name]) != 1:
            raise UserError(f"{wheres[name]}: a layer with {len(inputs[name])} inputs is not supported (only Add, "
                            "in a residual block)")
        return by_name[name]

    def walk(cur: str) -> tuple[list, str, str | None]:
        """Items after `cur` up to the output or the Add that ends this path: (items, last name, the Add's name)."""
        items: list = []
        while True:
            nxt = consumers[cur]
            if not nxt:
                return items, cur, None
            if len(nxt) == 1 and kind[nxt[0]] == "Add":
                return items, cur, nxt[0]
            if len(nxt) == 1:
                items.append(follow(nxt[0]))
                cur = nxt[0]
                continue
            if len(nxt) != 2:
                raise UserError(f"{wheres[cur]}: its output feeds {len(nxt)} layers; only a residual fork (two) "
                                "is supported")
            paths = []
            for head in nxt:
                if kind[head] == "Add":
                    paths.append(([], cur, head))
                else:
                    rest, last, add = walk(head)
                    paths.append(([follow(head), *rest], last, add))
            (a, a_last, add), (b, b_last, b_add) = paths
            if add is None or add != b_add or sorted(inputs[add]) != sorted([a_last, b_last]):
                raise UserError(f"{wheres[cur]}: its two paths do not meet in one Add; only residual blocks are "
                                "supported")
            branch, shortcut = (a, b) if len(_flat(a)) >= len(_flat(b)) else (b, a)
            if any(isinstance(item, Block) for item in shortcut):
                raise UserError(f"{wheres[add]}: both paths into the Add hold residual blocks; one must be the "
                                "identity or a 1x1 projection")
            after = consumers[add]
            act = by_name[after[0]] if len(after) == 1 and kind[after[0]] in ("Activation", "ReLU") else None
            items.append(Block(branch, shortcut, by_name[add], act))
            cur = after[0] if act is not None else add
    items, _, add = walk(starts[0])
    if add is not None:
        raise UserError(f"{wheres[add]}: an Add outside a residual block is not supported")
    return [by_name[starts[0]], *items]


def _flat(items: list) -> list:
    return [e for item in items for e in (_flat(item.branch) if isinstance(item, Block) else [item])]
