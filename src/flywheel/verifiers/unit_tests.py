"""`unit-tests`: run each candidate program against its problem's tests, in the sandbox, in parallel.

    verify:
      verifier: unit-tests
      params: {workers: 0, wall_s: 5, memory_mb: 512}    # 0 workers = one per CPU core

The problem's `reference` is JSON: `{"prefix": "<code before the completion>", "tests": ["assert f(1) == 2",
...]}` (what the `code` task writes). The program is `prefix + completion`. Score = share of tests passed;
correct = all passed.

**Grading the candidate cannot forge.** A test is split, when the problem is read, into *probes* (the
sub-expressions that use what the program defines: `f(7)` in `assert f(7) == 29`) and a *check* that uses
only literals, the probes' values and a few pure built-ins (`assert PROBE0 == 29`). Only the probes' text
goes into the sandbox: after the program has run, the bootstrap evaluates each probe and sends its value
back as one line of strict JSON on a pipe the verifier opened (plain built-in types only, tagged where JSON
has none). The verifier decodes the values into plain objects (so no `__eq__` of the candidate's exists
any more) and evaluates the check itself, with a small interpreter of a fixed set of expression nodes
(`JUDGE_CALLS`, `math` functions, operators with size guards), never with `eval`. The expected values,
the comparison and the success signal never enter the candidate's process: there is no marker to read
from its source, frames, constants or globals, no assert for a trace function to skip, no helper or
`exec`/`print` to replace that changes the verdict. What the program controls is the values its probes
return, which is what the test measures. A test the split cannot express (a statement other than `assert`
or `import math`, a comparison inside a call of the program, a comprehension over the program's values, a
test with no probe) is refused with the reason when the problem is read (`plan_test`).

With `isolate_tests` (default) every test's probes run in their own sandboxed process, so a test that
crashes, hangs or exits cannot touch the others; otherwise all probes of a candidate share one process
(faster: one start-up per candidate, bench/verify.py shows by how much). Runs are spread over `workers`
threads, each waiting on one sandboxed process: the processes use the cores, the threads only wait.
Identical (program, probes) runs in one batch run once. Any failure of one candidate's run, whatever it
did, becomes that candidate's verdict with the reason; the batch goes on.
"""

from __future__ import annotations

import ast
import functools
import json
import math
import operator
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields

import pandas as pd

from flywheel.sandbox import Limits, Result, SandboxUnavailable, layers_for, run_python
from flywheel.tasks import Verdict

LIMIT_NAMES = {f.name for f in fields(Limits)}

# --- the judge: what a check may use ------------------------------------------------------------------
JUDGE_CALLS = {f.__name__: f for f in (abs, all, any, bool, bytes, chr, complex, dict, divmod, enumerate, float,
                                       frozenset, int, isinstance, len, list, max, min, ord, repr, reversed,
                                       round, set, sorted, str, sum, tuple, type, zip)}
JUDGE_MATH = {n: getattr(math, n) for n in ("isclose", "isfinite", "isinf", "isnan", "floor", "ceil", "trunc",
                                            "sqrt", "fabs", "fsum", "gcd", "log", "log2", "log10", "exp",
                                            "pi", "e", "inf", "nan", "tau")}
BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
          ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
          ast.LShift: operator.lshift, ast.RShift: operator.rshift, ast.BitOr: operator.or_,
          ast.BitXor: operator.xor, ast.BitAnd: operator.and_}
UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg, ast.Not: operator.not_, ast.Invert: operator.invert}
COMPARE = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
           ast.Gt: operator.gt, ast.GtE: operator.ge, ast.Is: operator.is_, ast.IsNot: operator.is_not,
           ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b}
JUDGE_NODES = (ast.Constant, ast.Name, ast.Attribute, ast.Call, ast.keyword, ast.BinOp, ast.UnaryOp, ast.BoolOp,
               ast.Compare, ast.IfExp, ast.Tuple, ast.List, ast.Set, ast.Dict, ast.Subscript, ast.Slice, ast.Load,
               ast.And, ast.Or, *BINOPS, *UNARY, *COMPARE)
MAX_SEQUENCE = 1_000_000  # longest str/list a check may build (repetition), against a candidate's value


