"""Every ``python -m locseg.*`` and ``make`` command in README.md and docs/**/*.md runs.

Commands are found generically (fenced code blocks and inline backticks of every such file), so
moving a section to another file moves its test with it. Each one is run on tiny data:

- placeholders (``DIR``, ``L``, ``S``, ``SWEEP``, ...) are replaced by artefacts of one tiny
  localize + segment sweep made once per session (:data:`PLACEHOLDERS`); ``[...]`` optional parts
  are included, ``a | b`` alternatives and ``{a,b}`` choices each give one command, ``...`` is
  dropped;
- ``python -m locseg.train``: composed in-process, as Hydra would (the first value of each sweep
  override), and resolved: a misspelt key ("Could not override", "Key ... is not in struct") or
  a bad value of an interpolation fails. The session sweep trains real tiny jobs;
- evaluate (a subprocess: Hydra's own entry point), predict, report, ablation, prepare,
  check_data: really run, in a fresh working folder (relative paths in the docs land there);
- ``make X``: X must be a target of the Makefile, and ``make -n X`` must succeed.

A command that is only an illustration is excluded in the doc itself, by ``<!-- illustration -->``
right before its code block or inline span, or here, in :data:`NOT_RUN` with the reason.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import make_dataset
from test_sweeps import FAST

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
MARKER = "<!-- illustration -->"
DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]

# Commands run as something lighter, each with its reason (a prefix of the expanded command).
NOT_RUN = {
    "python -m locseg.bench": "a full benchmark takes minutes; tests/test_bench.py runs "
    "--quick end to end, here its arguments are parsed",
}
# Sizes shrunk so that the commands stay tiny (the option names are still the documented ones).
SHRINK = {"--n-localize": "12", "--n-segment": "8", "--size": "48"}


@dataclass(frozen=True)
class Command:
    file: str
    line: int
    text: str  # as written in the doc

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.text}"


# --------------------------------------------------------------------------- finding them


def is_command(text: str) -> bool:
    return text.startswith("python -m locseg") or re.match(r"make [a-z]", text) is not None


def find_commands(path: Path) -> list[Command]:
    """Code-block lines and inline spans that are commands, minus those marked illustrations."""
    text = path.read_text(encoding="utf-8")
    name = str(path.relative_to(REPO))
    found: list[Command] = []

    def line_of(offset: int) -> int:
        return text.count("\n", 0, offset) + 1

    blocks = list(re.finditer(r"^```[^\n]*\n(.*?)^```", text, flags=re.S | re.M))
    for block in blocks:
        if text[: block.start()].rstrip().endswith(MARKER):
            continue
        body = block.group(1).replace("\\\n", " ")
        start = line_of(block.start(1))
        for k, raw in enumerate(body.splitlines()):
            command = re.sub(r"\s+#.*$", "", raw).strip()
            if is_command(command):
                found.append(Command(name, start + k, " ".join(command.split())))
    prose = text
    for block in reversed(blocks):  # blank out the blocks, keeping offsets
        prose = prose[: block.start()] + " " * (block.end() - block.start()) + prose[block.end() :]
    for span in re.finditer(r"`([^`]+)`", prose):
        command = " ".join(span.group(1).replace("\\|", "|").split())
        if is_command(command) and not prose[: span.start()].rstrip().endswith(MARKER):
            found.append(Command(name, line_of(span.start()), command))
    return found


ALL = [c for path in DOC_FILES for c in find_commands(path)]
# Relative sweep_dir=... folders of documented sweeps: the report commands after them read them.
SWEEP_DIRS = sorted(
    {m for c in ALL for m in re.findall(r"sweep_dir=([a-z][\w./-]*)", c.text) if "$" not in m}
)
UNIQUE = list({c.text: c for c in reversed(ALL)}.values())[::-1]


def expand(text: str) -> list[list[str]]:
    """One documented command -> the argument lists it stands for."""
    text = re.sub(r"\s*\.\.\.(?=\s|\]|$)", "", text)  # "OTHER ..." and "[OTHER ...]"
    tokens = shlex.split(text)
    variants: list[list[str]] = [[]]
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token.startswith("["):  # an optional group, maybe with | alternatives: include it
            group, depth = [], 0
            while True:
                depth += tokens[i].count("[") - tokens[i].count("]")
                group.append(tokens[i])
                if depth <= 0:
                    break
                i += 1
            inner = " ".join(group)[1:-1]
            options = [o.split() for o in inner.split(" | ")]
            variants = [v + o for v in variants for o in options]
        elif re.search(r"\{[^}]*,[^}]*\}", token):
            head, choices, tail = re.match(r"(.*)\{([^}]*)\}(.*)", token).groups()
            variants = [v + [head + c + tail] for v in variants for c in choices.split(",")]
        else:
            variants = [v + [token] for v in variants]
        i += 1
    return variants


# --------------------------------------------------------------------------- artefacts


@pytest.fixture(scope="session")
def artefacts(tmp_path_factory) -> dict[str, str]:
    """One tiny sweep (a shared localizer, 3 arms at fraction 1.0 of fold 0), and its data."""
    tmp = tmp_path_factory.mktemp("documented")
    data = make_dataset(tmp / "data", n_masked=12, n_centre_only=12)
    other = make_dataset(tmp / "other", n_masked=6, seed=1)
    pool = make_dataset(tmp / "pool", n_masked=0, n_centre_only=8, seed=2)
    sweep = tmp / "sweep"
    common = [f"sweep_dir={sweep}", f"data.root={data}", *FAST]
    train("-m", "+sweep=localize", *common)
    train("-m", "+sweep=segment", *common, "data.fraction=1.0", "data.fold=0")
    seg = sweep / "segment" / "frac_1.0" / "fold_0" / "localizer-frozen"
    loc = sweep / "localize" / "shared"
    assert (seg / "checkpoints" / "best.ckpt").is_file() and (loc / "encoder.pt").is_file()
    return {
        "DIR": str(data),
        "OTHER": str(other),
        "POOL_DIR": str(pool),
        "DIR_OR_FILE": str(data / "images"),
        "SWEEP": str(sweep),
        "L": str(loc),
        "LOCALIZE_RUN": str(loc),
        "S": str(seg),
        "K": "0",
        "LABEL": "base",
        "MYLAB": "mylab",
    }


def run_python(module: str, args: list[str], cwd: Path, timeout: int) -> None:
    """``python -m module args`` in a subprocess on one thread; its output shown if it fails."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"}
    result = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def train(*args: str) -> None:
    run_python("locseg.train", list(args), REPO, 600)


