"""The /v1 API (see the shared API.md), one module per resource. Handlers validate, authorise and
delegate to the broker; each carries its ``@doc``."""

from __future__ import annotations

from aiohttp import web

from . import conferences, contracts, events, outages, participants, tickets

MODULES = (contracts, outages, tickets, conferences, participants, events)
ROUTES: tuple[web.RouteTableDef, ...] = tuple(m.routes for m in MODULES)