@dataclass(frozen=True)
class TestPlan:
    """One test: the probes the sandbox evaluates, and the checks the verifier evaluates on their values."""

    source: str
    probes: tuple[str, ...]
    checks: tuple[ast.expr, ...]  # each refers to probe k as the name `__probe{k}`
    names: dict = field(default_factory=dict, compare=False)  # the other names the checks use


class UnsupportedTest(ValueError):
    pass


def _names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _is_math(node: ast.AST, local: dict) -> bool:
    return (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "math"
            and "math" in local and node.attr in JUDGE_MATH)


def plan_test(test: str) -> TestPlan:
    """Split `test` into probes and checks; UnsupportedTest (a ValueError) says why it cannot be."""
    try:
        tree = ast.parse(test)
    except SyntaxError as err:
        raise UnsupportedTest(f"not valid Python ({err.msg})") from None
    # Names the check may use. `math` is always the verifier's: a test that uses it without importing it
    # would otherwise send `math.isclose(f(1), 2)`, a verdict, to be computed where the program can fake it.
    local: dict = {**JUDGE_CALLS, "math": math}
    probes: list[str] = []
    checks: list[ast.expr] = []

    def judge_only(node: ast.AST) -> bool:
        if not all(isinstance(n, JUDGE_NODES) for n in ast.walk(node)):
            return False
        for n in ast.walk(node):
            if isinstance(n, ast.Attribute) and not _is_math(n, local):
                return False
            if isinstance(n, ast.Name) and n.id not in local:
                return False
        return True

    def split(node: ast.expr) -> ast.expr:
        program_names = {n for n in _names(node) if n not in local}
        if not program_names and judge_only(node):
            return node
        if not program_names:
            raise UnsupportedTest(f"{ast.unparse(node)!r} uses what the verifier does not evaluate itself "
                                  f"(it knows literals, operators, {', '.join(sorted(JUDGE_CALLS))} and math.*)")
        if isinstance(node, ast.Call) and ((isinstance(node.func, ast.Name) and node.func.id in local)
                                           or _is_math(node.func, local)):
            if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords):
                raise UnsupportedTest("*args / **kwargs in a call the verifier evaluates")
            return ast.Call(node.func, [split(a) for a in node.args],
                            [ast.keyword(k.arg, split(k.value)) for k in node.keywords])
        if isinstance(node, ast.BinOp):
            return ast.BinOp(split(node.left), node.op, split(node.right))
        if isinstance(node, ast.UnaryOp):
            return ast.UnaryOp(node.op, split(node.operand))
        if isinstance(node, ast.BoolOp):
            return ast.BoolOp(node.op, [split(v) for v in node.values])
        if isinstance(node, ast.Compare):
            return ast.Compare(split(node.left), node.ops, [split(c) for c in node.comparators])
        if isinstance(node, ast.IfExp):
            return ast.IfExp(split(node.test), split(node.body), split(node.orelse))
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)) and not any(isinstance(e, ast.Starred) for e in node.elts):
            return type(node)([split(e) for e in node.elts], ast.Load()) if not isinstance(node, ast.Set) \
                else ast.Set([split(e) for e in node.elts])
        if isinstance(node, ast.Dict) and None not in node.keys:
            return ast.Dict([split(k) for k in node.keys], [split(v) for v in node.values])
        if isinstance(node, ast.Subscript):
            return ast.Subscript(split(node.value), split(node.slice), ast.Load())
        if isinstance(node, ast.Slice):
            return ast.Slice(*(split(x) if x is not None else None for x in (node.lower, node.upper, node.step)))
        # A probe: evaluated in the sandbox, after the program. It must be a value, and the comparison must
        # stay here: inside a probe it would run where the program can change its outcome.
        bad = next((n for n in ast.walk(node) if isinstance(n, (ast.Compare, ast.BoolOp, ast.Lambda, ast.GeneratorExp,
                                                               ast.ListComp, ast.SetComp, ast.DictComp, ast.NamedExpr,
                                                               ast.Await, ast.Yield, ast.YieldFrom, ast.Starred))),
                   None)
        if bad is not None:
            raise UnsupportedTest(f"{ast.unparse(node)!r} would be evaluated in the candidate's process with "
                                  f"{type(bad).__name__.lower()} inside; keep comparisons and loops outside the "
                                  "program's calls (one `assert f(x) == value` per value)")
        probes.append(ast.unparse(node))
        return ast.Name(f"__probe{len(probes) - 1}", ast.Load())

    for stmt in tree.body:
        if isinstance(stmt, ast.Import) and all(a.name == "math" and a.asname is None for a in stmt.names):
            pass  # `math` is the verifier's already
        elif isinstance(stmt, ast.ImportFrom) and stmt.module == "math" and all(
                a.name in JUDGE_MATH and a.asname is None for a in stmt.names):
            local.update({a.name: JUDGE_MATH[a.name] for a in stmt.names})
        elif isinstance(stmt, ast.Assert):
            check = split(stmt.test)
            checks.append(ast.fix_missing_locations(ast.Expression(check)))
        else:
            raise UnsupportedTest(f"{type(stmt).__name__.lower()} statement {ast.unparse(stmt)[:60]!r}: a test is "
                                  "`assert ...` statements (and `import math`)")
    if not probes:
        raise UnsupportedTest("it checks nothing the program defines (no call or name of the program in it)")
    return TestPlan(test, tuple(probes), tuple(checks), local)


