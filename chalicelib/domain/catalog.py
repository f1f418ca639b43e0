"""The tenant's judge catalog: the 13 built-ins (enabled or not) and the tenant's own questions in
the admin's order, kept as immutable numbered versions; the rules a new version must pass, what
changed between two versions (the audit), and how a version resolves into the `Question`s a run
judges. Pure: `chalicelib.services.catalog` applies it with the store.

Built-ins are stored by reference (id, enabled): their wording ships with the service, like the
rest of the prompt. Tenant questions are stored in full, so a version is everything a run needs to
judge exactly what it judged the first time (reruns, daemon jobs), whatever happens to the catalog
later. Version 0 is the implicit catalog of a tenant that never saved one: every built-in, enabled.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from chalicelib.domain.errors import InvalidRequest, PreconditionFailed
from chalicelib.judges.catalog import BUILTIN_IDS, CATEGORIES, QUESTIONS, Question, get_question

# Documented limits (README "Judge catalog"). A version is one DynamoDB item and every selected
# question travels in a daemon's job (one WebSocket message is at most 128 KB), so the stored
# catalog is capped well below both.
ID_PATTERN = r"^[a-z][a-z0-9_]{2,40}$"
CATEGORY_PATTERN = r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)*$"
MIN_CATEGORY_CHARS = 3
MAX_CATEGORY_CHARS = 41
MAX_TEXT_CHARS = 2000
MAX_RUBRIC_CHARS = 4000
MAX_TENANT_QUESTIONS = 40
MAX_CATALOG_BYTES = 96 * 1024
# The request models carry the per-field caps, so the largest body that passes them (60 entries of
# maximal fields, every character a JSON-escaped surrogate pair: 5.9 MB) is still below this: an
# oversized field is a 400 naming it, never a 413. 6 MB is also what Lambda accepts at all.
MAX_CATALOG_BODY_BYTES = 6_000_000
# Parsing bounds: past these a list is not a catalog and a name not an id (the rules give the precise error).
_MAX_ENTRIES_PARSED = 60
_MAX_NAME_PARSED = 64

_ID = re.compile(ID_PATTERN)
_CATEGORY = re.compile(CATEGORY_PATTERN)
# C0 controls other than tab, newline and carriage return have no place in a question.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_IF_MATCH = re.compile(r'^(?:W/)?"?(\d{1,12})"?$')

ChangeAction = Literal["added", "removed", "enabled", "disabled", "edited", "reordered"]


# ------------------------------------------------------------------------------------ stored model


# The editor's models (updates, drafts, views, audit) are built on first use (`defer_build`): dispatch imports
# this module for the stored catalog versions only (bench/coldstart).


class CatalogEntry(BaseModel):
    """One question of a catalog version as stored: a built-in by reference, a tenant question in full."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str
    builtin: bool
    enabled: bool = True
    category: str | None = None
    text: str | None = None
    rubric: str | None = None
    needs_tools: bool = False

    def question(self) -> Question | None:
        """The question a runner judges; None for a built-in this release no longer ships."""
        if self.builtin:
            return get_question(self.id)
        assert self.category is not None and self.text is not None
        return Question(category=self.category, id=self.id, text=self.text, prompt=self.text,
                        rubric=self.rubric, needs_tools=self.needs_tools)


class CatalogChange(BaseModel):
    """One line of a version's audit: what happened to which question (`reordered` names none)."""

    model_config = ConfigDict(frozen=True)

    action: ChangeAction
    question_id: str | None = None
    fields: list[str] = Field(default_factory=list, description="For 'edited': the fields that changed.")


