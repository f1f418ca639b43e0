"""Reference eval-runner daemon: runs evaluations on the user's machine with the local claude/codex CLI.

Not part of the Lambda package. Run from the repository root: `python -m daemon run --api-url URL
--token TOKEN`. It imports the service's pure judge code from `chalicelib.judges`, so prompts,
verdict parsing and aggregation are the same code on both runners.
"""
