"""Runs side by side: held-out accuracy per iteration of several runs, in one table and one plot.

    flywheel compare runs/demo runs/majority --out runs/compare.html

Each run is a `flywheel run` output folder (its `summary.json`). Used to put the label-free run
(examples/arithmetic-majority.yaml) next to the labelled one (examples/arithmetic.yaml); with
`verify.audit`, the table also shows how often the accepted samples were in fact right.
"""

from __future__ import annotations

import html
from pathlib import Path

from flywheel.io import read_summary, write_text


def load_runs(dirs: list[str]) -> dict[str, dict]:
    runs = {}
    for d in dirs:
        name = Path(d).name or str(d)
        runs[name] = read_summary(Path(d) / "summary.json", f"run summary of {d} (a `flywheel run` output folder)")
    return runs


def rows(runs: dict[str, dict]) -> list[dict]:
    out = []
    for name, summary in runs.items():
        for it in summary["iterations"]:
            ev, ver = it["evaluate"], it.get("verify", {})
            out.append({"run": name, "iteration": it["iteration"], "verifier": ver.get("verifier", "-"),
                        "accuracy": ev["accuracy"], "beyond_seed": ev.get("accuracy_beyond_seed"),
                        "pass_rate": ver.get("pass_rate"),
                        "accepted_precision": ver.get("audit", {}).get("accepted_precision")})
    return out


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.3f}" if isinstance(v, float) else html.escape(str(v))


def compare_runs(dirs: list[str], out_path: str | Path) -> list[dict]:
    """Write the comparison page to `out_path`; return its rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from flywheel.report import _png

    runs = load_runs(dirs)
    table = rows(runs)
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for name, summary in runs.items():
        its = summary["iterations"]
        xs = [it["iteration"] for it in its]
        line, = ax.plot(xs, [it["evaluate"]["accuracy"] for it in its], "o-", label=f"{name}: all held-out")
        beyond = [it["evaluate"].get("accuracy_beyond_seed") for it in its]
        if any(b is not None for b in beyond):
            ax.plot(xs, beyond, "s--", color=line.get_color(), label=f"{name}: harder than the seed set")
    ax.set(xlabel="iteration", ylabel="held-out accuracy (greedy)", ylim=(-0.02, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    png = _png(fig)
    plt.close(fig)
    cols = ["run", "iteration", "verifier", "accuracy", "beyond_seed", "pass_rate", "accepted_precision"]
    head = "<tr>" + "".join(f"<th>{c.replace('_', ' ')}</th>" for c in cols) + "</tr>"
    body = "".join("<tr>" + "".join(f"<td>{_fmt(r[c])}</td>" for c in cols) + "</tr>" for r in table)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>flywheel: runs compared</title><style>
body{{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;margin:1em 0}} td,th{{border:1px solid #ddd;padding:.3em .6em;text-align:right}}
th{{background:#f4f4f4}}</style></head><body><h1>Runs compared</h1>
<p>{", ".join(html.escape(d) for d in dirs)}. Held-out accuracy is always judged against the task's references;
<em>accepted precision</em> is the share of the samples the run's verifier accepted that were right
(reported with <code>verify.audit</code>).</p>
<figure><img src="data:image/png;base64,{png}"></figure><table>{head}{body}</table></body></html>"""
    write_text(page, out_path)
    return table


def print_rows(table: list[dict]) -> None:
    print(f"{'run':>16s} {'iteration':>9s} {'verifier':>16s} {'accuracy':>8s} {'beyond-seed':>11s} "
          f"{'pass-rate':>9s} {'accepted-precision':>18s}")
    for r in table:
        print(f"{r['run']:>16s} {r['iteration']:>9d} {r['verifier']:>16s} {_fmt(r['accuracy']):>8s} "
              f"{_fmt(r['beyond_seed']):>11s} {_fmt(r['pass_rate']):>9s} {_fmt(r['accepted_precision']):>18s}")
