"""The JSON API's request and response models (pydantic), validated by quart-schema.

The OpenAPI document at /openapi.json is generated from these, so field descriptions here are
the API's reference documentation.
"""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema


def _storable(value: str) -> str:
    """PostgreSQL text cannot hold NUL, and lone surrogates cannot be encoded: refuse both (422)."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text") from None
    return value


Text = Annotated[str, AfterValidator(_storable)]
# ISO 8601 in every dump: Quart's JSON encoder would otherwise write datetimes as HTTP dates,
# which drop sub-second precision and the offset.
Timestamp = Annotated[datetime, PlainSerializer(lambda v: v.isoformat(), return_type=str, when_used="always"),
                      WithJsonSchema({"type": "string", "format": "date-time"})]


class _Input(BaseModel):
    """Request bodies and query strings refuse unknown fields: a typo is an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


class ErrorDetail(BaseModel):
    """What went wrong."""

    status: int = Field(description="The HTTP status code.")
    title: str = Field(description="A short, stable title for the status.")
    message: str = Field(description="A sentence for humans saying what to do.")
    request_id: str | None = Field(None, description="The request's id in the server logs (quote it in support requests).")


class Error(BaseModel):
    """Every error answer has this shape."""

    error: ErrorDetail


class ThreadCreate(_Input):
    """A new thread. Omitted fields take the user's defaults from their settings."""

    title: Annotated[Text, Field(max_length=200)] | None = Field(None, description="Defaults to \"New chat\"; the first answer then names it.")
    model: Annotated[Text, Field(max_length=200)] | None = Field(None, description="One of the offered models.")
    system_prompt: Annotated[Text, Field(max_length=8000)] | None = None


class ThreadPatch(_Input):
    """Changes to a thread: only the fields present change."""

    title: Annotated[Text, Field(max_length=200)] | None = None
    model: Annotated[Text, Field(max_length=200)] | None = None
    system_prompt: Annotated[Text, Field(max_length=8000)] | None = None


class ThreadOut(BaseModel):
    """A conversation."""

    id: uuid.UUID
    title: str
    model: str | None
    system_prompt: str
    current_leaf_id: uuid.UUID | None = Field(description="The last message of the visible branch.")
    created_at: Timestamp
    updated_at: Timestamp


class MessageOut(BaseModel):
    """One message. An answer is `streaming` until it reaches a final status."""

    id: uuid.UUID
    thread_id: uuid.UUID
    parent_id: uuid.UUID | None
    role: Literal["system", "user", "assistant"]
    content: str
    status: Literal["complete", "streaming", "stopped", "interrupted", "error"]
    model: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    error: str | None
    created_at: Timestamp
    finished_at: Timestamp | None


class ThreadDetail(ThreadOut):
    """A thread with the messages of its visible branch, oldest first."""

    messages: list[MessageOut]


class ThreadPage(BaseModel):
    """One page of threads, most recently active first."""

    threads: list[ThreadOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")


class ThreadListQuery(_Input):
    """Paging through threads."""

    cursor: Annotated[Text, Field(max_length=200)] | None = None
    limit: int = Field(20, ge=1, le=100)


class MessageList(BaseModel):
    """The messages of a thread's visible branch, oldest first."""

    messages: list[MessageOut]


class MessageCreate(_Input):
    """A message to send."""

    content: Text = Field(min_length=1, description="The text; at most CHATAPP_MAX_MESSAGE_CHARS characters.")
    stream: bool = Field(True, description="true: answer at once with the answer's id and `stream_url`; "
                                           "false: wait for the finished answer.")


class Exchange(BaseModel):
    """A sent message and its answer (still streaming unless the request waited for it)."""

    user_message: MessageOut
    answer: MessageOut
    stream_url: str = Field(description="Server-Sent Events of the answer: `delta` events carry text, "
                                        "`done` the finished message.")


class SearchQuery(_Input):
    """Full-text search (web-search syntax: words, \"quoted phrases\", -excluded, or)."""

    q: Annotated[Text, Field(min_length=1, max_length=500)]
    limit: int = Field(20, ge=1, le=50)


class SearchHit(BaseModel):
    """A message that matches."""

    message_id: uuid.UUID
    thread_id: uuid.UUID
    thread_title: str
    role: Literal["system", "user", "assistant"]
    snippet: str = Field(description="Plain text around the match; matched words are wrapped in [[ and ]].")
    created_at: Timestamp


class SearchResults(BaseModel):
    """Matches, best first."""

    results: list[SearchHit]
