"""The status page's route table: path → the function answering it. A new page is a function and one line in
``routes``; each reads the views (onss_relay/views/) and renders a template, and nothing changes anything."""

from __future__ import annotations

from importlib import resources

from onss_relay.status_page.render import page
from onss_relay.views.overview import overview
from onss_relay.views.search import search
from onss_relay.views.set_view import find_set, set_view
from onss_relay.views.sources import Sources
from onss_relay.web import Request, Response, Route

HTML = "text/html; charset=utf-8"


def routes(src: Sources) -> dict[str, Route]:
    """Given the sources, return the page routes (every one behind the guard)."""

    def overview_page(_: Request) -> Response:
        return Response(200, page("overview.html", o=overview(src)), HTML)

    def set_page(request: Request) -> Response:
        row = find_set(src.journal, request.rest)  # a GO, FI or FS name, or a ticket: what `status NAME` takes
        if row is None:
            return Response(404, page("missing.html", name=request.rest), HTML)
        view = set_view(src.journal, row, src.poll())  # the same document as results/ and `status --json`
        return Response(200, page("set.html", d=view.document(), fs=row.data.fs, extras=row.data.extras), HTML)

    def search_page(request: Request) -> Response:
        query = request.query.get("q", "")
        return Response(200, page("search.html", q=query, found=search(src, query)), HTML)

    def stylesheet(_: Request) -> Response:
        css = resources.files("onss_relay.status_page").joinpath("style.css").read_bytes()
        return Response(200, css, "text/css; charset=utf-8")

    return {
        "/": Route(overview_page),
        "/set": Route(set_page),
        "/search": Route(search_page),
        "/style.css": Route(stylesheet),
    }
