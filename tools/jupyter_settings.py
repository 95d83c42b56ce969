"""Jupyter settings this suite needs in its environment; ``make`` writes them into the venv.

1. JupyterLab opens the lessons (jupytext MyST ``.md``) as notebooks: ``make lab`` opens
   ``00-Index.md`` as a notebook, and so does one click on a lesson in the file browser or on a
   link in the index (no "Open With" needed). Written as default settings for everyone using
   the environment, in the per-package place (a user's own ``overrides.json`` is left alone,
   and settings a user changes in Lab still win)::

       {sys.prefix}/share/jupyter/lab/settings/overrides.d/iommu-lab.json

2. Voilà (``make app``) does not load jupytext's Lab extension, which fails there with a
   console error (RUNTIME-012, shared module @jupyterlab/docmanager) and is of no use in an
   app::

       {sys.prefix}/etc/jupyter/voila.json

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
VOILA = {"VoilaConfiguration": {"extension_denylist": ["jupyterlab-jupytext"]}}


def settings_files(prefix: Path | str = sys.prefix) -> dict[Path, dict]:
    prefix = Path(prefix)
    return {
        prefix / "share/jupyter/lab/settings/overrides.d/iommu-lab.json": LAB,
        prefix / "etc/jupyter/voila.json": VOILA,
    }


def render(settings: dict) -> str:
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
