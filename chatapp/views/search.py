"""Search: full-text search over the user's own messages, as you type (htmx) or as a plain form."""
from __future__ import annotations

from quart import Blueprint, abort, current_app, g, request

from .. import chat
from ..models import search as search_model
from ..sessions import login_required
from ..templating import is_htmx, page

bp = Blueprint("search", __name__)

PER_PAGE = 50
SIDEBAR_HITS = 8  # as-you-type results in the sidebar; the page shows the rest
MAX_PAGES = 20  # deeper than a thousand hits, refine the query instead
MAX_QUERY_CHARS = 500


@bp.get("/search")
@login_required
async def search():
    """Results for `q` (page `page`); htmx aimed at #search-results gets only the results."""
    query = " ".join(request.args.get("q", "").split())
    if len(query) > MAX_QUERY_CHARS:
        abort(400, f"Search for at most {MAX_QUERY_CHARS} characters.")
    try:
        page_number = int(request.args.get("page", "1"))
    except ValueError:
        page_number = 0
    if not 1 <= page_number <= MAX_PAGES:
        abort(400, f"Pages of results go from 1 to {MAX_PAGES}.")
    compact = is_htmx() and request.headers.get("HX-Target") == "search-results"
    per_page = SIDEBAR_HITS if compact else PER_PAGE
    hits = []
    if query:  # an empty query shows nothing rather than everything
        async with current_app.db.acquire() as conn:
            hits = await search_model.search_messages(
                conn, g.user.id, query, limit=per_page + 1, offset=(page_number - 1) * per_page
            )
    more = len(hits) > per_page and page_number < MAX_PAGES
    context = dict(query=query, hits=hits[:per_page], page_number=page_number, more=more)
    if compact:
        return await page("_search_results.html", compact=True, **context)  # Vary: HX-Request, HX-Target
    return await page("search.html", threads=await chat.sidebar_threads(), thread=None, **context)
