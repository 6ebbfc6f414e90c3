package main

// files: uploads and downloads (bench/scenarios/files.ts), one at a time.
//
// stdin: one JSON line {"url": "...", "token": "..."}, then one command per
// line, each answered with one JSON line on stdout:
//
//	upload <path> <MiB>   1 MiB chunks, unique per run and chunk (nothing is
//	                      deduplicated), hashed as sent: {"fileId", "sha256",
//	                      "size", "storedSha256"}
//	download <file id>    hashed as received: {"bytes", "sha256"}
//
// A failure answers {"error": "..."}.

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"

	"connectrpc.com/connect"

	filesv1 "agora.example/client/gen/agora/files/v1"
	"agora.example/client/gen/agora/files/v1/filesv1connect"
)

const mib = 1 << 20

type filesConfig struct {
	URL   string `json:"url"`
	Token string `json:"token"`
}

func files(ctx context.Context, in *bufio.Reader) error {
	var cfg filesConfig
	if err := readConfig(in, &cfg); err != nil || cfg.URL == "" {
		return fmt.Errorf("expected one JSON line with url and token (%v)", err)
	}
	client := filesv1connect.NewFileServiceClient(h2cClient(), cfg.URL, connect.WithGRPC())
	base := make([]byte, mib)
	_, _ = rand.Read(base)
	answer := json.NewEncoder(os.Stdout)
	for {
		line, err := in.ReadString('\n')
		if err != nil {
			return nil
		}
		var result any
		switch f := strings.Fields(line); {
		case len(f) == 3 && f[0] == "upload":
			n, _ := strconv.Atoi(f[2])
			result, err = upload(ctx, client, cfg.Token, f[1], n, base)
		case len(f) == 2 && f[0] == "download":
			result, err = download(ctx, client, cfg.Token, f[1])
		default:
			err = fmt.Errorf("unknown command %q", strings.TrimSpace(line))
		}
		if err != nil {
			result = map[string]string{"error": err.Error()}
		}
		if err := answer.Encode(result); err != nil {
			return err
		}
	}
}

func upload(ctx context.Context, client filesv1connect.FileServiceClient, token, path string, n int, base []byte) (any, error) {
	stream := client.Upload(ctx)
	stream.RequestHeader().Set("Authorization", "Bearer "+token)
	metadata := &filesv1.UploadMetadata{Target: &filesv1.UploadMetadata_Path{Path: path}, Comment: "bench"}
	if err := stream.Send(&filesv1.UploadRequest{Part: &filesv1.UploadRequest_Metadata{Metadata: metadata}}); err != nil {
		return nil, err
	}
	sent := sha256.New()
	for i := 0; i < n; i++ {
		chunk := make([]byte, mib)
		copy(chunk, base)
		copy(chunk, fmt.Sprintf("%s:%d:", path, i))
		sent.Write(chunk)
		if err := stream.Send(&filesv1.UploadRequest{Part: &filesv1.UploadRequest_Chunk{Chunk: chunk}}); err != nil {
			break // the answer says why
		}
	}
	res, err := stream.CloseAndReceive()
	if err != nil {
		return nil, err
	}
	v := res.Msg.GetVersion()
	return map[string]any{"fileId": res.Msg.GetFile().GetId(), "sha256": hex.EncodeToString(sent.Sum(nil)), "size": v.GetSize(), "storedSha256": v.GetSha256()}, nil
}

func download(ctx context.Context, client filesv1connect.FileServiceClient, token, fileID string) (any, error) {
	req := connect.NewRequest(&filesv1.DownloadRequest{FileId: fileID})
	req.Header().Set("Authorization", "Bearer "+token)
	stream, err := client.Download(ctx, req)
	if err != nil {
		return nil, err
	}
	defer stream.Close()
	received := sha256.New()
	bytes := 0
	for stream.Receive() {
		if chunk := stream.Msg().GetChunk(); chunk != nil {
			bytes += len(chunk)
			received.Write(chunk)
		}
	}
	if err := stream.Err(); err != nil {
		return nil, err
	}
	return map[string]any{"bytes": bytes, "sha256": hex.EncodeToString(received.Sum(nil))}, nil
}
