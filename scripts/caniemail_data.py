"""Build newsletter/preflight/data/caniemail.json from a copy of the caniemail repository.

caniemail (https://github.com/hteumeuleu/caniemail, MIT licence, by Rémi Parmentier) keeps
one Markdown file per HTML or CSS feature, whose front matter records how each mail client
supports it. Preflight bundles a compact digest of it, so the CSS check needs no network:
per feature its title, category, how to spot it in an edition's HTML, and the latest result
per platform of the major clients only.

    git clone https://github.com/hteumeuleu/caniemail /tmp/caniemail
    python scripts/caniemail_data.py /tmp/caniemail

PATH may be a working copy or a bare git directory (read with ``git show``). The licence
is copied beside the data, and newsletter/preflight/data/README.md says where it came from.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent.parent / "newsletter" / "preflight" / "data"
REPOSITORY = "https://github.com/hteumeuleu/caniemail"
# The clients most readers use; the others in the data set are regional webmails.
CLIENTS = ("apple-mail", "gmail", "outlook", "yahoo", "samsung-email", "thunderbird")

# Features whose titles do not say how to find them in HTML: written out by hand.
OVERRIDES: dict[str, dict[str, Any] | None] = {
    "css-column-layout-properties": {
        "property": [
            "columns",
            "column-count",
            "column-fill",
            "column-gap",
            "column-rule",
            "column-rule-color",
            "column-rule-style",
            "column-rule-width",
            "column-span",
            "column-width",
        ]
    },
    "css-column-count": {"property": ["column-count"]},
    "css-border-inline-block-individual": {
        "property": [
            "border-inline-color",
            "border-block-color",
            "border-inline-style",
            "border-block-style",
            "border-inline-width",
            "border-block-width",
            "border-inline-start",
            "border-inline-end",
            "border-block-start",
            "border-block-end",
        ]
    },
    "css-border-inline-block-longhand": {
        "property": [
            f"border-{axis}-{side}-{what}"
            for axis in ("inline", "block")
            for side in ("start", "end")
            for what in ("color", "style", "width")
        ]
    },
    "css-border-radius-logical": {
        "property": [
            "border-start-start-radius",
            "border-start-end-radius",
            "border-end-start-radius",
            "border-end-end-radius",
        ]
    },
    "css-grid-template": {
        "property": ["grid-template", "grid-template-areas", "grid-template-columns", "grid-template-rows"]
    },
    "css-scroll-snap": {"property": ["scroll-snap-type", "scroll-snap-align", "scroll-snap-stop"]},
    "css-modern-color": {"function": ["lch", "oklch", "lab", "oklab"]},
    "css-sytem-ui": {"keyword": ["system-ui", "ui-serif", "ui-sans-serif", "ui-rounded", "ui-monospace"]},
    "css-intrinsic-size": {"keyword": ["fit-content", "min-content", "max-content"]},
    "css-unit-initial": {"keyword": ["initial"]},
    "css-unit-calc": {"function": ["calc"]},
    "css-unit-percent": {"unit": ["%"]},
    "css-important": {"important": True},
    "css-variables": {"custom_property": True},
    "css-comments": {"css_comment": True},
    "css-nesting": None,  # needs a real CSS parser to tell from a typo
    "css-inert-attribute": {"attribute": ["inert"]},
    "css-color-scheme": {"property": ["color-scheme"]},
    "css-text-wrap": {"property": ["text-wrap"]},
    "css-pseudo-class-lang": {"pseudo_class": ["lang"]},
    "css-at-media-hover": {"media_feature": ["hover", "any-hover"]},
    "css-at-media-device-pixel-ratio": {
        "media_feature": [
            "-webkit-device-pixel-ratio",
            "-webkit-min-device-pixel-ratio",
            "-webkit-max-device-pixel-ratio",
        ]
    },
    "html-semantics": {
        "element": [
            "article",
            "aside",
            "details",
            "figcaption",
            "figure",
            "footer",
            "header",
            "main",
            "mark",
            "nav",
            "section",
            "summary",
            "time",
        ]
    },
    "html-h1-h6": {"element": ["h1", "h2", "h3", "h4", "h5", "h6"]},
    "html-lists": {"element": ["ul", "ol", "dl"]},
    "html-address": {"element": ["address"]},
    "html-base": {"element": ["base"]},
    "html-svg": {"element": ["svg"]},
    "html-image-maps": {"element": ["map", "area"], "attribute": ["usemap"]},
    "html-anchor-links": {"href_prefix": ["#"]},
    "html-mailto-links": {"href_prefix": ["mailto:"]},
    "html-comments": {"html_comment": True},
    "html-doctype": {"doctype": True},
    "html-meta-color-scheme": {"meta": ["color-scheme", "supported-color-schemes"]},
    "html-srcset": {"attribute": ["srcset", "sizes"]},
    "image-base64": {"image_format": ["base64"]},
    "image-jpg": {"image_format": ["jpg", "jpeg"]},
    "image-heif": {"image_format": ["heif", "heic"]},
    "image-tiff": {"image_format": ["tif", "tiff"]},
    "image-mp4": {"image_format": ["mp4"]},
    "image-hdr": None,  # an HDR image looks like any other PNG or AVIF from its name
    "image-apng": None,  # likewise: an animated PNG is named .png
    "amp": None,
    "bimi": None,
}
_NAME = re.compile(r"-?[a-z][a-z0-9-]*")


# --- front matter: YAML flow mappings with trailing commas, read without a YAML library ------


def _tokens(text: str) -> list[str]:
    """Braces, colons, commas and scalars (quotes removed) of a flow mapping; comments dropped."""
    found: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c in " \t\r\n":
            i += 1
        elif c in "{}:,":
            found.append(c)
            i += 1
        elif c == "#":
            i = text.find("\n", i) if "\n" in text[i:] else len(text)
        elif c in "\"'":
            end = i + 1
            while text[end] != c:
                end += 2 if c == '"' and text[end] == "\\" else 1  # \" inside a double-quoted string
            value = text[i + 1 : end]
            found.append("\x00" + (value.replace('\\"', '"') if c == '"' else value))  # marked: never punctuation
            i = end + 1
        else:
            j = i
            while j < len(text) and text[j] not in "{}:,\n" and not (text[j] == ":" or text[j] == "#"):
                j += 1
            found.append("\x00" + text[i:j].strip())
            i = j
    return found


def _mapping(tokens: list[str], at: int) -> tuple[dict[str, Any], int]:
    assert tokens[at] == "{", tokens[at : at + 5]
    result: dict[str, Any] = {}
    at += 1
    while tokens[at] != "}":
        if tokens[at] == ",":
            at += 1
            continue
        key = tokens[at][1:]
        assert tokens[at + 1] == ":", (key, tokens[at : at + 5])
        at += 2
        if tokens[at] == "{":
            value, at = _mapping(tokens, at)
        else:
            value, at = tokens[at][1:], at + 1
        result[key] = value
    return result, at + 1


def _whole(text: str) -> list[str] | None:
    """The tokens of a complete mapping, or None while a brace or a quote is still open."""
    try:
        tokens = _tokens(text)
    except IndexError:  # a quoted string runs on to the next line
        return None
    return tokens if tokens.count("{") == tokens.count("}") else None


def front_matter(text: str) -> dict[str, Any]:
    """The keys of a feature file's front matter that this script uses."""
    head = re.split(r"^---[ \t]*$", text, maxsplit=2, flags=re.M)[1]  # "---" also occurs inside URLs
    result: dict[str, Any] = {}
    lines = head.splitlines()
    i = 0
    while i < len(lines):
        match = re.match(r"([a-z_]+):\s*(.*)", lines[i])
        i += 1
        if not match:
            continue
        key, rest = match.groups()
        if rest.startswith("{"):
            block = [rest]
            while (tokens := _whole("\n".join(block))) is None:
                block.append(lines[i])
                i += 1
            result[key] = _mapping(tokens, 0)[0]
        elif rest.startswith(("'", '"')) and (tokens := _whole(rest)):
            result[key] = tokens[0][1:]
        else:
            result[key] = rest.strip()
    return result