FRESH = ("OUT_DIR", "OUT")  # a new folder per command
RAW = "RAW_DIR"  # a replica of the raw download of the converter named before it


def substitute(argv: list[str], values: dict[str, str], work: Path) -> list[str]:
    """Placeholders -> artefacts; ``work``: this variant's own folder."""
    out = []
    for k, arg in enumerate(argv):

        def one(match: re.Match, k: int = k) -> str:
            name = match.group(0)
            if name in FRESH:
                return str(work / f"out{k}")
            if name == RAW:
                if argv[3] == "folder":  # a folder in the default layout: a dataset itself
                    return values["DIR"]
                sys.path.insert(0, str(REPO / "tests" / "data"))
                import replicas  # the converters' own test replicas of each download

                return str(getattr(replicas, argv[3])(work / "raw").root)
            if name not in values:
                pytest.fail(
                    f"placeholder {name} in {argv}: add it to the test's artefacts, or mark the "
                    f"command {MARKER} in the doc"
                )
            return values[name]

        arg = re.sub(r"(?<![A-Za-z0-9_.])[A-Z][A-Z_]*(?![A-Za-z0-9_])", one, arg)
        if k > 0 and argv[k - 1] in SHRINK:
            arg = SHRINK[argv[k - 1]]
        out.append(arg)
    return out


# --------------------------------------------------------------------------- running them


