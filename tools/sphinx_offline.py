"""A small Sphinx extension that keeps the site self-contained (loaded from _config.yml).

- Every page gets each <script> and stylesheet once. sphinx-thebe, as set up by Jupyter Book 1,
  adds its inline configuration (`const THEBE_JS_URL = ...`) twice, which throws
  "SyntaxError: Identifier 'THEBE_JS_URL' has already been declared" in the browser on every
  page (found by tests/test_site_browser.py).
- A <script> or stylesheet from another host (a CDN) is a build warning, hence an error under
  `-W`: the site must work with no network. (Links, such as the launch buttons, are fine.)
"""

from __future__ import annotations

from sphinx.application import Sphinx
from sphinx.util import logging

logger = logging.getLogger(__name__)


def _key(asset) -> tuple:
    attributes = getattr(asset, "attributes", {}) or {}
    return (str(getattr(asset, "filename", asset) or ""), tuple(sorted((k, str(v)) for k, v in attributes.items())))


def _is_external(asset) -> bool:
    filename = str(getattr(asset, "filename", asset) or "")
    return filename.startswith(("http://", "https://", "//"))


def deduplicate(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    """Drop repeated scripts and stylesheets, in place: later handlers (MathJax) append to the list."""
    for name in ("script_files", "css_files"):
        assets = context.get(name)
        if not isinstance(assets, list):
            continue
        seen, unique = set(), []
        for asset in assets:
            if _key(asset) not in seen:
                seen.add(_key(asset))
                unique.append(asset)
        assets[:] = unique


def refuse_external(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    """Warn (an error under -W) about a script or stylesheet from another host."""
    for name in ("script_files", "css_files"):
        for asset in context.get(name) or []:
            if _is_external(asset):
                logger.warning(
                    "%s: %s loads %s from another host; the site must work offline",
                    pagename,
                    name,
                    getattr(asset, "filename", asset),
                    type="offline",
                )


def setup(app: Sphinx) -> dict:
    # Early and late: Sphinx stops calling handlers after one that returns a template name.
    app.connect("html-page-context", deduplicate, priority=100)
    app.connect("html-page-context", refuse_external, priority=990)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
