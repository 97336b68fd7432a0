"""The controller's HTTP API, its dashboard and its ``/metrics``, on Starlette.

Read-only endpoints need nothing; an override needs the bearer token
(``Authorization: Bearer TOKEN``), read from ``http.token_file`` or ``$ANYEDGE_TOKEN``
when the service starts — without one configured, overrides over HTTP are refused.

====================================  ==================================================
``GET /``                             the dashboard (:mod:`.dashboard`)
``GET /api/state``                    sites: utilisation, thresholds, freshness,
                                      overrides; the moves in force; health
``GET /api/plan``                     the last step's plan, with reasons
``GET /api/journal?since=N&limit=M``  journaled actions after decision N
``GET /api/overrides``                the operators' overrides, newest first
``POST /api/overrides``               ``{"kind": "pin", "site": "AKL", "active": true,
                                      "note": "..."}`` (token needed)
``GET /api/atlas/{site}``             the predictor's answer: where the site's users
                                      land if it withdraws
``GET /openapi.json``                 this API, OpenAPI 3
``GET /metrics``                      Prometheus text format
====================================  ==================================================

The dashboard's script and the ``curl`` of an operator use the same endpoints.  Every
handler runs in the server's thread and reads the service's attributes, which the loop
replaces whole at each step.
"""

from __future__ import annotations

import hmac
import json
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.schemas import SchemaGenerator

from ..adapters.overrides import KINDS
from ..errors import InputError
from .dashboard import page
from .service import Service

SCHEMAS = SchemaGenerator(
    {
        "openapi": "3.0.0",
        "info": {"title": "anyedge Traffic Manager", "version": "1"},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }
)


def app(service: Service, token: str | None) -> Starlette:
    """The ASGI application of ``service``; ``token`` unlocks overrides (None: never)."""

    def _json(data: Any, status: int = 200) -> JSONResponse:
        return JSONResponse(data, status_code=status)

    async def dashboard(request: Request) -> HTMLResponse:
        return HTMLResponse(page(service))

    async def state(request: Request) -> JSONResponse:
        """
        responses:
          200:
            description: Each site's utilisation, thresholds (configured and in force),
              freshness and overrides; the moves in force; telemetry health; with a
              balancer, each site's server weights, servers left out and its last error.
        """
        return _json(service.state())

    async def plan(request: Request) -> JSONResponse:
        """
        responses:
          200:
            description: The last step's plan, each action with its reason code, fields
              and words.
        """
        return _json(service.plan())

    async def journal(request: Request) -> JSONResponse:
        """
        parameters:
          - {name: since, in: query, schema: {type: integer, default: 0},
             description: only decisions after this sequence number}
          - {name: limit, in: query, schema: {type: integer, default: 200}}
        responses:
          200: {description: journaled actions, oldest first}
          400: {description: since or limit is not a whole number}
        """
        try:
            since = int(request.query_params.get("since", "0"))
            limit = int(request.query_params.get("limit", "200"))
        except ValueError:
            return _json({"error": "since and limit are whole numbers"}, 400)
        return _json(service.journal_rows(since, max(1, min(limit, 5000))))

    async def overrides(request: Request) -> JSONResponse:
        """
        responses:
          200: {description: the overrides in force and the last 100 recorded, newest first}
        """
        return _json(
            {
                "in_force": service.in_force.as_dict(),
                "history": [o.as_dict() for o in service.overrides.history()],
            }
        )

    async def set_override(request: Request) -> JSONResponse:
        """
        security: [{bearer: []}]
        requestBody:
          required: true
          content:
            application/json:
              schema:
                type: object
                required: [kind]
                properties:
                  kind: {type: string, enum: [freeze, pin, forbid, drain]}
                  site: {type: string, description: not for freeze}
                  active: {type: boolean, default: true}
                  note: {type: string}
        responses:
          200: {description: the override recorded in the journal}
          400: {description: an unknown kind or site, or not JSON}
          401: {description: no bearer token, or not the right one}
          403: {description: this controller has no token configured}
        """
        if token is None:
            return _json({"error": "no token is configured: overrides are refused"}, 403)
        got = request.headers.get("authorization", "")
        scheme, _, value = got.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip(), token):
            return JSONResponse(
                {"error": "an override needs the bearer token"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _json({"error": "the body is not JSON"}, 400)
        if not isinstance(body, dict) or body.get("kind") not in KINDS:
            return _json({"error": f"kind must be one of {', '.join(KINDS)}"}, 400)
        active = body.get("active", True)
        if not isinstance(active, bool):
            return _json({"error": "active is true or false"}, 400)
        try:
            o = service.set_override(
                str(body["kind"]),
                body.get("site"),
                active,
                who=request.client.host if request.client else "?",
                note=str(body.get("note", ""))[:500],
            )
        except InputError as e:
            return _json({"error": e.render()}, 400)
        return _json(o)

    async def atlas(request: Request) -> JSONResponse:
        """
        parameters:
          - {name: site, in: path, required: true, schema: {type: string}}
        responses:
          200: {description: where the site's users land if it withdraws, by share}
          404: {description: no such site, or no atlas configured}
        """
        site = request.path_params["site"]
        if site not in service.names.sites:
            return _json({"error": f"no site {site!r}"}, 404)
        answer = service.atlas(site)
        if answer is None:
            return _json({"error": "no atlas is configured (atlas: in the config)"}, 404)
        return _json(answer)

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(service.registry), media_type=CONTENT_TYPE_LATEST)

    async def openapi(request: Request) -> JSONResponse:
        return _json(SCHEMAS.get_schema(routes=request.app.routes))

    routes = [
        Route("/", dashboard, include_in_schema=False),
        Route("/api/state", state),
        Route("/api/plan", plan),
        Route("/api/journal", journal),
        Route("/api/overrides", overrides, methods=["GET"]),
        Route("/api/overrides", set_override, methods=["POST"]),
        Route("/api/atlas/{site}", atlas),
        Route("/metrics", metrics, include_in_schema=False),
        Route("/openapi.json", openapi, include_in_schema=False),
    ]
    return Starlette(routes=routes)
