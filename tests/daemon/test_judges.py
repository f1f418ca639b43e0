"""The daemon's CLI layer without the API: argv, environment isolation, output and usage parsing."""

from __future__ import annotations

import json

from daemon.judges import CliJudge, isolated_env, parse_claude_output, parse_codex_output


def test_claude_argv_pins_schema_and_disables_tools() -> None:
    argv = CliJudge("claude").argv({"type": "object"}, "/unused")
    assert argv[:4] == ["claude", "-p", "--output-format", "json"]
    assert argv[argv.index("--model") + 1] == "sonnet"
    assert json.loads(argv[argv.index("--json-schema") + 1]) == {"type": "object"}
    assert argv[argv.index("--tools") + 1] == "" and argv[argv.index("--max-turns") + 1] == "3"
    assert {"--strict-mcp-config", "--disable-slash-commands"} <= set(argv)


def test_codex_argv_reads_the_prompt_from_stdin() -> None:
    argv = CliJudge("codex", model="gpt-5").argv({}, "/tmp/s.json")
    assert argv == ["codex", "exec", "--json", "--output-schema", "/tmp/s.json", "--skip-git-repo-check",
                    "--sandbox", "read-only", "--color", "never", "-c", "features.shell_tool=false",
                    "-c", "features.unified_exec=false", "-c", "features.multi_agent=false",
                    "-c", 'web_search="disabled"', "--model", "gpt-5", "-"]
    assert CliJudge("codex").judge_model == "codex" and CliJudge("claude", model="opus").judge_model == "opus"


def test_isolated_env_drops_nested_agent_and_token_variables() -> None:
    env = isolated_env({"PATH": "/bin", "HOME": "/home/u", "CLAUDECODE": "1", "CLAUDE_CODE_ENTRYPOINT": "cli",
                        "EVAL_RUNNER_TOKEN": "secret", "MCP_SERVER": "x", "ANTHROPIC_API_KEY": "kept",
                        "CLAUDE_CODE_USE_BEDROCK": "1"})
    assert env["PATH"] == "/bin" and env["HOME"] == "/home/u" and env["KAPACITOR_SKIP"] == "1"
    assert env["ANTHROPIC_API_KEY"] == "kept" and env["CLAUDE_CODE_USE_BEDROCK"] == "1"
    for dropped in ("CLAUDECODE", "CLAUDE_CODE_ENTRYPOINT", "EVAL_RUNNER_TOKEN", "MCP_SERVER"):
        assert dropped not in env


def test_claude_output_prefers_structured_output_and_sums_model_usage() -> None:
    out = json.dumps({"type": "result", "is_error": False, "num_turns": 2, "result": "ignored",
                      "structured_output": {"score": 4}, "total_cost_usd": 0.02,
                      "usage": {"input_tokens": 1, "output_tokens": 1},
                      "modelUsage": {"claude-sonnet-4-6": {"inputTokens": 100, "outputTokens": 20,
                                                           "cacheReadInputTokens": 900,
                                                           "cacheCreationInputTokens": 50},
                                     "claude-haiku": {"inputTokens": 10, "outputTokens": 2}}})
    parsed = parse_claude_output(out)
    assert parsed.text == '{"score": 4}' and parsed.num_turns == 2 and parsed.cost_usd == 0.02
    assert parsed.usage.model_dump() == {"input_tokens": 110, "output_tokens": 22, "cache_read_input_tokens": 900,
                                         "cache_creation_input_tokens": 50}


def test_claude_output_failures() -> None:
    assert parse_claude_output("Error: not logged in").failure.startswith("invalid_output: claude printed no JSON")
    max_turns = parse_claude_output(json.dumps({"is_error": True, "subtype": "error_max_turns", "result": ""}))
    assert max_turns.text is None and "error_max_turns" in (max_turns.failure or "")


def test_codex_output_takes_the_last_agent_message_and_splits_cached_tokens() -> None:
    lines = [{"type": "thread.started", "thread_id": "t"},
             {"type": "item.completed", "item": {"id": "1", "type": "reasoning", "text": "thinking"}},
             {"type": "item.completed", "item": {"id": "2", "type": "agent_message", "text": '{"score": 5}'}},
             {"type": "turn.completed", "usage": {"input_tokens": 1000, "cached_input_tokens": 800,
                                                  "output_tokens": 30}}]
    parsed = parse_codex_output("\n".join(json.dumps(x) for x in lines) + "\nnot json\n")
    assert parsed.text == '{"score": 5}'
    assert (parsed.usage.input_tokens, parsed.usage.cache_read_input_tokens, parsed.usage.output_tokens) == \
           (200, 800, 30)
    failed = parse_codex_output(json.dumps({"type": "turn.failed", "error": {"message": "usage limit reached"}}))
    assert failed.text is None and "usage limit reached" in (failed.failure or "")