def compose_train(args: list[str], run_dir: Path) -> None:
    """``python -m locseg.train ARGS`` up to the job: composed and resolved as Hydra does."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf, open_dict

    import locseg.train  # noqa: F401  (registers the config's resolvers)

    overrides = [a for a in args if a not in ("-m", "--multirun")]
    parsed = OverridesParser.create().parse_overrides(overrides)
    first = []
    for text, override in zip(overrides, parsed, strict=True):
        if override.is_sweep_override():
            value = next(iter(override.sweep_string_iterator()))
            text = f"{override.get_key_element()}={value}"
        first.append(text)
    GlobalHydra.instance().clear()
    with initialize_config_module("locseg.conf", version_base="1.3"):
        cfg = compose(
            "train", overrides=[*first, f"paths.output_dir={run_dir}"], return_hydra_config=True
        )
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    missing = OmegaConf.missing_keys(cfg)
    assert not missing, f"mandatory values left unset: {sorted(missing)}"
    OmegaConf.to_container(cfg, resolve=True)
    GlobalHydra.instance().clear()


def run_module(module: str, args: list[str], work: Path) -> None:
    if module == "locseg.evaluate":  # Hydra's entry point: as the user runs it
        run_python(module, [*args, "device=cpu"], work, 300)
        return
    import importlib

    main = importlib.import_module(module).main
    try:
        code = main(args)
    except SystemExit as stop:  # argparse: an unknown option
        code = stop.code
    assert code in (0, None), f"exit status {code}"


def make_targets() -> set[str]:
    text = (REPO / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z][\w-]*):(?!=)", text, flags=re.M))


def test_the_docs_hold_commands():
    modules = {c.text.split()[2] for c in ALL if c.text.startswith("python -m")}
    assert {"locseg.train", "locseg.evaluate", "locseg.predict", "locseg.report"} <= modules


@pytest.mark.parametrize("command", UNIQUE, ids=[f"{c.file}:{c.line}" for c in UNIQUE])
def test_documented_command_runs(command, artefacts, tmp_path, monkeypatch):
    words = command.text.split()
    if words[0] == "make":
        target = words[1]
        assert target in make_targets(), f"{command}: no target {target!r} in the Makefile"
        result = subprocess.run(
            ["make", "-n", *words[1:]], cwd=REPO, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, f"{command}\n{result.stderr[-2000:]}"
        return
    module = words[2]
    if len(words) == 3:  # a mention of the command, not an invocation
        import importlib.util

        assert importlib.util.find_spec(module) is not None, f"{command}: no module {module}"
        return
    reads_shared = any(w in command.text for w in ("../shared", "data=drions", "data=idrid"))
    if reads_shared and module != "locseg.train":  # train commands are only composed
        if not SHARED.is_dir():
            pytest.skip(f"{command} reads ../shared, absent on this machine")
    work = tmp_path / "work"
    work.mkdir()
    (work / "multirun_templates").symlink_to(REPO / "multirun_templates")
    for folder in SWEEP_DIRS:  # where the doc's own sweep commands would have written
        (work / folder).parent.mkdir(parents=True, exist_ok=True)
        (work / folder).symlink_to(artefacts["SWEEP"])
    monkeypatch.chdir(work)
    for k, variant in enumerate(expand(command.text)):
        argv = substitute(variant, artefacts, work / f"variant{k}")
        shown = " ".join(argv)
        reason = next(
            (r for p, r in NOT_RUN.items() if shown == p or shown.startswith(p + " ")), None
        )
        try:
            if reason:
                importlib_main = __import__(module, fromlist=["parse_args"])
                importlib_main.parse_args(argv[3:])
            elif module == "locseg.train":
                compose_train(argv[3:], work / f"run{k}")
            else:
                run_module(module, argv[3:], work)
        except Exception as error:
            raise AssertionError(f"{command}\n  ran as: {shown}\n  {error}") from error


def test_the_finder_honours_the_marker_and_the_syntax(tmp_path, monkeypatch):
    doc = tmp_path / "doc.md"
    doc.write_text(
        "Run `python -m locseg.report SWEEP` or <!-- illustration --> `python -m locseg.x Y`.\n"
        "<!-- illustration -->\n```bash\npython -m locseg.train +phase=nope\n```\n"
        "```bash\nmake demo   # the main job\npython -m locseg.train -m a=1 \\\n    b=2\n```\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    found = [c.text for c in find_commands(doc)]
    assert found == [
        "make demo",
        "python -m locseg.train -m a=1 b=2",
        "python -m locseg.report SWEEP",
    ]
    assert expand("p {a,b} [x=K | y=1] [--z Z ...]") == [
        ["p", "a", "x=K", "--z", "Z"],
        ["p", "a", "y=1", "--z", "Z"],
        ["p", "b", "x=K", "--z", "Z"],
        ["p", "b", "y=1", "--z", "Z"],
    ]


def test_a_misspelt_override_fails(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    with pytest.raises(Exception, match="Could not override 'data.rot'"):
        compose_train(["+phase=segment", "data.rot=x"], tmp_path)
    with pytest.raises(Exception, match="Could not override 'data.bogus'"):
        compose_train(["-m", "+sweep=segment", "data.fraction=0.1,0.3", "data.bogus=1"], tmp_path)
