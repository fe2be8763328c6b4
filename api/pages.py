"""The browser pages: the participant's join page and the hotline's console.

Plain HTML + CSS + ES modules under ``api/static`` (no build step). The HTML shells are rendered
here so that the few server-side facts a page needs (the conference id, the hotline's phone
number, the caps) travel as escaped ``data-*`` attributes on ``<body>``; everything else comes
from the JSON API the page calls with a Bearer token.

Security: every page and static file gets a strict Content-Security-Policy (no inline script or
style), ``Referrer-Policy: no-referrer`` (the join link carries the join token: it must not leak
in a Referer), ``X-Content-Type-Options: nosniff`` and ``X-Frame-Options: DENY``. Pages are
``no-store``; static files revalidate (``no-cache`` + Last-Modified/ETag from aiohttp).
"""

from __future__ import annotations

import html
from pathlib import Path

from aiohttp import web

from api.appkeys import SECRET, SETTINGS

# script-src allows 'unsafe-eval' on purpose: browser automation that follows API.md waits on
# `document.body.dataset.state` with Playwright's wait_for_function, which evaluates its predicate
# with eval() in the page. Our own scripts never evaluate strings (a unit test greps for it), and
# no inline script can run, so injected markup still cannot execute.
STATIC_DIR = Path(__file__).resolve().parent / "static"

CSP = (
    "default-src 'none'; script-src 'self' 'unsafe-eval'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
    "connect-src 'self'; media-src 'self' blob: mediastream:; manifest-src 'self'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)

_SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(self), microphone=(self), display-capture=(), geolocation=()",
}

# Join tokens are opaque but short; anything much longer than this is not one of ours.
_MAX_TOKEN_LEN = 1024


