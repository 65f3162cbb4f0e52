"""``.. cli-help:: [COMMAND]``: ``python -m optax_dice [COMMAND] --help``, run at build time."""

from __future__ import annotations

import os
import subprocess
import sys

from docutils import nodes
from docutils.parsers.rst import Directive
from sphinx.application import Sphinx

WIDTH = "88"  # argparse wraps to $COLUMNS: fix it so the page does not depend on the terminal


def cli_help(*command: str) -> str:
    """The help text that ``python -m optax_dice *command --help`` prints."""
    proc = subprocess.run(
        [sys.executable, "-m", "optax_dice", *command, "--help"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "COLUMNS": WIDTH},
    )
    return proc.stdout


class CliHelp(Directive):
    """Inserts the help text as a literal block, headed by the command that prints it."""

    optional_arguments = 1

    def run(self) -> list[nodes.Node]:
        text = cli_help(*self.arguments)
        command = " ".join(["python -m optax_dice", *self.arguments, "--help"])
        block = nodes.literal_block(text, f"$ {command}\n{text}")
        block["language"] = "text"
        return [block]


def setup(app: Sphinx) -> dict[str, bool]:
    app.add_directive("cli-help", CliHelp)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
