"""The CSS check: HTML and CSS features of the edition that major mail clients ignore or mangle.

Support comes from a bundled digest of caniemail (data/caniemail.json, MIT licence; see
data/README.md): per feature, how to spot it and how the latest tests of Apple Mail, Gmail,
Outlook, Yahoo, Samsung Email and Thunderbird went. The features are read off the final
HTML, after inlining: style attributes, what is left in <style> (media queries), elements,
attributes and image formats.

Many unsupported features are harmless by design (``max-width`` beside a ``width`` that
Outlook uses instead), so these are warnings, never errors, and partial support is a
note. To keep the report short, features are grouped by the client and platforms that
share the same gap: one line per group, not one per feature and client.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from newsletter.preflight.findings import Finding, info, listed, warning
from newsletter.preflight.htmlscan import HtmlScan

CHECK = "css"
DATA = "data/caniemail.json"
_COMMENT = re.compile(r"/\*.*?\*/", re.S)
_STRING = re.compile(r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'")
_URL = re.compile(r"url\([^)]*\)", re.I)
_FUNCTION = re.compile(r"([a-z][a-z0-9-]*)\(", re.I)
_UNIT = re.compile(r"(?<![a-z0-9#-])[+-]?(?:\d+\.?\d*|\.\d+)(%|[a-z]+)", re.I)
_WORD = re.compile(r"(?<![\w#.-])-?[a-z][a-z0-9-]*", re.I)
_IMPORTANT = re.compile(r"!\s*important\s*$", re.I)
_MEDIA_FEATURE = re.compile(r"\(\s*([a-z-]+)\s*[:)]", re.I)
_PSEUDO = re.compile(r"(::?)([a-z-]+)", re.I)
_ATTRIBUTE_SELECTOR = re.compile(r"\[[^\]]*\]")
# Before CSS 3 these pseudo-elements took one colon; the rest with one colon are pseudo-classes.
_OLD_PSEUDO_ELEMENTS = frozenset({"before", "after", "first-line", "first-letter"})
_DECLARATION_BLOCKS = frozenset({"rule", "frame", "at:font-face", "at:page"})


@cache
def caniemail() -> dict[str, Any]:
    """The bundled support data, read once per process."""
    return json.loads(resources.files("newsletter.preflight").joinpath(DATA).read_text(encoding="utf-8"))


@dataclass
class Usage:
    """What the HTML uses, in the vocabulary of caniemail's "match" entries."""

    property: set[str] = field(default_factory=set)
    value: set[tuple[str, str]] = field(default_factory=set)
    function: set[str] = field(default_factory=set)
    unit: set[str] = field(default_factory=set)
    keyword: set[str] = field(default_factory=set)
    at_rule: set[str] = field(default_factory=set)
    media_feature: set[str] = field(default_factory=set)
    pseudo_class: set[str] = field(default_factory=set)
    pseudo_element: set[str] = field(default_factory=set)
    selector: set[str] = field(default_factory=set)
    element: set[str] = field(default_factory=set)
    element_type: set[tuple[str, str]] = field(default_factory=set)
    attribute: set[str] = field(default_factory=set)
    href_prefix: set[str] = field(default_factory=set)
    meta: set[str] = field(default_factory=set)
    image_format: set[str] = field(default_factory=set)
    flags: set[str] = field(default_factory=set)  # important, custom_property, css_comment, html_comment, doctype

    def uses(self, match: Mapping[str, Any]) -> bool:
        """Whether anything the feature's ``match`` names is used (any one of its entries)."""
        for kind, wanted in match.items():
            if wanted is True:
                if kind in self.flags:
                    return True
                continue
            have = getattr(self, kind, None)
            if have is None:
                continue
            items = [tuple(w) if isinstance(w, list) else w for w in wanted]
            if kind == "href_prefix":
                if any(h.startswith(w) for h in have for w in items):
                    return True
            elif have.intersection(items):
                return True
        return False


# --- reading the CSS ------------------------------------------------------------------------


def _declarations(body: str, usage: Usage) -> None:
    depth, start, parts = 0, 0, []
    for i, c in enumerate(body):
        if c == "(":
            depth += 1
        elif c == ")":
            depth = max(0, depth - 1)
        elif c == ";" and depth == 0:
            parts.append(body[start:i])
            start = i + 1
    parts.append(body[start:])
    for part in parts:
        name, sep, value = part.partition(":")
        name = name.strip().lower()
        if not sep or not name:
            continue
        if _IMPORTANT.search(value):
            usage.flags.add("important")
            value = _IMPORTANT.sub("", value)
        if name.startswith("--"):
            usage.flags.add("custom_property")
            continue
        usage.property.add(name)
        _value(name, value, usage)