def _is_page_path(path: str) -> bool:
    return path == "/console" or path.startswith(("/join/", "/static/"))


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: CSP and cache headers on the pages and their static files."""
    if not _is_page_path(request.path):
        return
    for name, value in _SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if request.path.startswith("/static/"):
        response.headers["Cache-Control"] = "no-cache"
    else:
        response.headers["Cache-Control"] = "no-store"
        # The join page's URL carries a credential: keep it out of shared caches and history sync.
        response.headers["Pragma"] = "no-cache"


def _conference_for_token(app: web.Application, token: str) -> str | None:
    """The conference id a join token grants, or None (imported late: api.auth is the lead's)."""
    from api.auth import verify_join_token

    try:
        return verify_join_token(app[SECRET], token)
    except (ValueError, TypeError):  # a malformed token is just an invalid one here
        return None


def _attr(value: object) -> str:
    return html.escape(str(value), quote=True)


def _head(title: str, css: list[str], modules: tuple[str, ...] = ()) -> str:
    links = "\n".join(f'  <link rel="stylesheet" href="/static/{_attr(c)}">' for c in css)
    # Fetch the page script's imports in parallel with it instead of after it (join time).
    links += "".join(f'\n  <link rel="modulepreload" href="/static/{_attr(m)}">' for m in modules)
    return f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <meta name="referrer" content="no-referrer">
  <meta name="color-scheme" content="light">
  <title>{html.escape(title)}</title>
  <link rel="icon" href="/static/favicon.svg" type="image/svg+xml">
{links}
</head>
"""


_NOSCRIPT = (
    '<noscript><p class="panel">This page needs JavaScript. Cette page a besoin de JavaScript.</p></noscript>'
)


def render_join(
    conference_id: str, hotline_phone: str, audio_ports: int, video_ports: int, max_video_height: int
) -> str:
    body_attrs = " ".join(
        [
            'data-state="idle"',
            'data-page="join"',
            f'data-conference="{_attr(conference_id)}"',
            f'data-hotline="{_attr(hotline_phone)}"',
            f'data-audio-ports="{int(audio_ports)}"',
            f'data-video-ports="{int(video_ports)}"',
            f'data-max-video-height="{int(max_video_height)}"',
        ]
    )
    return (
        _head("Backup+", ["common.css", "join.css"], ("join.js", "api.js", "i18n.js"))
        + f"""<body {body_attrs}>
<a class="skip" href="#main" data-i18n="skip_to_content">Skip to content</a>
<header class="topbar">
  <p class="brand">Backup+</p>
  <h1 id="conf-title" data-i18n="join_heading">Backup conference</h1>
  <button type="button" id="lang-switch" class="lang" lang="fr">Français</button>
</header>
{_NOSCRIPT}
<main id="main">
  <p id="window" class="window" hidden></p>

  <section id="status-panel" class="panel status" aria-labelledby="status-title">
    <h2 id="status-title" class="visually-hidden" data-i18n="status_heading">Status</h2>
    <p id="status" role="status" aria-live="polite"></p>
    <p id="notice" class="notice" role="alert" hidden></p>
    <div id="refused" class="refused" hidden>
      <p id="refused-why"></p>
      <p id="refused-retry"></p>
      <p><span data-i18n="hotline_call">If it is urgent, call the Backup+ hotline:</span>
         <a id="refused-phone" class="phone"></a></p>
      <button type="button" id="retry" class="primary" data-i18n="retry_now">Try again now</button>
    </div>
    <div id="ended" class="ended" hidden>
      <p id="ended-text" data-i18n="ended_text"></p>
      <p><span data-i18n="hotline_questions">Questions? The Backup+ hotline:</span>
         <a id="ended-phone" class="phone"></a></p>
    </div>
  </section>

  <section id="call" class="call" aria-labelledby="call-title">
    <h2 id="call-title" class="visually-hidden" data-i18n="call_heading">Conference</h2>
    <div class="remote-wrap">
      <video id="remote" autoplay playsinline muted data-i18n-aria-label="remote_label"></video>
      <p id="remote-placeholder" class="placeholder" data-i18n="remote_placeholder"></p>
    </div>
    <audio id="remote-audio" autoplay></audio>
    <button type="button" id="unmute-remote" class="primary" hidden data-i18n="unmute_remote"></button>
  </section>

  <form id="join-form" class="panel join-form" novalidate>
    <h2 data-i18n="you_heading">You</h2>
    <div class="field">
      <label for="name" data-i18n="name_label">Your name</label>
      <input id="name" name="name" type="text" maxlength="80" autocomplete="name" required
             aria-describedby="name-error">
      <p id="name-error" class="field-error" hidden></p>
    </div>
    <fieldset class="field kinds">
      <legend data-i18n="kind_legend">Join with</legend>
      <label><input type="radio" name="kind" value="video" checked> <span data-i18n="kind_video">Video and sound</span></label>
      <label><input type="radio" name="kind" value="audio"> <span data-i18n="kind_audio">Sound only</span></label>
    </fieldset>
    <div class="buttons">
      <button type="submit" id="join" class="primary" data-i18n="join">Join</button>
      <button type="button" id="leave" class="danger" data-i18n="leave">Leave</button>
    </div>
    <fieldset class="devices">
      <legend data-i18n="devices_legend">Camera and microphone</legend>
      <div class="preview-wrap">
        <video id="preview" class="preview" autoplay playsinline muted aria-hidden="true"></video>
        <p id="preview-off" class="placeholder" data-i18n="preview_off"></p>
      </div>
      <div class="buttons">
        <button type="button" id="mute-mic" aria-pressed="false" data-i18n="mute_mic">Mute microphone</button>
        <button type="button" id="mute-cam" aria-pressed="false" data-i18n="mute_cam">Turn camera off</button>
      </div>
      <div class="field" id="camera-field">
        <label for="camera" data-i18n="camera_label">Camera</label>
        <select id="camera" name="camera"></select>
      </div>
      <div class="field">
        <label for="microphone" data-i18n="microphone_label">Microphone</label>
        <select id="microphone" name="microphone"></select>
        <meter id="mic-level" min="0" max="1" low="0.05" high="0.9" optimum="0.5" value="0"
               data-i18n-aria-label="mic_level"></meter>
      </div>
      <p id="device-error" class="field-error" role="alert" hidden></p>
    </fieldset>
  </form>
</main>
<script type="module" src="/static/join.js"></script>
</body>
</html>
"""
    )


def render_console(hotline_phone: str) -> str:
    return (
        _head("Backup+ console", ["common.css", "console.css"], ("console.js", "api.js", "i18n.js"))
        + f"""<body data-page="console" data-hotline="{_attr(hotline_phone)}">
<a class="skip" href="#main" data-i18n="skip_to_content">Skip to content</a>
<header class="topbar">
  <p class="brand">Backup+</p>
  <h1 data-i18n="console_heading">Hotline console</h1>
  <button type="button" id="sign-out" hidden data-i18n="sign_out">Sign out</button>
  <button type="button" id="lang-switch" class="lang" lang="fr">Français</button>
</header>
{_NOSCRIPT}
<main id="main">
  <form id="login" class="panel login" autocomplete="off">
    <h2 data-i18n="login_heading">Operator sign-in</h2>
    <label for="token" data-i18n="token_label">Operator token</label>
    <input id="token" name="token" type="password" autocomplete="off" spellcheck="false" required
           aria-describedby="token-help login-error">
    <p id="token-help" class="help" data-i18n="token_help"></p>
    <p id="login-error" class="field-error" role="alert" hidden></p>
    <button type="submit" class="primary" data-i18n="sign_in">Sign in</button>
  </form>

  <div id="app" hidden>
    <p id="conn" class="conn" role="status" aria-live="polite"></p>
    <section class="panel" aria-labelledby="declare-title">
      <h2 id="declare-title" data-i18n="declare_heading">Declare an outage</h2>
      <form id="declare" class="declare" autocomplete="off">
        <div class="field"><label for="d-contract" data-i18n="contract_label">Contract</label>
          <input id="d-contract" name="contract" list="contracts-list" required>
          <datalist id="contracts-list"></datalist></div>
        <div class="field"><label for="d-serial" data-i18n="serial_label">Equipment serial number</label>
          <input id="d-serial" name="serial" list="serials-list" required>
          <datalist id="serials-list"></datalist></div>
        <div class="field"><label for="d-priority" data-i18n="priority_label">Priority</label>
          <select id="d-priority" name="priority">
            <option value="urgent" data-i18n="prio_urgent">Urgent</option>
            <option value="medium" data-i18n="prio_medium" selected>Medium</option>
            <option value="low" data-i18n="prio_low">Low</option>
          </select></div>
        <div class="field"><label for="d-site" data-i18n="site_label">Site</label>
          <input id="d-site" name="site" required></div>
        <div class="field"><label for="d-contact" data-i18n="contact_label">Contact</label>
          <input id="d-contact" name="contact" required></div>
        <div class="field"><label for="d-reported" data-i18n="reported_label">Call received at (Paris time)</label>
          <input id="d-reported" name="reported_at" type="datetime-local" aria-describedby="d-reported-help">
          <p id="d-reported-help" class="help" data-i18n="reported_help"></p></div>
        <div class="field wide"><label for="d-description" data-i18n="description_label">Description</label>
          <textarea id="d-description" name="description" rows="2"></textarea></div>
        <p id="sla-preview" class="help wide" aria-live="polite"></p>
        <p id="declare-error" class="field-error wide" role="alert" hidden></p>
        <p id="declare-ok" class="ok wide" role="status" hidden></p>
        <div class="buttons wide"><button type="submit" class="primary" data-i18n="declare">Declare</button></div>
      </form>
    </section>

    <section aria-labelledby="outages-title">
      <div class="section-head">
        <h2 id="outages-title" data-i18n="outages_heading">Outages</h2>
        <label class="inline"><input type="checkbox" id="only-active"> <span data-i18n="only_active">Active only</span></label>
      </div>
      <p id="no-outages" class="help" data-i18n="no_outages" hidden></p>
      <div id="outages" class="outages"></div>
    </section>
  </div>
</main>
<template id="outage-tpl">
  <article class="panel outage">
    <header class="outage-head">
      <h3 class="o-title"></h3>
      <span class="badge o-state"></span>
    </header>
    <p class="o-ticket"></p>
    <div class="usage">
      <div class="bar"><span class="bar-label o-video-label"></span><meter class="o-video" min="0"></meter></div>
      <div class="bar"><span class="bar-label o-audio-label"></span><meter class="o-audio" min="0"></meter></div>
    </div>
    <dl class="deadlines">
      <div class="dl o-ack"><dt data-i18n="ack_deadline">Acknowledge by</dt><dd></dd></div>
      <div class="dl o-restore"><dt data-i18n="restore_deadline">Restore by</dt><dd></dd></div>
      <div class="dl o-window"><dt data-i18n="window_ends">Backup window ends</dt><dd></dd></div>
    </dl>
    <div class="actions o-actions">
      <button type="button" class="danger o-restore-btn" data-i18n="restore">Restore</button>
      <span class="o-confirm" hidden>
        <span data-i18n="restore_confirm_q">The client's server is back? Everyone will be disconnected.</span>
        <button type="button" class="danger o-restore-yes" data-i18n="restore_yes">Yes, server is back</button>
        <button type="button" class="o-restore-no" data-i18n="cancel">Cancel</button>
      </span>
      <form class="inline-form o-extend">
        <label><span data-i18n="extend_label">Extend window to (Paris time)</span>
          <input type="datetime-local" name="window_ends_at" required></label>
        <button type="submit" data-i18n="extend">Extend</button>
      </form>
    </div>
    <p class="field-error o-error" role="alert" hidden></p>
    <details class="o-confs">
      <summary><span data-i18n="conferences_heading">Conferences</span> (<span class="o-conf-count">0</span>)</summary>
      <form class="inline-form o-new-conf">
        <label><span data-i18n="conf_title_label">Title</span> <input name="title" required maxlength="200"></label>
        <label><span data-i18n="conf_priority_label">Priority (1 = most important)</span>
          <input name="priority" type="number" min="1" value="1" class="num"></label>
        <label><span data-i18n="reserve_video_label">Reserved video</span>
          <input name="reserve_video" type="number" min="0" value="0" class="num"></label>
        <label><span data-i18n="reserve_audio_label">Reserved audio</span>
          <input name="reserve_audio" type="number" min="0" value="0" class="num"></label>
        <button type="submit" data-i18n="create_conf">Create conference</button>
      </form>
      <ul class="conf-list o-conf-list"></ul>
    </details>
  </article>
</template>
<template id="conf-tpl">
  <li class="conf">
    <p class="c-head"><strong class="c-title"></strong> <span class="c-meta"></span></p>
    <p class="c-link" hidden>
      <label><span data-i18n="join_link">Join link</span> <input class="c-url" readonly></label>
      <button type="button" class="c-copy" data-i18n="copy">Copy</button>
      <span class="c-copied" role="status" aria-live="polite"></span>
    </p>
    <table class="participants">
      <caption class="visually-hidden" data-i18n="participants_heading">Participants</caption>
      <thead><tr><th scope="col" data-i18n="p_name">Name</th><th scope="col" data-i18n="p_kind">Kind</th>
        <th scope="col" data-i18n="p_state">State</th><th scope="col"><span class="visually-hidden" data-i18n="actions">Actions</span></th></tr></thead>
      <tbody class="c-parts"></tbody>
    </table>
    <p class="c-empty help" data-i18n="no_participants" hidden></p>
  </li>
</template>
<script type="module" src="/static/console.js"></script>
</body>
</html>
"""
    )


NOT_FOUND_HTML = (
    _head("Backup+ — link not valid", ["common.css"])
    + """<body data-state="ended" data-page="invalid">
<header class="topbar"><p class="brand">Backup+</p></header>
<main id="main" class="panel">
  <h1>This join link is not valid</h1>
  <p>Please check that you copied the whole link from your e-mail, or ask the person who invited you
     for a new one.</p>
  <h1 lang="fr">Ce lien de connexion n’est pas valide</h1>
  <p lang="fr">Vérifiez que vous avez copié le lien en entier depuis votre e-mail, ou demandez-en un
     nouveau à la personne qui vous a invité.</p>
  <p>Backup+ hotline / assistance&nbsp;: <a class="phone" href="tel:{tel}">{phone}</a></p>
</main>
</body>
</html>
"""
)


def _tel(phone: str) -> str:
    return "".join(ch for ch in phone if ch.isdigit() or ch == "+")


async def join_page(request: web.Request) -> web.Response:
    token = request.match_info["token"]
    settings = request.app[SETTINGS]
    conference_id = None
    if 0 < len(token) <= _MAX_TOKEN_LEN:
        conference_id = _conference_for_token(request.app, token)
    if not conference_id:
        body = NOT_FOUND_HTML.replace("{tel}", _attr(_tel(settings.hotline_phone))).replace(
            "{phone}", html.escape(settings.hotline_phone)
        )
        return web.Response(status=404, text=body, content_type="text/html", charset="utf-8")
    return web.Response(
        text=render_join(
            conference_id,
            settings.hotline_phone,
            settings.audio_ports,
            settings.video_ports,
            settings.max_video_height,
        ),
        content_type="text/html",
        charset="utf-8",
    )


async def console_page(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    return web.Response(
        text=render_console(settings.hotline_phone), content_type="text/html", charset="utf-8"
    )


async def _join_index(request: web.Request) -> web.Response:
    """``/join/`` without a token: the same friendly page as an invalid token."""
    settings = request.app[SETTINGS]
    body = NOT_FOUND_HTML.replace("{tel}", _attr(_tel(settings.hotline_phone))).replace(
        "{phone}", html.escape(settings.hotline_phone)
    )
    return web.Response(status=404, text=body, content_type="text/html", charset="utf-8")


def setup_pages(app: web.Application) -> None:
    """Register the join page, the console and ``/static/``, with their security headers."""
    app.router.add_get("/join/{token}", join_page, name="join_page")
    app.router.add_get("/join/", _join_index)
    app.router.add_get("/console", console_page, name="console")
    app.router.add_static("/static/", STATIC_DIR, name="static", show_index=False, follow_symlinks=False)
    app.on_response_prepare.append(_security_headers)
