"""The object store (S3 through moto's server, and a local folder) and published static assets."""
from __future__ import annotations

import hashlib
import json
import re
import shutil

import pytest

from chatapp import assets, create_app
from chatapp.storage import AlreadyExists, NotFound, StorageError, open_store
from s3 import make_target, target  # noqa: F401  (fixture)


async def test_put_get_head_list_and_no_overwrite(target):
    async with open_store(target.url, target.settings["AWS_ENDPOINT_URL"]) as store:
        await store.check()
        info = await store.put("a/one.txt", b"hello", content_type="text/plain", if_none_match=True)
        assert info.sha256 == hashlib.sha256(b"hello").hexdigest()
        await store.put("a/two.txt", b"second")
        await store.put("b/three.txt", b"third")
        assert await store.get("a/one.txt") == b"hello"
        assert (await store.head("a/one.txt")).size == 5
        assert await store.head("a/missing.txt") is None
        with pytest.raises(NotFound):
            await store.get("a/missing.txt")
        with pytest.raises(AlreadyExists):
            await store.put("a/one.txt", b"overwritten?", if_none_match=True)
        assert await store.get("a/one.txt") == b"hello"  # the conditional put changed nothing
        assert [i.key async for i in store.list("a/")] == ["a/one.txt", "a/two.txt"]
        await store.delete("a/two.txt")
        assert [i.key async for i in store.list("")] == ["a/one.txt", "b/three.txt"]
        for bad in ("../escape", "/absolute", "a//b", ""):
            with pytest.raises(StorageError):
                await store.put(bad, b"x")
    # The same layout on both backends: <prefix>/<key>.
    assert target.keys() == ["a/one.txt", "b/three.txt"]


async def test_s3_put_records_type_cache_control_and_checksum(moto_s3, tmp_path):
    bucket = make_target("s3", moto_s3, tmp_path)
    async with open_store(bucket.url, moto_s3.url) as store:
        await store.put("x.css", b"body{}", content_type="text/css", cache_control="public, max-age=60")
    head = bucket.head("x.css")
    assert head["ContentType"] == "text/css" and head["CacheControl"] == "public, max-age=60"
    assert head["Metadata"]["sha256"] == hashlib.sha256(b"body{}").hexdigest()


async def test_missing_bucket_is_one_clear_error(moto_s3):
    async with open_store("s3://no-such-bucket-here/x", moto_s3.url) as store:
        with pytest.raises(StorageError, match="bucket 'no-such-bucket-here' does not exist"):
            await store.check()
        with pytest.raises(StorageError, match="does not exist"):
            await store.put("k", b"x")


async def test_wrong_credentials_are_one_clear_error(moto_s3, tmp_path, monkeypatch):
    bucket = make_target("s3", moto_s3, tmp_path)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG0")
    with moto_s3.checking_credentials():
        async with open_store(bucket.url, moto_s3.url) as store:
            with pytest.raises(StorageError, match="S3 denied access|AWS_ACCESS_KEY_ID"):
                await store.check()
            with pytest.raises(StorageError, match="AWS_ACCESS_KEY_ID"):
                await store.put("k", b"x")


async def test_unreachable_endpoint_is_one_clear_error():
    async with open_store("s3://some-bucket/x", "http://127.0.0.1:9") as store:
        with pytest.raises(StorageError, match=r"cannot reach the S3 endpoint http://127.0.0.1:9"):
            await store.check()


def test_storage_url_must_name_a_bucket_or_folder():
    import asyncio

    async def open_(url):
        async with open_store(url) as store:
            return store

    with pytest.raises(StorageError, match="names no bucket"):
        asyncio.run(open_("s3://"))
    with pytest.raises(StorageError, match="unsupported storage URL"):
        asyncio.run(open_("gs://bucket/x"))


def _copy_static(tmp_path):
    source = tmp_path / "static"
    shutil.copytree(assets.STATIC_DIR, source)
    return source


@pytest.fixture
def static_target(request, tmp_path, moto_s3):
    kind = getattr(request, "param", "s3")
    return make_target(kind, moto_s3 if kind == "s3" else None, tmp_path / "published", "STATIC_PUBLISH_URL")


