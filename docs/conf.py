"""Sphinx configuration of the optax-dice documentation.

Build it from the repository root with ``python3 -m sphinx -W -b html docs docs/_build/html``.
"""

import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "docs" / "_ext"))

import optax_dice  # noqa: E402

project = "optax-dice"
author = "optax-dice developers"
copyright = "2026, optax-dice developers"
release = optax_dice.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "myst_nb",
    "cli_help",
]

exclude_patterns = ["_build"]

# autodoc: Google-style docstrings (napoleon), signatures with their type hints.
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

# MyST: headings get anchors so pages can link to sections; $...$ is left alone.
myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3

# The teaching notebook is shown with the outputs it is stored with; nothing runs at build time.
nb_execution_mode = "off"

html_theme = "sphinx_book_theme"
html_title = "optax-dice"
html_theme_options = {"show_toc_level": 2}

# Every cross-reference must resolve (-W turns a broken one into an error), except those into
# other projects: no inventory of theirs is fetched at build time (the build needs no network).
nitpicky = True
nitpick_ignore_regex = [(r"py:.*", r"(jax|jaxlib|numpy|optax|chex|collections|typing)(\..*)?")]


def _public_name(app, env, node, contnode):
    """Resolves ``optax_dice.module.name`` to the documented ``optax_dice.name``.

    The public names are documented where users import them, at the top level; docstrings
    may name them by the module that defines them.
    """
    target = node.get("reftarget", "")
    if node.get("refdomain") != "py" or not target.startswith("optax_dice."):
        return None
    name = target.rsplit(".", 1)[-1]
    if name not in optax_dice.__all__ or target == f"optax_dice.{name}":
        return None
    py = env.get_domain("py")
    return py.resolve_xref(
        env, node["refdoc"], app.builder, node["reftype"], f"optax_dice.{name}", node, contnode
    )


# Results pages are included from benchmarks/, where they link the files beside them (csv
# tables, logs, scripts): such a link becomes a download of that file, and a link to another
# page of the site stays a link. A link to nothing still fails the build.
_LINK = re.compile(r"(?<!!)\[([^\]]+)\]\(([^)\s#]+)(#[^)\s]*)?\)")


def _downloads_for_repository_files(app, relative_path, parent_docname, content):
    docname = app.env.docname  # the including page (parent_docname loses its folder)
    included = Path(app.srcdir, relative_path).resolve()
    page_dir = Path(app.srcdir, docname).parent

    def rewrite(match):
        text, target = match.group(1), match.group(2)
        if "://" in target or target.startswith("mailto:"):
            return match.group(0)
        as_page = os.path.normpath(Path(docname).parent / target)
        if os.path.splitext(as_page)[0] in app.env.found_docs:
            return match.group(0)
        file = (included.parent / target).resolve()
        if not file.is_file():
            return match.group(0)
        return f"{{download}}`{text} <{os.path.relpath(file, page_dir)}>`"

    content[0] = _LINK.sub(rewrite, content[0])


def setup(app):
    app.connect("missing-reference", _public_name)
    app.connect("include-read", _downloads_for_repository_files)
