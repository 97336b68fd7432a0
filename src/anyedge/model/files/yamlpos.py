"""Find the line of a place in a YAML document, for error messages.

Loading goes through the fast C loader and keeps no positions; only when something is
wrong is the text composed again into nodes (which carry marks) and the place — a path
of keys and indices such as ``("sites", 3, "sections", 0, "servers")`` — looked up.
If the last step is missing (a field left out) the line of its parent is given.
"""

from __future__ import annotations

from collections.abc import Sequence

import yaml

Loc = Sequence[int | str]

_Base: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_Base):  # type: ignore[misc]
    """The fast safe loader, refusing a key given twice in one mapping (YAML would keep
    the last silently: a second ``sites:`` would hide the first)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[object, object]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} is given twice", key_node.start_mark
                )
            seen.add(key)
        return dict(super().construct_mapping(node, deep=deep))


def place(loc: Loc) -> str:
    """``("sites", 3, "code")`` → ``sites[3].code``."""
    out = ""
    for step in loc:
        if isinstance(step, int):
            out += f"[{step}]"
        else:
            out += ("." if out else "") + str(step)
    return out


def line_of(text: str, loc: Loc) -> int | None:
    """1-based line of ``loc`` in ``text``, or of its nearest existing ancestor."""
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError:
        return None
    if node is None:
        return None
    for step in loc:
        child = None
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.value == str(step):
                    child = v
                    break
        elif (
            isinstance(node, yaml.SequenceNode)
            and isinstance(step, int)
            and 0 <= step < len(node.value)
        ):
            child = node.value[step]
        if child is None:
            break
        node = child
    return int(node.start_mark.line) + 1
