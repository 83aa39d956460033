"""A tiny document model rendered to Markdown and to self-contained HTML.

The report is built once as a list of blocks; both renderers walk the same list, so report.md and
report.html never disagree. Figures are linked (Markdown) or embedded as base64 PNG (HTML).
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    caption: str = ""


@dataclass(frozen=True)
class Figure:
    path: Path
    caption: str


@dataclass(frozen=True)
class Code:
    text: str


Block = Heading | Paragraph | Bullets | Table | Figure | Code


@dataclass
class Document:
    title: str
    blocks: list[Block] = field(default_factory=list)

    def add(self, *blocks: Block) -> None:
        self.blocks.extend(blocks)

    def figure(self, path: Path, caption: str) -> None:
        """Add a figure if its file exists; otherwise say plainly that it is missing."""
        if Path(path).is_file():
            self.add(Figure(Path(path), caption))
        else:
            self.add(Paragraph(f"*(figure not available: {Path(path).name} was not produced by this run)*"))


def render_markdown(doc: Document, base: Path) -> str:
    out = [f"# {doc.title}", ""]
    for b in doc.blocks:
        if isinstance(b, Heading):
            out += [f"{'#' * b.level} {b.text}", ""]
        elif isinstance(b, Paragraph):
            out += [b.text, ""]
        elif isinstance(b, Bullets):
            out += [f"- {item}" for item in b.items] + [""]
        elif isinstance(b, Table):
            if b.caption:
                out += [f"*{b.caption}*", ""]
            out.append("| " + " | ".join(b.headers) + " |")
            out.append("|" + "|".join("---" for _ in b.headers) + "|")
            out += ["| " + " | ".join(row) + " |" for row in b.rows]
            out.append("")
        elif isinstance(b, Figure):
            rel = Path(b.path).resolve().relative_to(base.resolve())
            out += [f"![{b.caption}]({rel.as_posix()})", "", f"*{b.caption}*", ""]
        elif isinstance(b, Code):
            out += ["```", b.text, "```", ""]
    return "\n".join(out)


_STYLE = """
body { font-family: -apple-system, 'Segoe UI', Roboto, sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1.5em; color: #222; line-height: 1.5; }
h1 { border-bottom: 2px solid #444; padding-bottom: .3em; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 1em 0; display: block; max-width: 100%; overflow-x: auto; }
th, td { border: 1px solid #ccc; padding: .3em .7em; text-align: left; vertical-align: top; }
td { overflow-wrap: anywhere; }
td.num { text-align: right; white-space: nowrap; }
th { background: #f3f3f3; }
figure { margin: 1.2em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption, .caption { color: #555; font-size: .92em; }
pre { background: #f6f6f6; padding: .8em; overflow-x: auto; font-size: .85em; }
code { background: #f3f3f3; padding: 0 .2em; }
"""


def _inline(text: str) -> str:
    """Escape, then render the small Markdown subset used in the report (`code`, **bold**, *italic*)."""
    t = html.escape(text)
    t = re.sub(r"`([^`]+)`", r"<code>\1</code>", t)
    t = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", t)
    t = re.sub(r"(?<![\w*])\*([^*]+)\*(?![\w*])", r"<em>\1</em>", t)
    return t


_NUMBER = re.compile(r"^[-+]?[\d.,]+( ?(%|px|min|s))?( \([-+\d.,]+\))?$|^—$")


def _cell(text: str) -> str:
    """A table cell; numbers are right-aligned so columns of figures line up."""
    cls = " class='num'" if _NUMBER.match(text.strip()) else ""
    return f"<td{cls}>{_inline(text)}</td>"


def render_html(doc: Document) -> str:
    parts = [f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
             f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
             f"<title>{html.escape(doc.title)}</title><style>{_STYLE}</style></head><body>",
             f"<h1>{html.escape(doc.title)}</h1>"]
    for b in doc.blocks:
        if isinstance(b, Heading):
            parts.append(f"<h{b.level}>{_inline(b.text)}</h{b.level}>")
        elif isinstance(b, Paragraph):
            parts.append(f"<p>{_inline(b.text)}</p>")
        elif isinstance(b, Bullets):
            parts.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Table):
            cap = f"<p class='caption'>{_inline(b.caption)}</p>" if b.caption else ""
            head = "".join(f"<th>{_inline(h)}</th>" for h in b.headers)
            body = "".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in b.rows)
            parts.append(f"{cap}<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif isinstance(b, Figure):
            data = base64.b64encode(Path(b.path).read_bytes()).decode()
            parts.append(f"<figure><img alt='{html.escape(b.caption)}' src='data:image/png;base64,{data}'>"
                         f"<figcaption>{_inline(b.caption)}</figcaption></figure>")
        elif isinstance(b, Code):
            parts.append(f"<pre>{html.escape(b.text)}</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)
