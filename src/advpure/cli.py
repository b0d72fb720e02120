"""What ``run.py`` does with a composed config: validate, then run the selected task."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from omegaconf import DictConfig, OmegaConf

from advpure.config.enums import Accelerator
from advpure.config.validate import check_combinations, validate_config
from advpure.errors import AdvpureError, ConfigError
from advpure.io import require_writable
from advpure.tasks.context import RunContext, command_line


def context_from_hydra() -> RunContext:
    """The run folder, command line and group choices of the current Hydra job."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    choices = {k: str(v) for k, v in hydra_cfg.runtime.choices.items() if not k.startswith("hydra")}
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    return RunContext(
        run_dir=Path(hydra_cfg.runtime.output_dir),
        command=command_line(list(hydra_cfg.overrides.task)),
        choices=choices,
        multirun=multirun,
        sweep=Path(hydra_cfg.sweep.dir).name if multirun else None,
    )


def run_task(cfg: DictConfig, context: RunContext) -> dict[str, Any]:
    """Validate ``cfg`` (every range check and every check across groups, before any work) and
    run ``cfg.task.name``."""
    from advpure.config.enums import TaskName
    from advpure.tasks.registry import TASK_STORES, TASKS

    validate_config(cfg)
    check_combinations(cfg)
    require_writable(context.run_dir, f"the run folder {context.run_dir} (hydra.run.dir)")
    store = TASK_STORES[TaskName(cfg.task.name)]
    if OmegaConf.select(cfg, store) is not None:
        require_writable(OmegaConf.select(cfg, store), store)
    check_placement(cfg, context)
    try:
        return TASKS[cfg.task.name](cfg, context)
    finally:
        finish_wandb()


