// Tic-tac-toe: moves are RPCs the server checks; the state comes back as publications.
import { $, avatar, connect, currentUser, el, toast } from "./common.js";

const user = currentUser();
const client = connect(user);
const params = new URLSearchParams(location.search);
const table = /^[a-z0-9-]{1,32}$/.test(params.get("table") || "") ? params.get("table") : "main";
const channel = `game.${table}`;
let state = null;
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
    const { data } = await client.rpc(method, { table, ...extra });
    render(data);
  } catch (err) {
    toast(err.message, "error");
  }
}

function render(next) {
  if (state && next.version < state.version) return; // an older state than the one shown
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

const sub = client.newSubscription(channel, { joinLeave: true });
sub.on("subscribed", async () => {
  await call("game.join"); // a seat if one is free, and the state as it is now either way
  const { clients } = await sub.presence();
  here.clear();
  for (const [id, info] of Object.entries(clients)) here.set(id, info.user);
  renderHere();
});
sub.on("publication", (ctx) => render(ctx.data));
sub.on("join", ({ info }) => (here.set(info.client, info.user), renderHere()));
sub.on("leave", ({ info }) => (here.delete(info.client), renderHere()));
sub.subscribe();

$("#join").addEventListener("click", () => call("game.join"));
$("#leave").addEventListener("click", () => call("game.leave"));
$("#restart").addEventListener("click", () => call("game.restart"));
