"""Quality gates: every artifact of an iteration is validated with Great Expectations (GX Core 1.x) right
after the step that wrote it, so a broken iteration stops where it broke instead of poisoning the next ones.

A step calls `check_gate(name, data_path, suite, cfg, **context)` after writing its output. `suite` is a
function that lives next to the step (e.g. `flywheel.steps.curate.curated_suite`) and returns the rules as
a list of GX expectations, each tagged with `rule(...)` (an id, what it means, its threshold). The gate:

1. reads the artifact back as written and validates it (an ephemeral GX context, nothing on disk),
2. writes `<data>.gate.json` (the GX validation result) and `<data>.gate.md` (a table of rules: status,
   observed value, threshold) next to the data, deleting nothing,
3. returns a summary for the step's metrics (so `summary.json`, the report and W&B show it), or raises
   `GateError` naming each failed rule, its observed value and its threshold.

A rule whose id (`curated.seed_share`) or gate (`curated`) is listed in `gates.warn` is validated with GX
severity "warning": it is reported, but does not stop the step. docs/data.md lists every rule.

Custom expectations (GX's extension API, the built-ins cover the rest): distinct n-gram ratio of a text
column, distinct answers per prompt, the share of a value, and equality or n-gram overlap with a reference
set in a file (contamination).
"""

from __future__ import annotations

import collections
import functools
import importlib
import importlib.util
import json
import sys
import threading
import time
import types
from pathlib import Path
from typing import Any, Callable, Iterable

from flywheel.config import Config
from flywheel.io import read_table, write_json, write_text
from flywheel.text import distinct_ngram_ratio, ngrams, words  # noqa: F401 - shared with dedupe and propose


class GateError(ValueError):
    """A quality gate failed: the message names each failed rule, its observed value and its threshold."""

    def __init__(self, message: str, failed: list[str] = ()):
        super().__init__(message)
        self.failed = list(failed)


@functools.lru_cache(maxsize=4)
def _references(path: str, column: str) -> tuple[str, ...]:
    return tuple(read_table(path, (column,), what="reference set")[column].astype(str))


@functools.lru_cache(maxsize=4)
def _index(path: str, column: str, n: int) -> "NgramIndex":
    return NgramIndex(_references(path, column), n)  # GX evaluates a condition several times per rule


def _between(expectation, value) -> dict:
    """GX result of a measured value against [min_value, max_value]; nothing to measure (no rows) passes."""
    lo, hi = expectation.min_value, expectation.max_value
    ok = value is None or ((lo is None or value >= lo) and (hi is None or value <= hi))
    return {"success": ok, "result": {"observed_value": value}}


class NgramIndex:
    """The n-grams of a reference set (e.g. the evaluation prompts), to test texts for overlap.

    Only what can leak is compared: the words of a reference text that belong to its own question, not to
    an instruction template the references share. A template word is one covered by a `TEMPLATE_K`-word
    gram that occurs in more than half of the references (and in at least `TEMPLATE_MIN_REFS` of them);
    those words are removed from the references and from every tested text before n-grams are taken. (A
    fixed 12-word instruction such as "Please reason step by step, and put your final answer within
    \\boxed{}." otherwise makes every two prompts whose questions end on the same word share a 13-gram, and
    one of 13 words or more flags every row.) Word problems share no 3-word gram in more than half of
    their questions, so their questions stay whole; one-word references (arithmetic) have no 3-grams.

    A reference text (template removed) shorter than n words contributes itself as one gram; a text is
    contaminated when it contains any reference gram as consecutive words (exact match for one-word
    prompts)."""

    TEMPLATE_K = 3
    TEMPLATE_MIN_REFS = 5  # a share of fewer references says nothing about a template

    def __init__(self, references: Iterable[str], n: int):
        refs = [words(r) for r in references]
        k = self.TEMPLATE_K
        counts = collections.Counter(g for w in refs for g in {tuple(w[i:i + k]) for i in range(len(w) - k + 1)})
        self.template = {g for g, c in counts.items() if c > len(refs) / 2 and c >= self.TEMPLATE_MIN_REFS}
        self.grams: set[tuple[str, ...]] = set()
        for w in refs:
            self.grams.update(ngrams(self.content(w), n))
        self.lengths = sorted({len(g) for g in self.grams})

    def content(self, w: list[str]) -> list[str]:
        """The words of `w` not covered by a template gram."""
        if not self.template:
            return w
        k, covered = self.TEMPLATE_K, set()
        for i in range(len(w) - k + 1):
            if tuple(w[i:i + k]) in self.template:
                covered.update(range(i, i + k))
        return [x for j, x in enumerate(w) if j not in covered]

    def hits(self, text: str) -> int:
        w = self.content(words(text))
        return sum(tuple(w[i:i + k]) in self.grams for k in self.lengths for i in range(len(w) - k + 1))