# --- how to spot each feature ---------------------------------------------------------------


def _names(title: str, *suffixes: str) -> list[str]:
    for suffix in suffixes:
        title = title.removesuffix(suffix)
    names = [n.strip() for n in re.split(r",|&| and ", title)]
    return names if all(_NAME.fullmatch(n) for n in names) else []


def match_for(slug: str, title: str, category: str) -> dict[str, Any] | None:
    """How the CSS check recognises the feature in an edition; None when it cannot."""
    if slug in OVERRIDES:
        return OVERRIDES[slug]
    rules: list[tuple[str, Callable[[re.Match[str]], dict[str, Any] | None]]] = [
        (r"css-at-media-(.+)", lambda m: {"media_feature": [m[1]]}),
        (r"css-at-(.+)", lambda m: {"at_rule": [m[1]]}),
        (r"css-pseudo-class-(.+)", lambda m: {"pseudo_class": [m[1]]}),
        (r"css-pseudo-element-(.+)", lambda m: {"pseudo_element": [m[1]]}),
        (r"css-selector-(.+)", lambda m: {"selector": [m[1]]}),
        (r"css-unit-(.+)", lambda m: {"unit": [m[1]]}),
        (r"css-function-(.+)", lambda m: {"function": [m[1]]}),
        (r"image-(.+)", lambda m: {"image_format": [m[1]]}),
    ]
    for pattern, make in rules:
        if m := re.fullmatch(pattern, slug):
            return make(m)
    if category == "css":
        if m := re.fullmatch(r"([a-z-]+):\s*([a-z-]+)", title):
            return {"value": [[m[1], m[2]]]}
        if title.endswith("()"):
            functions = [f.strip().removesuffix("()") for f in title.split(",")]
            return {"function": functions} if all(_NAME.fullmatch(f) for f in functions) else None
        names = _names(title.strip(), " property", " shorthand")
        return {"property": names} if names else None
    if category == "html":
        if m := re.fullmatch(r'<([a-z0-9]+) type="([a-z]+)"> element', title):
            return {"element_type": [[m[1], m[2]]]}
        if m := re.fullmatch(r"<([a-z0-9]+)> element", title):
            return {"element": [m[1]]}
        if title.endswith((" attribute", " attributes")):
            names = _names(title, " attributes", " attribute")
            return {"attribute": names} if names else None
    return None


