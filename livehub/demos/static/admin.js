// Admin: polls an API-key-protected route for connections and channels, calls the server
// HTTP API (/api/publish, /api/disconnect) for its buttons, and reads rates from a channel.
import { $, connect, el, flash, plural, toast } from "./common.js";

let key = sessionStorage.getItem("livehub.apikey") || "";
let timer = null;
let client = null;

async function api(method, body) {
  const reply = await fetch(`/api/${method}`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-api-key": key },
    body: JSON.stringify(body),
  });
  if (reply.status === 401) throw new Error("wrong API key");
  const answer = await reply.json();
  if (answer.error) throw new Error(`${answer.error.code}: ${answer.error.message}`);
  return answer.result;
}

function set(id, value) {
  const node = $(id);
  const text = String(value);
  if (node.textContent !== text) {
    node.textContent = text;
    flash(node.closest(".tile") || node);
  }
}

async function refresh() {
  const reply = await fetch("/demos/admin/state", { headers: { "x-api-key": key } });
  if (reply.status === 401 || reply.status === 503) return signOut((await reply.json()).detail);
  if (!reply.ok) return;
  const state = await reply.json();
  const { nodes } = await api("info", {});
  const total = (field) => nodes.reduce((sum, node) => sum + (node[field] || 0), 0);
  set("#a-clients", total("num_clients"));
  set("#a-users", plural(total("num_users"), "user"));
  set("#a-channels", total("num_channels"));
  set("#a-subs", plural(total("num_subs"), "subscription"));
  $("#nodes").replaceChildren(
    ...nodes.map((node) =>
      el(
        "tr",
        {},
        el("td", { class: "mono", title: node.uid }, node.name),
        el("td", { class: "hide-sm" }, node.version),
        el("td", { class: "num hide-sm" }, uptime(node.uptime || 0)),
        el("td", { class: "num" }, String(node.num_clients)),
        el("td", { class: "num" }, String(node.num_users)),
        el("td", { class: "num" }, String(node.num_channels)),
      ),
    ),
  );
  $("#connections").replaceChildren(
    ...state.connections.map((c) =>
      el(
        "tr",
        { dataset: { user: c.user } },
        el("td", {}, c.user || el("span", { class: "muted" }, "anonymous")),
        el("td", { class: "hide-sm mono muted" }, c.client.slice(0, 8)),
        el("td", { class: "num", title: c.channels.join(", ") }, String(c.channels.length)),
        el("td", { class: "num" }, c.user ? el("button", { class: "small danger", onclick: () => disconnect(c.user) }, "Disconnect") : ""),
      ),
    ),
  );
  const channels = Object.entries(state.channels);
  $("#channels").replaceChildren(
    ...(channels.length
      ? channels.map(([name, n]) => el("tr", { dataset: { channel: name } }, el("td", { class: "mono" }, name), el("td", { class: "num" }, String(n))))
      : [el("tr", {}, el("td", { colspan: 2, class: "empty" }, "No channel has subscribers"))]),
  );
}

function uptime(seconds) {
  if (seconds < 60) return `${seconds}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m ${seconds % 60}s`;
  return `${Math.floor(seconds / 3600)}h ${Math.floor((seconds % 3600) / 60)}m`;
}

async function disconnect(user) {
  try {
    await api("disconnect", { user });
    $("#disconnect-result").textContent = `disconnected ${user}`;
    refresh();
  } catch (err) {
    toast(err.message, "error");
  }
}

function signIn() {
  $("#login").hidden = true;
  $("#panel").hidden = false;
  $("#logout").hidden = false;
  refresh();
  timer = setInterval(refresh, 1000);
  client = connect("admin");
  const metrics = client.newSubscription("dashboard.metrics");
  metrics.on("publication", ({ data }) => {
    set("#a-deliveries", data.deliveries_per_s);
    set("#a-publications", data.publications_per_s);
  });
  metrics.subscribe();
}

function signOut(reason) {
  sessionStorage.removeItem("livehub.apikey");
  clearInterval(timer);
  client?.disconnect();
  $("#login").hidden = false;
  $("#panel").hidden = true;
  $("#logout").hidden = true;
  $("#login-error").textContent = reason || "";
}

$("#login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  key = $("#key").value;
  const reply = await fetch("/demos/admin/state", { headers: { "x-api-key": key } });
  if (!reply.ok) return ($("#login-error").textContent = (await reply.json()).detail || "wrong API key");
  sessionStorage.setItem("livehub.apikey", key);
  $("#login-error").textContent = "";
  signIn();
});

$("#logout").addEventListener("click", () => signOut());

$("#publish-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    const data = JSON.parse($("#p-data").value);
    const result = await api("publish", { channel: $("#p-channel").value.trim(), data });
    $("#publish-result").textContent = result.offset ? `published at offset ${result.offset}` : "published";
  } catch (err) {
    $("#publish-result").textContent = "";
    toast(`publish: ${err.message}`, "error");
  }
});

$("#disconnect-form").addEventListener("submit", (event) => {
  event.preventDefault();
  disconnect($("#d-user").value.trim());
});

if (key) signIn();