# --- custom expectations (registered with GX when this module is imported) ------------------------------

def _gx():
    """Import GX and define the custom expectations once (importing GX costs ~2 s; only gated steps pay)."""
    with _GX_LOCK:
        return _gx_locked()


class _Deferred(types.ModuleType):
    """Stands in for a module in sys.modules until one of its attributes is used, then imports the real
    module in its place and answers from it."""

    def __getattr__(self, attr):  # called only for attributes this stand-in lacks: all but its name/spec
        name = self.__name__
        if sys.modules.get(name) is self:
            del sys.modules[name]
        real = importlib.import_module(name)
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, real)
        return getattr(real, attr)


# GX imports these at its top level for expectations the gates never use (KL divergence, KS tests) and uses
# them only inside those expectations' methods: deferred, `import great_expectations` measured 4.0 s instead
# of 6.8 s (load 4 on 2 cores; scipy.stats ~2 s of it, altair and jsonschema most of the rest). A gate or a
# user expectation that does use them imports them then, on first attribute access.
DEFERRED_BY_GX = ("scipy.stats", "altair")


def _defer(name: str) -> None:
    if name in sys.modules or importlib.util.find_spec(name.partition(".")[0]) is None:
        return  # already imported (nothing to save) or not installed (GX would fail as it does without us)
    stand_in = _Deferred(name)
    stand_in.__spec__ = importlib.util.spec_from_loader(name, loader=None)
    sys.modules[name] = stand_in
    parent, _, child = name.rpartition(".")
    if parent:  # `from scipy import stats` looks the child up on the parent package
        setattr(importlib.import_module(parent), child, stand_in)