class CatalogVersion(BaseModel):
    """An immutable catalog version: its entries in order and who made it from the previous one."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    version: int
    entries: list[CatalogEntry]
    created_at: str | None = None
    created_by: str | None = None
    changes: list[CatalogChange] = Field(default_factory=list)

    def resolved(self) -> ResolvedCatalog:
        enabled: list[Question] = []
        disabled: list[str] = []
        for entry in self.entries:
            question = entry.question()
            if question is None:
                continue
            (enabled.append(question) if entry.enabled else disabled.append(entry.id))
        return ResolvedCatalog(version=self.version, questions=tuple(enabled), disabled_ids=tuple(disabled))

    def questions_by_id(self) -> dict[str, Question]:
        """Every question of the version, enabled or not (a run selected them when they were enabled)."""
        return {q.id: q for e in self.entries if (q := e.question()) is not None}


def default_catalog() -> CatalogVersion:
    """Version 0: a tenant that never saved a catalog judges every built-in."""
    return CatalogVersion(version=0, entries=[CatalogEntry(id=q.id, builtin=True) for q in QUESTIONS])


@dataclass(frozen=True)
class ResolvedCatalog:
    """What dispatch selects from: the version's enabled questions in catalog order."""

    version: int
    questions: tuple[Question, ...]
    disabled_ids: tuple[str, ...] = ()


# ------------------------------------------------------------------------------------ API models

class CatalogQuestionInput(BaseModel):
    """One question of `PUT /admin/eval-questions`. A built-in is named by its id (only `enabled` may
    change; its other fields may be sent back unchanged); anything else is a tenant question."""

    model_config = ConfigDict(defer_build=True, extra="forbid")

    id: str = Field(max_length=_MAX_NAME_PARSED, description=f"Tenant questions: {ID_PATTERN}.")
    category: str | None = Field(default=None, max_length=_MAX_NAME_PARSED,
                                 description="One of the four built-in categories or a new snake_case one.")
    text: str | None = Field(default=None, max_length=MAX_TEXT_CHARS,
                             description=f"The question the judge answers (at most {MAX_TEXT_CHARS} characters).")
    rubric: str | None = Field(default=None, max_length=MAX_RUBRIC_CHARS,
                               description=f"What each score means (at most {MAX_RUBRIC_CHARS} characters).")
    needs_tools: StrictBool | None = Field(default=None, description="Judge with session tools (default false).")
    enabled: StrictBool = True
    builtin: StrictBool | None = Field(default=None, description="Optional; inferred from the id.")
    prompt: str | None = Field(default=None, max_length=MAX_TEXT_CHARS,
                               description="Read-only (built-ins): accepted only unchanged, so a GET body can be "
                                           "sent back.")


class CatalogUpdate(BaseModel):
    """PUT /admin/eval-questions: the whole catalog in order (every built-in listed, enabled or not)."""

    model_config = ConfigDict(defer_build=True, extra="forbid")

    questions: list[CatalogQuestionInput] = Field(max_length=_MAX_ENTRIES_PARSED)


class DraftQuestion(BaseModel):
    """A question that is not saved yet (preview and try it): the fields of a tenant question."""

    model_config = ConfigDict(defer_build=True, extra="forbid")

    id: str = Field(max_length=_MAX_NAME_PARSED)
    category: str = Field(max_length=_MAX_NAME_PARSED)
    text: str = Field(max_length=MAX_TEXT_CHARS)
    rubric: str | None = Field(default=None, max_length=MAX_RUBRIC_CHARS)
    needs_tools: StrictBool = False


class CatalogQuestionView(BaseModel):
    model_config = ConfigDict(defer_build=True)

    id: str
    category: str
    text: str
    rubric: str | None = None
    needs_tools: bool
    enabled: bool
    builtin: bool
    prompt: str | None = Field(default=None, description="Built-ins: the full question the judge answers "
                                                         "(read-only). Tenant questions: null (text is sent).")


class CatalogLimits(BaseModel):
    model_config = ConfigDict(defer_build=True)

    id_pattern: str = ID_PATTERN
    category_pattern: str = CATEGORY_PATTERN
    max_text_chars: int = MAX_TEXT_CHARS
    max_rubric_chars: int = MAX_RUBRIC_CHARS
    max_tenant_questions: int = MAX_TENANT_QUESTIONS
    max_catalog_bytes: int = MAX_CATALOG_BYTES
    builtin_categories: list[str] = Field(default_factory=lambda: list(CATEGORIES))


