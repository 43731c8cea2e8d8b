"""Liveness and readiness probes for load balancers and orchestrators."""
from __future__ import annotations

import asyncio

from quart import Blueprint, current_app

bp = Blueprint("health", __name__)


@bp.get("/healthz")
async def healthz():
    """Liveness: the process answers."""
    return {"status": "ok"}


async def _postgres_ok() -> bool:
    try:
        async with asyncio.timeout(2):
            async with current_app.db.acquire() as conn:
                return await conn.fetchval("SELECT 1") == 1
    except Exception:
        return False


@bp.get("/readyz")
async def readyz():
    """Readiness: PostgreSQL and Redis both answer (503 otherwise)."""
    postgres, redis = await asyncio.gather(_postgres_ok(), current_app.redis.ping())
    checks = {"postgres": "ok" if postgres else "down", "redis": "ok" if redis else "down"}
    ready = postgres and redis
    return {"status": "ok" if ready else "unavailable", "checks": checks}, 200 if ready else 503
