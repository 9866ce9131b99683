"""Submitting the pipeline to a Kubeflow Pipelines backend: a run, a pipeline version, a recurring run.

    flywheel submit examples/cluster.yaml --host https://kfp.example.org          # one run now
    flywheel upload examples/cluster.yaml --host ... --version v3                  # for the UI's "Create run"
    flywheel schedule examples/cluster.yaml --host ... --cron "0 0 3 * * *"        # nightly at 03:00

Each compiles the config's pipeline (flywheel.pipelines) and calls `kfp.Client`. Authentication never
goes through a flag or the config: the bearer token comes from the KFP_TOKEN environment variable, or,
inside a cluster, from the projected service-account token KFP mounts at KF_PIPELINES_SA_TOKEN_PATH.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

from flywheel.config import Config

TOKEN_ENV = "KFP_TOKEN"


def client(host: str, namespace: str | None = None):
    """A `kfp.Client` for `host`, authenticated from the environment (see the module docstring)."""
    import kfp
    from kfp.client import KF_PIPELINES_SA_TOKEN_ENV, KF_PIPELINES_SA_TOKEN_PATH
    from kfp.client.set_volume_credentials import ServiceAccountTokenVolumeCredentials

    kwargs = {}
    token_path = os.environ.get(KF_PIPELINES_SA_TOKEN_ENV, KF_PIPELINES_SA_TOKEN_PATH)
    if os.environ.get(TOKEN_ENV):
        kwargs["existing_token"] = os.environ[TOKEN_ENV]
    elif Path(token_path).is_file():
        kwargs["credentials"] = ServiceAccountTokenVolumeCredentials(path=token_path)
    with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="This client only works with", category=FutureWarning)
        return kfp.Client(host=host, namespace=namespace or "kubeflow", **kwargs)


def check_cron(cron: str) -> str:
    """KFP's scheduler (robfig/cron) takes 6 fields, seconds first; a 5-field crontab line is a mistake."""
    fields = cron.split()
    if len(fields) != 6 or not all(re.fullmatch(r"[0-9A-Za-z*?/,\-LW#]+", f) for f in fields):
        raise ValueError(f"cron {cron!r}: KFP needs 6 fields, seconds first: 'SEC MIN HOUR DAY MONTH WEEKDAY', "
                         "e.g. '0 0 3 * * *' for 03:00 every day")
    return cron


@dataclass
class Published:
    pipeline_id: str
    version_id: str
    url: str


class Submitter:
    """Compiles `cfg` once and talks to the KFP backend at `host`."""

    def __init__(self, cfg: Config, host: str, namespace: str | None = None):
        from flywheel.pipelines.flywheel_pipeline import compile_pipeline

        self.cfg, self.host = cfg, host.rstrip("/")
        self._tmp = tempfile.TemporaryDirectory(prefix="flywheel-kfp-")
        self.package = compile_pipeline(cfg, os.path.join(self._tmp.name, "pipeline.yaml"))
        self.client = client(host, namespace)
        self.namespace = namespace
        self.arguments = {"config": cfg.to_json()}  # the run form's one parameter, shown on the run page

    def ui(self, fragment: str) -> str:
        return f"{self.host}/#/{fragment}"

    def experiment_id(self, name: str) -> str:
        with contextlib.redirect_stdout(sys.stderr):
            return self.client.create_experiment(name, namespace=self.namespace).experiment_id  # get or create

    def submit(self, *, experiment: str, run_name: str, enable_caching: bool | None = None) -> tuple[str, str]:
        """Create a run now; returns (run_id, its URL in the KFP UI)."""
        with contextlib.redirect_stdout(sys.stderr):
            result = self.client.create_run_from_pipeline_package(
                self.package, arguments=self.arguments, run_name=run_name, experiment_name=experiment,
                namespace=self.namespace, enable_caching=enable_caching,
                service_account=self.cfg.cluster.service_account)
        return result.run_id, self.ui(f"runs/details/{result.run_id}")

    def upload(self, version: str, description: str | None = None) -> Published:
        """Publish the compiled pipeline as a new version (creating the pipeline the first time)."""
        name = self.cfg.pipeline.name
        with contextlib.redirect_stdout(sys.stderr):
            pipeline_id = self.client.get_pipeline_id(name)
            if pipeline_id is None:
                pipeline_id = self.client.upload_pipeline(
                    self.package, pipeline_name=name, namespace=self.namespace,
                    description=description or f"flywheel self-improvement loop ({self.cfg.task.name})",
                ).pipeline_id
            v = self.client.upload_pipeline_version(self.package, pipeline_version_name=f"{name} {version}",
                                                    pipeline_id=pipeline_id, description=description)
        return Published(pipeline_id, v.pipeline_version_id,
                         self.ui(f"pipelines/details/{pipeline_id}/version/{v.pipeline_version_id}"))

    def schedule(self, cron: str, *, version: str, experiment: str, job_name: str) -> tuple[str, str]:
        """Upload a version and create a recurring run of it: one run at a time, no backfill."""
        check_cron(cron)
        pub = self.upload(version)
        with contextlib.redirect_stdout(sys.stderr):
            job = self.client.create_recurring_run(
                experiment_id=self.experiment_id(experiment), job_name=job_name, cron_expression=cron,
                max_concurrency=1, no_catchup=True, pipeline_id=pub.pipeline_id, version_id=pub.version_id,
                params=self.arguments, service_account=self.cfg.cluster.service_account)
        return job.recurring_run_id, self.ui(f"recurringrun/details/{job.recurring_run_id}")

    def find_run(self, run_name: str, experiment: str) -> str | None:
        """The id of a run with this display name in `experiment`, if one exists (used by `flywheel trigger`)."""
        import json

        flt = json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": run_name}]})
        with contextlib.redirect_stdout(sys.stderr):
            runs = self.client.list_runs(experiment_id=self.experiment_id(experiment), filter=flt).runs or []
        return runs[0].run_id if runs else None
