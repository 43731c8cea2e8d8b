"""Object store: S3 (aioboto3) for `s3://bucket/prefix` URLs, a local folder for plain paths.

Both backends keep the same layout (`<prefix>/<key>`), so an archive written to a folder can
be copied to a bucket with `aws s3 sync` and read back unchanged. Every failure surfaces as a
StorageError whose message is one line a person can act on (missing bucket, wrong keys,
unreachable endpoint), never a botocore traceback.
"""
from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator, Protocol
from urllib.parse import urlsplit


# botocore says where it found credentials, at INFO, for every client: noise in cron mail.
for _name in ("aiobotocore.credentials", "botocore.credentials"):
    logging.getLogger(_name).setLevel(logging.WARNING)


class StorageError(RuntimeError):
    """A problem with the object store, worded for the person running the command."""


class NotFound(StorageError):
    """The object does not exist."""


class AlreadyExists(StorageError):
    """A conditional put found an object under that key (nothing was overwritten)."""


@dataclass(frozen=True)
class ObjectInfo:
    """What a head or list tells about one object."""

    key: str
    size: int
    sha256: str | None = None  # hex digest when the store recorded one
    content_type: str | None = None
    cache_control: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


def sha256_hex(data: bytes) -> str:
    """Hex SHA-256 of some bytes (the checksum recorded everywhere in chatapp)."""
    return hashlib.sha256(data).hexdigest()


def _clean_key(key: str) -> str:
    """Refuse keys that could escape the prefix (absolute, `..`, empty parts)."""
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise StorageError(f"invalid object key {key!r}")
    return key


class Store(Protocol):
    """The four operations chatapp needs from an object store."""

    url: str

    async def check(self) -> None:
        """Fail early with a clear message when the store cannot be used."""

    async def put(self, key: str, data: bytes, *, content_type: str = "application/octet-stream",
                  cache_control: str | None = None, if_none_match: bool = False) -> ObjectInfo:
        """Store bytes with their SHA-256; with if_none_match raise AlreadyExists instead of overwriting."""

    async def get(self, key: str) -> bytes:
        """The object's bytes; NotFound when missing."""

    async def head(self, key: str) -> ObjectInfo | None:
        """The object's size and headers, or None when missing."""

    def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        """Every object whose key starts with prefix, in key order."""

    async def delete(self, key: str) -> None:
        """Remove an object (used only for one this process just wrote and never referenced)."""


