import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Code } from "@connectrpc/connect";
import { expect } from "chai";
import { ChatService, RoomVisibility } from "../../gen/agora/chat/v1/chat_pb.js";
import { FileService } from "../../gen/agora/files/v1/files_pb.js";
import { client, rpcError, signUp, startTestServer, type TestServer } from "../support/harness.js";

describe("chat attachments through the file service", () => {
  let server: TestServer;
  before(async () => {
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "agora-attach-"));
    fs.chmodSync(dataDir, 0o755);
    server = await startTestServer({ DATA_DIR: dataDir });
  });
  after(() => server?.shutdown());

  async function upload(token: string, name: string, text: string) {
    const files = client(FileService, server.url, "grpc", token);
    async function* parts() {
      yield { part: { case: "metadata" as const, value: { target: { case: "path" as const, value: name } } } };
      yield { part: { case: "chunk" as const, value: Buffer.from(text) } };
    }
    return (await files.upload(parts())).file!;
  }

  it("lets the recipients of a message read its attachment, and nobody else", async () => {
    const [alma, bo, cy] = await Promise.all(["alma", "bob", "cyd"].map((u) => signUp(server.url, u)));
    const file = await upload(alma, "shared/plan.txt", "the plan");
    const bob = client(FileService, server.url, "grpc", bo);
    expect((await rpcError(bob.getFile({ fileId: file.id }))).code).to.equal(Code.NotFound);

    const { room } = await client(ChatService, server.url, "grpc", alma).createRoom({ name: "planning", visibility: RoomVisibility.PUBLIC });
    await client(ChatService, server.url, "grpc", bo).joinRoom({ roomId: room!.id });
    const { message } = await client(ChatService, server.url, "grpc", alma).sendMessage({
      message: { to: { target: { case: "roomId", value: room!.id } }, clientId: "att-1", text: "see attached", attachments: [{ fileId: file.id, name: "plan.txt" }] },
    });
    expect(message!.attachments.map((a) => a.fileId)).to.deep.equal([file.id]);

    // Bo (a member) can now read it; Cy (not in the room) still cannot.
    let text = "";
    for await (const m of bob.download({ fileId: file.id })) if (m.part.case === "chunk") text += Buffer.from(m.part.value).toString();
    expect(text).to.equal("the plan");
    expect((await rpcError(client(FileService, server.url, "grpc", cy).getFile({ fileId: file.id }))).code).to.equal(Code.NotFound);
  });

  it("refuses to attach a file the sender cannot read, and stores nothing", async () => {
    const [dee, eve] = await Promise.all(["dee", "eve"].map((u) => signUp(server.url, u)));
    const secret = await upload(dee, "secret.txt", "mine");
    const { room } = await client(ChatService, server.url, "grpc", eve).createRoom({ name: "eve-room", visibility: RoomVisibility.PUBLIC });
    const chat = client(ChatService, server.url, "grpc", eve);
    const err = await rpcError(
      chat.sendMessage({ message: { to: { target: { case: "roomId", value: room!.id } }, clientId: "steal-1", text: "x", attachments: [{ fileId: secret.id }] } }),
    );
    expect(err.code).to.equal(Code.NotFound);
    const history = await chat.getHistory({ conversation: { target: { case: "roomId", value: room!.id } } });
    expect(history.messages.some((m) => m.clientId === "steal-1")).to.equal(false);
  });
});
