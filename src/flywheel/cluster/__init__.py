"""Running flywheel on a Kubernetes cluster: settings (the config's `cluster` section), KFP submission,
distributed training jobs, and retraining triggers. Nothing here runs on a laptop unless asked to."""