def _value(name: str, value: str, usage: Usage) -> None:
    plain = _URL.sub(" ", _STRING.sub(" ", value)).lower()
    functions = {f.lower() for f in _FUNCTION.findall(plain)}
    usage.function.update(functions)
    if "var" in functions:
        usage.flags.add("custom_property")
    usage.unit.update(u.lower() for u in _UNIT.findall(plain))
    words = {w.lower() for w in _WORD.findall(_FUNCTION.sub(" ", plain))}
    usage.keyword.update(words)
    usage.value.update((name, w) for w in words)
    if name == "font-family":  # quoted family names: "system-ui" is a keyword only unquoted, but be kind
        usage.keyword.update(w.strip("\"' ").lower() for w in value.split(","))


def _selectors(prelude: str, usage: Usage) -> None:
    group = [s.strip() for s in prelude.split(",") if s.strip()]
    if len(group) > 1:
        usage.selector.add("grouping")
    for selector in group:
        if _ATTRIBUTE_SELECTOR.search(selector):
            usage.selector.add("attribute")
        bare = _ATTRIBUTE_SELECTOR.sub("[]", selector)
        for colons, name in _PSEUDO.findall(bare):
            name = name.lower()
            if colons == "::" or name in _OLD_PSEUDO_ELEMENTS:
                usage.pseudo_element.add(name)
            else:
                usage.pseudo_class.add(name)
        bare = re.sub(r"::?[a-z-]+(\([^)]*\))?", "", bare, flags=re.I)
        for symbol, kind in ((">", "child"), ("+", "adjacent-sibling"), ("~", "general-sibling")):
            if symbol in bare:
                usage.selector.add(kind)
        compounds = re.split(r"\s*[>+~]\s*|\s+", bare.strip())
        if len([c for c in re.split(r"\s+", re.sub(r"\s*[>+~]\s*", ">", bare.strip())) if c]) > 1:
            usage.selector.add("descendant")
        for compound in filter(None, compounds):
            if compound.startswith("*"):
                usage.selector.add("universal")
            if re.match(r"[a-z]", compound, re.I):
                usage.selector.add("type")
            if "." in compound:
                usage.selector.add("class")
            if "#" in compound:
                usage.selector.add("id")
            simple = re.findall(r"[.#]?[a-z0-9_-]+|\*|\[\]", compound, re.I)
            if len(simple) > 1:
                usage.selector.add("chaining")


def read_stylesheet(css: str, usage: Usage) -> None:
    """At-rules, media features, selectors and declarations of one <style> block."""
    if _COMMENT.search(css):
        usage.flags.add("css_comment")
    css = _COMMENT.sub(" ", css)
    stack: list[str] = []
    buffer: list[str] = []
    for c in _characters(css):
        if c == "{":
            prelude = "".join(buffer).strip()
            buffer = []
            top = stack[-1] if stack else ""
            if top in _DECLARATION_BLOCKS and ";" in prelude:  # nested rule after declarations
                before, _, prelude = prelude.rpartition(";")
                _declarations(before, usage)
            if prelude.startswith("@"):
                name = re.match(r"@([a-z-]+)", prelude, re.I)
                at = name[1].lower() if name else ""
                usage.at_rule.add(at)
                if at == "media":
                    usage.media_feature.update(f.lower() for f in _MEDIA_FEATURE.findall(prelude))
                stack.append(f"at:{at}")
            elif top == "at:keyframes":
                stack.append("frame")
            else:
                _selectors(prelude, usage)
                stack.append("rule")
        elif c == "}":
            body = "".join(buffer)
            buffer = []
            if (stack.pop() if stack else "") in _DECLARATION_BLOCKS:
                _declarations(body, usage)
        elif c == ";" and (not stack or stack[-1] not in _DECLARATION_BLOCKS):
            statement = "".join(buffer).strip()
            buffer = []
            if name := re.match(r"@([a-z-]+)", statement, re.I):
                usage.at_rule.add(name[1].lower())
        else:
            buffer.append(c)