def finish_wandb() -> None:
    """Close the W&B run a task's logger opened (flushes its files; the next run starts fresh)."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        offline = wandb.run.settings.mode == "offline" or bool(getattr(wandb.run, "offline", False))
        run_folder = Path(wandb.run.dir).parent
        wandb.finish()
        if offline:
            print(f"W&B run saved offline; upload it with: wandb sync {run_folder}", flush=True)


def check_placement(cfg: DictConfig, context: RunContext) -> None:
    """Refuse several processes inside a Hydra multirun (Lightning's DDP launcher re-runs the
    command in every rank, and each rank would re-launch the whole sweep), and a GPU placement on
    a machine without CUDA."""
    hardware = cfg.hardware
    devices = hardware.devices
    single_device = devices == 1 or devices == "1" or (OmegaConf.is_list(devices) and len(devices) == 1)
    if context.multirun and not (single_device and hardware.num_nodes == 1 and "ddp" not in str(hardware.strategy)):
        raise ConfigError(
            "hardware",
            f"devices={devices}, num_nodes={hardware.num_nodes}, strategy={hardware.strategy} inside a multirun "
            "(-m): Lightning DDP re-launches the command in every process, so each would re-run the whole sweep",
            "give each sweep job one device (hardware=gpu or hardware=cpu; a launcher such as submitit spreads "
            "jobs over devices), and use hardware=ddp for single runs",
        )
    if Accelerator(hardware.accelerator) == Accelerator.gpu and not _cuda_available():
        on_slurm = hardware.get("slurm") is not None and not context.multirun
        raise ConfigError(
            "hardware.accelerator",
            "is gpu, but this machine has no CUDA device"
            + (" (hardware=slurm submits jobs only under -m; without it the job runs here)" if on_slurm else ""),
            "use hardware=cpu here, run on a GPU machine, or add -m to submit with hardware=slurm",
        )


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


# Exit statuses of a run stopped by a signal (the shell's 128 + signal number).
EXIT_SIGINT = 130
EXIT_SIGTERM = 143
RESUME_HINT = (
    "every finished batch (evaluation) or epoch (training) is stored; re-run the same command to resume "
    "from there (task.resume=true, the default)"
)


class Terminated(BaseException):
    """SIGTERM arrived while no Lightning loop was running (building models, writing results)."""


@contextlib.contextmanager
def stop_signals() -> Iterator[dict[str, bool]]:
    """Route SIGINT and SIGTERM so a stopped run exits non-zero after its finished work is stored.

    Inside a Lightning loop, Lightning's own SIGTERM handler runs first and the loop stops after the
    batch in flight (``SIGTERMException``; that batch is stored as it finishes); outside one, SIGTERM
    raises :class:`Terminated` at once (nothing is in flight: every write is atomic). SIGINT
    raises ``KeyboardInterrupt`` as usual, which Lightning turns into ``sys.exit(1)``: the yielded
    dict records which signal came, so the caller can give the honest status."""
    received = {"SIGINT": False, "SIGTERM": False}

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        received["SIGTERM"] = True
        if signal.getsignal(signal.SIGTERM) is on_sigterm:  # Lightning's handler is not composed in front
            raise Terminated

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        received["SIGINT"] = True
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():  # signals are the main thread's
        yield received
        return
    previous = {signal.SIGTERM: signal.getsignal(signal.SIGTERM), signal.SIGINT: signal.getsignal(signal.SIGINT)}
    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, on_sigint)
    try:
        yield received
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def main(cfg: DictConfig) -> dict[str, Any]:
    """Hydra entry: user-facing errors print one clear line (no traceback) and exit with status 2;
    SIGINT and SIGTERM exit with 130 and 143 after the finished batches are stored, saying how to
    resume. Exit status 0 means the task wrote its results."""
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    with stop_signals() as received:
        try:
            return run_task(cfg, context_from_hydra())
        except AdvpureError as error:
            print(f"error: {error}", file=sys.stderr, flush=True)
            sys.exit(2)
        except (SIGTERMException, Terminated):
            print(f"error: stopped by SIGTERM; {RESUME_HINT}", file=sys.stderr, flush=True)
            sys.exit(EXIT_SIGTERM)
        except KeyboardInterrupt:
            print(f"error: stopped by SIGINT (Ctrl-C); {RESUME_HINT}", file=sys.stderr, flush=True)
            sys.exit(EXIT_SIGINT)
        except SystemExit as stop:
            if received["SIGINT"]:  # Lightning caught the KeyboardInterrupt and called sys.exit(1)
                print(f"error: stopped by SIGINT (Ctrl-C); {RESUME_HINT}", file=sys.stderr, flush=True)
                sys.exit(EXIT_SIGINT)
            if received["SIGTERM"] and stop.code in (None, 0):
                print(f"error: stopped by SIGTERM; {RESUME_HINT}", file=sys.stderr, flush=True)
                sys.exit(EXIT_SIGTERM)
            raise


# Hydra's run modes: at most one per command (Hydra itself stops with a traceback otherwise).
MODE_FLAGS = {
    "-m": "multirun",
    "--multirun": "multirun",
    "-c": "--cfg",
    "--cfg": "--cfg",
    "-i": "--info",
    "--info": "--info",
    "--shell-completion": "--shell-completion",
    "-sc": "--shell-completion",
}


def check_mode_flags(argv: list[str]) -> None:
    """Refuse two of Hydra's run modes in one command (e.g. ``-m`` with ``--cfg job``), naming the fix."""
    modes = list(dict.fromkeys(MODE_FLAGS[word] for word in argv if word in MODE_FLAGS))
    if len(modes) > 1:
        raise AdvpureError(
            f"the flags {' and '.join(modes)} cannot be combined: Hydra runs one mode per command. Fix: to see "
            "one sweep job's config, drop -m and give one value per key (python run.py purifier.t_star=0.05 --cfg job)"
        )


