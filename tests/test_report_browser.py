"""The HTML report's per-layer sections and links, and the report rendered in a real headless browser: it renders,
every figure loads, no external resource is requested. The browser test is skipped where no Chromium is installed
(scripts/setup.sh installs Debian's `chromium`)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from conftest import run_tiny
from lottery.reports import write_report

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
HEADLESS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND",
)
# Added to a copy of the report (the report itself has no script): after the page has loaded, write what the browser
# saw into the DOM, which --dump-dom prints.
PROBE = """<script>
window.addEventListener("load", () => {
  const images = [...document.images].map(i => ({src: i.getAttribute("src").slice(0, 22), width: i.naturalWidth,
                                                 height: i.naturalHeight, complete: i.complete}));
  const resources = performance.getEntriesByType("resource").map(e => e.name);
  const out = document.createElement("pre");
  out.id = "lottery-probe";
  out.textContent = JSON.stringify({images, resources, title: document.title,
                                    headings: [...document.querySelectorAll("h2")].map(h => h.textContent)});
  document.body.appendChild(out);
});
</script>"""


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run, _ = run_tiny(
        tmp_path_factory.mktemp("runs"),
        "imp.levels=2",
        "imp.rewind=['20it']",
        "controls.kinds=['random_prune']",
        "replicates=2",
    )
    return write_report(run.path)


class Links(HTMLParser):
    """Every link (href), image (src) and table cell text of a page, by table id."""

    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.srcs: list[str] = []
        self.cells: dict[str, list[tuple[str, bool]]] = {}  # table id -> (cell text, holds a link)
        self.table: str | None = None
        self.cell: list | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        if tag == "a":
            self.hrefs.append(a["href"])
            if self.cell is not None:
                self.cell[1] = True
        elif tag == "img":
            self.srcs.append(a["src"])
        elif tag == "table":
            self.table = a.get("id")
        elif tag == "td" and self.table:
            self.cell = ["", False]

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self.cell is not None:
            self.cells.setdefault(self.table, []).append((self.cell[0].strip(), self.cell[1]))
            self.cell = None
        elif tag == "table":
            self.table = None

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell[0] += data


def test_report_links_every_number_to_its_run(report: Path) -> None:
    page = Links()
    page.feed(report.read_text())
    runs = json.loads((report.parent.parent / "results.json").read_text())["runs"]
    assert len(page.cells["runs"]) == 10 * len(runs)
    assert all(linked for _, linked in page.cells["runs"]), "a number of the runs table without a link"
    density = page.cells["layer-density-k20"]
    assert len(density) == 3 * 4 and all(linked for i, (_, linked) in enumerate(density) if i % 4)  # but the names
    local = [h for h in page.hrefs if not h.startswith("#")]
    assert any(h.endswith("/sparsity.json") for h in local) and any(h.endswith("/summary.json") for h in local)
    for href in local:  # relative, and pointing at something that exists
        assert not re.match(r"^[a-z]+:|^//", href), href
        assert (report.parent / href.split("#")[0]).exists(), href  # a fragment names a section of the file
    for name in ("layer_density_vs_level", "weight_magnitudes_k20_level2"):
        assert (report.parent / f"{name}.png").exists()
        assert f'id="{name}"' in report.read_text()


def browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


@pytest.mark.skipif(browser() is None, reason="no headless browser installed (apt-get install chromium)")
def test_report_renders_in_a_headless_browser(report: Path, tmp_path: Path) -> None:
    html = report.read_text()
    assert "<script" not in html.lower()
    probe = report.parent / "probe.html"  # next to the report: relative links resolve the same way
    probe.write_text(html.replace("</body>", PROBE + "</body>"))
    try:
        result = subprocess.run(
            [
                browser(),
                *HEADLESS,
                f"--user-data-dir={tmp_path / 'profile'}",
                "--virtual-time-budget=10000",
                "--dump-dom",
                probe.resolve().as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        probe.unlink()
    found = re.search(r'<pre id="lottery-probe">(.*?)</pre>', result.stdout, re.S)
    assert found, f"the page did not load (exit {result.returncode}): {result.stderr[-2000:]}"
    seen = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<"))
    pngs = sorted(report.parent.glob("*.png"))
    assert len(seen["images"]) == len(pngs) >= 5
    for image in seen["images"]:
        assert image["src"].startswith("data:image/png") and image["complete"]
        assert image["width"] > 0 and image["height"] > 0, image  # decoded: the figure loads
    assert seen["resources"] == [], "the report requested resources"  # data: URIs are not requests
    assert seen["title"].startswith("Lottery experiment")
    assert {"Results", "Density per layer", "Figures"} <= set(seen["headings"])
