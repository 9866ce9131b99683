"""flywheel: self-improving language models as Kubeflow pipelines.

The five steps are plain functions in `flywheel.steps`: paths and a `flywheel.config.Config` in, paths out.
"""

import os

# The char-level tokenizer is tiny; tokenizers' thread pool only adds fork warnings under DataLoader.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

__version__ = "0.1.0"