def _gx_locked():
    global _GX
    if _GX is not None:
        return _GX
    import logging

    # GX logs ~100 INFO lines per import ("Skipping registering function ..."); kfp.local's executor puts the
    # root logger at INFO, so without this every step's log drowns in them.
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    for name in DEFERRED_BY_GX:
        _defer(name)
    import great_expectations as gx
    from great_expectations import expectations as gxe
    from great_expectations.core.metric_domain_types import MetricDomainTypes
    from great_expectations.execution_engine import PandasExecutionEngine
    from great_expectations.expectations.expectation import ColumnAggregateExpectation, ColumnMapExpectation
    from great_expectations.expectations.metrics import (ColumnAggregateMetricProvider, ColumnMapMetricProvider,
                                                         column_aggregate_value, column_condition_partial)
    from great_expectations.expectations.metrics.metric_provider import metric_value

    class ColumnDistinctNgramRatio(ColumnAggregateMetricProvider):
        metric_name = "column.flywheel_distinct_ngram_ratio"
        value_keys = ("n",)

        @column_aggregate_value(engine=PandasExecutionEngine)
        def _pandas(cls, column, n, **kwargs):
            return distinct_ngram_ratio(column.tolist(), n) if len(column) else None

    class ExpectColumnDistinctNgramRatioToBeBetween(ColumnAggregateExpectation):
        """Distinct word n-grams / all word n-grams of the column's texts (diversity, distinct-n)."""

        n: int = 2
        min_value: float | None = None
        max_value: float | None = None
        metric_dependencies = ("column.flywheel_distinct_ngram_ratio",)
        success_keys = ("n", "min_value", "max_value")

        def _validate(self, metrics, runtime_configuration=None, execution_engine=None):
            return _between(self, metrics["column.flywheel_distinct_ngram_ratio"])

    class ColumnDistinctAnswersPerGroup(ColumnAggregateMetricProvider):
        metric_name = "column.flywheel_distinct_answers_per_group"
        value_keys = ("answer_column",)

        @metric_value(engine=PandasExecutionEngine)
        def _pandas(cls, execution_engine, metric_domain_kwargs, metric_value_kwargs, metrics,
                    runtime_configuration):
            df, _, accessor = execution_engine.get_compute_domain(metric_domain_kwargs, MetricDomainTypes.COLUMN)
            if not len(df):
                return None
            per_group = df.groupby(accessor["column"])[metric_value_kwargs["answer_column"]].nunique()
            return float(per_group.mean())

    class ExpectDistinctAnswersPerPromptToBeBetween(ColumnAggregateExpectation):
        """Mean number of distinct `answer_column` values per value of `column` (e.g. per prompt)."""

        answer_column: str = "completion"
        min_value: float | None = None
        max_value: float | None = None
        metric_dependencies = ("column.flywheel_distinct_answers_per_group",)
        success_keys = ("answer_column", "min_value", "max_value")

        def _validate(self, metrics, runtime_configuration=None, execution_engine=None):
            return _between(self, metrics["column.flywheel_distinct_answers_per_group"])

    class ColumnShareOfValue(ColumnAggregateMetricProvider):
        metric_name = "column.flywheel_share_of_value"
        value_keys = ("value",)

        @column_aggregate_value(engine=PandasExecutionEngine)
        def _pandas(cls, column, value, **kwargs):
            return float((column == value).mean()) if len(column) else None

    class ExpectColumnShareOfValueToBeBetween(ColumnAggregateExpectation):
        """The share of rows whose column equals `value` (e.g. the share of seed rows)."""

        value: str
        min_value: float | None = None
        max_value: float | None = None
        metric_dependencies = ("column.flywheel_share_of_value",)
        success_keys = ("value", "min_value", "max_value")

        def _validate(self, metrics, runtime_configuration=None, execution_engine=None):
            return _between(self, metrics["column.flywheel_share_of_value"])

    class ColumnValuesNotInReferences(ColumnMapMetricProvider):
        condition_metric_name = "column_values.flywheel_not_in_references"
        condition_value_keys = ("references_path", "references_column", "n")

        @column_condition_partial(engine=PandasExecutionEngine)
        def _pandas(cls, column, references_path, references_column, n, **kwargs):
            if n is None:
                refs = _references(references_path, references_column)
                return ~column.isin(refs)
            index = _index(references_path, references_column, n)
            return column.map(lambda t: index.hits(t) == 0)

    class ExpectColumnValuesToNotOccurInReferences(ColumnMapExpectation):
        """No value equals (n: None) or shares a word n-gram with (n: int) a text of `references_column` in
        the Parquet file `references_path` (contamination with the evaluation set). The references stay in
        their file: a value set of thousands of prompts in the expectation's kwargs makes GX crawl."""

        references_path: str
        references_column: str = "prompt"
        n: int | None = None
        map_metric = "column_values.flywheel_not_in_references"
        success_keys = ("references_path", "references_column", "n", "mostly")

    _GX = {"gx": gx, "gxe": gxe, "ExpectColumnDistinctNgramRatioToBeBetween": ExpectColumnDistinctNgramRatioToBeBetween,
           "ExpectDistinctAnswersPerPromptToBeBetween": ExpectDistinctAnswersPerPromptToBeBetween,
           "ExpectColumnValuesToNotOccurInReferences": ExpectColumnValuesToNotOccurInReferences,
           "ExpectColumnShareOfValueToBeBetween": ExpectColumnShareOfValueToBeBetween}
    return _GX


_GX: dict | None = None
_GX_LOCK = threading.Lock()


# No background import of GX while generate/evaluate decode: tried (`preload`, a thread started at the step's
# start), it made the gate cost more, not less. Decoding a small model is Python-bound, so the import thread
# and the decoding loop take turns on the GIL: bench/gates.py measured the samples gate adding 6-7.7 s to
# generate with the thread and 2.1 s without (2 shared cores, load 3).


# The gates (the `name` of each `check_gate` call) and the suites that hold their rules; the rule ids are
# read from the suites themselves (`known_rule_ids`), so `gates.warn` is checked against what runs. A test
# checks that every `check_gate` call in the package is listed here.
GATE_SUITES = {"samples": ["flywheel.steps.generate:samples_suite"],
               "proposals": ["flywheel.steps.propose:proposals_suite"],
               "verdicts": ["flywheel.steps.verify:verdicts_suite"],
               "curated": ["flywheel.steps.curate:curated_suite", "flywheel.steps.grpo_prompts:grpo_prompts_suite",
                           "flywheel.steps.pairs:pairs_suite"],
               "rollouts": ["flywheel.train.grpo:rollouts_suite"],
               "results": ["flywheel.steps.evaluate:results_suite"]}
