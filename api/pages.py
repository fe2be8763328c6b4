"""The browser pages: the participant's join page and the hotline's console.

The HTML shells are Jinja2 templates in ``api/templates`` (autoescaped). The few server-side facts a
page needs (conference id, hotline phone, caps) travel as ``data-*`` attributes on ``<body>``;
everything else the page's script fetches from the JSON API with a Bearer token. Scripts and styles
are static files in ``api/static`` (no build step). Headers: ``api.headers``. See docs/PAGES.md.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web

from . import headers, problems
from .appkeys import KEYS, SETTINGS
from .auth import verify_join_token
from .headers import CSP
from .openapi import HTML, doc

__all__ = ["CSP", "STATIC_DIR", "render_console", "render_join", "setup_pages"]  # CSP: the pages' policy

STATIC_DIR = Path(__file__).resolve().parent / "static"
TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"

# Join tokens are opaque but short; anything much longer than this is not one of ours.
_MAX_TOKEN_LEN = 1024


def _environment_options() -> dict[str, Any]:
    return {
        "loader": jinja2.FileSystemLoader(TEMPLATES_DIR),
        "autoescape": True,
        "undefined": jinja2.StrictUndefined,  # a missing value is an error, not an empty attribute
        "keep_trailing_newline": True,
    }


@functools.cache
def _templates() -> jinja2.Environment:
    """The templates for rendering outside a request (tests, tools); handlers use the app's."""
    return jinja2.Environment(**_environment_options())


def join_context(
    conference_id: str, hotline_phone: str, audio_ports: int, video_ports: int, max_video_height: int
) -> dict[str, Any]:
    return {
        "conference_id": conference_id,
        "hotline_phone": hotline_phone,
        "audio_ports": int(audio_ports),
        "video_ports": int(video_ports),
        "max_video_height": int(max_video_height),
    }


def _invalid_link_context(hotline_phone: str) -> dict[str, Any]:
    return {"hotline_phone": hotline_phone, "tel": "".join(ch for ch in hotline_phone if ch.isdigit() or ch == "+")}


def render_join(
    conference_id: str, hotline_phone: str, audio_ports: int, video_ports: int, max_video_height: int
) -> str:
    context = join_context(conference_id, hotline_phone, audio_ports, video_ports, max_video_height)
    return _templates().get_template("join.html").render(context)


def render_console(hotline_phone: str) -> str:
    return _templates().get_template("console.html").render(hotline_phone=hotline_phone)


def _conference_for_token(app: web.Application, token: str) -> str | None:
    """The conference id a join token grants, or None."""
    try:
        return verify_join_token(app[KEYS].accepted_keys("join"), token)
    except (ValueError, TypeError):  # a malformed token is just an invalid one here
        return None


def _invalid_link(request: web.Request) -> web.Response:
    context = _invalid_link_context(request.app[SETTINGS].hotline_phone)
    return aiohttp_jinja2.render_template("invalid_link.html", request, context, status=404)


@doc(
    "The participant's join page (the join token is the last path segment)",
    auth="none",
    responses={200: HTML, 404: HTML},
    errors=[problems.NOT_FOUND],
)
async def join_page(request: web.Request) -> web.Response:
    token = request.match_info["token"]
    settings = request.app[SETTINGS]
    conference_id = _conference_for_token(request.app, token) if 0 < len(token) <= _MAX_TOKEN_LEN else None
    if not conference_id:
        return _invalid_link(request)
    context = join_context(
        conference_id, settings.hotline_phone, settings.audio_ports, settings.video_ports, settings.max_video_height
    )
    return aiohttp_jinja2.render_template("join.html", request, context)


@doc("The join page without a token: the invalid-link page", auth="none", responses={404: HTML})
async def join_index(request: web.Request) -> web.Response:
    return _invalid_link(request)


@doc("The hotline's console (it signs in with an operator token)", auth="none", responses={200: HTML})
async def console_page(request: web.Request) -> web.Response:
    return aiohttp_jinja2.render_template("console.html", request, {"hotline_phone": request.app[SETTINGS].hotline_phone})


def setup_pages(app: web.Application) -> None:
    """Registers the join page, the console and ``/static/``, with the templates and default headers."""
    aiohttp_jinja2.setup(app, default_helpers=False, **_environment_options())
    headers.install(app)
    app.router.add_get("/join/{token}", join_page, name="join_page")
    app.router.add_get("/join/", join_index)
    app.router.add_get("/console", console_page, name="console")
    app.router.add_static("/static/", STATIC_DIR, name="static", show_index=False, follow_symlinks=False)
