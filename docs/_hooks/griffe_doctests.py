"""Griffe extension: show the docstrings' doctests as highlighted code in the API reference.

The package's docstrings write their doctests under ``Example:`` (or ``Example with ...:``)
headers, which the Google-style parser renders as an admonition of Markdown text, where
``>>>`` lines would become nested quotes. This wraps each doctest run (from a ``>>>`` line to
the next blank line) in a fenced ``pycon`` block; the docstrings themselves are unchanged.
"""

from __future__ import annotations

import re

import griffe

_HEADER = re.compile(r"^(?P<indent>[ \t]*)Example[^\n:]*:[ \t]*$")


def fence_doctests(text: str) -> str:
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        header = _HEADER.match(lines[i])
        out.append(lines[i])
        i += 1
        if not header:
            continue
        base = len(header["indent"])
        while i < len(lines):
            line = lines[i]
            stripped = line.lstrip()
            if stripped and len(line) - len(stripped) <= base:
                break  # the section has ended
            if stripped.startswith(">>>"):
                indent = line[: len(line) - len(stripped)]
                out.append(f"{indent}```pycon")
                while i < len(lines) and lines[i].strip():
                    out.append(lines[i])
                    i += 1
                out.append(f"{indent}```")
                continue
            out.append(line)
            i += 1
    return "\n".join(out)


class FenceDoctests(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None and ">>>" in obj.docstring.value:
            obj.docstring.value = fence_doctests(obj.docstring.value)
