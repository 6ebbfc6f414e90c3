package main

// unary: grpc.health.v1.Health/Check (an empty request) in closed loops over
// the Connect protocol or gRPC-Web, which ghz does not speak
// (bench/scenarios/baselines.ts).
//
// stdin, one JSON line: {"url": "http://127.0.0.1:PORT", "protocol":
// "connect" | "grpc-web", "workers": 50, "connections": 5, "seconds": 5}. The
// workers share `connections` HTTP/2 connections (h2c), round robin. stdout,
// once the time is up, one JSON line: {"ok", "errors", "seconds", "p50Ms",
// "p90Ms", "p99Ms", "meanMs", "cpuMs" (this program's own CPU time),
// "errorSample"}.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/emptypb"
)

type unaryConfig struct {
	URL         string  `json:"url"`
	Protocol    string  `json:"protocol"`
	Workers     int     `json:"workers"`
	Connections int     `json:"connections"`
	Seconds     float64 `json:"seconds"`
}

type unaryResult struct {
	OK          int            `json:"ok"`
	Errors      int            `json:"errors"`
	Seconds     float64        `json:"seconds"`
	P50Ms       float64        `json:"p50Ms"`
	P90Ms       float64        `json:"p90Ms"`
	P99Ms       float64        `json:"p99Ms"`
	MeanMs      float64        `json:"meanMs"`
	CPUMs       float64        `json:"cpuMs"`
	ErrorSample map[string]int `json:"errorSample"`
}

func unary(ctx context.Context, in *bufio.Reader) error {
	var cfg unaryConfig
	if err := readConfig(in, &cfg); err != nil || cfg.Workers <= 0 || cfg.Connections <= 0 || cfg.Seconds <= 0 {
		return fmt.Errorf("expected one JSON line with url, protocol, workers, connections and seconds (%v)", err)
	}
	var options []connect.ClientOption // the Connect protocol is connect-go's default
	switch cfg.Protocol {
	case "connect":
	case "grpc-web":
		options = append(options, connect.WithGRPCWeb())
	default:
		return fmt.Errorf("unknown protocol %q: connect or grpc-web", cfg.Protocol)
	}
	// The request is empty and the answer is not read, so Empty stands in for both messages.
	clients := make([]*connect.Client[emptypb.Empty, emptypb.Empty], cfg.Connections)
	for i := range clients {
		clients[i] = connect.NewClient[emptypb.Empty, emptypb.Empty](h2cClient(), cfg.URL+"/grpc.health.v1.Health/Check", options...)
	}
	deadline := time.Now().Add(time.Duration(cfg.Seconds * float64(time.Second)))
	runCtx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()

	var mu sync.Mutex
	var latencies []time.Duration
	result := unaryResult{ErrorSample: map[string]int{}}
	var wg sync.WaitGroup
	started := time.Now()
	for w := 0; w < cfg.Workers; w++ {
		wg.Add(1)
		go func(client *connect.Client[emptypb.Empty, emptypb.Empty]) {
			defer wg.Done()
			var mine []time.Duration
			failed := map[string]int{}
			for runCtx.Err() == nil {
				t := time.Now()
				_, err := client.CallUnary(runCtx, connect.NewRequest(&emptypb.Empty{}))
				switch {
				case err == nil:
					mine = append(mine, time.Since(t))
				case runCtx.Err() == nil: // not cut off because the time ran out
					failed[err.Error()]++
				}
			}
			mu.Lock()
			latencies = append(latencies, mine...)
			for k, v := range failed {
				result.ErrorSample[k] += v
				result.Errors += v
			}
			mu.Unlock()
		}(clients[w%len(clients)])
	}
	wg.Wait()
	result.Seconds = time.Since(started).Seconds()
	result.OK = len(latencies)
	if result.OK > 0 {
		slices.Sort(latencies)
		at := func(q float64) float64 { return ms(latencies[min(len(latencies)-1, int(q*float64(len(latencies))))]) }
		result.P50Ms, result.P90Ms, result.P99Ms = at(0.5), at(0.9), at(0.99)
		var sum time.Duration
		for _, l := range latencies {
			sum += l
		}
		result.MeanMs = ms(sum) / float64(len(latencies))
	}
	var usage syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &usage) == nil {
		result.CPUMs = float64(usage.Utime.Nano()+usage.Stime.Nano()) / 1e6
	}
	return json.NewEncoder(os.Stdout).Encode(result)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
