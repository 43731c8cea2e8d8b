"""Edges: health checks, body limits, friendly errors, security headers."""
from __future__ import annotations


async def test_healthz_and_readyz(app, client):
    assert (await client.get("/healthz")).status_code == 200
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert (await ready.get_json())["checks"] == {"postgres": "ok", "redis": "ok"}


async def test_readyz_reports_redis_down(app, client):
    real = app.redis.fast
    try:
        from chatapp.cache import RedisStore

        app.redis.fast = RedisStore("redis://127.0.0.1:1/0", "x:").fast  # nothing listens on port 1
        response = await client.get("/readyz")
        assert response.status_code == 503
        assert (await response.get_json())["checks"]["redis"] == "down"
    finally:
        await app.redis.fast.aclose()
        app.redis.fast = real


async def test_body_over_limit_is_413(app, user):
    app.config["MAX_CONTENT_LENGTH"] = 2048
    token = await user.csrf("/")
    response = await user.client.post("/threads", form={"csrf_token": token, "content": "x" * 5000})
    assert response.status_code == 413
    body = await response.get_data(as_text=True)
    assert "Traceback" not in body and "Too large" in body


async def test_unknown_page_is_friendly_404(app, client):
    response = await client.get("/no/such/page")
    assert response.status_code == 404
    body = await response.get_data(as_text=True)
    assert "Not found" in body and "<html" in body


async def test_htmx_errors_are_fragments_for_the_flash_area(app, user):
    response = await user.client.get("/threads/nope", headers={"HX-Request": "true"})
    assert response.status_code == 404
    assert response.headers["HX-Retarget"] == "#flash"
    assert "<html" not in await response.get_data(as_text=True)


async def test_security_headers_on_pages_and_errors(app, client):
    for path in ("/login", "/no/such/page", "/healthz"):
        response = await client.get(path)
        csp = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert "object-src 'none'" in csp and "frame-ancestors 'none'" in csp
        assert response.headers["X-Content-Type-Options"] == "nosniff"


async def test_no_inline_script_in_pages(app, user):
    from bs4 import BeautifulSoup

    for path in ("/", "/login"):
        soup = BeautifulSoup(await (await user.client.get(path)).get_data(as_text=True), "html.parser")
        for script in soup.find_all("script"):
            assert script.get("src"), f"inline script on {path}"
        assert not any(attr.startswith("on") for tag in soup.find_all(True) for attr in tag.attrs)


async def test_text_responses_are_gzipped_and_streams_are_not(app, client):
    import gzip

    page = await client.get("/login", headers={"Accept-Encoding": "gzip, br"})
    assert page.headers["Content-Encoding"] == "gzip" and "Accept-Encoding" in page.headers["Vary"]
    assert b"<form" in gzip.decompress(await page.get_data())
    script = await client.get("/static/vendor/htmx.min.js", headers={"Accept-Encoding": "gzip"})
    raw = gzip.decompress(await script.get_data())
    assert script.headers["Content-Encoding"] == "gzip" and len(await script.get_data()) < len(raw) / 2
    plain = await client.get("/login")
    assert "Content-Encoding" not in plain.headers and b"<form" in await plain.get_data()