# --- support ----------------------------------------------------------------------------------


def latest(results: dict[str, str]) -> str:
    """The newest test of a platform (files list them oldest first): y, n, a (partial) or u."""
    value = list(results.values())[-1].strip()
    return value[:1] if value[:1] in ("y", "n", "a", "u") else "u"


def digest(files: dict[str, str], nicenames: str, commit: str, date: str) -> dict[str, Any]:
    family = dict(re.findall(r"^  ([a-z0-9-]+): \"([^\"]+)\"", nicenames.split("platform:")[0], re.M))
    platform = dict(re.findall(r"^  ([a-z0-9-]+): \"([^\"]+)\"", nicenames.split("platform:")[1], re.M))
    features: dict[str, Any] = {}
    used_platforms: set[str] = set()
    for name, text in sorted(files.items()):
        slug = name.removesuffix(".md")
        if slug.startswith("_"):
            continue
        meta = front_matter(text)
        stats = meta.get("stats") or {}
        support = {
            client: {p: latest(r) for p, r in stats[client].items() if isinstance(r, dict) and r}
            for client in CLIENTS
            if isinstance(stats.get(client), dict)
        }
        used_platforms.update(p for s in support.values() for p in s)
        features[slug] = {
            "title": meta.get("title", slug),
            "category": meta.get("category", ""),
            "match": match_for(slug, meta.get("title", ""), meta.get("category", "")),
            "support": support,
        }
    return {
        "source": {"repository": REPOSITORY, "commit": commit, "date": date, "licence": "MIT"},
        "clients": {c: family.get(c, c) for c in CLIENTS},
        "platforms": {p: platform.get(p, p) for p in sorted(used_platforms)},
        "features": features,
    }


def read_source(path: Path) -> tuple[dict[str, str], str, str, str, str]:
    """Feature files, nicenames, licence, commit and commit date from a working copy or git directory."""

    def git(*args: str) -> str:
        return subprocess.run(["git", f"--git-dir={git_dir}", *args], check=True, capture_output=True,
                              text=True).stdout  # fmt: skip

    git_dir = path / ".git" if (path / ".git").exists() else path
    commit, date = git("log", "-1", "--format=%H %cs", "HEAD").split()
    names = [n for n in git("ls-tree", "--name-only", "HEAD", "_features/").split() if n.endswith(".md")]
    files = {Path(n).name: git("show", f"HEAD:{n}") for n in names}
    return files, git("show", "HEAD:_data/nicenames.yml"), git("show", "HEAD:LICENSE"), commit, date


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="a caniemail working copy or bare git directory")
    args = parser.parse_args()
    files, nicenames, licence, commit, date = read_source(args.source)
    data = digest(files, nicenames, commit, date)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "caniemail.json").write_text(json.dumps(data, separators=(",", ":"), sort_keys=True) + "\n")
    (OUT / "CANIEMAIL-LICENSE").write_text(licence)
    matched = sum(1 for f in data["features"].values() if f["match"])
    print(f"{len(data['features'])} features ({matched} detectable) from {commit[:12]} of {date}: {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