_listing = threading.local()  # set while known_rule_ids calls the suites: expectations() returns stand-ins


class _StandIn:
    """What a suite's expectation constructors return while its rule ids are listed (no GX import)."""

    def __init__(self, *args, **kwargs):
        pass


class _StandInNamespace:
    def __getattr__(self, name):
        return _StandIn


def known_rule_ids(cfg: Config) -> dict[str, list[str]]:
    """{gate: [rule ids]}, from calling each gate's suite with `cfg` (every optional context given, so
    that rules that exist only with an evaluation set are listed too); GX is not imported."""
    import inspect

    out = {}
    _listing.on = True
    try:
        for gate, targets in GATE_SUITES.items():
            ids = out.setdefault(gate, [])
            for target in targets:
                module, fn = target.split(":")
                suite = getattr(importlib.import_module(module), fn)
                optional = {n: "<listing>" for n, p in inspect.signature(suite).parameters.items()
                            if p.default is None}
                ids += [r for r in (e.meta["rule"] for e in suite(cfg, **optional)) if r not in ids]
    finally:
        _listing.on = False
    return out


def expectations():
    """GX's expectations module plus ours, as one namespace: `E = expectations(); E.ExpectColumnValuesToNotBeNull`."""
    if getattr(_listing, "on", False):
        return _StandInNamespace()
    g = _gx()

    class _NS:
        def __getattr__(self, name):
            return g[name] if name in g else getattr(g["gxe"], name)

    return _NS()


def rule(rule_id: str, expectation, what: str, threshold: str):
    """Tag a GX expectation as a gate rule: `rule_id` ('curated.seed_share'), what it means in words, and its
    threshold with the config key that sets it (shown in the failure message and the report)."""
    expectation.description = what
    expectation.meta = {"rule": rule_id, "threshold": threshold}
    return expectation


# --- running a gate ------------------------------------------------------------------------------------

def report_paths(data_path: str | Path) -> tuple[Path, Path]:
    """`<data>.gate.json` and `<data>.gate.md` beside the artifact (`curated.parquet` -> `curated.gate.json`)."""
    p = Path(data_path)
    stem = p.name[: -len(p.suffix)] if p.suffix in (".parquet", ".json") else p.name
    return p.with_name(f"{stem}.gate.json"), p.with_name(f"{stem}.gate.md")


def check_gate(name: str, data_path: str | Path, suite: Callable[..., list], cfg: Config,
               inputs: dict[str, str | Path | None] | None = None, **context) -> dict:
    """Validate the artifact at `data_path` with the rules `suite(cfg, **context)`; see the module docstring.

    Returns the gate's summary for the step metrics, with `hashes`: the content hash of the artifact and of
    the step's `inputs` (role -> path), which the iteration's reproducibility manifest collects. Raises
    GateError when a rule of severity 'critical' failed. With `gates.enabled: false` only the hashes are
    computed: GX is not imported and nothing is written.
    """
    from flywheel.versions import content_hash

    hashes = {"output": content_hash(data_path)}
    hashes.update({role: content_hash(p) for role, p in (inputs or {}).items() if p})
    g = cfg.gates
    if not g.enabled:
        return {"enabled": False, "hashes": hashes}
    t0 = time.perf_counter()
    gx = _gx()["gx"]
    df = read_table(data_path, what=name)
    rules = suite(cfg, **context)
    for e in rules:
        rid = e.meta["rule"]
        if rid in g.warn or name in g.warn:
            e.severity = "warning"
    ctx = gx.get_context(mode="ephemeral")
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)  # no "Calculating Metrics" bars per rule
    batch = (ctx.data_sources.add_pandas(name).add_dataframe_asset(name)
             .add_batch_definition_whole_dataframe("all"))
    suite_obj = ctx.suites.add(gx.ExpectationSuite(name=name, expectations=rules))
    vd = ctx.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch, suite=suite_obj))
    id_cols = [c for c in ("prompt_id", "sample_id") if c in df.columns]
    result = vd.run(batch_parameters={"dataframe": df},
                    result_format={"result_format": "SUMMARY", "unexpected_index_column_names": id_cols,
                                   "partial_unexpected_count": 5})
    outcomes = [_outcome(r) for r in result.results]
    order = {e.meta["rule"]: i for i, e in enumerate(rules)}
    outcomes.sort(key=lambda o: order.get(o["rule"], len(order)))
    failed = [o for o in outcomes if o["status"] == "failed"]
    warned = [o for o in outcomes if o["status"] == "warning"]
    json_path, md_path = report_paths(data_path)
    write_json(result.to_json_dict(), json_path)
    write_text(_markdown(name, data_path, len(df), outcomes), md_path)
    summary = {
        "enabled": True, "passed": not failed, "rules": len(outcomes), "failed": [o["rule"] for o in failed],
        "warnings": [o["rule"] for o in warned],
        "observed": {o["rule"]: o["observed_value"] for o in outcomes if o["observed_value"] is not None},
        "report": str(md_path), "seconds": round(time.perf_counter() - t0, 3), "hashes": hashes,
    }
    if failed:
        lines = [f"quality gate '{name}' failed on {data_path} ({len(df)} rows):"]
        lines += [f"  {o['rule']}: {o['what']}: observed {o['observed']}; threshold {o['threshold']}" for o in failed]
        lines.append(f"  validation result: {json_path}; report: {md_path}. Nothing was deleted. To only warn, "
                     f"add the rule id to gates.warn (see docs/data.md).")
        raise GateError("\n".join(lines), [o["rule"] for o in failed])
    return summary


