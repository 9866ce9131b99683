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
from flywheel.io import read_json, read_table, write_json, write_text
from flywheel.monitor import gold_labels, iteration_health
from flywheel.schema import VERDICT_COLUMNS
from flywheel.steps.data import task_of

STEP_KEYS = ("generate", "verify", "curate", "train", "eval", "promote", "propose")


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

    summary = read_json(previous_summary, "previous summary") if previous_summary else {
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
    entry["manifest"] = manifest(cfg, entry)
    to_store = {role: path for role, path in (("curated", curated), ("model", model)) if path}
    if store and to_store:
        entry["manifest"]["stored"] = store_artifacts(cfg, iteration, to_store, near=Path(summary_path).parent)
    run_dir = os.environ.get("WANDB_DIR") or Path(summary_path).parent
    entry["tracking"] = track_iteration(cfg, summary, entry, run_dir, verdicts=verdicts, dropped=dropped,
                                        curated=curated, model=model, results=results)
    summary["iterations"] = [it for it in summary["iterations"] if it["iteration"] != iteration] + [entry]
    if df is not None:
        picks = df[df["correct"]].head(4).to_dict("records") + df[~df["correct"]].head(4).to_dict("records")
        summary["examples"] = [{k: r[k] for k in ("prompt", "completion", "reference", "correct", "reason")}
                               for r in picks]
        summary["examples_iteration"] = iteration
    write_json(summary, summary_path)
    write_report(summary, report_path)
    return summary


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def plot_summary(summary: dict) -> list[tuple[str, str]]:
    """(title, base64 PNG) for each plot of the report."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    its = summary["iterations"]
    xs = [it["iteration"] for it in its]
    plots = []

    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    ax.plot(xs, [it["eval"]["accuracy"] for it in its], "o-", label="all held-out")
    beyond = [it["eval"].get("accuracy_beyond_seed") for it in its]
    if any(b is not None for b in beyond):
        ax.plot(xs, beyond, "s--", label="harder than the seed set")
    ax.set(xlabel="iteration", ylabel="accuracy (greedy)", ylim=(-0.02, 1.02), xticks=xs)
    ax.grid(alpha=0.3)
    ax.legend()
    plots.append(("Held-out accuracy per iteration", _png(fig)))
    plt.close(fig)

    levels = sorted({k for it in its for k in it["eval"]["accuracy_by_difficulty"]}, key=float)
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for lv in levels:
        ax.plot(xs, [it["eval"]["accuracy_by_difficulty"].get(lv) for it in its], "o-", label=f"difficulty {lv}")
    ax.set(xlabel="iteration", ylabel="accuracy (greedy)", ylim=(-0.02, 1.02), xticks=xs)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    plots.append(("Accuracy per difficulty", _png(fig)))
    plt.close(fig)

    if len(levels) > 2:  # accuracy per difficulty x iteration at a glance (Lee et al. 2025 draw it so)
        grid = [[it["eval"]["accuracy_by_difficulty"].get(lv, float("nan")) for it in its] for lv in levels]
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
        new = [it["curate"]["kept_new"] for it in cur]
        carried = [it["curate"]["kept_carried"] for it in cur]
        seed = [it["curate"]["kept_seed"] for it in cur]
        fig, ax = plt.subplots(figsize=(5.5, 3.4))
        ax.bar(cx, new, label="new verified samples")
        ax.bar(cx, carried, bottom=new, label="carried from earlier iterations")
        ax.bar(cx, seed, bottom=[a + b for a, b in zip(new, carried)], label="labelled seed rows")
        ax.set(xlabel="iteration", ylabel="training rows", xticks=cx)
        ax.legend(fontsize=8)
        plots.append(("Training data kept by curate", _png(fig)))
        plt.close(fig)
    return plots


def _promotion(p: dict | None) -> str | None:
    if p is None:
        return None
    verdict = "yes" if p["promoted"] else "no"
    stop = f"; stop: {p['stop_reason']}" if p.get("stop_reason") else ""
    return f"{verdict} (p={p['p_value']:.2g}){stop}"


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}"
    return html.escape(str(v))


def write_report(summary: dict, path: str | Path) -> Path:
    its = summary["iterations"]
    first, last = its[0]["eval"], its[-1]["eval"]
    headline = (f"Held-out accuracy {first['accuracy']:.1%} at iteration {its[0]['iteration']} &rarr; "
                f"{last['accuracy']:.1%} at iteration {its[-1]['iteration']}")
    if first.get("accuracy_beyond_seed") is not None and last.get("accuracy_beyond_seed") is not None:
        headline += (f"; on problems harder than the seed set {first['accuracy_beyond_seed']:.1%} &rarr; "
                     f"{last['accuracy_beyond_seed']:.1%}")
    cols = [("iteration", lambda it: it["iteration"]), ("eval accuracy", lambda it: it["eval"]["accuracy"]),
            ("beyond seed", lambda it: it["eval"].get("accuracy_beyond_seed")),
            ("pass rate", lambda it: it.get("verify", {}).get("pass_rate")),
            ("kept", lambda it: it.get("curate", {}).get("kept")),
            ("dropped", lambda it: it.get("curate", {}).get("dropped")),
            ("train loss", lambda it: it.get("train", {}).get("loss")),
            ("promoted", lambda it: _promotion(it.get("promote"))),
            ("seconds", lambda it: round(sum(v for v in it["durations"].values() if v), 1))]
    table = "<tr>" + "".join(f"<th>{c}</th>" for c, _ in cols) + "</tr>" + "".join(
        "<tr>" + "".join(f"<td>{_fmt(get(it))}</td>" for _, get in cols) + "</tr>" for it in its)
    plots = "".join(f'<figure><img src="data:image/png;base64,{png}"><figcaption>{t}</figcaption></figure>'
                    for t, png in plot_summary(summary))
    examples = ""
    if summary.get("examples"):
        rows = "".join(
            f"<tr class={'ok' if e['correct'] else 'bad'}><td><code>{html.escape(e['prompt'])}</code></td>"
            f"<td><code>{html.escape(e['completion'])}</code></td><td><code>{html.escape(e['reference'])}</code></td>"
            f"<td>{html.escape(e['reason'])}</td></tr>" for e in summary["examples"])
        examples = (f"<h2>Sample rows (iteration {summary.get('examples_iteration')})</h2><table><tr><th>prompt</th>"
                    f"<th>completion</th><th>reference</th><th>verdict</th></tr>{rows}</table>")
    gates = _gates_table(its)
    cfg = summary["config"]
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>flywheel report</title><style>
body{{font-family:system-ui,sans-serif;max-width:1180px;margin:2em auto;color:#222}}
figure{{display:inline-block;margin:.5em}} figcaption{{text-align:center;font-size:.9em;color:#555}}
table{{border-collapse:collapse;margin:1em 0}} td,th{{border:1px solid #ddd;padding:.3em .6em;text-align:right}}
th{{background:#f4f4f4}} tr.ok td{{background:#eefbee}} tr.bad td{{background:#fdeeee}} code{{font-size:1.05em}}
.lead{{font-size:1.15em;background:#f7f7ff;padding:.6em 1em;border-left:4px solid #66f}}</style></head><body>
<h1>flywheel: {html.escape(cfg['task']['name'])} &middot; {html.escape(cfg['model']['base'])} &middot;
recipe {html.escape(cfg['train']['recipe'])}</h1>
<p class="lead">{headline}</p>{plots}<h2>Per iteration</h2><table>{table}</table>{gates}{examples}
<p style="color:#777;font-size:.85em">summary.json beside this file has every metric of every step.</p>
</body></html>"""
    return write_text(page, path)


GATES = (("generate", "samples"), ("verify", "verdicts"), ("curate", "curated"), ("train", "rollouts"),
         ("eval", "results"))  # train has a gate under recipe grpo only (its rollouts)


def _gates_table(its: list[dict]) -> str:
    """Quality gates per iteration: passed / warnings / off, with the rules behind each (docs/data.md)."""
    def cell(g: dict | None) -> str:
        if not g:
            return "<td>-</td>"
        if not g.get("enabled", True):
            return "<td>off</td>"
        warn = f"<br>warn: {html.escape(', '.join(g['warnings']))}" if g.get("warnings") else ""
        return f"<td title='{html.escape(g.get('report', ''))}'>passed ({g['rules']} rules){warn}</td>"

    rows = "".join("<tr><td>" + str(it["iteration"]) + "</td>" + "".join(
        cell(it.get(step, {}).get("gate")) for step, _ in GATES) + "</tr>" for it in its)
    if not any(it.get(step, {}).get("gate") for it in its for step, _ in GATES):
        return ""
    head = "".join(f"<th>{name}</th>" for _, name in GATES)
    return (f"<h2>Quality gates</h2><table><tr><th>iteration</th>{head}</tr>{rows}</table>"
            "<p style='color:#777;font-size:.85em'>A failed gate stops its step; each gate's report "
            "(<code>*.gate.md</code>) and result (<code>*.gate.json</code>) lie beside its data.</p>")
