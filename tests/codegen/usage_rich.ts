// Compiles against the types `livehub codegen ts tests.codegen.rich_hub:hub` writes to rich.ts:
// every shape of schema, read and written the way a frontend would.
import { Centrifuge, type PublicationContext } from "centrifuge";
import {
  type Board,
  type ChannelsModel,
  type Colour,
  type ErrorModel,
  type Everything,
  type Level,
  type Loose,
  type Node,
  type PatternOf,
  type PublicationOf,
  patternOf,
  publication,
  typedPublish,
  typedRpc,
} from "./rich";

const client = new Centrifuge("ws://127.0.0.1:8000/connection/websocket");

const tree: Node = { name: "root", children: [{ name: "leaf" }] };
const loose: Loose = { id: 1, anything: ["else"] };
const everything: Everything = {
  count: 1,
  flag: true,
  maybe: null,
  either: "one",
  colour: "green",
  level: 2,
  mode: "slow",
  one: 1,
  pet: { kind: "dog", good: true },
  pet_or_none: null,
  pair: [1, "a"],
  numbers: [1, 2, 3],
  tags: ["a"],
  scores: { alice: 3 },
  blob: { any: { thing: [1] } },
  anything: undefined,
  nested: [{ a: [1, 2] }],
  when: "2026-01-01T00:00:00Z",
  tree,
  loose,
  "user-id": "u1",
  error: { code: 1, message: "no" },
  channels: { names: ["news"] },
};

export function describe(value: Everything): string {
  const pet = value.pet.kind === "cat" ? `cat with ${value.pet.lives ?? 9} lives` : `dog, good: ${value.pet.good}`;
  const colour: Colour = value.colour;
  const level: Level | undefined = value.level;
  const [first, second]: [number, string] = value.pair;
  const score: number | undefined = value.scores["alice"];
  const depth = (node: Node): number => 1 + Math.max(0, ...(node.children ?? []).map(depth));
  return `${pet} ${colour} ${level} ${first}${second} ${score} ${depth(value.tree)} ${value["user-id"]}`;
}

export async function calls(): Promise<string> {
  const board: Board = await typedRpc(client, "game.state", { x: 1, y: 2 });
  const row: Array<"x" | "o" | ""> | undefined = board.cells[0];
  const echoed = await typedRpc(client, "echo", everything);
  const anything: unknown = await typedRpc(client, "ping", { whatever: [1, "two"] });
  await typedPublish(client, "everything:42", everything);
  await typedPublish(client, "game:7:moves", { x: 0, y: 7 });
  await typedPublish(client, "news", { code: 3, message: "hello" });
  await typedPublish(client, "weather", ["any", { json: true }]); // {topic}: untyped
  return `${board.turn} ${row?.length} ${describe(echoed)} ${String(anything)}`;
}

// A name belongs to the first pattern that matches it the way the server matches: "news" is
// not a {topic}, and a {parameter} never holds ":", so "everything:a:b" belongs to none.
const news: PatternOf<"news"> = "news";
const weather: PatternOf<"weather"> = "{topic}";
const moves: PatternOf<"game:7:moves"> = "game:{id}:moves";
const none: [PatternOf<"everything:a:b">] extends [never] ? true : false = true;
const newsData: PublicationOf<"news"> = { code: 1, message: "m" };
export const patterns = [news, weather, moves, none, newsData, patternOf("news")];

export function listen(): void {
  client.on("publication", (ctx: PublicationContext) => {
    const error: ErrorModel | undefined = publication(ctx, "news");
    const item: Everything | undefined = publication(ctx, "everything:{id}");
    const other: unknown = publication(ctx, "{topic}");
    const names: ChannelsModel | null | undefined = item?.channels;
    void [error?.message, other, names?.names.join()];
  });
}
