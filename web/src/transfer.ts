// Uploads and downloads through the file service: the Files page and chat attachments.
import type { MessageInitShape } from "@bufbuild/protobuf";
import { client } from "./api";
import { FileService, type File as StoredFile, type UploadMetadataSchema } from "../../gen/agora/files/v1/files_pb.js";

export const files = client(FileService);
const CHUNK = 256 * 1024;

/**
 * Stores `data` with the unary upload (browsers cannot stream a request): BeginUpload,
 * AppendChunk of 256 KiB at increasing offsets, CommitUpload. `onProgress` gets the bytes sent.
 */
export async function upload(data: Uint8Array, metadata: MessageInitShape<typeof UploadMetadataSchema>, onProgress?: (sent: number) => void): Promise<StoredFile> {
  const { uploadId } = await files.beginUpload({ metadata });
  for (let offset = 0; offset < data.length; offset += CHUNK) {
    await files.appendChunk({ uploadId, offset: BigInt(offset), data: data.subarray(offset, offset + CHUNK) });
    onProgress?.(Math.min(offset + CHUNK, data.length));
  }
  return (await files.commitUpload({ uploadId })).file!;
}

/** Reads a version of a file (0: the latest) from the Download stream and saves it in the browser as `name`. */
export async function download(fileId: string, version: bigint, name: string): Promise<void> {
  const parts: Uint8Array<ArrayBuffer>[] = [];
  for await (const res of files.download({ fileId, version })) {
    if (res.part.case === "chunk") parts.push(new Uint8Array(res.part.value));
  }
  const url = URL.createObjectURL(new Blob(parts));
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  a.click();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}
