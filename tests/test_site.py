"""The static site and the DVC plots template open offline (issue 19): known loads are found, and
every page the site writes loads nothing from the network."""
import base64

import nbformat
import pytest
from nbconvert import HTMLExporter

from metalearn import site

# a 1x1 PNG
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==")


def test_remote_loads_finds_every_kind_of_load_and_no_link_or_local_file():
    page = """<html><head>
    <script src="https://cdn.example/a.js"></script><link rel="stylesheet" href="//fonts.example/b.css">
    <style>@import "http://css.example/c.css"; body { background: url('https://img.example/d.png') }</style>
    <script src="static/local.js"></script><link rel="stylesheet" href="style.css"></head><body>
    <img alt="x" src='http://img.example/e.png'><iframe src="https://frame.example/f"></iframe>
    <a href="https://arxiv.org/abs/1703.03400">the MAML paper</a><img src="data:image/png;base64,AAAA">
    <object data="https://obj.example/g.svg"></object></body></html>"""
    assert site.remote_loads(page) == ["https://cdn.example/a.js", "//fonts.example/b.css",
                                       "http://css.example/c.css", "https://img.example/d.png",
                                       "http://img.example/e.png", "https://frame.example/f",
                                       "https://obj.example/g.svg"]
    assert site.remote_loads('<a href="https://example.org">x</a><img src="fig.png">') == []


def _notebook(path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Freezing layers at test time\n\nThe cost is $x^2$."),
                nbformat.v4.new_code_cell("plot()", outputs=[nbformat.v4.new_output(
                    "display_data", data={"image/png": base64.b64encode(PNG).decode()})])]
    nbformat.write(nb, path)
    return path


def test_a_notebook_page_shows_its_figures_and_fetches_nothing(tmp_path):
    notebook = _notebook(tmp_path / "freeze.ipynb")
    page = site.notebook_page(notebook)
    assert site.remote_loads(page) == []
    assert "data:image/png;base64," + base64.b64encode(PNG).decode() in page
    assert "Freezing layers at test time" in page and 'href="index.html"' in page
    # what the override removes: nbconvert's own lab page fetches require.js and MathJax from a CDN
    default, _ = HTMLExporter(template_name="lab").from_notebook_node(nbformat.read(notebook, as_version=4))
    assert len(site.remote_loads(default)) >= 2


def test_a_markdown_report_keeps_its_tables_and_inlines_its_images(tmp_path):
    (tmp_path / "fig").mkdir()
    (tmp_path / "fig" / "curve.png").write_bytes(PNG)
    report = tmp_path / "campaign.md"
    report.write_text("# Campaign\n\n| run | accuracy |\n|---|---|\n| maml | 36.7 |\n\n![curve](fig/curve.png)\n")
    page = site.markdown_page(report, "The campaign")
    assert "<table>" in page and "<td>36.7</td>" in page
    assert 'src="data:image/png;base64,' in page and "fig/curve.png" not in page
    assert site.remote_loads(page) == []
    report.write_text("![gone](fig/missing.png)\n")
    with pytest.raises(FileNotFoundError, match="missing.png"):
        site.markdown_page(report, "The campaign")


def test_the_plots_template_brings_vega_itself_and_dvc_fills_it():
    from dvc_render.html import HTML
    from dvc_render.vega import VegaRenderer
    template = site.plots_template()
    assert "{plot_divs}" in template and "{scripts}" not in template  # DVC inserts its CDN links at {scripts}
    assert "window.vegaEmbed=" in template.replace(" ", "")
    page = HTML(template).with_scripts(VegaRenderer.SCRIPTS).with_element(
        VegaRenderer.DIV.format(id="p", partial="{}")).embed()
    assert site.remote_loads(page) == []
    assert "vegaEmbed('#p', spec)" in page
    assert site.remote_loads(VegaRenderer.SCRIPTS)  # what DVC's default page would load


def _study(root):
    (root / "reports" / "freeze").mkdir(parents=True)
    (root / "dvc.yaml").write_text("stages:\n  prepare:\n    cmd: x\n  freeze:\n    cmd: y\n")
    _notebook(root / "reports" / "freeze" / "freeze.ipynb")
    (root / "reports" / "summary.md").write_text("# Ours beside the papers'\n\n| a | b |\n|---|---|\n| 1 | 2 |\n")
    (root / "reports" / "results.csv").write_text("experiment,setting,metric,value,ci95,paper,scale\n"
                                                  "A-freeze,maml 1-4,cost,20.8,1.8,,300 tasks\n")


def test_the_site_has_an_index_and_a_page_per_report_and_refuses_a_remote_load(tmp_path):
    _study(tmp_path)
    out = tmp_path / "reports" / "site"
    written = site.build(tmp_path, out, dvc_plots=False)
    assert [p.name for p in written] == ["index.html", "summary.html", "results.html", "freeze.html"]
    index = written[0].read_text()
    for page in written:
        assert site.remote_loads(page.read_text()) == [], page
        assert page == written[0] or f'href="{page.name}"' in index
    assert "<td>A-freeze</td>" in (out / "results.html").read_text()
    # a report that would load a script from elsewhere stops the build, and the last site stays
    (tmp_path / "reports" / "summary.md").write_text('<script src="https://cdn.example/x.js"></script>\n')
    with pytest.raises(ValueError, match="summary.html would load"):
        site.build(tmp_path, out, dvc_plots=False)
    assert "<td>1</td>" in (out / "summary.html").read_text()
    assert not list(out.parent.glob(".site-*"))  # no half-written folder left


def test_a_markdown_report_is_titled_by_its_first_heading(tmp_path):
    report = tmp_path / "campaign.md"
    report.write_text("Intro line\n## not this\n# The campaign: where each run stands\n\n# Later\n")
    assert site.markdown_title(report) == "The campaign: where each run stands"
    report.write_text("| no | heading |\n")
    assert site.markdown_title(report) == "campaign"
