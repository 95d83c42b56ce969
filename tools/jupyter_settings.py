"""Jupyter settings this suite needs in its environment; ``make`` writes them into the venv.

1. JupyterLab opens the lessons (jupytext MyST ``.md``) as notebooks: ``make lab`` opens
   ``00-Index.md`` as a notebook, and so does one click on a lesson in the file browser or on a
   link in the index (no "Open With" needed). Written as default settings for everyone using
   the environment, in the per-package place (a user's own ``overrides.json`` is left alone,
   and settings a user changes in Lab still win)::

       {sys.prefix}/share/jupyter/lab/settings/overrides.d/iommu-lab.json

2. Voilà (``make app``) does not load jupytext's Lab extension, which fails there with a
   console error (RUNTIME-012, shared module @jupyterlab/docmanager) and is of no use in an
   app; renders with the ``iommu-lab`` template (below); and keeps a *preheated* kernel per
   app, one that has already run the notebook, so a page is usable in seconds instead of
   15–25 s (``make app VOILA_POOL=N`` keeps N of them; a used one is replaced 10 s later,
   once its page has loaded)::

       {sys.prefix}/etc/jupyter/voila.json

3. The ``iommu-lab`` Voilà template: Voilà's ``lab`` template without its two FontAwesome
   stylesheets from a CDN (an offline classroom cannot fetch them; Voilà's own bundle
   embeds FontAwesome) and without the mermaid loader (no diagrams here)::

       {sys.prefix}/share/jupyter/voila/templates/iommu-lab/{conf.json,index.html.j2}

    .venv/bin/python tools/jupyter_settings.py            # write them
    .venv/bin/python tools/jupyter_settings.py --check    # exit 1 if missing or different
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

VIEWER = "Jupytext Notebook"  # the document widget factory jupytext's labextension registers
LAB = {
    "@jupyterlab/docmanager-extension:plugin": {
        "defaultViewers": {"markdown": VIEWER, "myst": VIEWER},
    },
    "@jupyterlab/filebrowser-extension:browser": {
        "singleClickNavigation": True,
    },
}
TEMPLATE = "iommu-lab"
VOILA = {"VoilaConfiguration": {"extension_denylist": ["jupyterlab-jupytext"],
                                "template": TEMPLATE, "preheat_kernel": True,
                                "default_pool_size": 1},
         # refill the pool once the page that took a kernel has loaded (a kernel running
         # the notebook competes for the CPU with the browser on a small machine)
         "VoilaKernelManager": {"fill_delay": 10}}
CDN_CSS = [f"https://cdn.jsdelivr.net/npm/@fortawesome/fontawesome-free@^5/css/{name}.min.css"
           for name in ("all", "v4-shims")]
TEMPLATE_CONF = {"base_template": "lab"}
TEMPLATE_INDEX = """{#- iommu-lab: Voila's lab template, nothing loaded from other hosts
    (written by tools/jupyter_settings.py; do not edit) -#}
{%- extends 'voila/templates/lab/index.html.j2' -%}
{%- block notebook_css -%}
{{ super()""" + "".join(
    f"""|replace('<link rel="stylesheet" href="{url}" type="text/css" />'|safe, '')"""
    for url in CDN_CSS) + """ }}
{%- endblock notebook_css -%}
{%- block html_head_js_mermaidjs -%}
{%- endblock html_head_js_mermaidjs -%}
"""


def settings_files(prefix: Path | str = sys.prefix) -> dict[Path, dict | str]:
    """Every file this tool writes: JSON settings (dicts) and template text (strings)."""
    prefix = Path(prefix)
    templates = prefix / "share/jupyter/voila/templates" / TEMPLATE
    return {
        prefix / "share/jupyter/lab/settings/overrides.d/iommu-lab.json": LAB,
        prefix / "etc/jupyter/voila.json": VOILA,
        templates / "conf.json": TEMPLATE_CONF,
        templates / "index.html.j2": TEMPLATE_INDEX,
    }


def render(settings: dict | str) -> str:
    if isinstance(settings, str):
        return settings
    return json.dumps(settings, indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if missing or different")
    ap.add_argument("--prefix", default=sys.prefix, help="environment (default: this Python's)")
    args = ap.parse_args(argv)
    stale = []
    for path, settings in settings_files(args.prefix).items():
        text = render(settings)
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        stale.append(path)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if stale and args.check:
        print(f"missing or out of date: {', '.join(map(str, stale))} (run make lab, or "
              f"{sys.executable} tools/jupyter_settings.py)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
