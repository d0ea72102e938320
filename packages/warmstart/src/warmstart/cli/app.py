"""Build a CLI from typed functions (the LitGPT way): each subcommand is a plain function whose signature
*is* the schema; dataclass parameters become dotted options (``--engine.train.max_steps``) documented from
their attribute docstrings; ``--config FILE.yaml`` and ``--print_config`` come for free (jsonargparse).

User mistakes (a wrong field, a wrong type, a missing file, a bad checkpoint) print one line and exit
with code 2, never a traceback; every engine config among a command's options is validated before the
command runs, and a command that fails with a user error before its first checkpoint leaves no run
directory behind. A run stopped by SIGTERM/SIGINT prints one line ("stopped at step N; resume with
--resume RUN") and exits 143/130. A command declaring ``run: RunContext | None = None`` gets one from
the App also when it is called as a plain function, so its body never builds its own.
"""

from __future__ import annotations

import functools
import inspect
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast, overload

from warmstart.cli.rundir import RunContext
from warmstart.errors import NonFiniteError, UserError

if TYPE_CHECKING:
    from jsonargparse import ArgumentParser

USAGE_ERROR = 2
F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class DemoResult:
    """What a demo reports to the tour: one headline metric and how it was obtained."""

    what: str
    """One line: what ran."""
    metric: str
    """Name of the headline metric."""
    value: float
    """Its value."""
    details: dict[str, Any] = field(default_factory=dict)
    """Anything else worth a look (paths, secondary metrics)."""

    def headline(self) -> str:
        return f"{self.metric} = {self.value:.4g}"


@dataclass
class _Command:
    name: str
    fn: Callable[..., Any]
    help: str


def _one_line(message: object) -> str:
    return " ".join(part.strip() for part in str(message).splitlines() if part.strip())


def _description(fn: Callable[..., Any]) -> str:
    """A command's help text: its docstring without the ``Args:`` section (each arg documents its option)."""
    from docstring_parser import parse

    doc = parse(inspect.getdoc(fn) or "")
    return "\n\n".join(part for part in (doc.short_description, doc.long_description) if part)


def _validate_engine_options(kwargs: dict[str, Any]) -> None:
    """Check every engine config among a command's options before the command writes anything."""
    from warmstart.engine.config import EngineConfig
    from warmstart.engine.validate import validate_config

    for key, value in kwargs.items():
        if isinstance(value, EngineConfig):
            validate_config(value, prefix=f"{key}.")  # warnings are the engine's to print, once


