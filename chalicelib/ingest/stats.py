"""What a parse saw: line counts, skipped records by reason, and the session metadata it found."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# Distinct unknown record types kept by name; a file full of novel types cannot grow the map.
_MAX_UNKNOWN_TYPES = 50


@dataclass
class SessionMetadata:
    """Facts about the recorded session, from the first record that states each one.

    `continuation_leaf_uuid` (Claude Code) is the `leafUuid` of a `summary` line pointing outside
    this file: the uuid of the last line of the session this one continues. `last_uuid` is the
    uuid of this file's last line, which a later session's `continuation_leaf_uuid` matches.
    """

    session_id: str | None = None
    cwd: str | None = None
    git_branch: str | None = None
    git_commit: str | None = None
    repository_url: str | None = None
    model: str | None = None
    agent_version: str | None = None
    title: str | None = None
    continuation_leaf_uuid: str | None = None
    last_uuid: str | None = None
    started_at: str | None = None
    ended_at: str | None = None


@dataclass
class ParseStats:
    format: str
    lines: int = 0
    blank_lines: int = 0
    bytes: int = 0
    entries: int = 0
    entries_by_kind: dict[str, int] = field(default_factory=dict)
    skipped_metadata: int = 0
    skipped_injected: int = 0
    skipped_unknown: dict[str, int] = field(default_factory=dict)
    tool_results_unpaired: int = 0
    metadata: SessionMetadata = field(default_factory=SessionMetadata)

    def count_entry(self, kind: str) -> None:
        self.entries += 1
        self.entries_by_kind[kind] = self.entries_by_kind.get(kind, 0) + 1

    def count_unknown(self, record_type: str) -> None:
        key = record_type if record_type in self.skipped_unknown else record_type[:80]
        if key not in self.skipped_unknown and len(self.skipped_unknown) >= _MAX_UNKNOWN_TYPES:
            key = "(other)"
        self.skipped_unknown[key] = self.skipped_unknown.get(key, 0) + 1

    def see_timestamp(self, timestamp: str) -> None:
        if self.metadata.started_at is None:
            self.metadata.started_at = timestamp
        self.metadata.ended_at = timestamp

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
