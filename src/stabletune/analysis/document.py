"""The report's document: Markdown and self-contained HTML written side by side from one sequence of headings,
paragraphs, tables and figures (:class:`Document`). No statistics here: :mod:`stabletune.analysis.sections`
says what to write, :mod:`stabletune.analysis.report` where."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence


# ------------------------------------------------------------------------------------------------
# a tiny document model rendered to Markdown and HTML from the same blocks
# ------------------------------------------------------------------------------------------------
@dataclass
class Cell:
    text: str
    bold: bool = False


@dataclass
class Document:
    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def heading(self, level: int, text: str) -> None:
        self.blocks.append(("h", (level, text)))

    def para(self, text: str) -> None:
        self.blocks.append(("p", text))

    def bullets(self, items: Sequence[str]) -> None:
        self.blocks.append(("ul", list(items)))

    def code(self, text: str) -> None:
        self.blocks.append(("code", text))

    def table(self, header: Sequence[str], rows: Sequence[Sequence[Any]], *, table_id: str, notes: Sequence[str] = (),
              main: bool = False) -> None:
        self.blocks.append(("table", (list(header), [list(r) for r in rows], table_id, list(notes), main)))

    def summary(self, items: Sequence[tuple[str, str]]) -> None:
        """The findings: (html id, sentence) pairs, shown first."""
        self.blocks.append(("summary", list(items)))

    def figure(self, path: Path, caption: str) -> None:
        self.blocks.append(("fig", (path, caption)))

    # -- Markdown ----------------------------------------------------------------------------------
    def markdown(self, root: Path) -> str:
        out: list[str] = []
        for kind, payload in self.blocks:
            if kind == "h":
                out.append("#" * payload[0] + " " + payload[1])
            elif kind == "p":
                out.append(payload)
            elif kind == "ul":
                out.append("\n".join(f"- {item}" for item in payload))
            elif kind == "summary":
                out.append("\n".join(f"- {text}" for _, text in payload))
            elif kind == "code":
                out.append("```\n" + payload.rstrip("\n") + "\n```")
            elif kind == "table":
                header, rows, _, notes, _ = payload

                def md(c: Any) -> str:
                    text = (c.text if isinstance(c, Cell) else str(c)).replace("|", "\\|")
                    return f"**{text}**" if isinstance(c, Cell) and c.bold and text else text

                lines = ["| " + " | ".join(md(h) for h in header) + " |",
                         "|" + "|".join("---" for _ in header) + "|"]
                lines += ["| " + " | ".join(md(c) for c in row) + " |" for row in rows]
                lines += [""] + [f"{n}  " for n in notes] if notes else []
                out.append("\n".join(lines).rstrip())
            elif kind == "fig":
                path, caption = payload
                out.append(f"![{caption}]({path.relative_to(root).as_posix()})\n\n*{caption}*")
        return "\n\n".join(out) + "\n"

    # -- HTML --------------------------------------------------------------------------------------
    def html(self, title: str) -> str:
        esc = html.escape
        body: list[str] = []
        for kind, payload in self.blocks:
            if kind == "h":
                body.append(f"<h{payload[0]}>{esc(payload[1])}</h{payload[0]}>")
            elif kind == "p":
                body.append(f"<p>{inline_md(payload)}</p>")
            elif kind == "ul":
                body.append("<ul>" + "".join(f"<li>{inline_md(i)}</li>" for i in payload) + "</ul>")
            elif kind == "summary":
                body.append('<ul class="summary">' + "".join(f'<li id="{esc(i)}">{inline_md(t)}</li>'
                                                           for i, t in payload) + "</ul>")
            elif kind == "code":
                body.append(f"<pre>{esc(payload)}</pre>")
            elif kind == "table":
                header, rows, table_id, notes, main = payload

                def td(c: Any, tag: str = "td") -> str:
                    text = esc(c.text if isinstance(c, Cell) else str(c))
                    return f"<{tag}>{'<strong>' + text + '</strong>' if isinstance(c, Cell) and c.bold else text}</{tag}>"

                rows_html = "".join("<tr>" + "".join(td(c) for c in row) + "</tr>" for row in rows)
                # wide tables scroll inside their box (phones), the page itself never scrolls sideways
                body.append(f'<div class="scroll"><table id="{esc(table_id)}" class="results{" main" if main else ""}">'
                            "<thead><tr>" + "".join(td(h, "th") for h in header)
                            + f"</tr></thead><tbody>{rows_html}</tbody></table></div>")
                if notes:
                    body.append('<div class="notes">' + "".join(f"<p>{inline_md(n)}</p>" for n in notes) + "</div>")
            elif kind == "fig":
                path, caption = payload
                data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
                body.append(f'<figure><img alt="{esc(caption)}" src="data:image/png;base64,{data}">'
                            f"<figcaption>{esc(caption)}</figcaption></figure>")
        return (
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n"
        )


CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1400px;margin:1em auto;padding:0 1em;
color:#222;line-height:1.4}
h1{border-bottom:2px solid #444;font-size:1.6em;margin:0.3em 0 0.5em}h2{border-bottom:1px solid #bbb;margin-top:2em}
h2{font-size:1.25em}
ul.summary{padding-left:1.2em;margin:0.5em 0 0.8em}ul.summary li{margin:0.25em 0}
ul.summary+h2{margin-top:0.8em}
.scroll{overflow-x:auto;max-width:100%}
table.results{border-collapse:collapse;margin:0.6em 0;font-size:0.9em}
table.results th,table.results td{border:1px solid #ccc;padding:3px 8px;text-align:right;white-space:nowrap}
table.results th{background:#f0f0f0}table.results td:first-child,table.results th:first-child{text-align:left}
table.results tr:nth-child(even){background:#fafafa}
.notes p{font-size:0.85em;color:#555;margin:0.2em 0}
figure{margin:1.5em 0}figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:0.9em;color:#444}
pre{background:#f6f6f6;padding:0.8em;overflow-x:auto;font-size:0.85em}code{background:#f3f3f3}
"""


def inline_md(text: str) -> str:
    """Escape, then render the only inline Markdown this report uses: **bold** and `code`."""
    out, bold, code = [], False, False
    i = 0
    text = html.escape(text)
    while i < len(text):
        if text.startswith("**", i) and not code:
            out.append("</strong>" if bold else "<strong>")
            bold = not bold
            i += 2
        elif text[i] == "`":
            out.append("</code>" if code else "<code>")
            code = not code
            i += 1
        else:
            out.append(text[i])
            i += 1
    if bold:
        out.append("</strong>")
    if code:
        out.append("</code>")
    return "".join(out)