class App:
    """A per-domain CLI: ``app = App("eo", "Earth observation")`` then ``@app.command`` on functions.

    ``@app.command(demo=True)`` marks the function ``warmstart tour`` runs; it must accept ``out: Path``
    and return a :class:`DemoResult`. A parameter ``run: RunContext`` is filled by the CLI (not an option).
    """

    def __init__(self, name: str, description: str, version: str | None = None) -> None:
        self.name = name
        self.description = description
        self.version = version
        self.commands: dict[str, _Command] = {}
        self.demo_command: str | None = None

    @property
    def prog(self) -> str:
        return "warmstart" if self.name == "warmstart" else f"warmstart-{self.name}"

    @overload
    def command(self, fn: F, *, name: str | None = None, demo: bool = False) -> F: ...
    @overload
    def command(
        self, fn: None = None, *, name: str | None = None, demo: bool = False
    ) -> Callable[[F], F]: ...
    def command(
        self, fn: F | None = None, *, name: str | None = None, demo: bool = False
    ) -> F | Callable[[F], F]:
        def register(f: F) -> F:
            cmd_name = name or f.__name__.replace("_", "-")
            doc = inspect.getdoc(f) or ""
            self.commands[cmd_name] = _Command(cmd_name, f, doc.split("\n\n")[0].replace("\n", " "))
            if demo:
                self.demo_command = cmd_name
            return self._with_run(f, cmd_name)

        return register(fn) if fn is not None else register

    def _with_run(self, f: F, cmd_name: str) -> F:
        """``f`` called as a function gets ``run=RunContext(app, command)`` when it takes one and got none."""
        params = list(inspect.signature(f).parameters)
        if "run" not in params:
            return f
        position = params.index("run")

        @functools.wraps(f)
        def with_run(*args: Any, **kwargs: Any) -> Any:
            if len(args) > position or kwargs.get("run") is not None:
                return f(*args, **kwargs)
            kwargs["run"] = run = RunContext(self.name, cmd_name)
            try:
                return f(*args, **kwargs)
            finally:
                run.close()

        return cast(F, with_run)

    # -- parsing --------------------------------------------------------------------------------
    def parser(self) -> ArgumentParser:
        from jsonargparse import ActionConfigFile, ArgumentParser, set_parsing_settings

        set_parsing_settings(docstring_parse_attribute_docstrings=True)  # field docs become --help

        parser = ArgumentParser(prog=self.prog, description=self.description, exit_on_error=False)
        parser.add_argument(
            "--version", action="version", version=f"%(prog)s {self.version or self._dist_version()}"
        )
        subcommands = parser.add_subcommands(dest="command", required=True)
        for cmd in self.commands.values():
            sub = ArgumentParser(description=_description(cmd.fn), exit_on_error=False)
            sub.add_argument("--config", action=ActionConfigFile, help="a YAML file of options")
            skip: set[str | int] = {"run"} if "run" in inspect.signature(cmd.fn).parameters else set()
            sub.add_function_arguments(cmd.fn, as_group=False, skip=skip)
            subcommands.add_subcommand(cmd.name, sub, help=cmd.help)
        return parser

    def _dist_version(self) -> str:
        from importlib.metadata import PackageNotFoundError, version

        from warmstart import __version__

        try:
            return version(self.prog) if self.name != "warmstart" else __version__
        except PackageNotFoundError:
            return __version__

    def main(self, argv: Sequence[str] | None = None) -> int:
        """Parse ``argv``, run the command; returns the exit code (``main()`` of a console script)."""
        from jsonargparse import ArgumentError

        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        argv = list(sys.argv[1:] if argv is None else argv)
        parser = self.parser()
        try:
            cfg = parser.parse_args(argv)
        except ArgumentError as exc:
            print(f"{self.prog}: error: {_one_line(exc)} (see {self.prog} --help)", file=sys.stderr)
            return USAGE_ERROR
        except SystemExit as exc:  # --help, --version, --print_config
            return int(exc.code or 0)
        name = cfg.command
        cmd = self.commands[name]
        sub_cfg = cfg[name]
        config_yaml = ""
        subcommands = parser._subcommands_action
        try:
            if subcommands is not None:
                config_yaml = subcommands._name_parser_map[name].dump(sub_cfg, skip_none=False)
        except Exception:  # noqa: BLE001 - a config that cannot be dumped is still runnable
            config_yaml = ""
        from warmstart.engine.signals import Interrupted

        run: RunContext | None = None
        try:
            init = parser.instantiate(cfg)[name]
            kwargs = {k: v for k, v in vars(init).items() if k not in ("config", "__path__")}
            _validate_engine_options(kwargs)
            if "run" in inspect.signature(cmd.fn).parameters:
                kwargs["run"] = run = RunContext(self.name, name, config_yaml)
            result = cmd.fn(**kwargs)
        except Interrupted as exc:
            print(f"{self.prog} {name}: {exc.line()}", file=sys.stderr)
            return exc.exit_code
        except UserError as exc:
            if run is not None and not isinstance(exc, NonFiniteError):  # a diverged run keeps its metrics
                run.abandon()
            print(f"{self.prog} {name}: error: {_one_line(exc)}", file=sys.stderr)
            return USAGE_ERROR
        except KeyboardInterrupt:
            print(f"{self.prog} {name}: interrupted", file=sys.stderr)
            return 130
        finally:
            if run is not None:
                run.close()
        if isinstance(result, int) and not isinstance(result, bool):
            return result
        return 0

    def entry(self) -> None:
        """Console-script entry point."""
        sys.exit(self.main())

    # -- the tour -------------------------------------------------------------------------------
    def run_demo(self, out: Path) -> tuple[DemoResult, float]:
        """Run this app's demo in-process (as ``warmstart tour`` does); returns (result, seconds)."""
        if self.demo_command is None:
            raise UserError(f"{self.prog} registers no demo")
        fn = self.commands[self.demo_command].fn
        kwargs: dict[str, Any] = {"out": out}
        run = None
        if "run" in inspect.signature(fn).parameters:
            kwargs["run"] = run = RunContext(self.name, self.demo_command, "")
        start = time.perf_counter()
        try:
            result = fn(**kwargs)
        finally:
            if run is not None:
                run.close()
        return result, time.perf_counter() - start