def _guarded(op: type, a, b):
    """Operators on a candidate's values, without the ones that cost the verifier unbounded time or memory."""
    if op is ast.Mult and (isinstance(a, int) and isinstance(b, (str, bytes, list, tuple))
                           or isinstance(b, int) and isinstance(a, (str, bytes, list, tuple))):
        size, times = (len(b), a) if isinstance(a, int) else (len(a), b)
        if size * max(times, 0) > MAX_SEQUENCE:
            raise OverflowError("repetition too large for the verifier")
    if op is ast.Pow and isinstance(a, int) and isinstance(b, int) and abs(a) > 1 and abs(b) > 10_000:
        raise OverflowError("power too large for the verifier")
    if op is ast.LShift and isinstance(b, int) and b > 100_000:
        raise OverflowError("shift too large for the verifier")
    return BINOPS[op](a, b)


def _judge(node: ast.AST, env: dict):
    t = type(node)
    if t is ast.Expression:
        return _judge(node.body, env)
    if t is ast.Constant:
        return node.value
    if t is ast.Name:
        return env[node.id]
    if t is ast.Attribute:
        return JUDGE_MATH[node.attr]
    if t is ast.Call:
        return _judge(node.func, env)(*[_judge(a, env) for a in node.args],
                                      **{k.arg: _judge(k.value, env) for k in node.keywords})
    if t is ast.BinOp:
        return _guarded(type(node.op), _judge(node.left, env), _judge(node.right, env))
    if t is ast.UnaryOp:
        return UNARY[type(node.op)](_judge(node.operand, env))
    if t is ast.BoolOp:
        want = type(node.op) is ast.Or
        for v in node.values:
            x = _judge(v, env)
            if bool(x) == want:
                return x
        return x
    if t is ast.Compare:
        left = _judge(node.left, env)
        for op, c in zip(node.ops, node.comparators):
            right = _judge(c, env)
            if not COMPARE[type(op)](left, right):
                return False
            left = right
        return True
    if t is ast.IfExp:
        return _judge(node.body if _judge(node.test, env) else node.orelse, env)
    if t in (ast.Tuple, ast.List, ast.Set):
        return {ast.Tuple: tuple, ast.List: list, ast.Set: set}[t](_judge(e, env) for e in node.elts)
    if t is ast.Dict:
        return {_judge(k, env): _judge(v, env) for k, v in zip(node.keys, node.values)}
    if t is ast.Subscript:
        return _judge(node.value, env)[_judge(node.slice, env)]
    if t is ast.Slice:
        return slice(*(_judge(x, env) if x is not None else None for x in (node.lower, node.upper, node.step)))
    raise TypeError(f"the verifier does not evaluate {t.__name__}")  # plan_test lets none through


_TAGS = {"tuple": tuple, "set": set, "frozenset": frozenset}


