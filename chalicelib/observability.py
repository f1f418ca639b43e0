"""Structured logging and metrics (AWS Lambda Powertools), shared by the API and the worker.

Log lines carry tenant, user and eval_run_id as appended keys, never key material or transcript
text: callers log identifiers and counts only.
"""

from __future__ import annotations

import warnings

from aws_lambda_powertools import Logger, Metrics

# Most API requests emit no metric; Powertools would warn on every one of them.
warnings.filterwarnings("ignore", message="No application metrics to publish")

SERVICE = "eval-runner"

logger = Logger(service=SERVICE)
metrics = Metrics(namespace="EvalRunner", service=SERVICE)
