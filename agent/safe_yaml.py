"""Bounded YAML loading: one helper for every configuration, scenario and preset file.

Why not plain ``yaml.safe_load``: it is safe against code execution, not against size. A 1 kB
"billion laughs" file (nine levels of anchors, each aliasing the previous one ten times) loads
in a moment as shared references, and then expands to 10^9 items the first time anything walks
it (pydantic validation, ``json.dumps``, a deep copy). A file nested a few hundred levels deep
makes the pure-Python composer raise ``RecursionError``, and a malformed timestamp a
``ValueError`` from :mod:`datetime` that no ``except yaml.YAMLError`` catches.

So the document is *composed* first (nodes, aliases still shared), its expanded size and depth
are measured on that graph without expanding it, and only then constructed. Ordinary use of
anchors (a shared block of defaults) stays allowed; what an expansion would cost is what is
limited. Every failure is a :class:`YamlError` naming the file and what was wrong.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

__all__ = ["MAX_YAML_BYTES", "MAX_YAML_DEPTH", "MAX_YAML_NODES", "YamlError", "load_yaml_bytes", "load_yaml_file"]

MAX_YAML_BYTES = 1024 * 1024  #: the largest shipped file (detector presets) is ~ 30 kB
MAX_YAML_NODES = 200_000  #: items after alias expansion; a unit profile has ~ 100, presets ~ 5,000
MAX_YAML_DEPTH = 64  #: nesting of mappings and sequences; real files nest < 10 deep



class YamlError(ValueError):
    """A YAML file that cannot be loaded within bounds (or is not YAML); the message says why."""


class _Loader(yaml.SafeLoader):
    """The pure-Python safe loader (libyaml's composer recurses in C), stopped at a nesting depth.

    The depth is checked while composing, so a file of 5,000 ``[`` is refused after 64 of them
    instead of being scanned to the end (the scanner's cost grows with the flow depth).
    """

    _depth = 0

    def compose_node(self, parent: Node | None, index: object) -> Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise YamlError(f"nested more than {MAX_YAML_DEPTH} levels deep; refused")
            return super().compose_node(parent, index)  # type: ignore[no-any-return]
        finally:
            self._depth -= 1


def _measure(root: Node, source: str) -> None:
    """Expanded item count and depth of a composed node graph, without expanding it.

    Iterative (no recursion to blow) and memoised per node, so a shared alias is measured once
    however often it is used; a node that contains itself (``&a [*a]``) is refused.
    """
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        children: list[Node] = []
        if isinstance(node, SequenceNode):
            children = list(node.value)
        elif isinstance(node, MappingNode):
            children = [n for pair in node.value for n in pair]
        if not done:
            if key in size:
                continue
            if key in on_path:
                raise YamlError(f"{source}: a recursive alias (a node that contains itself)")
            on_path.add(key)
            stack.append((node, True))
            for child in children:
                if id(child) in on_path:
                    raise YamlError(f"{source}: a recursive alias (a node that contains itself)")
                if id(child) not in size:
                    stack.append((child, False))
            continue
        on_path.discard(key)
        size[key] = 1 + sum(size[id(c)] for c in children)
        depth[key] = 1 + max((depth[id(c)] for c in children), default=0)
        if size[key] > MAX_YAML_NODES:
            raise YamlError(f"{source}: expands to more than {MAX_YAML_NODES} items through aliases"
                            " (an alias bomb?); refused")
        if depth[key] > MAX_YAML_DEPTH:
            raise YamlError(f"{source}: nested more than {MAX_YAML_DEPTH} levels deep; refused")


def load_yaml_bytes(data: bytes | str, source: str = "<yaml>") -> Any:
    """Parse one YAML document within the bounds above; ``None`` for an empty document."""
    if isinstance(data, str):
        data = data.encode("utf-8", errors="surrogatepass")
    if len(data) > MAX_YAML_BYTES:
        raise YamlError(f"{source}: {len(data)} bytes, more than the {MAX_YAML_BYTES} a YAML file may have")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise YamlError(f"{source}: not UTF-8 text ({err.reason} at byte {err.start})") from err
    loader: _Loader | None = None
    try:
        loader = _Loader(text)  # the reader refuses control characters here already
        node = loader.get_single_node()
        if node is None:
            return None
        _measure(node, source)
        return loader.construct_document(node)
    except YamlError as err:
        msg = str(err)
        raise YamlError(msg if msg.startswith(source) else f"{source}: {msg}") from None
    except yaml.YAMLError as err:
        raise YamlError(f"{source}: not valid YAML ({err})") from err
    except RecursionError as err:
        raise YamlError(f"{source}: nested too deep to parse") from err
    except (ValueError, TypeError, OverflowError) as err:  # e.g. a timestamp 2026-13-45, a 5000-digit int
        raise YamlError(f"{source}: invalid value ({err})") from err
    finally:
        if loader is not None:
            loader.dispose()


def load_yaml_file(path: str | Path) -> Any:
    """Read and parse a YAML file, refusing files over :data:`MAX_YAML_BYTES` before reading them."""
    p = Path(path)
    try:
        if p.stat().st_size > MAX_YAML_BYTES:
            raise YamlError(f"{p}: {p.stat().st_size} bytes, more than the {MAX_YAML_BYTES} a YAML file may have")
        with p.open("rb") as fh:
            data = fh.read(MAX_YAML_BYTES + 1)
    except OSError as err:
        raise YamlError(f"{p}: cannot read ({err.strerror or err})") from err
    return load_yaml_bytes(data, str(p))
