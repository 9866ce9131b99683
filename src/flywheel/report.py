"""record: the run summary (summary.json) and the report (report.html), one iteration at a time.

Each iteration's `record` step takes the previous summary and the step metrics of its iteration, appends
one entry and renders the report, so the KFP UI shows an up-to-date report after every iteration and a
local run ends with both files. The report is a single self-contained HTML file (plots inlined as PNG).
"""

from __future__ import annotations

import base64
import html
import io
import os
import time
import uuid
from pathlib import Path

from flywheel.config import Config
from flywheel.io import read_json, read_summary, read_table, write_json, write_text
from flywheel.monitor import accuracy_intervals, gold_labels, iteration_health
from flywheel.schema import VERDICT_COLUMNS
from flywheel.steps.data import task_of

STEP_KEYS = ("generate", "verify", "curate", "train", "evaluate", "promote", "propose")


def record_iteration(cfg: Config, iteration: int, summary_path: str | Path, report_path: str | Path, *,
                     evaluate: str | Path, previous_summary: str | Path | None = None,
                     generate: str | Path | None = None, verify: str | Path | None = None,
                     curate: str | Path | None = None, train: str | Path | None = None,
                     promote: str | Path | None = None, verdicts: str | Path | None = None,
                     prepare: str | Path | None = None, dropped: str | Path | None = None,
                     curated: str | Path | None = None, model: str | Path | None = None,
                     results: str | Path | None = None, store: bool = False,
                     propose: str | Path | None = None) -> dict:
    """Append iteration `iteration` to the summary, with its reproducibility manifest; render the report;
    log the iteration to W&B (`flywheel.tracking`). `prepare` (iteration 0) adds the inputs' DVC revisions
    and hashes; `dropped`, `curated`, `model`, `results` are the iteration's artifacts, for W&B. `store`
    (KFP runs; `dvc repro` stores its own outputs): also put `curated` and `model` into the DVC cache and
    remote (`data.store`), their pointers in the manifest's `stored`."""
    from flywheel.tracking import track_iteration
    from flywheel.versions import manifest, store_artifacts

    summary = read_summary(previous_summary, "previous summary") if previous_summary else {
        "config": cfg.model_dump(mode="json"), "iterations": []}
    # one id per pipeline run, made once and carried in the summary: groups the W&B runs of its iterations
    summary.setdefault("run_id", f"run-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}")
    if prepare:
        summary["inputs"] = read_json(prepare, "prepare metrics").get("inputs", {})
    entry: dict = {"iteration": iteration}
    for key, path in zip(STEP_KEYS, (generate, verify, curate, train, evaluate, promote, propose), strict=True):
        if path:
            entry[key] = read_json(path, f"{key} metrics")
    entry["durations"] = {k: entry[k].get("duration_s") for k in STEP_KEYS if k in entry}
    df = read_table(verdicts, VERDICT_COLUMNS, what="verdicts") if verdicts else None
    if df is not None:
        # Judge the configured verifier against the task's reference check when they differ.
        gold = None if cfg.verify.verifier == "task" else gold_labels(task_of(cfg), df)
        entry["health"] = iteration_health(df, gold=gold, n_star=cfg.curate.max_per_prompt)
    if results:
        counts = read_table(results, ("difficulty",), what="evaluation results")["difficulty"].value_counts()
        entry["eval_items"] = {str(k): int(v) for k, v in sorted(counts.items())}
        entry["intervals"] = accuracy_intervals(entry["evaluate"], entry["eval_items"], entry.get("promote"))
    entry["manifest"] = manifest(cfg, entry)
    to_store = {role: path for role, path in (("curated", curated), ("model", model)) if path}
    if store and to_store:
        entry["manifest"]["stored"] = store_artifacts(cfg, iteration, to_store, near=Path(summary_path).parent)
    run_dir = os.environ.get("WANDB_DIR") or Path(summary_path).parent
    entry["tracking"] = track_iteration(cfg, summary, entry, run_dir, verdicts=verdicts, dropped=dropped,
                                        curated=curated, model=model, results=results)
    summary["iterations"] = [it for it in summary["iterations"] if it["iteration"] != iteration] + [entry]
    if df is not None:
        summary["examples"] = example_rows(df, task_of(cfg))
        summary["examples_iteration"] = iteration
    write_json(summary, summary_path)
    write_report(summary, report_path)
    return summary