def decode(x, depth: int = 0):
    """A probe's value from its JSON: plain built-in objects only, exact types; ValueError otherwise."""
    if depth > 100:
        raise ValueError("nested too deep")
    t = type(x)
    if x is None or t in (bool, int, float, str):
        return x
    if t is list:
        return [decode(y, depth + 1) for y in x]
    if t is dict and len(x) == 1:
        (tag, v), = x.items()
        if tag in _TAGS and type(v) is list:
            return _TAGS[tag](decode(y, depth + 1) for y in v)
        if tag == "dict" and type(v) is list and all(type(p) is list and len(p) == 2 for p in v):
            return {decode(k, depth + 1): decode(y, depth + 1) for k, y in v}
        if tag == "float" and v in ("inf", "-inf", "nan"):
            return float(v)
        if tag == "bytes" and type(v) is str:
            return bytes.fromhex(v)
        if tag == "complex" and type(v) is list and len(v) == 2 and all(type(y) in (int, float) for y in v):
            return complex(*v)
    raise ValueError(f"not a value the sandbox sends: {str(x)[:60]}")


def _reject_constant(name: str):
    raise ValueError(f"JSON constant {name} is not sent by the sandbox")


def read_channel(r: Result, n: int) -> list[tuple[str, object] | None]:
    """The n probe outcomes from a run's result channel: ('v', value), ('e', error text) or None (missing).
    Malformed lines are ignored (the program can write there too; it can only lose points that way)."""
    out: list = [None] * n
    for line in r.channel.split(b"\n"):
        try:
            rec = json.loads(line, parse_constant=_reject_constant)
            i = rec["i"]
            if type(i) is not int or not 0 <= i < n or len(rec) != 2:
                continue
            out[i] = ("v", decode(rec["v"])) if "v" in rec else ("e", str(rec["e"])[:300])
        except (ValueError, KeyError, TypeError, RecursionError, MemoryError):
            continue
    return out


def parse_reference(reference: str, prompt_id: str = "?") -> tuple[str, list[str]]:
    """(prefix, tests) from a code problem's reference; a clear error if it is not that JSON."""
    try:
        ref = json.loads(reference)
        prefix, tests = ref.get("prefix", ""), ref["tests"]
        if not isinstance(prefix, str) or not isinstance(tests, list) or not all(isinstance(t, str) for t in tests):
            raise TypeError
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
        raise ValueError(f"problem {prompt_id}: reference {reference[:80]!r} is not unit-test JSON "
                         '{"prefix": str, "tests": [str, ...]}; the unit-tests verifier needs problems made by '
                         "the code task (or the same reference format)") from None
    if not tests:
        raise ValueError(f"problem {prompt_id}: no tests; a program cannot be checked without tests")
    return prefix, tests


@functools.lru_cache(maxsize=4096)
def _plans(reference: str, prompt_id: str) -> tuple[str, tuple[TestPlan, ...]]:
    prefix, tests = parse_reference(reference, prompt_id)
    plans = []
    for i, t in enumerate(tests):
        try:
            plans.append(plan_test(t))
        except UnsupportedTest as err:
            raise ValueError(f"problem {prompt_id}: test {i} {t[:60]!r}: {err}") from None
    return prefix, tuple(plans)


