"""Static assets published to a store under content-hashed names, and the manifest pages use.

`publish-static` uploads `static/app.css` as `app.<hash>.css` with a one-year immutable
Cache-Control, skips names already there (same name = same bytes), then writes
`manifest.json` ({"files": {"app.css": "app.<hash>.css"}}) to the store and a copy to the
instance folder. At start-up the app loads the manifest once into
`app.extensions["static_manifest"]`, keeping only entries whose hash still matches the local
file, so `static_url()` never does I/O while rendering and never points at stale bytes.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import mimetypes
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from quart import Quart

from .config import ROOT
from .storage import NotFound, StorageError, Store, open_store

log = logging.getLogger(__name__)
IMMUTABLE = "public, max-age=31536000, immutable"
MANIFEST_KEY = "manifest.json"
LOCAL_MANIFEST = "static-manifest.json"
STATIC_DIR = ROOT / "static"
TYPES = {".js": "text/javascript", ".css": "text/css", ".LICENSE": "text/plain", ".map": "application/json"}


def content_type(name: str) -> str:
    """The Content-Type of an asset (text types in UTF-8)."""
    suffix = Path(name).suffix
    kind = TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"
    return f"{kind}; charset=utf-8" if kind.startswith("text/") or kind == "application/json" else kind


def hashed_name(name: str, data: bytes) -> str:
    """`vendor/htmx.min.js` -> `vendor/htmx.min.<16 hex>.js` (the hash makes it immutable)."""
    digest = hashlib.sha256(data).hexdigest()[:16]
    path = Path(name)
    return str(path.with_name(f"{path.stem}.{digest}{path.suffix}")) if path.suffix else f"{name}.{digest}"


@dataclass
class PublishReport:
    """What publish-static did (or would do with --dry-run)."""

    uploaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    manifest: dict[str, str] = field(default_factory=dict)
    manifest_changed: bool = True


def local_files(source: Path = STATIC_DIR) -> list[tuple[str, Path]]:
    """(name relative to static/, path) of every asset, in name order."""
    return sorted(
        (p.relative_to(source).as_posix(), p) for p in source.rglob("*")
        if p.is_file() and not p.name.startswith(".")
    )


async def publish_static(store: Store, source: Path = STATIC_DIR, *, dry_run: bool = False,
                         instance_dir: Path | None = None) -> PublishReport:
    """Upload changed assets with hashed names, then the manifest."""
    report = PublishReport()
    limit = asyncio.Semaphore(8)  # a few requests in flight: S3 latency, not bandwidth, dominates

    async def one(name: str, path: Path) -> None:
        """Upload one asset unless its hashed name is already there."""
        data = path.read_bytes()
        target = hashed_name(name, data)
        report.manifest[name] = target
        async with limit:
            if await store.head(target) is not None:
                report.skipped.append(name)
                return
            report.uploaded.append(name)
            if not dry_run:
                await store.put(target, data, content_type=content_type(name), cache_control=IMMUTABLE)

    await asyncio.gather(*(one(name, path) for name, path in local_files(source)))
    report.uploaded.sort()
    report.skipped.sort()
    body = json.dumps({"files": report.manifest}, indent=1, sort_keys=True).encode()
    try:
        current = json.loads(await store.get(MANIFEST_KEY)).get("files")
    except (NotFound, ValueError, AttributeError):
        current = None
    report.manifest_changed = current != report.manifest
    if not dry_run:
        if report.manifest_changed:
            # The manifest changes with every release: browsers and CDNs must revalidate it.
            await store.put(MANIFEST_KEY, body, content_type="application/json; charset=utf-8",
                            cache_control="no-cache")
        if instance_dir is not None:
            instance_dir.mkdir(parents=True, exist_ok=True)
            local = {"files": report.manifest, "published_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                     "url": store.url}
            (instance_dir / LOCAL_MANIFEST).write_text(json.dumps(local, indent=1, sort_keys=True))
    return report


def current_entries(files: dict[str, str], source: Path = STATIC_DIR) -> dict[str, str]:
    """Keep manifest entries whose hashed name matches the local file's bytes today."""
    kept = {}
    for name, target in files.items():
        path = source / name
        if path.is_file() and hashed_name(name, path.read_bytes()) == target:
            kept[name] = target
    return kept


async def load_manifest(config) -> dict[str, str]:
    """The published manifest (from STATIC_PUBLISH_URL, else the local copy), checked against static/."""
    files = None
    url = config.get("STATIC_PUBLISH_URL")
    if url:
        try:
            async with open_store(url, config.get("AWS_ENDPOINT_URL")) as store:
                files = json.loads(await store.get(MANIFEST_KEY)).get("files")
        except (StorageError, ValueError, AttributeError) as exc:
            log.warning("static manifest not loaded from %s (%s); trying the local copy", url, exc)
    if files is None:
        local = Path(config["CHATAPP_INSTANCE_DIR"]) / LOCAL_MANIFEST
        try:
            files = json.loads(local.read_text()).get("files")
        except (OSError, ValueError, AttributeError):
            files = None
    if not isinstance(files, dict):
        log.warning("STATIC_URL is set but no published manifest was found: run `quart --app chatapp "
                    "publish-static`; assets are served from /static meanwhile")
        return {}
    kept = current_entries(files)
    stale = sorted(set(files) - set(kept))
    if stale:
        log.warning("%d asset(s) changed since publish-static and are served from /static: %s",
                    len(stale), ", ".join(stale[:5]))
    return kept


def init_app(app: Quart) -> None:
    """With STATIC_URL set, load the manifest once before serving (pages never fetch it)."""
    app.extensions.setdefault("static_manifest", {})

    @app.before_serving
    async def _load_static_manifest() -> None:
        if app.config.get("STATIC_URL"):
            app.extensions["static_manifest"] = await load_manifest(app.config)