class LocalStore:
    """A folder on disk laid out like the bucket: `<root>/<key>`."""

    def __init__(self, root: Path, url: str | None = None) -> None:
        self.root = Path(root)
        self.url = url or str(root)

    def _path(self, key: str) -> Path:
        return self.root / _clean_key(key)

    async def check(self) -> None:
        """The folder (or the nearest existing parent, where it will be created) must be writable."""
        existing = self.root
        while not existing.exists() and existing.parent != existing:
            existing = existing.parent
        if not existing.is_dir():
            raise StorageError(f"{existing} is not a folder, so {self.root} cannot be used")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise StorageError(f"the folder {existing} is not writable")

    async def put(self, key: str, data: bytes, *, content_type: str = "application/octet-stream",
                  cache_control: str | None = None, if_none_match: bool = False) -> ObjectInfo:
        """Write to a temporary file, fsync, then link (no overwrite) or rename into place."""
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.parent / f".tmp-{secrets.token_hex(8)}"
            with open(tmp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            try:
                if if_none_match:
                    # link() fails when the name exists: an atomic "create only if absent".
                    try:
                        os.link(tmp, path)
                    except FileExistsError:
                        raise AlreadyExists(f"{self.url}/{key} already exists") from None
                else:
                    os.replace(tmp, path)
                    tmp = None
            finally:
                if tmp is not None:
                    tmp.unlink(missing_ok=True)
            _fsync_dir(path.parent)
        except OSError as exc:
            raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from None
        return ObjectInfo(key, len(data), sha256_hex(data), content_type, cache_control)

    async def get(self, key: str) -> bytes:
        """Read the whole file."""
        path = self._path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise NotFound(f"{self.url}/{key} does not exist") from None
        except OSError as exc:
            raise StorageError(f"cannot read {path}: {exc.strerror or exc}") from None

    async def head(self, key: str) -> ObjectInfo | None:
        """Size of the file, or None."""
        try:
            return ObjectInfo(key, self._path(key).stat().st_size)
        except FileNotFoundError:
            return None

    async def delete(self, key: str) -> None:
        """Remove the file if it is there."""
        self._path(key).unlink(missing_ok=True)

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        """Walk the folder (temporary files of unfinished puts are skipped)."""
        # Walk only the folder the prefix names (backups/ need not visit every archived thread).
        start = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        if not start.is_dir() or ".." in prefix.split("/"):
            return
        found = []
        for path in start.rglob("*"):
            if path.is_file() and not path.name.startswith(".tmp-"):
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    found.append(ObjectInfo(key, path.stat().st_size))
        for info in sorted(found, key=lambda i: i.key):
            yield info


def _fsync_dir(path: Path) -> None:
    """Make a rename durable (the directory entry itself must reach the disk)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class S3Store:
    """A bucket and key prefix reached through one aioboto3 client."""

    def __init__(self, client, bucket: str, prefix: str, url: str, endpoint: str | None) -> None:
        self.client, self.bucket, self.prefix, self.url, self.endpoint = client, bucket, prefix, url, endpoint

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{_clean_key(key)}" if self.prefix else _clean_key(key)

    def _error(self, exc: Exception, key: str | None = None) -> StorageError:
        """Translate botocore's exceptions into one readable line."""
        from botocore import exceptions as bx

        where = f"{self.url}/{key}" if key else self.url
        if isinstance(exc, bx.NoCredentialsError):
            return StorageError("no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                                "AWS_PROFILE, or run with an instance role")
        if isinstance(exc, (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ReadTimeoutError)):
            target = self.endpoint or "AWS S3"
            return StorageError(f"cannot reach the S3 endpoint {target} (is AWS_ENDPOINT_URL right?)")
        if isinstance(exc, bx.ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("NoSuchKey", "404", "NotFound"):
                return NotFound(f"{where} does not exist")
            if code in ("PreconditionFailed", "412") or status == 412:
                return AlreadyExists(f"{where} already exists")
            if code == "NoSuchBucket":
                return StorageError(f"the bucket {self.bucket!r} does not exist (ARCHIVE_URL or STATIC_PUBLISH_URL)")
            if code in ("InvalidAccessKeyId", "InvalidClientTokenId"):
                return StorageError("S3 does not know this access key: check AWS_ACCESS_KEY_ID")
            if code == "SignatureDoesNotMatch":
                return StorageError("S3 rejected the request signature: check AWS_SECRET_ACCESS_KEY")
            if code in ("AccessDenied", "403", "Forbidden") or status == 403:
                return StorageError(f"S3 denied access to {self.url}: check the credentials and the bucket policy")
            return StorageError(f"S3 error on {where}: {code or status} {error.get('Message', '')}".strip())
        return StorageError(f"S3 request failed: {exc}")

    async def _call(self, operation: str, key: str | None = None, **params):
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return await getattr(self.client, operation)(Bucket=self.bucket, **params)
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc, key) from None

    async def check(self) -> None:
        """HEAD the bucket: missing bucket, wrong keys and a dead endpoint all fail here."""
        try:
            await self._call("head_bucket")
        except NotFound:
            raise StorageError(f"the bucket {self.bucket!r} does not exist") from None

    async def put(self, key: str, data: bytes, *, content_type: str = "application/octet-stream",
                  cache_control: str | None = None, if_none_match: bool = False) -> ObjectInfo:
        """PUT with ChecksumSHA256 (S3 rejects a body that does not match) and the hex digest as metadata."""
        digest = hashlib.sha256(data)
        params = {
            "Key": self._key(key), "Body": data, "ContentType": content_type,
            "ChecksumSHA256": base64.b64encode(digest.digest()).decode(),
            "Metadata": {"sha256": digest.hexdigest()},
        }
        if cache_control:
            params["CacheControl"] = cache_control
        if if_none_match:
            params["IfNoneMatch"] = "*"
        await self._call("put_object", key, **params)
        return ObjectInfo(key, len(data), digest.hexdigest(), content_type, cache_control)

    async def get(self, key: str) -> bytes:
        """GET the whole body."""
        from botocore.exceptions import BotoCoreError, ClientError

        response = await self._call("get_object", key, Key=self._key(key))
        try:
            async with response["Body"] as body:
                return await body.read()
        except (BotoCoreError, ClientError, OSError) as exc:
            raise StorageError(f"reading {self.url}/{key} failed: {exc}") from None

    async def head(self, key: str) -> ObjectInfo | None:
        """HEAD the object; None when missing."""
        try:
            response = await self._call("head_object", key, Key=self._key(key))
        except NotFound:
            return None
        metadata = response.get("Metadata") or {}
        return ObjectInfo(key, response.get("ContentLength", 0), metadata.get("sha256"),
                          response.get("ContentType"), response.get("CacheControl"), metadata)

    async def delete(self, key: str) -> None:
        """DELETE the object."""
        await self._call("delete_object", key, Key=self._key(key))

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        """ListObjectsV2, page by page."""
        from botocore.exceptions import BotoCoreError, ClientError

        full = (self.prefix + "/" if self.prefix else "") + prefix
        strip = len(self.prefix) + 1 if self.prefix else 0
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
                for item in page.get("Contents", []):
                    yield ObjectInfo(item["Key"][strip:], item["Size"])
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc) from None


def parse_s3_url(url: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix` -> ("bucket", "some/prefix")."""
    parts = urlsplit(url)
    bucket, prefix = parts.netloc, parts.path.strip("/")
    if len(bucket) < 3:
        raise StorageError(f"{url!r} names no bucket: write s3://bucket/prefix")
    return bucket, prefix


@contextlib.asynccontextmanager
async def open_store(url: str, endpoint_url: str | None = None) -> AsyncIterator[Store]:
    """Open the store a URL names: `s3://...` through aioboto3, anything else as a folder."""
    if url.startswith("s3://"):
        import aioboto3
        from botocore.config import Config

        bucket, prefix = parse_s3_url(url)
        config = Config(
            # Standard retries (3 attempts unless AWS_MAX_ATTEMPTS says otherwise) with backoff.
            connect_timeout=5, read_timeout=60, retries={"mode": "standard"},
            # MinIO and moto want path-style URLs; AWS itself resolves either.
            s3={"addressing_style": "path"} if endpoint_url else {},
        )
        session = aioboto3.Session()
        async with session.client("s3", endpoint_url=endpoint_url or None, config=config) as client:
            yield S3Store(client, bucket, prefix, url.rstrip("/"), endpoint_url)
        return
    if "://" in url and not url.startswith("file://"):
        raise StorageError(f"unsupported storage URL {url!r}: use s3://bucket/prefix or a folder path")
    path = Path(urlsplit(url).path if url.startswith("file://") else url).expanduser()
    yield LocalStore(path, str(path))


def archive_url(config) -> str:
    """ARCHIVE_URL, or `<instance>/archive` when nothing is configured."""
    return config.get("ARCHIVE_URL") or str(Path(config["CHATAPP_INSTANCE_DIR"]) / "archive")


def archive_store(config):
    """Open the archive store of an app's config (an async context manager)."""
    return open_store(archive_url(config), config.get("AWS_ENDPOINT_URL"))