@pytest.mark.parametrize("static_target", ["s3", "local"], indirect=True)
def test_publish_static_hashes_names_sets_headers_and_skips_unchanged(static_target, overrides, tmp_path):
    overrides.update(static_target.settings)
    source = _copy_static(tmp_path)
    runner = create_app(overrides).test_cli_runner()
    first = runner.invoke(args=["publish-static", "--source", str(source)])
    assert first.exit_code == 0, first.output
    files = sorted(p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_file())
    manifest = json.loads(static_target.read("manifest.json"))["files"]
    assert sorted(manifest) == files
    css = manifest["app.css"]
    assert re.fullmatch(r"app\.[0-9a-f]{16}\.css", css)
    assert static_target.read(css) == (source / "app.css").read_bytes()
    if static_target.kind == "s3":
        head = static_target.head(css)
        assert head["ContentType"] == "text/css; charset=utf-8"
        assert head["CacheControl"] == "public, max-age=31536000, immutable"
        js = static_target.head(manifest["vendor/htmx.min.js"])
        assert js["ContentType"] == "text/javascript; charset=utf-8"
        assert js["CacheControl"] == "public, max-age=31536000, immutable"
    # Unchanged: nothing uploaded, the manifest left alone.
    again = runner.invoke(args=["publish-static", "--source", str(source)])
    assert again.exit_code == 0 and f"uploaded 0 files, skipped {len(files)} unchanged; manifest unchanged" in again.output
    # One changed file: only it is uploaded, under a new name; the old one stays for cached pages.
    (source / "app.css").write_text("body { color: red }\n")
    changed = runner.invoke(args=["publish-static", "--source", str(source)])
    assert "uploaded 1 files" in changed.output and "manifest changed" in changed.output
    new_css = json.loads(static_target.read("manifest.json"))["files"]["app.css"]
    assert new_css != css and css in static_target.keys() and new_css in static_target.keys()


def test_publish_static_needs_a_destination(overrides):
    overrides["STATIC_PUBLISH_URL"] = None
    result = create_app(overrides).test_cli_runner().invoke(args=["publish-static"])
    assert result.exit_code == 1 and "set STATIC_PUBLISH_URL" in result.output


async def test_pages_use_static_url_and_csp_allows_it(static_target, overrides, test_services, client_factory):
    async with open_store(static_target.url, static_target.settings["AWS_ENDPOINT_URL"]) as store:
        report = await assets.publish_static(store)
    overrides.update(static_target.settings, STATIC_URL="https://cdn.example.com/assets/")
    async with client_factory(overrides) as (app, client):
        response = await client.get("/login")
        body = await response.get_data(as_text=True)
    assert f'href="https://cdn.example.com/assets/{report.manifest["app.css"]}"' in body
    assert f'src="https://cdn.example.com/assets/{report.manifest["vendor/htmx.min.js"]}"' in body
    assert "/static/" not in body
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self' https://cdn.example.com" in csp and "style-src 'self' https://cdn.example.com" in csp


async def test_without_static_url_quart_serves_static(overrides, client_factory):
    overrides.update(STATIC_URL=None)
    async with client_factory(overrides) as (app, client):
        body = await (await client.get("/login")).get_data(as_text=True)
        assert re.search(r'href="/static/app\.css\?v=[0-9a-f]+"', body)
        assert (await client.get("/static/app.css")).status_code == 200


async def test_stale_manifest_entries_fall_back_to_local_static(static_target, overrides, client_factory):
    async with open_store(static_target.url, static_target.settings["AWS_ENDPOINT_URL"]) as store:
        await store.put(assets.MANIFEST_KEY, json.dumps({"files": {"app.css": "app.0000000000000000.css"}}).encode())
    overrides.update(static_target.settings, STATIC_URL="https://cdn.example.com")
    async with client_factory(overrides) as (app, client):
        body = await (await client.get("/login")).get_data(as_text=True)
    assert "app.0000000000000000.css" not in body and "/static/app.css?v=" in body


@pytest.fixture
def client_factory(test_services):
    """Start an app with given settings (on clean tables) and give its test client."""
    import contextlib

    import services

    @contextlib.asynccontextmanager
    async def start(settings):
        await services.reset_database(test_services.database_url)
        app = create_app(settings)
        async with app.test_app():
            yield app, app.test_client()

    return start
