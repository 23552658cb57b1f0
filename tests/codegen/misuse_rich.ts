// Each line marked `// error TSxxxx` must be refused by the compiler, and no other line.
import { Centrifuge } from "centrifuge";
import { type Everything, type Loose, type Node, type PatternOf, typedPublish, typedRpc } from "./rich";

const client = new Centrifuge("ws://127.0.0.1:8000/connection/websocket");
declare const everything: Everything;

export async function misuse(): Promise<void> {
  const colour: Everything = { ...everything, colour: "blue" }; // error TS2322 not an enum member
  const level: Everything = { ...everything, level: 3 }; // error TS2322 not an IntEnum value
  const mode: Everything = { ...everything, mode: "medium" }; // error TS2322 not a Literal
  const one: Everything = { ...everything, one: 2 }; // error TS2322 Literal[1]
  const pet: Everything = { ...everything, pet: { kind: "cat", good: true } }; // error TS2353 cats have no "good"
  const pair: Everything = { ...everything, pair: [1, 2] }; // error TS2322 tuple[int, str]
  const maybe: Everything = { ...everything, maybe: undefined }; // error TS2322 null, not undefined
  const scores: Everything = { ...everything, scores: { a: "3" } }; // error TS2322 dict[str, int]
  const tree: Node = { name: "x", children: [{ children: [] }] }; // error TS2741 name is required
  const loose: Loose = { id: "1" }; // error TS2322 id is an int
  const { count, ...rest } = everything;
  const missing: Everything = rest; // error TS2741 count is required
  await typedRpc(client, "game.state", { x: 1 }); // error TS2741 y is required
  await typedRpc(client, "game_state", { x: 1, y: 1 }); // error TS2345 unknown method
  const board = await typedRpc(client, "game.state", { x: 1, y: 1 });
  board.turn = "z"; // error TS2322 Literal["x", "o"]
  await typedPublish(client, "game:1:moves", { x: "0", y: 0 }); // error TS2322 x is an int
  await typedPublish(client, "news", everything); // error TS2739 news carries an ErrorModel
  const pattern: PatternOf<"news"> = "{topic}"; // error TS2322 news comes first
  void [colour, level, mode, one, pet, pair, maybe, scores, tree, loose, count, missing, pattern];
}
