"""Griffe extension: read kseg's `Example:` docstring sections as Google-style `Examples:`.

It also moves back to the margin an `Args:` section that a docstring template inserted
with extra indentation (the FCN builders' shared argument list). Griffe's Google parser
recognises only the plural title, so a singular `Example:` would render
as an admonition of plain Markdown, mangling the doctest lines. Doctest lines written flush with
the title are indented so that they belong to the section.
"""

import re

import griffe

_TITLE = re.compile(r"^(?P<indent>[ \t]*)Example:[ \t]*$")
_SECTION = re.compile(r"^[A-Z][A-Za-z ]*:[ \t]*$")


def _rewrite(text):
    lines = text.split("\n")
    out = []
    index = 0
    while index < len(lines):
        match = _TITLE.match(lines[index])
        if not match:
            out.append(lines[index])
            index += 1
            continue
        indent = match["indent"]
        out.append(f"{indent}Examples:")
        index += 1
        body = []
        while index < len(lines) and not (
            lines[index].startswith(indent) and _SECTION.match(lines[index][len(indent) :])
        ):
            body.append(lines[index])
            index += 1
        content = [line for line in body if line.strip()]
        if content and all(len(line) - len(line.lstrip()) <= len(indent) for line in content[:1]):
            body = [f"{indent}    {line[len(indent) :]}" if line.strip() else "" for line in body]
        out.extend(line for line in body if line.strip() or out[-1].strip())
    return "\n".join(out)


_INDENTED_SECTION = re.compile(r"^(?P<indent>[ \t]+)(Args|Returns|Raises):[ \t]*$")


def _dedent_sections(text):
    """Moves `Args:`-style sections inserted with a template's indentation back to the margin."""
    lines = text.split("\n")
    out = []
    index = 0
    while index < len(lines):
        match = _INDENTED_SECTION.match(lines[index])
        if not match:
            out.append(lines[index])
            index += 1
            continue
        width = len(match["indent"])
        if out and out[-1].strip():
            out.append("")
        out.append(lines[index][width:])
        index += 1
        while index < len(lines) and (
            not lines[index].strip() or len(lines[index]) - len(lines[index].lstrip()) > width
        ):
            out.append(lines[index][width:])
            index += 1
    return "\n".join(out)


class SingularExampleSections(griffe.Extension):
    """Renames `Example:` sections to `Examples:` before the docstrings are parsed."""

    def on_instance(self, *, obj, **kwargs):
        if obj.docstring is None:
            return
        value = obj.docstring.value
        if value and not value[0].isspace():
            value = _dedent_sections(value)
        if "Example:" in value:
            value = _rewrite(value)
        obj.docstring.value = value
