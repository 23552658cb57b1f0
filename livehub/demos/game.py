"""Tic-tac-toe where the server is the authority, its board kept as a map subscription.

Players call RPCs (``game.join``, ``game.move``, ``game.restart``, ``game.state``) with
Pydantic-validated requests; the server checks every move and writes what changed into
the map channel ``game:<table>``: one key per tile (``cell:0`` .. ``cell:8``, removed when
empty), per seat (``seat:X``, ``seat:O``) and ``round`` (turn, winner, winning line). Players
and spectators subscribe to that map: the state arrives whole on subscribe (and again after
a reload), then key by key. Who watches a table is a map too, kept by the server
(``map_clients_presence_channel_prefix``): ``gamewho:game:<table>``, one entry per client.
Seats belong to user ids, so a player who reloads keeps the seat; a seat whose player has
left the table can be taken. The page is ``static/game.js``.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from livehub import Client, Error, Hub

Mark = Literal["X", "O"]
Cell = Literal["", "X", "O"]
LINES = ((0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 3, 6), (1, 4, 7), (2, 5, 8), (0, 4, 8), (2, 4, 6))
MARKS: tuple[Mark, Mark] = ("X", "O")
MAX_TABLES = 100
empty: Cell = ""


class TableRequest(BaseModel):
    table: Annotated[str, Field(pattern=r"^[a-z0-9-]{1,32}$")] = "main"


class MoveRequest(TableRequest):
    cell: Annotated[int, Field(ge=0, le=8)]


class GameState(BaseModel):
    table: str
    board: list[Cell] = Field(default_factory=lambda: [empty] * 9)
    players: dict[Mark, str] = Field(default_factory=lambda: dict.fromkeys(MARKS, ""))
    turn: Mark = "X"
    winner: Literal["", "X", "O", "draw"] = ""
    line: list[int] = []
    #: Bumped on every change: the page ignores states older than the one it shows.
    version: int = 0


def outcome(board: list[Cell]) -> tuple[Literal["", "X", "O", "draw"], list[int]]:
    for a, b, c in LINES:
        if board[a] and board[a] == board[b] == board[c]:
            return board[a], [a, b, c]
    return ("draw", []) if all(board) else ("", [])


def setup(hub: Hub) -> None:
    tables: OrderedDict[str, GameState] = OrderedDict()

    def get_table(name: str) -> GameState:
        if name not in tables:
            tables[name] = GameState(table=name)
            while len(tables) > MAX_TABLES:
                tables.popitem(last=False)  # forget the least recently played table
        tables.move_to_end(name)
        return tables[name]

    async def publish(game: GameState, before: GameState | None = None) -> GameState:
        """Write the keys of ``game`` that differ from ``before`` (all of them without it)."""
        game.version += 1
        channel = f"game:{game.table}"
        old = before or GameState(table=game.table, board=[empty] * 9, players=dict.fromkeys(MARKS, "?"))
        for i, mark in enumerate(game.board):
            if mark != old.board[i] or before is None:
                if mark:
                    await hub.map_publish(channel, f"cell:{i}", {"mark": mark})
                else:
                    await hub.map_remove(channel, f"cell:{i}")
        for mark in MARKS:
            if game.players[mark] != old.players[mark]:
                if game.players[mark]:
                    await hub.map_publish(channel, f"seat:{mark}", {"user": game.players[mark]})
                else:
                    await hub.map_remove(channel, f"seat:{mark}")
        round_ = {"turn": game.turn, "winner": game.winner, "line": game.line, "version": game.version}
        await hub.map_publish(channel, "round", round_)
        return game

    async def watchers(table: str) -> set[str]:
        """The users whose clients are at the table (its presence map)."""
        page = await hub.map_state(f"gamewho:game:{table}")
        return {pub.info.user for pub in page.entries if pub.info is not None}

    def player(client: Client) -> str:
        if not client.user:
            raise Error(101, "unauthorized: pick a name first")
        return client.user

    hub.channel(
        "game:{table}",
        description="One tic-tac-toe table as a map: cell:N, seat:X, seat:O, round",
        subscription_type="map",
        map={"mode": "persistent", "stream_size": 100, "max_keys": 16},
        map_clients_presence_channel_prefix="gamewho:",
    )
    hub.channel(
        "gamewho:game:{table}",
        description="Who is at a table: one entry per client (its ClientInfo)",
        subscription_type="map_clients",
        map={"mode": "ephemeral", "key_ttl": "60s", "max_keys": 1000},
    )

    @hub.rpc("game.state")
    async def state(client: Client, request: TableRequest) -> GameState:
        """The table as it is now (what a page shows after a reload)."""
        return get_table(request.table)

    @hub.rpc("game.join")
    async def join(client: Client, request: TableRequest) -> GameState:
        """Take a free seat (or one whose player has left); spectators get the state."""
        user, game = player(client), get_table(request.table)
        if game.version == 0:  # a table new to this server: every key of its map is written
            await publish(game)
        if user in game.players.values():
            return game
        here = await watchers(game.table)
        for mark in MARKS:
            if not game.players[mark] or game.players[mark] not in here:
                before = game.model_copy(deep=True)
                game.players[mark] = user
                return await publish(game, before)
        return game

    @hub.rpc("game.move")
    async def move(client: Client, request: MoveRequest) -> GameState:
        """Put the caller's mark in a cell, if it is their turn and the cell is free."""
        user, game = player(client), get_table(request.table)
        if game.winner:
            raise Error(409, "the game is over: start a new one")
        if game.players[game.turn] != user:
            raise Error(403, "not your turn" if user in game.players.values() else "take a seat first")
        if game.board[request.cell]:
            raise Error(409, "that cell is taken")
        before = game.model_copy(deep=True)
        game.board[request.cell] = game.turn
        game.winner, game.line = outcome(game.board)
        game.turn = "O" if game.turn == "X" else "X"
        return await publish(game, before)

    @hub.rpc("game.restart")
    async def restart(client: Client, request: TableRequest) -> GameState:
        """A new round at the same table; the players swap marks."""
        user, game = player(client), get_table(request.table)
        if user not in game.players.values():
            raise Error(403, "only players can restart")
        fresh = GameState(table=game.table, players={"X": game.players["O"], "O": game.players["X"]})
        fresh.version = game.version
        tables[game.table] = fresh
        return await publish(fresh, game)

    @hub.rpc("game.leave")
    async def leave(client: Client, request: TableRequest) -> GameState:
        """Give the caller's seat up."""
        user, game = player(client), get_table(request.table)
        for mark, holder in game.players.items():
            if holder == user:
                before = game.model_copy(deep=True)
                game.players[mark] = ""
                return await publish(game, before)
        return game
