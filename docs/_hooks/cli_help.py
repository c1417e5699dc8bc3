"""MkDocs hook: insert the command line's current ``--help`` text into the docs.

A line ``<!-- pyroflows-help -->`` (the top-level help) or ``<!-- pyroflows-help: fit -->``
(a subcommand's) is replaced by that help in a ``text`` block, taken from
``pyroflows.cli.build_parser()`` at build time, so the page always matches the code.
"""

from __future__ import annotations

import argparse
import os
import re

_MARK = re.compile(r"^<!-- pyroflows-help(?::\s*(\w+))? -->$", re.M)


def _help(command: str | None) -> str:
    from pyroflows.cli import build_parser

    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "92"
    try:
        parser = build_parser()
        if command is not None:
            subparsers = next(
                a for a in parser._actions if isinstance(a, argparse._SubParsersAction)
            )
            parser = subparsers.choices[command]
        text = parser.format_help()
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old
    return f"```text\n{text.rstrip()}\n```"


def on_page_markdown(markdown: str, page, config, files) -> str:
    return _MARK.sub(lambda m: _help(m.group(1)), markdown)