class CatalogView(BaseModel):
    """GET|PUT /admin/eval-questions."""

    model_config = ConfigDict(defer_build=True)

    version: int
    questions: list[CatalogQuestionView]
    updated_at: str | None = None
    updated_by: str | None = None
    limits: CatalogLimits = Field(default_factory=CatalogLimits)


class CatalogVersionView(CatalogView):
    """GET /admin/eval-questions/versions/{version}: an old version exactly as it was saved."""

    model_config = ConfigDict(defer_build=True)

    changes: list[CatalogChange]


class CatalogAuditRecord(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="ignore")

    version: int
    at: str
    by: str
    changes: list[CatalogChange]


class CatalogAuditPage(BaseModel):
    model_config = ConfigDict(defer_build=True)

    items: list[CatalogAuditRecord]


class CatalogAuditQuery(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="forbid")

    limit: int = Field(default=50, ge=1, le=100)


class QuestionEntry(BaseModel):
    model_config = ConfigDict(defer_build=True)

    category: str
    id: str
    text: str
    needs_tools: bool
    builtin: bool = True
    rubric: str | None = None


class QuestionCatalog(BaseModel):
    """GET /eval/questions: the tenant's enabled questions in catalog order."""

    model_config = ConfigDict(defer_build=True)

    questions: list[QuestionEntry]
    version: int = Field(default=0, description="The catalog version these questions come from.")


def entry_view(entry: CatalogEntry) -> CatalogQuestionView | None:
    question = entry.question()
    if question is None:
        return None
    return CatalogQuestionView(id=question.id, category=question.category, text=question.text,
                               rubric=question.rubric, needs_tools=question.needs_tools, enabled=entry.enabled,
                               builtin=entry.builtin, prompt=question.prompt if entry.builtin else None)


def catalog_view(version: CatalogVersion) -> CatalogView:
    return CatalogView(version=version.version,
                       questions=[v for e in version.entries if (v := entry_view(e)) is not None],
                       updated_at=version.created_at, updated_by=version.created_by)


def version_view(version: CatalogVersion) -> CatalogVersionView:
    view = catalog_view(version)
    return CatalogVersionView(**view.model_dump(), changes=list(version.changes))


def enabled_view(catalog: ResolvedCatalog) -> QuestionCatalog:
    return QuestionCatalog(version=catalog.version, questions=[
        QuestionEntry(category=q.category, id=q.id, text=q.text, needs_tools=q.needs_tools,
                      builtin=q.id in BUILTIN_IDS, rubric=q.rubric)
        for q in catalog.questions])


# ------------------------------------------------------------------------------------ rules


def _error(field_name: str, message: str, kind: str) -> dict[str, Any]:
    return {"field": field_name, "message": message, "type": kind}


def _clean(value: str) -> str:
    return value.replace("\r\n", "\n").strip()


def check_tenant_question(prefix: str, *, qid: str, category: str | None, text: str | None, rubric: str | None,
                          taken_ids: frozenset[str] = frozenset()) -> tuple[list[dict[str, Any]], str, str, str | None]:
    """Field errors of one tenant question (prefixed `questions.<i>` or `question`, the paths request
    validation uses too) and its cleaned category, text and rubric. Lengths are capped by the request
    models already. `taken_ids`: ids a category may not be named like (selection tokens match
    categories first, so a category named like a question would hide it)."""
    errors: list[dict[str, Any]] = []
    if not _ID.match(qid):
        errors.append(_error(f"{prefix}.id", "An id is 3-41 characters of a-z, 0-9 and _, starting with a letter.",
                             "invalid_id"))
    elif qid in BUILTIN_IDS:
        errors.append(_error(f"{prefix}.id", f"'{qid}' is a built-in question id; choose another id.",
                             "builtin_id_collision"))
    cat = (category or "").strip()
    if not cat:
        errors.append(_error(f"{prefix}.category", "A tenant question needs a category.", "missing_category"))
    elif not (MIN_CATEGORY_CHARS <= len(cat) <= MAX_CATEGORY_CHARS and _CATEGORY.match(cat)):
        errors.append(_error(f"{prefix}.category", "A category is snake_case: 3-41 characters of a-z and 0-9 in "
                                                   "words joined by single underscores, starting with a letter.",
                             "invalid_category"))
    elif cat in BUILTIN_IDS or cat in taken_ids or cat == qid:
        errors.append(_error(f"{prefix}.category", f"The category '{cat}' has the name of a question; question "
                                                   "selection could not tell them apart. Choose another name.",
                             "category_collides_with_id"))
    body = _clean(text or "")
    if not body:
        errors.append(_error(f"{prefix}.text", "The question text is empty.", "empty_text"))
    elif _CONTROL.search(body):
        errors.append(_error(f"{prefix}.text", "The question text contains control characters.",
                             "invalid_characters"))
    rub = _clean(rubric) if rubric is not None else ""
    if _CONTROL.search(rub):
        errors.append(_error(f"{prefix}.rubric", "The rubric contains control characters.", "invalid_characters"))
    return errors, cat, body, rub or None


