"""Scalars of a step's metrics dict, logged on a KFP `Metrics` artifact so that the UI shows them."""


def log_metrics(metrics, values: dict, prefix: str = "") -> None:
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            if isinstance(value, dict):
                log_metrics(metrics, value, f"{prefix}{key}.")
            continue
        metrics.log_metric(f"{prefix}{key}", float(value))
