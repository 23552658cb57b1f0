"""The admin page: this node and the cluster, its connections and channels, on ``admin.enabled``.

Signing in follows Centrifugo's ``admin`` keys: ``POST {prefix}/auth`` with the
``admin.password`` returns a token signed with ``admin.secret`` (HS256, valid 24 h), which the
page sends as ``Authorization: token <t>`` to ``GET {prefix}/state``. ``admin.insecure`` drops
the sign-in (only behind a firewall). It is independent of ``client.insecure`` and of the demos.
"""

from __future__ import annotations

import hmac
import time
from typing import Annotated, Any

import jwt
from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException
from fastapi.responses import HTMLResponse
from pydantic import BaseModel

from livehub.core.node import Node
from livehub.settings import AdminSettings

TOKEN_TTL = 24 * 3600
MAX_LISTED = 200


class Login(BaseModel):
    password: str


class Connection(BaseModel):
    client: str
    user: str
    name: str
    channels: list[str]


class AdminState(BaseModel):
    nodes: list[dict[str, Any]]
    connections: list[Connection]
    #: Channels with subscribers on this node, and how many (the busiest first, at most 200).
    channels: dict[str, int]


def install(app: FastAPI, node: Node, settings: AdminSettings) -> None:
    prefix = settings.handler_prefix.rstrip("/")
    router = APIRouter(prefix=prefix, include_in_schema=False)

    def signed_in(authorization: Annotated[str, Header()] = "") -> None:
        if settings.insecure:
            return
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "token" or not token:
            raise HTTPException(401, "sign in first")
        try:
            jwt.decode(token, settings.secret, algorithms=["HS256"], audience="livehub-admin")
        except jwt.PyJWTError:
            raise HTTPException(401, "sign in again") from None

    @router.post("/auth")
    async def auth(login: Login) -> dict[str, str]:
        if settings.insecure:
            return {"token": ""}
        if not hmac.compare_digest(login.password.encode(), settings.password.encode()):
            raise HTTPException(400, "wrong password")
        claims = {"aud": "livehub-admin", "exp": int(time.time()) + TOKEN_TTL}
        return {"token": jwt.encode(claims, settings.secret, algorithm="HS256")}

    @router.get("/state", dependencies=[Depends(signed_in)])
    async def state() -> AdminState:
        sessions = sorted(node.sessions.values(), key=lambda s: (s.user, s.id))[:MAX_LISTED]
        channels = sorted(node.channels().items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_LISTED]
        return AdminState(
            nodes=node.cluster.nodes(),
            connections=[
                Connection(client=s.id, user=s.user, name=s.name, channels=sorted(s.subs)) for s in sessions
            ],
            channels=dict(channels),
        )

    @router.get("", response_class=HTMLResponse)
    async def page() -> str:
        return PAGE.replace("{{prefix}}", prefix).replace(
            "{{insecure}}", "true" if settings.insecure else "false"
        )

    app.include_router(router)


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>livehub admin</title>
<style>body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#1d2433}
table{border-collapse:collapse;width:100%;margin:.5rem 0 1.5rem}td,th{text-align:left;padding:.25rem .5rem;
border-bottom:1px solid #e3e7ee}th{font-weight:600}
code{background:#eef1f6;padding:.1rem .3rem;border-radius:4px}
.err{color:#b42318}</style></head>
<body><h1>livehub admin</h1>
<form id="login" hidden><label>Password <input type="password" id="password" autocomplete="current-password">
</label> <button>Sign in</button> <span class="err" id="error"></span></form>
<div id="state" hidden><h2>Nodes</h2><table id="nodes"></table><h2>Connections on this node</h2>
<table id="connections"></table><h2>Channels on this node</h2><table id="channels"></table></div>
<script>
const prefix = "{{prefix}}", insecure = {{insecure}};
let token = sessionStorage.getItem("livehub-admin") || "";
const $ = (id) => document.getElementById(id);
function rows(table, head, items) {
  table.replaceChildren();
  const tr = table.insertRow();
  for (const h of head) {
    const th = document.createElement("th"); th.textContent = h; tr.append(th);
  }
  for (const item of items) {
    const r = table.insertRow(); for (const v of item) r.insertCell().textContent = v;
  }
}
async function refresh() {
  const r = await fetch(prefix + "/state", {headers: {Authorization: "token " + token}});
  if (r.status === 401) { $("login").hidden = false; $("state").hidden = true; return; }
  const s = await r.json();
  $("login").hidden = true; $("state").hidden = false;
  rows($("nodes"), ["name", "clients", "users", "subscriptions", "channels", "uptime (s)"],
       s.nodes.map((n) => [n.name, n.num_clients, n.num_users, n.num_subs, n.num_channels, n.uptime]));
  rows($("connections"), ["client", "user", "name", "channels"],
       s.connections.map((c) => [c.client, c.user, c.name, c.channels.join(" ")]));
  rows($("channels"), ["channel", "subscribers"], Object.entries(s.channels));
}
$("login").addEventListener("submit", async (e) => {
  e.preventDefault();
  const r = await fetch(prefix + "/auth", {method: "POST", headers: {"Content-Type": "application/json"},
                                           body: JSON.stringify({password: $("password").value})});
  if (!r.ok) { $("error").textContent = "wrong password"; return; }
  token = (await r.json()).token; sessionStorage.setItem("livehub-admin", token); $("error").textContent = "";
  refresh();
});
refresh(); setInterval(refresh, 3000);
</script></body></html>"""