def _check_builtin(prefix: str, item: CatalogQuestionInput) -> list[dict[str, Any]]:
    builtin = get_question(item.id)
    assert builtin is not None
    fixed = {"category": builtin.category, "text": builtin.text, "needs_tools": builtin.needs_tools,
             "prompt": builtin.prompt, "rubric": None}
    errors = []
    for name, expected in fixed.items():
        sent = getattr(item, name)
        if sent is not None and sent != expected:
            errors.append(_error(f"{prefix}.{name}", f"'{item.id}' is a built-in question: it can be disabled or "
                                                     "moved, not edited.", "builtin_immutable"))
    return errors


def _raise(errors: list[dict[str, Any]]) -> None:
    if not errors:
        return
    only_empty = all(e["type"] == "no_enabled_question" for e in errors)
    summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
    if len(errors) > 5:
        summary += f" (and {len(errors) - 5} more)"
    raise InvalidRequest(summary, code="catalog_empty" if only_empty else "validation_failed",
                         details={"fields": errors})


def plan_catalog(update: CatalogUpdate) -> list[CatalogEntry]:
    """The entries of the new version, or a 400 listing every field error (nothing is stored)."""
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    entries: list[CatalogEntry] = []
    tenant_ids = frozenset(q.id for q in update.questions if q.id not in BUILTIN_IDS)
    for i, item in enumerate(update.questions):
        prefix = f"questions.{i}"
        if item.id in seen:
            if item.id in BUILTIN_IDS:
                errors.append(_error(f"{prefix}.id", f"'{item.id}' is a built-in question id and is listed already; "
                                                     "a tenant question needs another id.", "builtin_id_collision"))
            else:
                errors.append(_error(f"{prefix}.id", f"'{item.id}' appears more than once.", "duplicate_id"))
            continue
        seen.add(item.id)
        if item.id in BUILTIN_IDS and item.builtin is not False:
            errors += _check_builtin(prefix, item)
            entries.append(CatalogEntry(id=item.id, builtin=True, enabled=item.enabled))
            continue
        if item.builtin is True:
            errors.append(_error(f"{prefix}.builtin", f"'{item.id}' is not a built-in question.", "not_builtin"))
            continue
        found, category, text, rubric = check_tenant_question(prefix, qid=item.id, category=item.category,
                                                              text=item.text, rubric=item.rubric,
                                                              taken_ids=tenant_ids)
        if item.prompt is not None:
            found.append(_error(f"{prefix}.prompt", "Only built-ins have a separate prompt; a tenant question "
                                                    "sends its text.", "not_allowed"))
        errors += found
        if not found:
            entries.append(CatalogEntry(id=item.id, builtin=False, enabled=item.enabled, category=category,
                                        text=text, rubric=rubric, needs_tools=bool(item.needs_tools)))
    missing = [q.id for q in QUESTIONS if q.id not in seen]
    if missing:
        errors.append(_error("questions", "Every built-in question must be listed (disable it instead of removing "
                                          f"it); missing: {', '.join(missing)}.", "builtin_missing"))
    tenant_count = sum(1 for q in update.questions if q.id not in BUILTIN_IDS)
    if tenant_count > MAX_TENANT_QUESTIONS:
        errors.append(_error("questions", f"{tenant_count} tenant questions; the limit is {MAX_TENANT_QUESTIONS}.",
                             "too_many_questions"))
    if not errors and not any(e.enabled for e in entries):
        errors.append(_error("questions", "At least one question must stay enabled.", "no_enabled_question"))
    if not errors:
        size = stored_size(entries)
        if size > MAX_CATALOG_BYTES:
            errors.append(_error("questions", f"The catalog would take {size} bytes; the limit is "
                                              f"{MAX_CATALOG_BYTES}. Shorten texts or rubrics.", "catalog_too_large"))
    _raise(errors)
    return entries


