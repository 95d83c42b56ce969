"""Apps start fast and fetch nothing from other hosts (issue 13), checked without a browser:
the Voilà settings `make app` writes, the offline template, the browser tests' request
rule, and that the app notebooks' kernel does not import what made them slow."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "tests" / "browser"))

import helpers  # noqa: E402
import jupyter_settings  # noqa: E402


def test_voila_settings_preheat_and_use_the_offline_template(tmp_path):
    assert jupyter_settings.main(["--prefix", str(tmp_path)]) == 0
    conf = json.loads((tmp_path / "etc/jupyter/voila.json").read_text())
    voila = conf["VoilaConfiguration"]
    assert voila["preheat_kernel"] is True and voila["default_pool_size"] >= 1
    assert voila["template"] == "iommu-lab"
    assert conf["VoilaKernelManager"]["fill_delay"] >= 5
    tdir = tmp_path / "share/jupyter/voila/templates/iommu-lab"
    assert json.loads((tdir / "conf.json").read_text()) == {"base_template": "lab"}
    assert jupyter_settings.main(["--check", "--prefix", str(tmp_path)]) == 0
    (tdir / "index.html.j2").write_text("changed")
    assert jupyter_settings.main(["--check", "--prefix", str(tmp_path)]) == 1


def test_the_template_removes_every_remote_link_of_voilas_lab_template():
    """If Voilà's lab template links another remote file, or spells a link differently,
    this fails (the browser tests would then see the request too)."""
    lab = Path(sys.prefix) / "share/jupyter/voila/templates/lab/index.html.j2"
    links = re.findall(r'<link [^>]*href="https?://[^"]+"[^>]*/>', lab.read_text())
    assert links, "Voilà's lab template no longer links remote CSS: drop the replace filters"
    ours = jupyter_settings.TEMPLATE_INDEX
    for link in links:
        assert f"replace('{link}'|safe, '')" in ours, link
    assert "{%- block html_head_js_mermaidjs -%}\n{%- endblock" in ours


def test_any_request_off_the_machine_is_a_problem():
    log = helpers.PageLog()
    for url in ("http://127.0.0.1:8888/lab", "ws://localhost:9/api/kernels/x",
                "http://[::1]:80/x", "data:text/css,", "blob:http://127.0.0.1/abc"):
        log._on_request(SimpleNamespace(url=url))
    assert log.external == [] and log.local == 3
    for url in ("https://cdn.jsdelivr.net/npm/@fortawesome/fontawesome-free@^5/css/all.min.css",
                "http://127.0.0.1.example.com/x", "https://fonts.googleapis.com/css"):
        log._on_request(SimpleNamespace(url=url))
    assert len(log.external) == 3
    assert all(p.startswith("request to the internet") for p in log.problems())


def test_the_stepper_apps_kernel_skips_the_slow_imports():
    """Running app-stepper's code imports no nbformat: through jsonschema's format
    checkers it costs seconds (rfc3987-syntax builds grammars at import)."""
    nb = json.loads((ROOT / "notebooks/app-stepper.ipynb").read_text())
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    probe = code + "\nimport sys\nprint(sorted(m for m in sys.modules if m.startswith(" \
        "('nbformat', 'jsonschema', 'rfc3987'))))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_make_app_serves_every_app_with_preheated_kernels():
    """`make app` runs one Voilà on notebooks/ (every app-*.ipynb, each with its pool of
    VOILA_POOL preheated kernels), on localhost with a token, and prints each app's URL."""
    out = subprocess.run(["make", "-n", "app", "VOILA_POOL=3", "PORT=9999"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    assert re.search(r"/voila notebooks --Voila\.ip=127\.0\.0\.1 --port=9999\b", out), out
    assert "--pool_size=3" in out and "--token=" in out and "--no-browser" in out
    apps = sorted(p.name for p in (ROOT / "notebooks").glob("app-*.ipynb"))
    assert len(apps) >= 3
    for app in apps:
        assert f" {app}" in out, app                     # its URL is printed
    assert "/voila/render/$a?token=$token" in out
