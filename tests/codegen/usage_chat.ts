// Compiles against the types `livehub codegen ts examples.fastapi_app:app` writes to chat.ts,
// used with the official SDK's own objects (no wrapper around them).
import { Centrifuge, type PublicationContext, type PublishResult } from "centrifuge";
import {
  type ChannelName,
  type ChatMessage,
  type PublicationOf,
  type RollResult,
  patternOf,
  publication,
  typedPublish,
  typedRpc,
} from "./chat";

const client = new Centrifuge("ws://127.0.0.1:8000/connection/websocket");

export async function roll(): Promise<number> {
  const result: RollResult = await typedRpc(client, "roll", { sides: 20 });
  const defaults = await typedRpc(client, "roll", {}); // sides has a default on the server
  return result.value + defaults.sides;
}

export async function say(room: string, text: string): Promise<void> {
  const channel: ChannelName = `chat:${room}`;
  await typedPublish(client, channel, { text });
  const sent: PublishResult = await typedPublish(client, "chat:lobby", { text, sent_at: 1.5 });
  void sent; // typedPublish resolves to what the SDK's publish resolves to
}

export function listen(room: string, show: (line: string) => void): void {
  const sub = client.newSubscription(`chat:${room}`);
  sub.on("publication", (ctx: PublicationContext) => {
    const message = publication(ctx, "chat:{room}");
    if (message !== undefined) {
      const upper: string = message.text.toUpperCase();
      const at: number | undefined = message.sent_at;
      show(`${upper} ${at ?? 0}`);
    }
  });
  sub.subscribe();
}

const lobby: PublicationOf<"chat:lobby"> = { text: "hi" };
const pattern: "chat:{room}" | undefined = patternOf("chat:lobby");
export const checks: [ChatMessage, typeof pattern] = [lobby, pattern];
