"""The README works when followed literally by a newcomer: what it tells them to run exists."""

from __future__ import annotations

import json
import re
from pathlib import Path

from chalicelib.domain.settings import EvalRunnerSettingsUpdate
from devstack.import_settings import translate_dotnet_settings

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def _code_blocks() -> list[tuple[str, str]]:
    return re.findall(r"```(\w*)\n(.*?)```", README, flags=re.S)


def test_links_stay_inside_the_repository() -> None:
    for target in re.findall(r"\]\(([^)\s]+)\)", README):
        assert not re.match(r"[a-z]+://", target), f"external link {target}"
        if target.startswith("#"):
            continue
        path = target.split("#")[0]
        # Screenshots are written by `make test`; everything else must be committed.
        if not path.startswith("build/"):
            assert (ROOT / path).exists(), f"README links to {target}, which does not exist"


def test_shell_blocks_with_bash_arrays_say_bash() -> None:
    for language, body in _code_blocks():
        if re.search(r"\w+=\(|\"\$\{\w+\[@\]\}\"", body):
            assert language == "bash", f"a ```{language} block uses bash arrays:\n{body[:200]}"


def test_no_uuidgen_and_no_placeholder_session_ids_in_commands() -> None:
    assert "uuidgen" not in README
    for _, body in _code_blocks():
        assert "sessions/<id>" not in body and "sessions/my-session" not in body, body[:200]


def test_files_the_examples_upload_are_in_the_repository() -> None:
    for path in re.findall(r"@?(tests/fixtures/sessions/[\w.-]+)", README):
        assert (ROOT / path).is_file(), path


def test_the_sample_appsettings_imports_cleanly_and_targets_the_local_stack() -> None:
    data = json.loads((ROOT / "devstack" / "appsettings.local.json").read_text())
    update = EvalRunnerSettingsUpdate.model_validate(translate_dotnet_settings(data))
    for vendor in ("anthropic", "openai"):
        block = getattr(update, vendor)
        assert block is not None and str(block.base_url).startswith("http://127.0.0.1:5100"), vendor
    assert "make import-settings FILE=devstack/appsettings.local.json" in README


def test_the_deploy_sequence_in_the_readme_is_what_make_deploy_runs() -> None:
    import shlex

    from devstack.deploy import commands

    flat = re.sub(r"\\\n\s*", "", README)
    params = ["JwksUrl=https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbCdEf123/.well-known/jwks.json",
              "JwtIssuer=https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbCdEf123",
              "JwtAudience=1example23456789abcdefghij"]
    for command in commands("prod", "my-artifacts-bucket", params):
        line = " ".join(shlex.join(command).replace("'", "").split())
        assert line in " ".join(flat.replace("'", "").split()), line
