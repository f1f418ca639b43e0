"""`make package STAGE=…` (`python -m devstack.package`): the deployable CloudFormation/SAM template
and zip in `build/<stage>/`.

Two merges over what `chalice package` generates, both with Chalice's own deep merge (a dict merges
into a dict; anything else, lists included, replaces):

1. `build/<stage>/infra-merge.json`, passed to `chalice package --merge-template`: the data plane of
   `infra/eval-runner.json`, the stage overlay of `infra/stages.json`, the static patches of
   `infra/chalice-overlay.json` (API Gateway error responses), and per-stage parameter defaults.
2. `build/<stage>/functions-merge.json`, computed from the generated template because its logical ids
   depend on the app (which websocket handlers, authorizers or pure lambdas exist): for every function
   the environment (table, bucket, queue, key, auth parameters, websocket API id), a log group with
   retention and a least-privilege role policy built from intrinsics; for the SQS worker
   `ReportBatchItemFailures` and its event source re-pointed at the CloudFormation queue (Chalice
   only knows the queue *name*). That `${EvalJobs.Arn}` already makes the worker depend on the
   queue, so no `DependsOn` (cfn-lint W3005 flags a redundant one).

Then the result is checked (`check_template`) and, unless `--no-lint`, run through cfn-lint.

It builds from a snapshot of the sources (others keep editing the tree). It needs a region (us-east-1
for the subprocess unless set) but no AWS credentials. The Lambda's manylinux wheels come from PyPI
the first time a requirements.txt is packaged (20-50 s) and from `.chalice/deployments/deps-*.zip`
afterwards (a few seconds, offline too); `--refresh-dependencies` downloads them again.

Modules: `inputs` (paths, the stage's chalice config, the deep merge), `snapshot` (the copied inputs
and their fingerprint), `dependencies` (requirements pinned to the venv, the wheel cache),
`template` (both merges), `checks` (the invariants, cfn-lint), `bytecode` (.pyc into the zip),
`build` (one build, the manifest, the CLI). This module re-exports what the deploy tools and the
tests use.
"""

from devstack.package.build import (
    PackageResult,
    chalice_command,
    fresh_build,
    main,
    package,
    project_lock,
)
from devstack.package.bytecode import compile_bytecode
from devstack.package.checks import check_template, iam_policy_documents, run_cfn_lint
from devstack.package.dependencies import package_index_reachable, pinned_requirements, seed_chalice_cache
from devstack.package.inputs import (
    BUILD_DIR,
    CHALICE_CONFIG,
    DEFAULT_REGION,
    INFRA_TEMPLATE,
    ROOT,
    PackagingError,
    deep_merge,
    stage_config,
)
from devstack.package.snapshot import fingerprint, input_files, project_snapshot, snapshot_project
from devstack.package.template import (
    API_HANDLER,
    BUCKET,
    QUEUE,
    TABLE,
    build_functions_merge,
    build_infra_merge,
    data_plane_template,
    function_kind,
    log_group_id,
)

# The names devstack/infra.py's `chalice deploy` rehearsal calls them by.
_project_lock = project_lock
_seed_chalice_cache = seed_chalice_cache
_chalice_command = chalice_command

__all__ = [
    "API_HANDLER", "BUCKET", "BUILD_DIR", "CHALICE_CONFIG", "DEFAULT_REGION", "INFRA_TEMPLATE", "QUEUE", "ROOT",
    "TABLE", "PackageResult", "PackagingError", "build_functions_merge", "build_infra_merge", "chalice_command",
    "check_template", "compile_bytecode", "data_plane_template", "deep_merge", "fingerprint", "fresh_build",
    "function_kind", "iam_policy_documents", "input_files", "log_group_id", "main", "package",
    "package_index_reachable", "pinned_requirements", "project_lock", "project_snapshot", "run_cfn_lint",
    "seed_chalice_cache", "snapshot_project", "stage_config",
]