def example_rows(df, task, per_kind: int = 4) -> list[dict]:
    """Up to `per_kind` correct and `per_kind` wrong samples, each of a different prompt (a prompt has K
    samples: the first rows of the table are one prompt's), with the task's readable form of each text when
    it has one (`task.readable(text)`, e.g. arithmetic's reversed, zero-padded digits as a person writes them)."""
    readable = getattr(task, "readable", None)  # optional task method, see docs/tasks.md
    rows, seen = [], set()
    for correct in (True, False):
        picked = df[df["correct"] == correct].drop_duplicates("prompt_id")
        picked = picked[~picked["prompt_id"].isin(seen)].head(per_kind)
        seen |= set(picked["prompt_id"])
        for r in picked.to_dict("records"):
            row = {k: r[k] for k in ("prompt", "completion", "reference", "correct", "reason")}
            row["score"] = float(r["score"]) if "score" in r else None
            if readable:
                # the reason too: "wrong: expected 543670, got 643671" quotes the raw (reversed) digits
                row["readable"] = {k: readable(r[k]) for k in ("prompt", "completion", "reference", "reason")}
            rows.append(row)
    return rows


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def plot_summary(summary: dict) -> list[tuple[str, str]]:
    """(title, base64 PNG) for each plot of the report."""
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    its = summary["iterations"]
    xs = [it["iteration"] for it in its]
    plots = []

    def bars(values: list, key: str, sub: str | None = None):
        """Error bars (below, above) of the Wilson intervals the record step stored (`intervals`)."""
        lo, hi = [], []
        for it, v in zip(its, values):
            ci = (it.get("intervals") or {}).get(key)
            ci = ci.get(sub) if sub is not None and isinstance(ci, dict) else ci
            ok = ci is not None and v is not None
            lo.append(v - ci[0] if ok else 0.0)
            hi.append(ci[1] - v if ok else 0.0)
        return [lo, hi]

    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    acc = [it["evaluate"]["accuracy"] for it in its]
    ax.errorbar(xs, acc, yerr=bars(acc, "accuracy"), fmt="o-", capsize=3, label="all held-out")
    beyond = [it["evaluate"].get("accuracy_beyond_seed") for it in its]
    if any(b is not None for b in beyond):
        ax.errorbar(xs, [np.nan if b is None else b for b in beyond], yerr=bars(beyond, "accuracy_beyond_seed"),
                    fmt="s--", capsize=3, label="harder than the seed set")
    ax.set(xlabel="iteration", ylabel="accuracy (greedy)", ylim=(-0.02, 1.02), xticks=xs)
    ax.grid(alpha=0.3)
    ax.legend()
    plots.append(("Held-out accuracy per iteration (bars: 95 % Wilson intervals)", _png(fig)))
    plt.close(fig)

    levels = sorted({k for it in its for k in it["evaluate"]["accuracy_by_difficulty"]}, key=float)
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for lv in levels:
        ys = [it["evaluate"]["accuracy_by_difficulty"].get(lv) for it in its]
        line, = ax.plot(xs, [np.nan if y is None else y for y in ys], "o-", label=f"difficulty {lv}")
        lo, hi = bars(ys, "accuracy_by_difficulty", lv)
        if any(lo) or any(hi):
            ax.fill_between(xs, [y - d if y is not None else np.nan for y, d in zip(ys, lo)],
                            [y + d if y is not None else np.nan for y, d in zip(ys, hi)], color=line.get_color(),
                            alpha=0.12, linewidth=0)
    ax.set(xlabel="iteration", ylabel="accuracy (greedy)", ylim=(-0.02, 1.02), xticks=xs)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    plots.append(("Accuracy per difficulty (bands: 95 % Wilson intervals)", _png(fig)))
    plt.close(fig)

    if len(levels) > 2:  # accuracy per difficulty x iteration at a glance (Lee et al. 2025 draw it so)
        grid = [[it["evaluate"]["accuracy_by_difficulty"].get(lv, float("nan")) for it in its] for lv in levels]
        fig, ax = plt.subplots(figsize=(5.5, 0.45 * len(levels) + 1.2))
        ax.imshow(grid, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto", origin="lower")
        for r, row in enumerate(grid):
            for c, v in enumerate(row):
                ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=7)
        ax.set(xlabel="iteration", ylabel="difficulty", xticks=range(len(xs)), xticklabels=xs,
               yticks=range(len(levels)), yticklabels=levels)
        plots.append(("Held-out accuracy per difficulty and iteration", _png(fig)))
        plt.close(fig)

    loop = [it for it in its if "verify" in it]
    if loop:
        lx = [it["iteration"] for it in loop]
        fig, ax = plt.subplots(figsize=(5.5, 3.4))
        ax.plot(lx, [it["verify"]["pass_rate"] for it in loop], "o-", label="samples passing")
        ax.plot(lx, [it["verify"]["prompts_with_correct"] for it in loop], "s--", label="prompts with >= 1 pass")
        audited = [it for it in loop if (it["verify"].get("audit") or {}).get("accepted_precision") is not None]
        if audited:  # a label-free verifier checked against the references: label accuracy before/after it
            ax.plot([it["iteration"] for it in audited], [it["verify"]["audit"]["reference_pass_rate"] for it in audited],
                    "v:", label="label accuracy, all samples (audit)")
            ax.plot([it["iteration"] for it in audited], [it["verify"]["audit"]["accepted_precision"] for it in audited],
                    "^-", label="label accuracy, accepted samples (audit)")
        ax.set(xlabel="iteration", ylabel="share", ylim=(-0.02, 1.02), xticks=lx)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        plots.append(("Verifier pass rate on the iteration's samples", _png(fig)))
        plt.close(fig)

    hl = [it for it in its if "health" in it]
    if hl:
        hx = [it["iteration"] for it in hl]
        k = hl[0]["health"]["samples_per_prompt"]
        fig, ax = plt.subplots(figsize=(5.5, 3.4))
        ax.plot(hx, [it["health"]["pass@1"] for it in hl], "o-", label="pass@1")
        ax.plot(hx, [it["health"].get(f"pass@{k}") for it in hl], "s--", label=f"pass@{k}")
        ax.plot(hx, [it["health"]["balance_score"] for it in hl], "^-", label="balance score (B-STaR)")
        ax.set(xlabel="iteration", ylabel="score", ylim=(-0.02, 1.02), xticks=hx)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        plots.append(("Exploration and exploitation on the iteration's prompts", _png(fig)))
        plt.close(fig)

    cur = [it for it in its if "curate" in it]
    if cur:
        cx = [it["iteration"] for it in cur]
        new = [it["curate"].get("kept_new", 0) for it in cur]
        carried = [it["curate"].get("kept_carried", 0) for it in cur]
        seed = [it["curate"].get("kept_seed", 0) for it in cur]
        fig, ax = plt.subplots(figsize=(5.5, 3.4))
        ax.bar(cx, new, label="new verified samples")
        ax.bar(cx, carried, bottom=new, label="carried from earlier iterations")
        ax.bar(cx, seed, bottom=[a + b for a, b in zip(new, carried)], label="labelled seed rows")
        ax.set(xlabel="iteration", ylabel="training rows", xticks=cx)
        ax.legend(fontsize=8)
        plots.append(("Training data kept by curate", _png(fig)))
        plt.close(fig)

    curves = [(it["iteration"], it["train"]["log_history"]) for it in its if (it.get("train") or {}).get("log_history")]
    for key, ylabel, title in (("loss", "training loss", "Training loss per iteration (the Trainer's logged steps)"),
                               ("rewards/margins", "reward margin (chosen - rejected)",
                                "DPO reward margin per iteration")):
        drawn = [(i, h) for i, h in curves if any(key in row for row in h)]
        if not drawn:
            continue
        fig, ax = plt.subplots(figsize=(5.5, 3.4))
        for i, h in drawn:
            pts = [(row["step"], row[key]) for row in h if key in row]
            ax.plot([x for x, _ in pts], [y for _, y in pts], ".-", label=f"iteration {i}")
        ax.set(xlabel="optimizer step", ylabel=ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        plots.append((title, _png(fig)))
        plt.close(fig)

    timed = [it for it in its if it.get("durations")]
    steps = [k for k in STEP_KEYS if any((it["durations"] or {}).get(k) for it in timed)]
    if steps:
        fig, ax = plt.subplots(figsize=(5.5, 0.35 * len(timed) + 1.4))
        left = np.zeros(len(timed))
        for k in steps:
            w = np.array([(it["durations"] or {}).get(k) or 0.0 for it in timed])
            ax.barh([str(it["iteration"]) for it in timed], w, left=left, label=k)
            left += w
        ax.set(xlabel="seconds (inside the step function; a task adds its process start)", ylabel="iteration")
        ax.invert_yaxis()
        # above the axes: inside, it hid the last iteration's bars
        ax.legend(fontsize=7, ncol=len(steps), loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False,
                  handlelength=1, columnspacing=0.8)
        plots.append(("Time per step", _png(fig)))
        plt.close(fig)
    return plots


def _promotion(p: dict | None, ci: list | None = None) -> str | None:
    if p is None:
        return None
    verdict = "yes" if p["promoted"] else "no"
    stop = f"; stop: {html.escape(p['stop_reason'])}" if p.get("stop_reason") else ""
    delta = f"&Delta; {p['delta']:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}], " if ci and "delta" in p else ""
    return f"{verdict} ({delta}p={p['p_value']:.2g}){stop}"


def _with_ci(v, ci) -> str | None:
    """'0.910 [0.862, 0.942]': a value and its 95 % interval."""
    if v is None:
        return None
    return f"{v:.3f} <small>[{ci[0]:.3f}, {ci[1]:.3f}]</small>" if ci else f"{v:.3f}"


def _fmt(v) -> str:
    """A table cell: numbers rounded; text is our own markup (values in it are numbers)."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def write_report(summary: dict, path: str | Path) -> Path:
    its = summary["iterations"]
    first, last = its[0]["evaluate"], its[-1]["evaluate"]
    headline = (f"Held-out accuracy {first['accuracy']:.1%} at iteration {its[0]['iteration']} &rarr; "
                f"{last['accuracy']:.1%} at iteration {its[-1]['iteration']}")
    if first.get("accuracy_beyond_seed") is not None and last.get("accuracy_beyond_seed") is not None:
        headline += (f"; on problems harder than the seed set {first['accuracy_beyond_seed']:.1%} &rarr; "
                     f"{last['accuracy_beyond_seed']:.1%}")
    def ci(it, key):
        return (it.get("intervals") or {}).get(key)

    cols = [("iteration", lambda it: it["iteration"]),
            ("eval accuracy [95 % CI]", lambda it: _with_ci(it["evaluate"]["accuracy"], ci(it, "accuracy"))),
            ("beyond seed", lambda it: _with_ci(it["evaluate"].get("accuracy_beyond_seed"), ci(it, "accuracy_beyond_seed"))),
            ("pass rate", lambda it: it.get("verify", {}).get("pass_rate")),
            ("kept", lambda it: it.get("curate", {}).get("kept")),
            ("dropped", lambda it: it.get("curate", {}).get("dropped")),
            ("train loss", lambda it: it.get("train", {}).get("loss")),
            *([("reward margin", lambda it: it.get("train", {}).get("reward_margin"))]
              if any(it.get("train", {}).get("reward_margin") is not None for it in its) else []),
            ("promoted", lambda it: _promotion(it.get("promote"), ci(it, "promote_delta"))),
            ("seconds", lambda it: f'{sum(v for v in it["durations"].values() if v):.1f}')]
    table = "<tr>" + "".join(f"<th>{c}</th>" for c, _ in cols) + "</tr>" + "".join(
        "<tr>" + "".join(f"<td>{_fmt(get(it))}</td>" for _, get in cols) + "</tr>" for it in its)
    plots = "".join(f'<figure><img src="data:image/png;base64,{png}"><figcaption>{t}</figcaption></figure>'
                    for t, png in plot_summary(summary))
    examples = ""
    if summary.get("examples"):
        def text(e, k):
            raw = f"<code>{html.escape(str(e[k]))}</code>"
            nice = (e.get("readable") or {}).get(k)
            if nice is None or nice == str(e[k]):
                return raw
            return f"{html.escape(nice)}<br><small>{raw}</small>"

        rows = "".join(
            f"<tr class={'ok' if e['correct'] else 'bad'}><td>{text(e, 'prompt')}</td><td>{text(e, 'completion')}</td>"
            f"<td>{text(e, 'reference')}</td><td>{_fmt(e.get('score'))}</td><td>{text(e, 'reason')}</td></tr>"
            for e in summary["examples"])
        examples = (f"<h2>Sample rows (iteration {summary.get('examples_iteration')}: one sample per prompt, "
                    f"correct first)</h2><table><tr><th>prompt</th><th>completion</th><th>reference</th><th>score</th>"
                    f"<th>verdict</th></tr>{rows}</table>")
    gates = _gates_table(its)
    cfg = summary["config"]
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>flywheel report</title><style>
body{{font-family:system-ui,sans-serif;max-width:1180px;margin:2em auto;color:#222}}
figure{{display:inline-block;margin:.5em}} figcaption{{text-align:center;font-size:.9em;color:#555}}
table{{border-collapse:collapse;margin:1em 0}} td,th{{border:1px solid #ddd;padding:.3em .6em;text-align:right}}
th{{background:#f4f4f4}} small{{color:#666}} tr.ok td{{background:#eefbee}} tr.bad td{{background:#fdeeee}} code{{font-size:1.05em}}
.lead{{font-size:1.15em;background:#f7f7ff;padding:.6em 1em;border-left:4px solid #66f}}</style></head><body>
<h1>flywheel: {html.escape(cfg['task']['name'])} &middot; {html.escape(cfg['model']['base'])} &middot;
recipe {html.escape(cfg['train']['recipe'])}</h1>
<p class="lead">{headline}</p>{plots}<h2>Per iteration</h2><table>{table}</table>{gates}{examples}
<p style="color:#777;font-size:.85em">summary.json beside this file has every metric of every step.</p>
</body></html>"""
    return write_text(page, path)


def _gates() -> tuple[tuple[str, str], ...]:
    """(summary key, gate) of every gated step of an iteration, from the step table; train has a gate under recipe grpo only (its rollouts)."""
    from flywheel.steps.table import STEPS

    return tuple((s.name, s.gate) for s in STEPS if s.gate)


GATES = _gates()


def _gates_table(its: list[dict]) -> str:
    """Quality gates per iteration: passed / warnings / off, with the rules behind each (docs/data.md)."""
    def cell(name: str, step: dict | None) -> str:
        if not step:
            return "<td>-</td>"  # the step did not run in this iteration
        g = step.get("gate")
        if not g and name == "train":  # train writes rollouts (and has their gate) under recipe grpo only
            return "<td title='no rollouts under this recipe'>-</td>"
        if not g:
            return "<td>no gate</td>"  # it ran, and nothing checked what it wrote (e.g. train under sft)
        if not g.get("enabled", True):
            return "<td>off</td>"
        warn = f"<br>warn: {html.escape(', '.join(g['warnings']))}" if g.get("warnings") else ""
        return f"<td title='{html.escape(g.get('report', ''))}'>passed ({g['rules']} rules){warn}</td>"

    rows = "".join("<tr><td>" + str(it["iteration"]) + "</td>" + "".join(
        cell(step, it.get(step)) for step, _ in GATES) + "</tr>" for it in its)
    if not any(it.get(step, {}).get("gate") for it in its for step, _ in GATES):
        return ""
    head = "".join(f"<th>{name}</th>" for _, name in GATES)
    return (f"<h2>Quality gates</h2><table><tr><th>iteration</th>{head}</tr>{rows}</table>"
            "<p style='color:#777;font-size:.85em'>A failed gate stops its step; each gate's report "
            "(<code>*.gate.md</code>) and result (<code>*.gate.json</code>) lie beside its data.</p>")