def _outcome(r) -> dict:
    """One rule's result in words: status, observed value (number when there is one) and the threshold."""
    cfg = r.expectation_config
    meta = cfg.meta or {}
    res = r.result or {}
    observed_value = None
    if r.exception_info and r.exception_info.get("raised_exception"):
        observed = f"error: {r.exception_info.get('exception_message')}"
    elif "observed_value" in res:
        ov = res["observed_value"]
        if cfg.type == "expect_table_columns_to_match_set":
            missing = (res.get("details") or {}).get("mismatched", {}).get("missing") or []
            observed = f"missing columns {missing}" if missing else "all columns present"
        elif isinstance(ov, (int, float)) and not isinstance(ov, bool):
            observed_value = float(ov)
            observed = f"{ov:.4g}"
        else:
            observed = str(ov)
    elif "unexpected_count" in res:
        n, total = res["unexpected_count"], res.get("element_count", 0)
        observed_value = n / total if total else 0.0  # a share, comparable across iterations
        observed = f"{n} of {total} rows"
        if n:
            examples = res.get("partial_unexpected_list") or []
            ids = res.get("partial_unexpected_index_list") or []
            observed += f", e.g. {examples[:3]!r}"
            if ids and isinstance(ids[0], dict):
                observed += f" at {[{k: v for k, v in i.items() if k != 'index'} for i in ids[:3]]}"
    else:
        observed = json.dumps(res, default=str)[:200]
    sev = str(getattr(cfg.severity, "value", cfg.severity) or "critical")
    status = "passed" if r.success else ("warning" if sev == "warning" else "failed")
    return {"rule": meta.get("rule", cfg.type), "what": cfg.description or cfg.type, "status": status,
            "observed": observed, "observed_value": observed_value, "threshold": meta.get("threshold", ""),
            "expectation": cfg.type}


_ICON = {"passed": "pass", "warning": "WARN", "failed": "FAIL"}


def _markdown(name: str, data_path, rows: int, outcomes: list[dict]) -> str:
    failed = sum(o["status"] == "failed" for o in outcomes)
    warned = sum(o["status"] == "warning" for o in outcomes)
    head = "FAILED" if failed else "passed"
    lines = [f"# Quality gate `{name}`: {head}", "",
             f"`{data_path}`, {rows} rows; {len(outcomes)} rules, {failed} failed, {warned} warnings "
             f"(Great Expectations; the full result is in the `.gate.json` beside it).", "",
             "| status | rule | what | observed | threshold | expectation |", "|---|---|---|---|---|---|"]
    for o in outcomes:
        cells = [_ICON[o["status"]], f"`{o['rule']}`", o["what"], o["observed"], o["threshold"], f"`{o['expectation']}`"]
        lines.append("| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def publish_report(data_path: str | Path, report_path: str | Path) -> None:
    """Copy the gate's Markdown report to `report_path` (a KFP `Markdown` output, shown in the UI)."""
    _, md = report_paths(data_path)
    text = md.read_text() if md.is_file() else "Quality gates are off for this run (`gates.enabled: false`).\n"
    write_text(text, report_path)
