"""The study's reports as a static site that opens offline, and DVC's plots page likewise.

    python -m metalearn.site                                   # reports/site/index.html and its pages
    python -m metalearn.site --plots-template .dvc/plots.html  # the template `dvc plots show` uses

The site (:func:`build`) has one page per report: our numbers beside the papers'
(``reports/summary.md``), the claims (``reports/claims.md``), the campaign
(``reports/campaign.md``), every row of ``reports/results.csv``, every executed notebook
(``reports/<stage>/<stage>.ipynb``, in ``dvc.yaml``'s order) and DVC's plots. Every page is
self-contained: images inline as ``data:`` URIs, styles inline, and no script, style sheet,
image, frame or font loaded from another address (:func:`remote_loads` finds any such load;
:func:`build` refuses to write a page that has one). The notebooks are nbconvert's lab template
without its remote scripts (require.js, MathJax, widgets), so TeX in their markdown stays as typed.
The plots template (:func:`plots_template`) inlines Vega, Vega-Lite and Vega-Embed from the
pinned ``vl-convert-python`` package instead of DVC's links to a CDN.
"""
from __future__ import annotations

import argparse
import base64
import html
import mimetypes
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from metalearn import paths

#: a page's loads from another address: a tag's src, a <link>'s href, CSS url() and @import
#: (http, https or protocol-relative ``//``); plain <a href> links are navigation, not loads
_REMOTE = re.compile(
    r"""<(?:script|img|iframe|frame|embed|source|audio|video|track|input)\b[^>]*?\ssrc(?:set)?\s*=\s*["']?((?:https?:)?//[^"'\s>]+)"""
    r"""|<link\b[^>]*?\shref\s*=\s*["']?((?:https?:)?//[^"'\s>]+)"""
    r"""|<object\b[^>]*?\sdata\s*=\s*["']?((?:https?:)?//[^"'\s>]+)"""
    r"""|url\(\s*["']?((?:https?:)?//[^"')\s]+)"""
    r"""|@import\s+["']((?:https?:)?//[^"']+)""",
    re.IGNORECASE)

#: nbconvert's lab template less everything it fetches from a CDN, with a link back to the index
_NOTEBOOK_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block body_header -%}{{ super() }}<p class="site-nav"><a href="index.html">&larr; all reports</a></p>
{%- endblock body_header -%}
"""

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; line-height: 1.45; }}
table {{ border-collapse: collapse; font-size: 0.85em; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.5em; vertical-align: top; }}
th {{ background: #f3f3f3; position: sticky; top: 0; }}
tr:nth-child(even) td {{ background: #fafafa; }}
img {{ max-width: 100%; }}
code {{ background: #f3f3f3; padding: 0 0.2em; }}
</style>
</head>
<body>
{nav}
{body}
</body>
</html>
"""

_NAV = '<p class="site-nav"><a href="index.html">&larr; all reports</a></p>'

#: the markdown reports, in the order the index lists them: (file under reports/, page, title)
#: the markdown reports and their pages (each titled by its first heading, :func:`markdown_title`)
MARKDOWN_REPORTS = (("summary.md", "summary.html"), ("claims.md", "claims.html"), ("campaign.md", "campaign.html"))


def remote_loads(page: str) -> list[str]:
    """The addresses outside the page that a browser would fetch to show it.

    Args:
        page: an HTML document.
    Returns:
        every remote address in a loading position (script/img/iframe/... ``src``, ``<link href>``,
        ``<object data>``, CSS ``url()`` and ``@import``), in order of appearance; ``[]`` for a page
        that opens offline. Links a reader follows (``<a href>``) are not loads.
    """
    return [next(group for group in match.groups() if group) for match in _REMOTE.finditer(page)]


def page(title: str, body: str, nav: bool = True) -> str:
    """A complete HTML page around ``body`` (HTML) with the site's style and a link to the index."""
    return _PAGE.format(title=html.escape(title), body=body, nav=_NAV if nav else "")


