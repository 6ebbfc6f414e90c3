import { Code, ConnectError } from "@connectrpc/connect";
import { expect } from "chai";
import { pino } from "pino";
import { ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { toConnectError } from "../../src/platform/error-mapping.js";
import { notFound } from "../../src/platform/errors.js";

describe("error mapping", () => {
  const lines: string[] = [];
  const log = pino({ level: "info" }, { write: (line: string) => void lines.push(line) });

  it("gives an error raised without google.rpc details an ErrorInfo, keeping its code and message, and logs it", () => {
    const mapped = toConnectError(new ConnectError("past the end", Code.OutOfRange), "req-1", log);
    expect(mapped.code).to.equal(Code.OutOfRange);
    expect(mapped.rawMessage).to.equal("past the end");
    const [info] = mapped.findDetails(ErrorInfoSchema);
    expect(info?.reason).to.equal("OUT_OF_RANGE");
    expect(info?.domain).to.equal("agora.dev");
    expect(lines.some((l) => l.includes("without google.rpc details") && l.includes("req-1"))).to.equal(true);
  });

  it("passes an error that has details through unchanged", () => {
    const err = notFound("product", "p-1");
    expect(toConnectError(err, "req-2", log)).to.equal(err);
  });
});
