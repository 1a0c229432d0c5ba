"""Where each key of a TOML file is written, so an error can name its line: tomllib parses the values but
keeps no positions. A line scanner, enough for the files a person writes: [tables], [[arrays of tables]],
dotted and quoted keys, multi-line strings and arrays (their inner lines are skipped)."""

from __future__ import annotations

import re

_STRINGS = re.compile(r'"(?:\\.|[^"\\])*"|\'[^\']*\'')
_BARE_KEY = re.compile(r'\s*((?:[A-Za-z0-9_-]+|"(?:\\.|[^"\\])*"|\'[^\']*\')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"(?:\\.|[^"\\])*"|\'[^\']*\'))*)\s*=')


def _keys(text: str) -> tuple[str, ...]:
    parts = re.findall(r'[A-Za-z0-9_-]+|"(?:\\.|[^"\\])*"|\'[^\']*\'', text)
    return tuple(p[1:-1] if p[:1] in "\"'" else p for p in parts)


def _open_brackets(value: str) -> int:
    """[ and { opened minus closed, outside strings and comments."""
    bare = _STRINGS.sub("", value).split("#", 1)[0]
    return bare.count("[") + bare.count("{") - bare.count("]") - bare.count("}")


def key_lines(text: str) -> dict[tuple, int]:
    """{key path: line number}; a path is as tomllib's nesting, with the index of an array-of-tables element:
    ("model", 1, "batch_size") for batch_size in the second [[model]]."""
    lines: dict[tuple, int] = {}
    arrays: dict[tuple, int] = {}  # array-of-tables path (names only) -> index of its current element
    table: tuple = ()
    open_string = None
    depth = 0

    def resolve(names: tuple) -> tuple:
        out: tuple = ()
        for k in range(len(names)):
            out += (names[k],)
            if names[:k + 1] in arrays and k + 1 < len(names):
                out += (arrays[names[:k + 1]],)
        return out

    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if open_string:
            if line.count(open_string) % 2:
                open_string = None
            continue
        if depth > 0:
            depth += _open_brackets(line)
            continue
        if not line or line.startswith("#"):
            continue
        if line.startswith("[["):
            names = _keys(line[2:line.find("]]")])
            arrays[names] = arrays.get(names, -1) + 1
            for inner in [a for a in arrays if len(a) > len(names) and a[:len(names)] == names]:
                del arrays[inner]  # a new element starts its own nested arrays
            table = resolve(names) + (arrays[names],)
            lines.setdefault(table[:-1], number)
            lines[table] = number
            continue
        if line.startswith("["):
            table = resolve(_keys(line[1:line.find("]")]))
            lines[table] = number
            continue
        match = _BARE_KEY.match(line)
        if not match:
            continue
        path = table + _keys(match[1])
        for k in range(len(table) + 1, len(path) + 1):
            lines.setdefault(path[:k], number)
        lines[path] = number
        value = line[match.end():].strip()
        for quote in ('"""', "'''"):
            if value.startswith(quote) and value.count(quote) == 1:
                open_string = quote
        depth = _open_brackets(value) if not open_string else 0
    return lines


def line_of(lines: dict[tuple, int], path: tuple) -> int | None:
    """The line of `path`, or of its nearest enclosing key written in the file."""
    for k in range(len(path), 0, -1):
        if path[:k] in lines:
            return lines[path[:k]]
    return None


__all__ = ["key_lines", "line_of"]