def inline_images(body: str, base: Path) -> str:
    """``body`` with every ``<img src>`` relative to ``base`` replaced by a ``data:`` URI.

    Raises:
        FileNotFoundError: an image the page shows does not exist (a broken report).
    """
    def data_uri(match: re.Match) -> str:
        src = match.group(2)
        if re.match(r"^(?:[a-z]+:|//)", src, re.IGNORECASE):
            return match.group(0)
        image = base / html.unescape(src)
        if not image.is_file():
            raise FileNotFoundError(f"{image} (shown by a report in {base}) does not exist")
        kind = mimetypes.guess_type(image.name)[0] or "application/octet-stream"
        encoded = base64.b64encode(image.read_bytes()).decode("ascii")
        return f'{match.group(1)}data:{kind};base64,{encoded}{match.group(3)}'
    return re.sub(r'(<img\b[^>]*?\ssrc=")([^"]+)(")', data_uri, body, flags=re.IGNORECASE)


def markdown_title(markdown_file: Path) -> str:
    """A markdown report's title: its first level-1 heading, else its file name without suffix."""
    for line in markdown_file.read_text().splitlines():
        if line.startswith("# "):
            return line.removeprefix("# ").strip()
    return markdown_file.stem


def markdown_page(markdown_file: Path, title: str) -> str:
    """A markdown report (tables included) as a page, its images inlined."""
    import mistune
    render = mistune.create_markdown(plugins=["table"], escape=False)
    return page(title, inline_images(render(markdown_file.read_text()), markdown_file.parent))


def table_page(csv_file: Path, title: str, intro: str = "") -> str:
    """A CSV table as a page, every row and column of it."""
    import pandas as pd
    table = pd.read_csv(csv_file, keep_default_na=False, dtype=str)
    return page(title, f"<h1>{html.escape(title)}</h1>\n<p>{intro}</p>\n"
                       + table.to_html(index=False, escape=True, border=0))


def notebook_page(notebook: Path) -> str:
    """An executed notebook as a page: nbconvert's lab template with nothing fetched from elsewhere."""
    import jinja2
    import nbformat
    from nbconvert import HTMLExporter
    exporter = HTMLExporter(template_name="lab", template_file="offline.html.j2",
                            extra_loaders=[jinja2.DictLoader({"offline.html.j2": _NOTEBOOK_TEMPLATE})],
                            embed_images=True)
    body, _ = exporter.from_notebook_node(nbformat.read(notebook, as_version=4),
                                          resources={"metadata": {"name": notebook.stem}})
    return body


def plots_template(vega_lite: str = "5.21") -> str:
    """The HTML template for ``dvc plots show`` with Vega, Vega-Lite and Vega-Embed inlined.

    DVC fills ``{plot_divs}`` with one ``<div>`` per plot whose inline script calls
    ``vegaEmbed``; the bundle defines it before them. The template has no ``{scripts}``
    placeholder, so DVC adds no links to its CDN.

    Args:
        vega_lite: the Vega-Lite version compiled into the bundle (DVC's templates are v5 specs).
    """
    import vl_convert
    bundle = vl_convert.javascript_bundle(vl_version=vega_lite).replace("</script", "<\\/script")
    return ("<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n<title>DVC plots</title>\n"
            "{refresh_tag}\n<style>table { border-spacing: 15px; }</style>\n"
            f"<script>\n{bundle}\n</script>\n</head>\n<body>\n{{plot_divs}}\n</body>\n</html>\n")


def _stages(root: Path) -> list[str]:
    """The stages of ``dvc.yaml`` in its order."""
    return list(yaml.safe_load((root / "dvc.yaml").read_text())["stages"])


def _notebook_title(notebook: Path) -> str:
    """The first heading of a notebook's first markdown cell, or its name."""
    import nbformat
    for cell in nbformat.read(notebook, as_version=4).cells:
        if cell.cell_type == "markdown":
            heading = re.search(r"^#+\s*(.+)$", cell.source, re.MULTILINE)
            if heading:
                return heading.group(1).strip()
    return notebook.stem


def _dvc_plots(root: Path, out: Path) -> Path:
    """``dvc plots show`` of ``root`` into ``out`` with the repository's template (``.dvc/plots.html``,
    which ``make env`` writes from :func:`plots_template`; written here where it is missing); its
    index page."""
    template = root / ".dvc" / "plots.html"
    if not template.is_file():
        template.write_text(plots_template())
    subprocess.run([sys.executable, "-m", "dvc", "plots", "show", "--out", str(out), "--html-template", str(template)],
                   cwd=root, check=True, capture_output=True)
    return out / "index.html"