def check_draft(draft: DraftQuestion) -> Question:
    """A question that is not saved yet, held to the rules of a saved tenant question."""
    errors, category, text, rubric = check_tenant_question("question", qid=draft.id, category=draft.category,
                                                           text=draft.text, rubric=draft.rubric)
    _raise(errors)
    return Question(category=category, id=draft.id, text=text, prompt=text, rubric=rubric,
                    needs_tools=draft.needs_tools)


def stored_size(entries: Sequence[CatalogEntry]) -> int:
    """Bytes of the entries as JSON (UTF-8): what the size limit is about."""
    return len(json.dumps([e.model_dump(exclude_none=True) for e in entries], ensure_ascii=False).encode())


def diff_catalog(old: Sequence[CatalogEntry], new: Sequence[CatalogEntry]) -> list[CatalogChange]:
    """The audit of a new version: added, removed, enabled/disabled, edited (with field names), reordered."""
    before = {e.id: e for e in old}
    after = {e.id: e for e in new}
    changes: list[CatalogChange] = []
    for entry in new:
        prior = before.get(entry.id)
        if prior is None or prior.builtin != entry.builtin:
            changes.append(CatalogChange(action="added", question_id=entry.id))
            continue
        edited = [f for f in ("category", "text", "rubric", "needs_tools") if getattr(prior, f) != getattr(entry, f)]
        if edited:
            changes.append(CatalogChange(action="edited", question_id=entry.id, fields=edited))
        if prior.enabled != entry.enabled:
            changes.append(CatalogChange(action="enabled" if entry.enabled else "disabled", question_id=entry.id))
    for entry in old:
        current = after.get(entry.id)
        if current is None or current.builtin != entry.builtin:
            changes.append(CatalogChange(action="removed", question_id=entry.id))
    common_before = [e.id for e in old if e.id in after]
    common_after = [e.id for e in new if e.id in before]
    if common_before != common_after:
        changes.append(CatalogChange(action="reordered"))
    return changes


def parse_catalog_if_match(header: str | None) -> int | None:
    """`If-Match: 7`, `"7"` or `W/"7"` → 7; absent or `*` → no precondition."""
    if header is None or not header.strip() or header.strip() == "*":
        return None
    match = _IF_MATCH.match(header.strip())
    if match is None:
        raise InvalidRequest("If-Match must be the catalog version from GET, e.g. 'If-Match: 3'.",
                             code="invalid_if_match")
    return int(match.group(1))


def catalog_version_mismatch(current: CatalogVersion, expected: int) -> PreconditionFailed:
    who = f" by {current.created_by}" if current.created_by else ""
    when = f" at {current.created_at}" if current.created_at else ""
    return PreconditionFailed(
        f"The judge catalog changed since you read it (you sent version {expected}; it is now version "
        f"{current.version}{who}{when}). GET it again and re-apply your change.",
        code="version_mismatch",
        details={"expected_version": expected, "current_version": current.version,
                 "updated_by": current.created_by, "updated_at": current.created_at,
                 "changes": [c.model_dump() for c in current.changes]})
