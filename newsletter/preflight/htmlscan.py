"""The HTML part read once into plain data that every check can use: links, images, elements,
attributes, styles.

The standard library's parser is forgiving (broken markup never raises) and needs no
dependency; a 5 MB part takes about a second, which preflight can afford once.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from html.parser import HTMLParser


@dataclass(frozen=True)
class Image:
    """One ``<img>``: ``alt``, ``width`` and ``height`` are None when the attribute is absent."""

    src: str
    alt: str | None
    width: str | None
    height: str | None


@dataclass
class HtmlScan:
    """What the HTML holds, as plain values: no tree, nothing to walk again."""

    links: list[str] = field(default_factory=list)  # every href of <a> and <area>, in order, as written
    images: list[Image] = field(default_factory=list)
    elements: Counter[str] = field(default_factory=Counter)
    attributes: set[str] = field(default_factory=set)
    element_types: set[tuple[str, str]] = field(default_factory=set)  # ("input", "checkbox")
    inline_styles: list[str] = field(default_factory=list)  # style="..." values
    style_blocks: list[str] = field(default_factory=list)  # <style> contents
    meta_names: set[str] = field(default_factory=set)
    comments: int = 0
    doctype: str = ""


class _Scanner(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.scan = HtmlScan()
        self._in_style = False
        self._style: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        scan = self.scan
        scan.elements[tag] += 1
        values = {name: value for name, value in attrs}
        scan.attributes.update(values)
        kind = values.get("type")
        if kind:
            scan.element_types.add((tag, kind.strip().lower()))
        if values.get("style"):
            scan.inline_styles.append(values["style"] or "")
        if tag in ("a", "area") and "href" in values:
            scan.links.append((values["href"] or "").strip())
        elif tag == "img":
            scan.images.append(
                Image((values.get("src") or "").strip(), values.get("alt"), values.get("width"), values.get("height"))
            )
        elif tag == "meta" and values.get("name"):
            scan.meta_names.add((values["name"] or "").strip().lower())
        elif tag == "style":
            self._in_style = True
            self._style = []

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag == "style":
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag == "style" and self._in_style:
            self.scan.style_blocks.append("".join(self._style))
            self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self._style.append(data)

    def handle_comment(self, data: str) -> None:
        self.scan.comments += 1

    def handle_decl(self, decl: str) -> None:
        if decl.lower().startswith("doctype"):
            self.scan.doctype = decl


def scan_html(html: str) -> HtmlScan:
    """Read ``html`` once; markup errors are skipped over, never raised."""
    scanner = _Scanner()
    scanner.feed(html)
    scanner.close()
    if scanner._in_style:  # an unclosed <style> runs to the end
        scanner.handle_endtag("style")
    return scanner.scan
