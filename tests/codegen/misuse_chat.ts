// Each line marked `// error TSxxxx` must be refused by the compiler, and no other line.
import { Centrifuge } from "centrifuge";
import { type ChatMessage, publication, typedPublish, typedRpc } from "./chat";

const client = new Centrifuge("ws://127.0.0.1:8000/connection/websocket");

export async function misuse(): Promise<void> {
  await typedRpc(client, "rol", { sides: 6 }); // error TS2345 unknown RPC method
  await typedRpc(client, "roll", { sides: "6" }); // error TS2322 a string where a number goes
  await typedRpc(client, "roll", { sides: 6, colour: "red" }); // error TS2353 a field the model lacks
  const result = await typedRpc(client, "roll", { sides: 6 });
  const label: string = result.value; // error TS2322 the response's value is a number
  await typedPublish(client, "chat:lobby", { sent_at: 1 }); // error TS2741 text is required
  await typedPublish(client, "news", { text: "hi" }); // error TS2345 no channel pattern matches
  const message: ChatMessage | undefined = publication({ channel: "chat:x", data: null }, "chat:{room}");
  message?.text.toFixed(); // error TS2551 text is a string
  publication({ channel: "chat:x", data: null }, "chat:room"); // error TS2345 not a declared pattern
  await typedPublish(client, "chat:a:b", { text: "hi" }); // error TS2345 a room name has no ":"
  console.log(label);
}