def _characters(css: str) -> Iterator[str]:
    """The stylesheet's characters, with braces and semicolons inside strings neutralised."""
    quote = ""
    for c in css:
        if quote:
            if c == quote:
                quote = ""
            yield " " if c in "{};" else c
        else:
            if c in "\"'":
                quote = c
            yield c


# --- reading the HTML -------------------------------------------------------------------------


def usage_of(scan: HtmlScan) -> Usage:
    """Everything the HTML uses, ready to look up."""
    usage = Usage()
    for style in scan.inline_styles:
        _declarations(style, usage)
    for block in scan.style_blocks:
        read_stylesheet(block, usage)
    usage.element.update(scan.elements)
    usage.attribute.update(scan.attributes)
    usage.element_type.update(scan.element_types)
    usage.href_prefix.update(h.lower() for h in scan.links)
    usage.meta.update(scan.meta_names)
    if scan.comments:
        usage.flags.add("html_comment")
    if scan.doctype:
        usage.flags.add("doctype")
    for image in scan.images:
        if image.src.lower().startswith("data:"):
            usage.image_format.add("base64")
            continue
        try:
            path = urlsplit(image.src).path
        except ValueError:
            continue
        extension = path.rpartition(".")[2].lower() if "." in path.rpartition("/")[2] else ""
        if extension:
            usage.image_format.add(extension)
    return usage


# --- support ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Gap:
    """A used feature that one client does not support, or supports only in part, on some platforms."""

    client: str
    feature: str  # slug
    platforms: tuple[str, ...]  # where the gap is
    everywhere: bool  # on every platform the data has for this client
    partial: bool


def gaps(usage: Usage, data: Mapping[str, Any]) -> tuple[list[Gap], int]:
    """Each used feature's gaps per client (not supported beats partly supported), and how
    many features were used."""
    found: list[Gap] = []
    used = 0
    for slug, feature in sorted(data["features"].items()):
        if not feature.get("match") or not usage.uses(feature["match"]):
            continue
        used += 1
        for client in data["clients"]:
            support = feature["support"].get(client, {})
            for letter, partial in (("n", False), ("a", True)):
                where = tuple(sorted(p for p, s in support.items() if s == letter))
                if where:
                    found.append(Gap(client, slug, where, len(where) == len(support), partial))
                    break
    return found, used


def check_css(scan: HtmlScan, data: Mapping[str, Any] | None = None) -> list[Finding]:
    """A warning per client that ignores features the edition uses, one note for partial support.

    Grouped so the report stays short: the client's line lists the features (with the
    platforms, when not all of them), the most common gaps first.
    """
    data = data or caniemail()
    found_gaps, used = gaps(usage_of(scan), data)
    found: list[Finding] = []
    missing = [g for g in found_gaps if not g.partial]
    clients = sorted({g.client for g in missing}, key=lambda c: (-sum(g.client == c for g in missing), c))
    for client in clients:
        mine = sorted((g for g in missing if g.client == client), key=lambda g: (not g.everywhere, g.feature))
        shown = [_title(g, data, with_platforms=True) for g in mine]
        name = data["clients"].get(client, client)
        text = f"{name} does not support {_features(len(mine))}: {listed(shown, 6)}"
        found.append(warning(CHECK, text, ",".join(g.feature for g in mine)))
    partial = [g for g in found_gaps if g.partial]
    if partial:
        features = list(dict.fromkeys(g.feature for g in partial))
        per_client = sorted({g.client for g in partial}, key=lambda c: -sum(g.client == c for g in partial))
        counts = ", ".join(f"{data['clients'].get(c, c)} {sum(g.client == c for g in partial)}" for c in per_client)
        titles = [data["features"][f]["title"] for f in features]
        text = f"partly supported in some clients ({counts}): {listed(titles, 6)}"
        found.append(info(CHECK, text, ",".join(features)))
    found.append(
        info(
            CHECK,
            f"{used} HTML and CSS features checked against caniemail.com's data of {data['source']['date']} "
            "(details: https://www.caniemail.com/features/)",
        )
    )
    return found


def _title(gap: Gap, data: Mapping[str, Any], *, with_platforms: bool) -> str:
    title = data["features"][gap.feature]["title"]
    if gap.everywhere or not with_platforms:
        return title
    return f"{title} ({', '.join(data['platforms'].get(p, p) for p in gap.platforms)})"


def _features(n: int) -> str:
    return "1 feature used" if n == 1 else f"{n} features used"
