// Shared by the verbs that talk to the daemon: the --socket flag and a connected client.
import { ControlClient, socketPath } from "../control/client.ts";

export const socketArg = {
  socket: { type: "string", alias: "s", valueHint: "PATH", description: "Control socket (default $MCRELAY_SOCKET or /run/mcrelay/mcrelay.sock)" },
} as const;

export async function withClient<T>(socketFlag: string | undefined, fn: (c: ControlClient) => Promise<T>): Promise<T> {
  const client = await ControlClient.connect(socketPath(socketFlag));
  try {
    return await fn(client);
  } finally {
    client.close();
  }
}