def override_hints(overrides: list[str]) -> list[str]:
    """A "fix:" line for each override Hydra refused, where advpure knows the fix: Hydra's own
    message suggests appending a key (``+key=value``), which is never the fix for these.

    - a value Hydra's override grammar cannot read unquoted (accents, brackets, quotes, ``&#~``):
      the quoted override to type instead;
    - words after a ``key=value`` that have no ``=`` (a path with spaces, split by the shell): the
      whole override, quoted;
    - a key whose last part is no config key anywhere (a typo): the closest known keys;
    - a key whose last part is a config key elsewhere, e.g. of another group (``purifier.eps``):
      where it lives (``attack.eps``);
    - a value of the wrong type for its schema field: what it must be.
    """
    import difflib

    known = known_keys()
    paths, free_form = known_paths()
    hints = [*quoting_hints(overrides)]
    for override in overrides:
        key = override.split("=", 1)[0]
        if "=" not in override or "/" in key or key.startswith(("+", "~", "hydra", "-")):  # not a key: a group or flag
            continue
        if _unquoted_value_problem(override):
            continue  # quoting_hints has its line
        *parents, leaf = key.split(".")
        if leaf in known:
            elsewhere = paths_elsewhere(key, paths, free_form)
            if elsewhere:
                hints.append(
                    f"fix: '{key}' is not a config key; '{leaf}' is a config key elsewhere: did you mean "
                    f"{' or '.join(elsewhere)}? (python run.py --cfg job prints every key of the composed config)"
                )
                continue
            expected = value_problem(leaf, override.split("=", 1)[1])
            if expected:
                hints.append(f"fix: set {key} to {expected} (python run.py --cfg job shows the current value)")
            continue
        close = difflib.get_close_matches(leaf, sorted(known), n=3, cutoff=0.6)
        suggestion = " or ".join(".".join([*parents, c]) for c in close) if close else None
        fix = f"did you mean {suggestion}?" if suggestion else "check its spelling"
        hints.append(
            f"fix: '{key}' is not a config key; {fix} (python run.py --cfg job prints every key of the composed config)"
        )
    return hints


def quoting_hints(overrides: list[str]) -> list[str]:
    """Fix lines for overrides whose value must be quoted for Hydra: a value its grammar cannot read
    unquoted (``dataset.root=/données``), and a ``key=value`` followed by words without ``=`` (the
    shell split a path with spaces: ``dataset.root=/my data``)."""
    import shlex

    hints = []
    carrier: list[str] = []  # the last key=value override and the bare words after it

    def flush() -> None:
        if len(carrier) > 1:
            key, value = carrier[0].split("=", 1)
            whole = f"{value} {' '.join(carrier[1:])}"
            hints.append(
                f"fix: {' '.join(repr(w) for w in carrier[1:])} after {carrier[0]!r} is no key=value override; "
                f"if it is the rest of a path with spaces, quote the whole override: {shlex.quote(_quoted(key, whole))}"
            )
        carrier.clear()

    for override in overrides:
        if "=" in override and not override.startswith("-"):
            flush()
            carrier.append(override)
            quoted = _unquoted_value_problem(override)
            if quoted:
                hints.append(
                    "fix: Hydra reads a value unquoted only if it holds letters a-z, digits, spaces and "
                    f"_-+./:$%*@?|\\ (no accents, quotes, brackets, '&' '#' '~' '='); quote it: {shlex.quote(quoted)}"
                )
        elif override.startswith(("-", "~")) or not carrier:
            flush()
        else:
            carrier.append(override)
    flush()
    return hints


def _quoted(key: str, value: str) -> str:
    """``key="value"`` (``key='value'`` if the value holds a double quote): Hydra's quoted form."""
    return f"{key}='{value}'" if '"' in value else f'{key}="{value}"'


