// The bench's Go load generators (bench/scenarios/): clients that cost the
// load-generator CPU far less than the server they measure, so that the rows
// show Agora rather than the client. A Node client reading 1,000 chat streams
// spent some 80 µs of CPU per message, and one downloading a file 6 ms per MiB.
//
//	agora-bench-loadgen chat-subscribers   (chat.go)
//	agora-bench-loadgen files              (files.go)
//	agora-bench-loadgen unary              (unary.go)
//
// Each reads its settings as one JSON line on stdin and answers on stdout;
// SIGTERM or SIGINT ends it.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	commands := map[string]func(context.Context, *bufio.Reader) error{
		"chat-subscribers": chatSubscribers,
		"files":            files,
		"unary":            unary,
	}
	if len(os.Args) != 2 || commands[os.Args[1]] == nil {
		fmt.Fprintln(os.Stderr, "usage: agora-bench-loadgen chat-subscribers|files|unary (settings as one JSON line on stdin)")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := commands[os.Args[1]](ctx, bufio.NewReader(os.Stdin)); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func readConfig(in *bufio.Reader, into any) error {
	line, err := in.ReadBytes('\n')
	if err != nil {
		return err
	}
	return json.Unmarshal(line, into)
}

// h2cClient is a client of its own HTTP/2 connection without TLS (h2c), with
// the receive windows of a bulk client: 4 MiB per stream, 16 MiB per connection.
func h2cClient() *http.Client {
	transport := &http.Transport{Protocols: new(http.Protocols)}
	transport.Protocols.SetUnencryptedHTTP2(true)
	transport.HTTP2 = &http.HTTP2Config{MaxReceiveBufferPerStream: 4 << 20, MaxReceiveBufferPerConnection: 16 << 20}
	return &http.Client{Transport: transport}
}
