"""The documentation builds, its figures come from kseg, and its `kseg` commands match the CLI."""

import importlib.util
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from kseg.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
FIGURES = DOCS / "figures"
SHELL_LANGUAGES = {"bash", "console", "shell", "sh"}
FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```(?P<lang>[\w+-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```",
    re.MULTILINE | re.DOTALL,
)
IMAGE = re.compile(r"!\[[^\]]*\]\((?P<target>[^)\s]+\.png)\)")
MAX_FIGURE_BYTES = 150 * 1024


def _markdown_files():
    return sorted(DOCS.rglob("*.md"))


INLINE = re.compile(r"(?<!`)`(?P<command>kseg [^`]+)`(?!`)")


def _shell_commands():
    """Every `kseg ...` of the docs (shell blocks, inline code) as (location, argv, complete)."""
    commands = []
    for path in _markdown_files():
        text = path.read_text(encoding="utf-8")
        relative = path.relative_to(REPO)
        blocks = [b for b in FENCE.finditer(text)]
        for block in blocks:
            if block["lang"] not in SHELL_LANGUAGES:
                continue
            line_number = text[: block.start("body")].count("\n") + 1
            pending, start = "", line_number
            for offset, raw in enumerate(block["body"].splitlines()):
                if not pending:
                    start = line_number + offset
                # Backslash continuations belong to the command they continue.
                if raw.rstrip().endswith("\\"):
                    pending += raw.rstrip()[:-1] + " "
                    continue
                line, pending = (pending + raw).strip(), ""
                line = line.removeprefix("$ ")
                if line.startswith("kseg ") or line == "kseg":
                    commands.append((f"{relative}:{start}", shlex.split(line, comments=True), True))
        prose = FENCE.sub(lambda b: "\n" * b.group(0).count("\n"), text)
        for match in INLINE.finditer(prose):
            line_number = prose[: match.start()].count("\n") + 1
            argv = shlex.split(match["command"])
            # In prose, `kseg evaluate` alone names the subcommand rather than a command to run.
            commands.append((f"{relative}:{line_number}", argv, len(argv) > 2))
    return commands


COMMANDS = _shell_commands()


def _subcommands():
    parser = build_parser()
    return next(action for action in parser._actions if action.dest == "command").choices


def test_docs_hold_a_command_for_every_subcommand():
    subcommands = _subcommands()
    documented = {argv[1] for _, argv, complete in COMMANDS if complete and len(argv) > 1}
    assert set(subcommands) <= documented, f"undocumented: {set(subcommands) - documented}"


@pytest.mark.parametrize(
    "location, argv, complete",
    COMMANDS,
    ids=[f"{loc} {' '.join(a[1:3])}" for loc, a, _ in COMMANDS],
)
def test_documented_command_parses(location, argv, complete, capsys):
    if not complete:
        assert argv[1:] and argv[1] in _subcommands(), f"{location}: no subcommand {argv[1:]}"
        return
    try:
        args = build_parser().parse_args(argv[1:])
    except SystemExit as error:
        if error.code == 0 and ("--help" in argv or "-h" in argv):
            return
        message = capsys.readouterr().err.strip().splitlines()
        pytest.fail(
            f"{location}: `{shlex.join(argv)}` is rejected by kseg's parser "
            f"(exit {error.code}): {message[-1] if message else ''}"
        )
    import kseg

    # argparse takes any string for these; the registries decide what exists.
    if getattr(args, "model", None) and args.command == "train":
        assert args.model.lower() in kseg.models.list_models(), (
            f"{location}: unknown model {args.model}"
        )
    if getattr(args, "backbone", None):
        assert args.backbone in kseg.backbones.list_backbones() or _known_hub_preset(
            args.backbone
        ), f"{location}: unknown backbone {args.backbone}"


def _known_hub_preset(name):
    """A `keras_hub:` backbone naming one of keras-hub's presets (any, without keras-hub)."""
    from kseg.backbones import hub_presets

    if not hub_presets.is_hub_preset(name):
        return False
    if importlib.util.find_spec("keras_hub") is None:
        return True
    return name in hub_presets.list_hub_presets()


def test_documented_command_check_rejects_a_drifted_flag():
    # The check above must be able to fail: a flag the CLI does not have is refused.
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--data", "shapes", "--no-such-flag"])


def test_every_figure_is_referenced_exists_and_is_small():
    referenced = set()
    for path in _markdown_files():
        for match in IMAGE.finditer(path.read_text(encoding="utf-8")):
            target = (path.parent / match["target"]).resolve()
            assert target.is_file(), f"{path.relative_to(REPO)} shows missing {match['target']}"
            referenced.add(target)
    committed = {p.resolve() for p in FIGURES.glob("*.png")}
    assert committed, "no figures in docs/figures"
    assert committed <= referenced, (
        f"unused figures: {sorted(p.name for p in committed - referenced)}"
    )
    for figure in committed:
        assert figure.stat().st_size < MAX_FIGURE_BYTES, f"{figure.name} is over 150 kB"


def test_make_figures_writes_every_committed_figure(tmp_path):
    result = subprocess.run(
        [sys.executable, str(FIGURES / "make_figures.py"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    written = {p.name for p in tmp_path.glob("*.png")}
    committed = {p.name for p in FIGURES.glob("*.png")}
    assert written == committed
    for name in written:
        assert (tmp_path / name).stat().st_size < MAX_FIGURE_BYTES, name


def test_mkdocs_build_strict(tmp_path):
    missing = [
        name
        for name in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers")
        if importlib.util.find_spec(name) is None
    ]
    if missing:
        pytest.skip(
            f"documentation tools not installed ({', '.join(missing)}): "
            'pip install mkdocs-material "mkdocstrings[python]"'
        )
    site = tmp_path / "site"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--config-file",
            str(REPO / "mkdocs.yml"),
            "--site-dir",
            str(site),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    models_page = (site / "api" / "models" / "index.html").read_text(encoding="utf-8")
    # The API reference is rendered from the docstrings, not left as a `:::` directive.
    assert 'id="kseg.models.DeepLabV3Plus"' in models_page
    assert ":::" not in models_page
    for page in ("architectures/fcn", "architectures/dense-crf", "quickstart"):
        assert (site / page / "index.html").is_file()
