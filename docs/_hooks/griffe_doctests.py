"""Griffe extension: fit the package's docstrings to the Markdown of the API reference.

- Doctests: the docstrings write them under ``Example:`` (or ``Example with ...:``) headers,
  which the Google-style parser renders as an admonition of Markdown text, where ``>>>`` lines
  would become nested quotes. Each doctest run (from a ``>>>`` line to the next blank line) is
  wrapped in a fenced ``pycon`` block.
- Sphinx roles (``:class:`~pyroflows.flows.Flow```, ``:func:`fit```) become code spans
  (``Flow``, ``fit``), as Sphinx would display them.

The docstrings themselves are unchanged.
"""

from __future__ import annotations

import re

import griffe

_HEADER = re.compile(r"^(?P<indent>[ \t]*)Example[^\n:]*:[ \t]*$")
_ROLE = re.compile(r":(?:class|func|meth|mod|data|attr|exc|obj):`(~?)([^`]+)`")


def _role(match: re.Match) -> str:
    short, target = match.groups()
    return f"`{target.rsplit('.', 1)[-1] if short else target}`"


def plain_roles(text: str) -> str:
    return _ROLE.sub(_role, text)


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
        if obj.docstring is None:
            return
        value = plain_roles(obj.docstring.value)
        if ">>>" in value:
            value = fence_doctests(value)
        obj.docstring.value = value