class UnitTests:
    def __init__(self, workers: int = 0, isolate_tests: bool = True, **limits):
        """
        workers: sandboxed processes at a time (0 = os.cpu_count()).
        isolate_tests: one process per test (True) or per candidate (False).
        **limits: fields of flywheel.sandbox.Limits (wall_s, cpu_s, memory_mb, processes, file_mb, ...).
        """
        unknown = set(limits) - LIMIT_NAMES
        if unknown:
            raise TypeError(f"unknown sandbox limit(s) {', '.join(sorted(unknown))}; "
                            f"known: {', '.join(sorted(LIMIT_NAMES))}")
        self.limits = Limits(**limits)
        self.workers = workers or os.cpu_count() or 1
        self.isolate_tests = isolate_tests
        self.layers = layers_for(self.limits)[1]  # fails now, with the fix, if a required layer is missing

    def _run(self, job: tuple[str, tuple[str, ...]]) -> Result:
        program, probes = job
        try:
            return run_python(program, self.limits, probes=list(probes))
        except SandboxUnavailable:
            raise  # the machine, not the candidate: stop with the fix
        except Exception as err:  # noqa: BLE001 - whatever one candidate caused is its own verdict
            return Result("error", -1, "", f"sandbox runner: {type(err).__name__}: {err}", 0.0)

    def _run_all(self, jobs: list[tuple[str, tuple[str, ...]]]) -> dict:
        from flywheel.console import progress  # minutes for a batch: say how far it is

        unique = list(dict.fromkeys(jobs))
        if self.workers == 1 or len(unique) == 1:
            return dict(zip(unique, list(progress(map(self._run, unique), len(unique), "unit tests: programs"))))
        with ThreadPoolExecutor(self.workers) as pool:
            return dict(zip(unique, list(progress(pool.map(self._run, unique), len(unique), "unit tests: programs"))))

    # -- verifier interface ------------------------------------------------------------------------------
    def verify_batch(self, samples: pd.DataFrame) -> list[Verdict]:
        per_sample = []  # (plans, [(job, first probe index in that job, plan indices)])
        for pid, ref, completion in zip(samples["prompt_id"], samples["reference"], samples["completion"]):
            prefix, plans = _plans(ref, str(pid))
            program = prefix + completion
            if self.isolate_tests:
                runs = [((program, p.probes), [k]) for k, p in enumerate(plans)]
            else:
                runs = [((program, tuple(q for p in plans for q in p.probes)), list(range(len(plans))))]
            per_sample.append((plans, runs))
        results = self._run_all([job for _, runs in per_sample for job, _ in runs])
        return [self._verdict(plans, [(results[job], ks) for job, ks in runs]) for plans, runs in per_sample]

    def verify(self, problem: dict, completion: str) -> Verdict:
        return self.verify_batch(pd.DataFrame([{**problem, "completion": completion}]))[0]

    def _verdict(self, plans: tuple[TestPlan, ...], runs: list[tuple[Result, list[int]]]) -> Verdict:
        why: list[str] = []
        for r, ks in runs:
            outcomes = read_channel(r, sum(len(plans[k].probes) for k in ks))
            at = 0
            for k in ks:
                plan = plans[k]
                got = outcomes[at:at + len(plan.probes)]
                at += len(plan.probes)
                why.append(_test_outcome(plan, got, r, self.limits))
        n_ok = sum(w == "" for w in why)
        first_bad = next((k for k, w in enumerate(why) if w), None)
        if first_bad is None:
            return Verdict(True, 1.0, f"passed {n_ok}/{len(plans)} tests")
        return Verdict(False, n_ok / len(plans), f"failed: {n_ok}/{len(plans)} tests passed; test {first_bad} "
                                                 f"({plans[first_bad].source[:60]}): {why[first_bad]}")


def _test_outcome(plan: TestPlan, got: list, r: Result, limits: Limits) -> str:
    """'' when the test passed, else why not."""
    if r.status != "ok":
        # A run that did not end cleanly (timeout, a signal, a non-zero exit) fails every test it held,
        # whatever its result channel carries: values the program wrote there itself before hanging would
        # otherwise pass without the probes ever running (found by probing: forge, then sleep).
        return _failure(r, limits)
    env = {}
    for k, (probe, outcome) in enumerate(zip(plan.probes, got)):
        if outcome is None:
            if r.channel_overflow:
                return f"its values were over the {limits.result_bytes}-byte result limit"
            return _failure(r, limits)
        kind, value = outcome
        if kind == "e":
            return f"{probe[:40]} raised {value[:200]}"
        env[f"__probe{k}"] = value
    env.update(plan.names)
    for check in plan.checks:
        try:
            ok = bool(_judge(check, env))
        except Exception as err:  # noqa: BLE001 - a check on the candidate's values that cannot be computed fails
            return f"the check raised {type(err).__name__}: {str(err)[:120]}"
        if not ok:
            shown = ", ".join(f"{p[:30]} returned {repr(env[f'__probe{k}'])[:40]}" for k, p in enumerate(plan.probes))
            return f"assertion failed ({shown})"
    return ""


def _failure(r: Result, limits: Limits) -> str:
    if r.status == "timeout":
        return f"timeout after {limits.wall_s:g}s"
    if r.status == "killed":
        return f"killed by signal {-r.returncode}"
    if r.status == "ok":
        return "exited before the tests finished"
    last = next((ln for ln in reversed(r.stderr.strip().splitlines()) if ln.strip()), "")
    return last[:200] or f"exit code {r.returncode}"
