// Tic-tac-toe: moves are RPCs the server checks; the table is a map subscription (one key per
// tile, per seat, and the round), loaded whole on subscribe and then updated key by key.
// Who is at the table is a map too (one entry per client), kept by the server.
import { $, avatar, connect, currentUser, el, toast } from "./common.js";

const user = currentUser();
const client = connect(user);
const params = new URLSearchParams(location.search);
const table = /^[a-z0-9-]{1,32}$/.test(params.get("table") || "") ? params.get("table") : "main";
const channel = `game:${table}`;
let state = null;
const entries = new Map(); // map key -> value: cell:N, seat:X, seat:O, round
const here = new Map(); // client id -> user

$("#me").textContent = user;
const other = new URL(location.href);
other.searchParams.set("user", user === "bob" ? "alice" : "bob");
$("#other").href = other;
$("#tables").replaceChildren(
  ...["main", "second", "third"].map((name) =>
    el("a", { class: "chip", href: `?table=${name}`, "aria-current": name === table ? "true" : false }, `table ${name}`),
  ),
);

const cells = Array.from({ length: 9 }, (_, i) =>
  el("button", { class: "cell", role: "gridcell", "aria-label": `cell ${i + 1}`, dataset: { cell: i }, onclick: () => call("game.move", { cell: i }) }),
);
$("#board").append(...cells);

async function call(method, extra = {}) {
  try {
    await client.rpc(method, { table, ...extra }); // what changed arrives on the map
  } catch (err) {
    toast(err.message, "error");
  }
}

function fromMap() {
  const round = entries.get("round") ?? { turn: "X", winner: "", line: [], version: 0 };
  return {
    board: Array.from({ length: 9 }, (_, i) => entries.get(`cell:${i}`)?.mark ?? ""),
    players: { X: entries.get("seat:X")?.user ?? "", O: entries.get("seat:O")?.user ?? "" },
    turn: round.turn,
    winner: round.winner,
    line: round.line ?? [],
  };
}

function render(next) {
  state = next;
  const myMark = Object.keys(state.players).find((m) => state.players[m] === user);
  const playing = !state.winner && state.players.X && state.players.O;
  state.board.forEach((mark, i) => {
    cells[i].textContent = mark;
    cells[i].className = `cell ${mark.toLowerCase()}${state.line.includes(i) ? " win" : ""}`;
    cells[i].disabled = Boolean(mark) || !playing || state.turn !== myMark;
  });
  for (const mark of ["X", "O"]) {
    const seat = $(`#seat-${mark}`);
    const holder = state.players[mark];
    seat.classList.toggle("turn", Boolean(playing && state.turn === mark));
    seat.querySelector(".dot").classList.toggle("off", !holder || ![...here.values()].includes(holder));
    const name = seat.querySelector(".name");
    name.textContent = holder ? (holder === user ? `${holder} (you)` : holder) : "free";
    name.classList.toggle("muted", !holder);
  }
  $("#join").hidden = Boolean(myMark);
  $("#leave").hidden = !myMark;
  $("#restart").hidden = !myMark;
  let status;
  if (state.winner === "draw") status = "Draw! Start a new round.";
  else if (state.winner) status = `${state.players[state.winner] || state.winner} wins!`;
  else if (!state.players.X || !state.players.O) status = myMark ? "Waiting for a second player…" : "A seat is free: take it";
  else if (state.turn === myMark) status = `Your turn (${myMark})`;
  else status = `${state.players[state.turn]}'s turn (${state.turn})`;
  $("#game-status").textContent = status;
}

function renderHere() {
  const users = [...new Set(here.values())].sort();
  $("#watching").textContent = users.length;
  $("#here").replaceChildren(...users.map((name) => el("li", {}, avatar(name, true), el("span", {}, name))));
  if (state) render(state);
}

const sub = client.newMapSubscription(channel);
sub.on("sync", (ctx) => {
  entries.clear();
  for (const entry of ctx.entries) entries.set(entry.key, entry.data);
  render(fromMap());
});
sub.on("update", (ctx) => {
  if (ctx.removed) entries.delete(ctx.key);
  else entries.set(ctx.key, ctx.data);
  render(fromMap());
});
sub.on("subscribed", () => call("game.join")); // a seat if one is free
sub.subscribe();

const who = client.newMapClientsSubscription(`gamewho:${channel}`);
who.on("sync", (ctx) => {
  here.clear();
  for (const entry of ctx.entries) here.set(entry.key, entry.info?.user ?? "");
  renderHere();
});
who.on("update", (ctx) => {
  if (ctx.removed) here.delete(ctx.key);
  else here.set(ctx.key, ctx.info?.user ?? "");
  renderHere();
});
who.subscribe();

$("#join").addEventListener("click", () => call("game.join"));
$("#leave").addEventListener("click", () => call("game.leave"));
$("#restart").addEventListener("click", () => call("game.restart"));
