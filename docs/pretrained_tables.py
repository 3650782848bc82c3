"""MkDocs hook: fills the `<!-- pretrained: registry -->` marker with the table of kseg.pretrained.

The table is drawn from `kseg.pretrained.list_pretrained()` at build time, so the published
registry is always the code's: an entry made loadable in `kseg/pretrained/` needs no page edit.
"""

import re

MARKER = re.compile(r"^<!-- pretrained: registry -->[ \t]*$", re.MULTILINE)


def _metrics(entry):
    return "; ".join(
        f"{data}: " + ", ".join(f"{key} {value:g}" for key, value in figures.items())
        for data, figures in entry.publisher_metrics.items()
    )


def registry_table():
    """The Markdown table of every registered checkpoint."""
    import kseg.pretrained

    lines = [
        "| name | task | kseg loads it | publisher's architecture | classes | size | "
        "publisher's metrics | resize |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in kseg.pretrained.list_pretrained():
        entry = kseg.pretrained.get(name)
        if entry.status == "loadable":
            status = f"yes, as `{entry.builder}`"
        else:
            status = "not yet"
        cells = (
            f"`{entry.name}`",
            entry.task,
            status,
            f"`{entry.source_architecture}`",
            str(len(entry.class_names)),
            f"{entry.published_file_size_mib:g} MiB",
            _metrics(entry),
            entry.resize,
        )
        lines.append("| " + " | ".join(cell.replace("|", "/") for cell in cells) + " |")
    return "\n".join(lines)


def on_page_markdown(markdown, **kwargs):
    """Replaces the registry marker of a page with the table."""
    if not MARKER.search(markdown):
        return markdown
    return MARKER.sub(lambda _: registry_table(), markdown)
