"""ChatGPT's conversations.json mapped into our message trees.

Each conversation has a `mapping` of nodes {id, message | null, parent, children} and a
`current_node`. Only what a person saw is kept: user and assistant text. Empty root nodes,
system and tool messages, hidden context (custom instructions, memory) and the assistant's tool
calls are skipped; a kept message hangs under its nearest kept ancestor, so branches (edits,
regenerations) survive and the chain stays connected.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from .importer import (ImportProblem, PlannedMessage, PlannedThread, clean_text, clean_title, parse_epoch)

TEXT_TYPES = ("text", "multimodal_text")


def from_chatgpt(conversations: list[Any]) -> tuple[list[PlannedThread], int]:
    """Plans of every conversation with something to import, and how many had nothing."""
    if not conversations:
        raise ImportProblem("The file holds no conversations.")
    plans, skipped = [], 0
    for n, conversation in enumerate(conversations, 1):
        plan = _conversation(conversation, n)
        if plan.messages:
            plans.append(plan)
        else:
            skipped += 1
    if not plans:
        raise ImportProblem("None of the conversations has a message to import.")
    return plans, skipped


def _text(message: dict[str, Any], where: str) -> str | None:
    """The visible text of a message, or None when it is not something a person saw."""
    content = message.get("content")
    if not isinstance(content, dict):
        raise ImportProblem(f"{where}: the message has no content object.")
    if content.get("content_type") not in TEXT_TYPES:
        return None  # code for tools, browsing results, reasoning, hidden context...
    parts = content.get("parts")
    if not isinstance(parts, list):
        raise ImportProblem(f"{where}: the message content has no parts list.")
    texts = []
    for part in parts:
        if isinstance(part, str):
            texts.append(clean_text(part, where, "a part"))
        elif isinstance(part, dict) and part.get("content_type") == "image_asset_pointer":
            texts.append("[image not imported]")
        elif isinstance(part, dict) and isinstance(part.get("text"), str):  # e.g. audio transcriptions
            texts.append(clean_text(part["text"], where, "a part"))
    text = "\n".join(t for t in texts if t).strip()
    return text or None


def _keep(node_id: str, node: dict[str, Any], where: str, fallback_time: datetime) -> PlannedMessage | None:
    """The message of a node if a person saw it, else None (no time: the one before it)."""
    message = node.get("message")
    if message is None:
        return None
    if not isinstance(message, dict):
        raise ImportProblem(f"{where}, node {node_id}: message must be an object or null.")
    author = message.get("author")
    if not isinstance(author, dict) or not isinstance(author.get("role"), str):
        raise ImportProblem(f"{where}, node {node_id}: the message has no author role.")
    role = author["role"]
    metadata = message.get("metadata") if isinstance(message.get("metadata"), dict) else {}
    if role not in ("user", "assistant") or metadata.get("is_visually_hidden_from_conversation"):
        return None
    if message.get("recipient", "all") != "all":  # the assistant calling a tool
        return None
    text = _text(message, f"{where}, node {node_id}")
    if text is None:
        return None
    created = parse_epoch(message.get("create_time"), f"{where}, node {node_id}", "create_time")
    model = metadata.get("model_slug") if role == "assistant" and isinstance(metadata.get("model_slug"), str) else None
    status = "interrupted" if message.get("status") == "in_progress" else "complete"
    return PlannedMessage(key=node_id, parent_key=None, role=role, content=text,
                          created_at=created or fallback_time, status=status, model=clean_text(model, where, "model", optional=True),
                          finished_at=created if role == "assistant" else None)


def _conversation(raw: Any, n: int) -> PlannedThread:
    if not isinstance(raw, dict):
        raise ImportProblem(f"Conversation {n} is not an object.")
    title = clean_title(raw.get("title"))
    where = f"Conversation {n} (“{title}”)"
    mapping = raw.get("mapping")
    if not isinstance(mapping, dict) or not mapping:
        raise ImportProblem(f"{where} has no mapping of messages.")
    created = parse_epoch(raw.get("create_time"), where, "create_time") or datetime.now(timezone.utc)
    updated = parse_epoch(raw.get("update_time"), where, "update_time") or created
    children: dict[str | None, list[str]] = {}
    for node_id, node in mapping.items():
        if not isinstance(node, dict):
            raise ImportProblem(f"{where}, node {node_id}: not an object.")
        parent = node.get("parent")
        if parent is not None and (not isinstance(parent, str) or parent not in mapping):
            raise ImportProblem(f"{where}, node {node_id}: its parent {parent} is not in the mapping.")
        children.setdefault(parent, []).append(node_id)
    # Depth first from the roots, carrying the nearest kept ancestor and the last known time.
    nearest: dict[str, str | None] = {}  # node -> itself if kept, else its nearest kept ancestor
    ordered: list[PlannedMessage] = []
    visited = 0
    stack: list[tuple[str, str | None, datetime]] = [(r, None, created) for r in reversed(children.get(None, []))]
    while stack:
        node_id, kept_parent, last_time = stack.pop()
        visited += 1
        message = _keep(node_id, mapping[node_id], where, last_time)
        if message is not None:
            message.parent_key = kept_parent
            ordered.append(message)
            kept_parent, last_time = node_id, message.created_at
        nearest[node_id] = kept_parent
        for child in reversed(children.get(node_id, [])):
            stack.append((child, kept_parent, last_time))
    if visited != len(mapping):
        stray = next(node_id for node_id in mapping if node_id not in nearest)
        raise ImportProblem(f"{where}, node {stray}: its parents form a loop.")
    current = raw.get("current_node")
    if current is not None and (not isinstance(current, str) or current not in mapping):
        raise ImportProblem(f"{where}: current_node {current} is not in the mapping.")
    current_key = nearest.get(current) if current else None
    if current_key is None and ordered:  # no usable current node: show the newest leaf
        parents = {m.parent_key for m in ordered}
        current_key = max((m for m in ordered if m.key not in parents), key=lambda m: m.created_at).key
    return PlannedThread(title=title, created_at=created, updated_at=max(updated, created),
                         messages=ordered, current_key=current_key)
