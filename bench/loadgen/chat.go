package main

// chat-subscribers: N Subscribe streams over native gRPC, spread over HTTP/2
// connections, whose texts go to stdout as they arrive (bench/scenarios/chat.ts).
//
// stdin, one JSON line: {"url": "http://127.0.0.1:PORT", "tokens": [...],
// "count": N, "perConnection": 100}; stream i authenticates with
// tokens[i % len(tokens)]. stdout: "m <stream> <received at, Unix ms> <text>"
// per message and "e <stream> <error>" per stream that fails. Closing stdin
// ends every stream.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	chatv1 "agora.example/client/gen/agora/chat/v1"
	"agora.example/client/gen/agora/chat/v1/chatv1connect"
)

type chatConfig struct {
	URL           string   `json:"url"`
	Tokens        []string `json:"tokens"`
	Count         int      `json:"count"`
	PerConnection int      `json:"perConnection"`
}

func chatSubscribers(ctx context.Context, in *bufio.Reader) error {
	var cfg chatConfig
	if err := readConfig(in, &cfg); err != nil || cfg.Count <= 0 || len(cfg.Tokens) == 0 || cfg.PerConnection <= 0 {
		return fmt.Errorf("expected one JSON line with url, tokens, count and perConnection (%v)", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		// EOF on stdin: the bench is done with the streams.
		_, _ = in.ReadBytes(0)
		cancel()
	}()

	out := newOutput()
	var wg sync.WaitGroup
	var client chatv1connect.ChatServiceClient
	for i := 0; i < cfg.Count; i++ {
		if i%cfg.PerConnection == 0 {
			// One client per group of streams: its own HTTP/2 connection.
			client = chatv1connect.NewChatServiceClient(h2cClient(), cfg.URL, connect.WithGRPC())
		}
		wg.Add(1)
		go func(i int, client chatv1connect.ChatServiceClient) {
			defer wg.Done()
			follow(ctx, client, cfg.Tokens[i%len(cfg.Tokens)], i, out)
		}(i, client)
	}
	wg.Wait()
	out.close()
	return nil
}

func follow(ctx context.Context, client chatv1connect.ChatServiceClient, token string, i int, out *output) {
	req := connect.NewRequest(&chatv1.SubscribeRequest{})
	req.Header().Set("Authorization", "Bearer "+token)
	stream, err := client.Subscribe(ctx, req)
	if err == nil {
		for stream.Receive() {
			if m := stream.Msg().GetEvent().GetMessage(); m != nil {
				out.message(i, time.Now(), m.GetText())
			}
		}
		err = stream.Err()
		_ = stream.Close()
	}
	if err != nil && ctx.Err() == nil && !errors.Is(err, context.Canceled) {
		out.line(fmt.Sprintf("e %d %s", i, strings.ReplaceAll(err.Error(), "\n", " ")))
	}
}

// output is stdout, buffered and flushed every few milliseconds by one goroutine.
type output struct {
	mu   sync.Mutex
	w    *bufio.Writer
	done chan struct{}
}

func newOutput() *output {
	o := &output{w: bufio.NewWriterSize(os.Stdout, 1<<16), done: make(chan struct{})}
	go func() {
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-o.done:
				return
			case <-tick.C:
				o.mu.Lock()
				_ = o.w.Flush()
				o.mu.Unlock()
			}
		}
	}()
	return o
}

func (o *output) message(stream int, at time.Time, text string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	buf := o.w.AvailableBuffer()
	buf = append(buf, "m "...)
	buf = strconv.AppendInt(buf, int64(stream), 10)
	buf = append(buf, ' ')
	buf = strconv.AppendFloat(buf, float64(at.UnixMicro())/1000, 'f', 3, 64)
	buf = append(buf, ' ')
	buf = append(buf, strings.ReplaceAll(text, "\n", " ")...)
	buf = append(buf, '\n')
	_, _ = o.w.Write(buf)
}

func (o *output) line(s string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	_, _ = o.w.WriteString(s + "\n")
	_ = o.w.Flush()
}

func (o *output) close() {
	close(o.done)
	o.mu.Lock()
	defer o.mu.Unlock()
	_ = o.w.Flush()
}
