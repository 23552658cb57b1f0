"""A hub using every kind of schema the TypeScript generator translates, for tests/codegen.

Its types are compiled by the real TypeScript compiler with usage_rich.ts (must compile) and
misuse_rich.ts (must not).
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from livehub import Client, Hub, Settings


class Colour(enum.Enum):
    red = "red"
    green = "green"


class Level(enum.IntEnum):
    low = 1
    high = 2


class Cat(BaseModel):
    kind: Literal["cat"]
    lives: int = 9


class Dog(BaseModel):
    kind: Literal["dog"]
    good: bool


class Node(BaseModel):
    """A tree: a model that refers to itself."""

    name: str
    children: list[Node] = []


class Loose(BaseModel):
    """Keeps the keys it does not declare (extra="allow")."""

    model_config = ConfigDict(extra="allow")
    id: int


class Error(BaseModel):
    """Named like TypeScript's own Error: the generated type must not shadow it."""

    code: int
    message: str


class Channels(BaseModel):
    """Named like the generated module's own map of channels."""

    names: list[str]


class Everything(BaseModel):
    """One field per JSON Schema shape.

    Its doc mentions */ which cannot close the generated comment."""

    count: int
    ratio: float = 0.5
    flag: bool
    maybe: int | None
    either: int | str
    colour: Colour
    level: Level = Level.low
    mode: Literal["fast", "slow"] = "fast"
    one: Literal[1]
    pet: Annotated[Cat | Dog, Field(discriminator="kind")]
    pet_or_none: Cat | Dog | None = None
    pair: tuple[int, str]
    numbers: tuple[int, ...]
    tags: set[str]
    scores: dict[str, int]
    blob: dict[str, Any]
    anything: Any
    nested: list[dict[str, list[int]]]
    when: datetime
    tree: Node
    loose: Loose
    user_id: Annotated[str, Field(alias="user-id", description="Sent as user-id")]
    error: Error | None = None
    channels: Channels | None = None


class Move(BaseModel):
    x: Annotated[int, Field(ge=0, le=7)]
    y: Annotated[int, Field(ge=0, le=7)]


class Board(BaseModel):
    cells: list[list[Literal["x", "o", ""]]]
    turn: Literal["x", "o"]


hub = Hub(Settings())
hub.channel("news", model=Error, description="Comes first: `news` belongs here, not to {topic}")
hub.channel("everything:{id}", model=Everything, description="A channel of Everything")
hub.channel("game:{id}:moves", model=Move)
hub.channel("{topic}")  # untyped: any JSON value


@hub.rpc("game.state")
async def game_state(client: Client, request: Move) -> Board:
    """The board after a move."""
    return Board(cells=[[""] * 8] * 8, turn="o")


@hub.rpc("echo")
async def echo(client: Client, request: Everything) -> Everything:
    return request


@hub.rpc("ping")
async def ping(client: Client, request: Any) -> Any:
    """No models: any JSON in, any JSON out."""
    return request
