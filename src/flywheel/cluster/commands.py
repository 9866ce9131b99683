"""CLI subcommands for a cluster: submit, upload, schedule, trigger (added to `flywheel` by cli.py; this
module imports nothing from the CLI).

Each prints the URL of what it made in the KFP UI on stdout (one line), and any detail on stderr.
"""

from __future__ import annotations

import sys
import time


def _host(sp) -> None:
    sp.add_argument("--host", required=True, help="KFP API endpoint, e.g. https://kfp.example.org/pipeline "
                    "(bearer token from $KFP_TOKEN, or the in-cluster service-account token)")
    sp.add_argument("--namespace", help="KFP namespace (multi-user installs; default: cluster.namespace)")
    sp.add_argument("--experiment", default="flywheel", help="KFP experiment to file runs under")


def _config(args):
    from flywheel.config import load_config

    return load_config(args.config, args.set)


def _submitter(args):
    from flywheel.cluster.submit import Submitter

    cfg = _config(args)
    return Submitter(cfg, args.host, args.namespace or cfg.cluster.namespace)


def _kfp_errors(fn):
    def run(args) -> int:
        from kfp_server_api.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return fn(args)
        except ApiException as err:
            print(f"error: KFP at {args.host} answered {err.status} {err.reason}: {(err.body or '')[:500]}",
                  file=sys.stderr)
        except (HTTPError, TimeoutError) as err:  # kfp.Client raises TimeoutError when /healthz never answers
            print(f"error: cannot reach KFP at {args.host}: {err}", file=sys.stderr)
        return 1
    return run


@_kfp_errors
def cmd_submit(args) -> int:
    s = _submitter(args)
    run_name = args.run_name or f"{s.cfg.pipeline.name} {time.strftime('%Y-%m-%d %H:%M:%S')}"
    run_id, url = s.submit(experiment=args.experiment, run_name=run_name,
                           enable_caching=False if args.no_cache else None)
    print(f"run {run_id} ({run_name!r}) created in experiment {args.experiment!r}", file=sys.stderr)
    print(url)
    return 0


@_kfp_errors
def cmd_upload(args) -> int:
    s = _submitter(args)
    pub = s.upload(args.version, args.description)
    print(f"pipeline {s.cfg.pipeline.name!r} ({pub.pipeline_id}), version {args.version!r} ({pub.version_id})",
          file=sys.stderr)
    print(pub.url)
    return 0


@_kfp_errors
def cmd_schedule(args) -> int:
    from flywheel.cluster.submit import check_cron

    check_cron(args.cron)  # before compiling anything
    s = _submitter(args)
    name = args.name or f"{s.cfg.pipeline.name} {args.cron}"
    job_id, url = s.schedule(args.cron, version=args.version, experiment=args.experiment, job_name=name)
    print(f"recurring run {job_id} ({name!r}): cron {args.cron!r}, one run at a time, no backfill", file=sys.stderr)
    print(url)
    return 0


@_kfp_errors
def cmd_trigger(args) -> int:
    import json

    from flywheel.cluster.trigger import TriggerError, run_trigger

    if bool(args.data_repo) != bool(args.data_file):
        raise ValueError("--data-repo and --data-file go together (the dataset's .dvc file in that git repo)")
    if not (args.data_repo or args.every_hours or args.fresh_eval):
        raise ValueError("nothing to check: give --data-repo/--data-file, --every-hours and/or --fresh-eval")
    checks = {"every_hours": args.every_hours}
    if args.fresh_eval:
        checks.update(fresh_eval=args.fresh_eval, baseline_accuracy=args.baseline_accuracy, tolerance=args.tolerance)
    try:
        decision = run_trigger(_config(args), args.host, args.state, dry_run=args.dry_run, experiment=args.experiment,
                               namespace=args.namespace,
                               data_repo=args.data_repo, data_file=args.data_file, data_rev=args.data_rev, **checks)
    except TriggerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(decision, indent=2, sort_keys=True))
    return 0


def add_commands(command) -> None:
    """Register the subcommands; `command(name, fn, help)` is cli.make_parser's helper (adds CONFIG, --set)."""
    version = time.strftime("v%Y%m%d-%H%M%S")
    sp = command("submit", cmd_submit, "create a run of the pipeline on a KFP backend; prints its URL")
    _host(sp)
    sp.add_argument("--run-name", help="display name of the run (default: pipeline name and time)")
    sp.add_argument("--no-cache", action="store_true", help="run every task, even those KFP has cached")
    sp = command("upload", cmd_upload, "publish the pipeline as a new version, for the KFP UI's 'Create run'")
    _host(sp)
    sp.add_argument("--version", default=version, help="version name (default: the time, vYYYYMMDD-HHMMSS)")
    sp.add_argument("--description", help="version description shown in the UI")
    sp = command("schedule", cmd_schedule, "upload a version and run it on a cron schedule (a KFP recurring run)")
    _host(sp)
    sp.add_argument("--cron", required=True, help="6 fields, seconds first, e.g. '0 0 3 * * *' (03:00 daily)")
    sp.add_argument("--version", default=version, help="version name to upload (default: the time)")
    sp.add_argument("--name", help="name of the recurring run (default: pipeline name and cron)")
    sp = command("trigger", cmd_trigger, "submit a run if one is due (new data, schedule, regression); record why")
    _host(sp)
    sp.add_argument("--state", required=True, help="directory of state.json and decisions.jsonl (a volume in the CronJob)")
    sp.add_argument("--data-repo", help="git repository (path or URL) that tracks the input dataset with DVC")
    sp.add_argument("--data-file", help="its .dvc file, or dvc.lock:<output path>")
    sp.add_argument("--data-rev", default="HEAD", help="git revision to read (branch, tag or commit)")
    sp.add_argument("--every-hours", type=float, help="run at least this often")
    sp.add_argument("--fresh-eval", help="metrics JSON of `flywheel evaluate` of the deployed model on fresh data")
    sp.add_argument("--baseline-accuracy", type=float, help="accuracy the deployed model had (remembered once given)")
    sp.add_argument("--tolerance", type=float, default=0.02, help="accuracy drop that counts as a regression")
    sp.add_argument("--dry-run", action="store_true", help="decide and record, but submit nothing")