def _unquoted_value_problem(override: str) -> str | None:
    """The quoted form of ``key=value`` if Hydra's grammar refuses it as written but reads it quoted;
    else ``None``."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    try:
        parser.parse_override(override)
        return None
    except HydraException:
        pass
    key, value = override.split("=", 1)
    quoted = _quoted(key, value)
    try:
        parser.parse_override(quoted)
    except HydraException:
        return None
    return quoted


def known_paths() -> tuple[set[str], set[str]]:
    """``(paths, free_form)``: the dotted path of every key of the schemas (each group's options
    under the group's name) and of the YAML files in conf/; and the paths of free-form nodes
    (``Any``/``dict`` fields such as ``classifier.net``, whose keys are a class's arguments)."""
    import dataclasses
    import typing

    import yaml

    from advpure.config.schema import SCHEMAS, RootSchema

    paths: set[str] = set()
    free_form: set[str] = set()

    def nested_schema(hint: Any) -> type | None:
        for option in (hint, *typing.get_args(hint)):
            if isinstance(option, type) and dataclasses.is_dataclass(option):
                return option
        return None

    def visit_class(schema: type, prefix: str) -> None:
        hints = typing.get_type_hints(schema)
        for item in dataclasses.fields(schema):
            path = f"{prefix}{item.name}"
            paths.add(path)
            hint = hints.get(item.name)
            inner = nested_schema(hint)
            if inner is not None:
                visit_class(inner, f"{path}.")
            elif hint is Any or typing.get_origin(hint) is dict or hint is dict:
                free_form.add(path)

    def visit_node(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if prefix or key not in ("defaults", "hydra"):
                    paths.add(f"{prefix}{key}")
                    visit_node(value, f"{prefix}{key}.")

    visit_class(RootSchema, "")
    for group, options in SCHEMAS.items():
        for schema in options.values():
            visit_class(schema, f"{group}.")
    conf = Path(__file__).resolve().parents[2] / "conf"
    for path in conf.rglob("*.yaml"):
        folders = path.relative_to(conf).parts[:-1]
        try:
            text = path.read_text()
            content = yaml.safe_load(text)
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue
        group = next((f for f in reversed(folders) if f in SCHEMAS), "")
        prefix = "" if "@package _global_" in text or not group else f"{group}."
        visit_node(content, prefix)
    return paths, free_form


def paths_elsewhere(key: str, paths: set[str], free_form: set[str]) -> list[str]:
    """Where the last part of ``key`` is a config key, when ``key`` itself is none (at most three,
    those sharing most of ``key``'s leading parts first); ``[]`` if ``key`` is a known path or lies
    inside a free-form node."""
    if key in paths or any(key.startswith(f"{node}.") for node in free_form):
        return []
    parts = key.split(".")

    def shared(path: str) -> int:
        return next((i for i, (a, b) in enumerate(zip(parts, path.split("."), strict=False)) if a != b), len(parts))

    found = [p for p in paths if p.rsplit(".", 1)[-1] == parts[-1]]
    return sorted(found, key=lambda p: (-shared(p), p.count("."), p))[:3]


#: Command-line flags with which Hydra prints and exits, creating no output folder.
INFO_FLAGS = ("--cfg", "-c", "--help", "-h", "--hydra-help", "--info", "-i", "--shell-completion", "-sc", "--version")


def check_output_folder(argv: list[str]) -> Path | None:
    """Create the folder Hydra will write this run into (``hydra.run.dir``, or ``hydra.sweep.dir``
    with ``-m``), up to its first interpolation, and prove it writable, before Hydra tries (Hydra
    fails there with a traceback). Returns the folder checked (``None`` when there is none to
    check: an info flag such as ``--cfg``, or a path that starts with an interpolation).

    Raises:
        OutputError: naming the key, the folder and the fix (read-only or full disk, a parent that
            is a file, a folder that cannot exist such as ``/proc/x``).
    """
    import errno
    import os
    import tempfile

    import yaml

    from advpure.errors import OutputError

    if any(arg in INFO_FLAGS or arg.startswith(tuple(f"{flag}=" for flag in INFO_FLAGS)) for arg in argv):
        return None
    multirun = any(arg in ("-m", "--multirun") for arg in argv) or "hydra.mode=MULTIRUN" in argv
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    value = None
    for arg in argv:
        name, equals, given = arg.lstrip("+").partition("=")
        if name == key and equals:
            value = given
    if value is None:
        try:
            defaults = yaml.safe_load((Path(__file__).resolve().parents[2] / "conf" / "config.yaml").read_text())
            value = str(defaults["hydra"][key.split(".")[1]]["dir"])
        except (OSError, KeyError, TypeError, yaml.YAMLError):
            return None
    if len(value) > 1 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1]
    static = value.split("${", 1)[0]
    if "${" in value:
        if "/" not in static:
            return None
        static = static.rsplit("/", 1)[0] or "/"
    folder = Path(static or ".")
    fix = (
        f"set {key} to a folder you can write, e.g. {key}=outputs/{'multirun' if multirun else 'runs'}/mine "
        f"(quote a path with spaces: '{key}=\"/my runs/x\"')"
    )
    existing = folder
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    if os.path.lexists(existing) and not existing.is_dir():
        what = "a file" if existing.is_file() else "not a folder (a broken link or a special file)"
        raise OutputError(f"{key}: cannot create the output folder {folder}: {existing} is {what}. Fix: {fix}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder, prefix=".advpure-write-probe-") as probe:
            probe.write(b"\0" * 4096)
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as error:
        reason = os.strerror(error.errno) if error.errno else str(error)
        hint = {
            errno.ENOSPC: " (the disk is full)",
            errno.EDQUOT: " (over the disk quota)",
            errno.EROFS: " (a read-only file system)",
            errno.EACCES: " (no permission to write there)",
            errno.EPERM: " (no permission to write there)",
        }.get(error.errno or 0, "")
        raise OutputError(
            f"{key}: cannot create or write the output folder {folder}: {reason}{hint}. Fix: {fix}"
        ) from None
    return folder


def known_keys() -> set[str]:
    """Every key name of the schemas and of the YAML files in conf/ (group names included)."""
    import dataclasses

    import yaml

    from advpure.config.schema import SCHEMAS, RootSchema

    names: set[str] = set()

    def visit_class(schema: type) -> None:
        for item in dataclasses.fields(schema):
            names.add(item.name)
            if isinstance(item.type, type) and dataclasses.is_dataclass(item.type):
                visit_class(item.type)

    def visit_node(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                names.add(str(key))
                visit_node(value)

    visit_class(RootSchema)
    for options in SCHEMAS.values():
        for schema in options.values():
            visit_class(schema)
            for item in dataclasses.fields(schema):
                default = item.default_factory() if item.default_factory is not dataclasses.MISSING else None
                if dataclasses.is_dataclass(default):
                    visit_class(type(default))
    conf = Path(__file__).resolve().parents[2] / "conf"
    for path in conf.rglob("*.yaml"):
        try:
            visit_node(yaml.safe_load(path.read_text()))
        except yaml.YAMLError:
            continue
    return names


def value_problem(leaf: str, value: str) -> str | None:
    """What a value of schema field ``leaf`` must be, if ``value`` is not one (``None`` if it is,
    or if fields of that name differ in type across schemas)."""
    import dataclasses

    from advpure.config import enums
    from advpure.config.schema import SCHEMAS

    annotations = {
        str(item.type)
        for options in SCHEMAS.values()
        for schema in options.values()
        for item in dataclasses.fields(schema)
        if item.name == leaf
    }
    if len(annotations) != 1 or (value in ("null", "None") and "None" in next(iter(annotations))):
        return None
    base = next(iter(annotations)).split("|")[0].strip()
    checks = {"float": float, "int": int}
    if base in checks:
        try:
            checks[base](value)
        except ValueError:
            return f"a number ({base})"
        return None
    if base == "bool":
        return None if value.lower() in ("true", "false") else "true or false"
    choices = getattr(enums, base, None)
    if isinstance(choices, type) and issubclass(choices, enums.Enum):
        names = [member.value for member in choices]
        return None if value in names else f"one of {', '.join(names)}"
    return None