def build(root: Path | None = None, out: Path | None = None, dvc_plots: bool = True) -> list[Path]:
    """Write the site: ``index.html`` and one page per report, all opening offline.

    The pages are written to a temporary folder beside ``out`` and moved into place together
    (an interrupted build leaves the previous site as it was).

    Args:
        root: the study's root (default: :data:`metalearn.paths.ROOT`).
        out: the site's folder (default: ``reports/site`` under ``root``).
        dvc_plots: also render ``dvc plots show`` (needs ``root`` to be a DVC repository).
    Returns:
        the pages written, index first.
    Raises:
        ValueError: a page would load something from the network (names it and what).
    """
    root = Path(root or paths.ROOT)
    out = Path(out or root / "reports" / "site")
    reports = root / "reports"
    entries: list[tuple[str, str, str]] = []   # (page, title, source)
    pages: dict[str, str] = {}
    for source, name in MARKDOWN_REPORTS:
        if (reports / source).is_file():
            title = markdown_title(reports / source)
            pages[name] = markdown_page(reports / source, title)
            entries.append((name, title, f"reports/{source}"))
    if (reports / "results.csv").is_file():
        title = "Every result"
        pages["results.html"] = table_page(
            reports / "results.csv", title,
            "Every row of <code>reports/results.csv</code>: experiment id, setting, metric, our value "
            "with its 95% confidence half-width, the paper's number where it gives one, and the scale.")
        entries.append(("results.html", title, "reports/results.csv"))
    for stage in _stages(root):
        notebook = reports / stage / f"{stage}.ipynb"
        if notebook.is_file():
            print(f"site: {stage}", flush=True)
            pages[f"{stage}.html"] = notebook_page(notebook)
            entries.append((f"{stage}.html", _notebook_title(notebook), f"stage {stage}"))
    for name, text in pages.items():
        if remote_loads(text):
            raise ValueError(f"the site's page {name} would load {remote_loads(text)[:3]} from the network")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".site-", dir=out.parent))
    staging.chmod(0o755)  # mkdtemp's 0700 would hide the site from a web server or another user
    try:
        if dvc_plots:
            plots = _dvc_plots(root, staging / "plots")
            if remote_loads(plots.read_text()):
                raise ValueError(f"dvc plots show wrote a page that loads {remote_loads(plots.read_text())[:3]}")
            entries.append((plots.relative_to(staging).as_posix(), "DVC's plots (dvc plots show)", "dvc.yaml plots"))
        rows = "\n".join(f'<tr><td><a href="{name}">{html.escape(title)}</a></td><td><code>{source}</code></td></tr>'
                         for name, title, source in entries)
        tally = re.search(r"^reproduced: \d+;.*$", (reports / "claims.md").read_text(), re.MULTILINE) \
            if (reports / "claims.md").is_file() else None
        index = page("Meta-learning reproduction study: reports",
                     "<h1>Meta-learning reproduction study: reports</h1>\n<p>Every page below is written "
                     "by <code>python -m metalearn.site</code> from the pipeline's outputs and opens "
                     "without a network.</p>\n"
                     + (f"<p>The papers' claims at this study's scale: {html.escape(tally.group(0))}.</p>\n"
                        if tally else "")
                     + "<table><tr><th>report</th><th>from</th></tr>\n" + rows + "\n</table>", nav=False)
        written = [staging / "index.html"] + ([plots] if dvc_plots else [])
        written[0].write_text(index)
        for name, text in pages.items():
            (staging / name).write_text(text)
            written.append(staging / name)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return [out / path.relative_to(staging) for path in written]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m metalearn.site", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="the site's folder (default reports/site)")
    parser.add_argument("--plots-template", type=Path, metavar="PATH",
                        help="write only the offline template for `dvc plots show` to PATH")
    args = parser.parse_args(argv)
    if args.plots_template:
        args.plots_template.write_text(plots_template())
        print(f"wrote {args.plots_template}")
        return
    written = build(out=args.out)
    print(f"wrote {len(written)} pages; open {written[0]}")


if __name__ == "__main__":
    main()
