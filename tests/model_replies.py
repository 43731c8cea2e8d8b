"""Scripted replies for the test model server: what one chat completion request gets back."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

FAULTS = (None, "cut", "no_done", "error_event", "stall", "status")
CHAT = "/v1/chat/completions"


@dataclass
class Reply:
    """The scripted behaviour of one chat completion request."""

    chunks: list[str] = field(default_factory=list)
    delay: float = 0.0  # seconds between content chunks
    first_delay: float = 0.0  # seconds before the first content chunk (or the error status)
    fault: Optional[str] = None  # one of FAULTS
    fault_after: Optional[int] = None  # content chunks sent before cut/error_event/stall; None: all
    status: int = 500  # HTTP status for fault="status"
    error_message: Optional[str] = None  # message of the "status" / "error_event" error
    headers: dict[str, str] = field(default_factory=dict)  # extra headers of a "status" answer
    usage: bool = True  # send the usage chunk when the request asks for it
    finish_reason: str = "stop"
    stamp: bool = False  # add "x_sent_at": time.time() to every chunk
    prompt_tokens: Optional[int] = None  # None: word count of the request's messages
    completion_tokens: Optional[int] = None  # None: number of content chunks sent

    def __post_init__(self) -> None:
        if self.fault not in FAULTS:
            raise ValueError(f"unknown fault {self.fault!r}; expected one of {FAULTS}")

    @classmethod
    def text(cls, text: str, chunk_size_words: int = 1, delay: float = 0.0, **kwargs: Any) -> "Reply":
        """A reply streaming ``text`` in pieces of ``chunk_size_words`` words ("".join == text)."""
        words = re.findall(r"\s*\S+(?:\s+$)?|\s+$", text)
        size = max(1, chunk_size_words)
        return cls(chunks=["".join(words[i : i + size]) for i in range(0, len(words), size)],
                   delay=delay, **kwargs)

    @property
    def content(self) -> str:
        """The full text of the reply."""
        return "".join(self.chunks)


ReplySpec = Union[Reply, str, Callable[[dict], Reply]]


def last_user_message(body: dict) -> str:
    """The text of the last user message of a chat completion request body."""
    for message in reversed(body.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):  # content parts
                return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
            return content if isinstance(content, str) else ""
    return ""


def echo_reply(body: dict) -> Reply:
    """The default reply: "You said: <last user message>" in word chunks."""
    return Reply.text(f"You said: {last_user_message(body)}")


MARKDOWN_DEMO = """# Markdown demo

Here is a **list**:

- first item with `inline code`
- second item with a [link](https://example.com)

| Language | Typing  | First appeared |
|----------|---------|----------------|
| Python   | dynamic | 1991           |
| Rust     | static  | 2015           |

```python
def fib(n: int) -> int:
    \"\"\"Return the n-th Fibonacci number.\"\"\"
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a
```

> That's all, folks.
"""


def demo_reply(body: dict) -> Reply:
    """The interactive default: echo slowly, or a Markdown demo when asked for "markdown"."""
    text = last_user_message(body)
    if "markdown" in text.lower():
        return Reply.text(MARKDOWN_DEMO, delay=0.03)
    return Reply.text(f"You said: {text}", delay=0.08)
