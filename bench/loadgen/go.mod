module agora.local/bench/loadgen

go 1.24.0

require (
	agora.example/client v0.0.0
	connectrpc.com/connect v1.19.2
)

require google.golang.org/protobuf v1.36.12 // indirect

replace agora.example/client => ../../examples/go
