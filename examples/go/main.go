// A Go client of Agora, generated from the same protos as the server
// (bash scripts/generate-clients.sh writes ./gen). It signs in, manages a
// product from creation to deletion, and has two users talk over two
// bidirectional Chat streams.
//
//	go run . -server http://localhost:8080 -admin-password '...'
//
// Settings: -server (AGORA_SERVER, default http://localhost:8080), -admin
// (AGORA_ADMIN_USERNAME, default admin), -admin-password (AGORA_ADMIN_PASSWORD),
// -protocol grpc|grpcweb|connect (default grpc). Every step prints one "ok"
// line; the first unexpected result prints "FAILED: ..." and exits 1.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	chatv1 "agora.example/client/gen/agora/chat/v1"
	"agora.example/client/gen/agora/chat/v1/chatv1connect"
	identityv1 "agora.example/client/gen/agora/identity/v1"
	"agora.example/client/gen/agora/identity/v1/identityv1connect"
	inventoryv1 "agora.example/client/gen/agora/inventory/v1"
	"agora.example/client/gen/agora/inventory/v1/inventoryv1connect"
	rpcpb "agora.example/client/gen/google/rpc"
	typepb "agora.example/client/gen/google/type"
)

func env(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "FAILED: "+format+"\n", args...)
	os.Exit(1)
}

func ok(format string, args ...any) {
	fmt.Printf("ok  "+format+"\n", args...)
}

// must stops the program when a call that should succeed fails.
func must[T any](v T, err error) T {
	if err != nil {
		fail("%v", err)
	}
	return v
}

// expectCode checks that a call failed with the given gRPC code.
func expectCode(err error, code connect.Code, what string) *connect.Error {
	var cerr *connect.Error
	if !errors.As(err, &cerr) || cerr.Code() != code {
		fail("%s: expected %v, got %v", what, code, err)
	}
	return cerr
}

// bearer sends `authorization: Bearer <token>` on every call, unary or streaming.
type bearer string

// It also sends a unary call's request_id as the idempotency-key header: the gateway
// re-sends a hung or failed write only when the call carries it (docs/gateway.md).
func (b bearer) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		req.Header().Set("Authorization", "Bearer "+string(b))
		if keyed, ok := req.Any().(interface{ GetRequestId() string }); ok && keyed.GetRequestId() != "" {
			req.Header().Set("Idempotency-Key", keyed.GetRequestId())
		}
		return next(ctx, req)
	}
}

func (b bearer) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		conn.RequestHeader().Set("Authorization", "Bearer "+string(b))
		return conn
	}
}

func (b bearer) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// client holds the generated clients of one signed-in user.
type client struct {
	name   string
	userID string
	inv    inventoryv1connect.InventoryServiceClient
	chat   chatv1connect.ChatServiceClient
}

type config struct {
	server     string
	httpClient *http.Client
	options    []connect.ClientOption
}

func (c config) signIn(ctx context.Context, username, password string) client {
	identity := identityv1connect.NewIdentityServiceClient(c.httpClient, c.server, c.options...)
	res, err := identity.Login(ctx, connect.NewRequest(&identityv1.LoginRequest{Username: username, Password: password}))
	if err != nil {
		fail("login as %s: %v", username, err)
	}
	token := res.Msg.GetTokens().GetAccessToken()
	options := append([]connect.ClientOption{connect.WithInterceptors(bearer(token))}, c.options...)
	// The token works: GetMe answers with the same user.
	me := must(identityv1connect.NewIdentityServiceClient(c.httpClient, c.server, options...).GetMe(ctx, connect.NewRequest(&identityv1.GetMeRequest{})))
	if me.Msg.GetUser().GetUsername() != username {
		fail("GetMe returned %q, expected %q", me.Msg.GetUser().GetUsername(), username)
	}
	return client{
		name:   username,
		userID: me.Msg.GetUser().GetId(),
		inv:    inventoryv1connect.NewInventoryServiceClient(c.httpClient, c.server, options...),
		chat:   chatv1connect.NewChatServiceClient(c.httpClient, c.server, options...),
	}
}

func (c config) register(ctx context.Context, username, password string) client {
	identity := identityv1connect.NewIdentityServiceClient(c.httpClient, c.server, c.options...)
	_, err := identity.Register(ctx, connect.NewRequest(&identityv1.RegisterRequest{
		Username: username, Password: password, DisplayName: username, Email: username + "@example.com",
	}))
	if err != nil {
		fail("register %s: %v", username, err)
	}
	return c.signIn(ctx, username, password)
}

func main() {
	server := flag.String("server", env("AGORA_SERVER", "http://localhost:8080"), "Agora (or its gateway) base URL")
	adminName := flag.String("admin", env("AGORA_ADMIN_USERNAME", "admin"), "an administrator's username")
	adminPassword := flag.String("admin-password", os.Getenv("AGORA_ADMIN_PASSWORD"), "that administrator's password")
	protocol := flag.String("protocol", "grpc", "grpc, grpcweb or connect")
	flag.Parse()
	if *adminPassword == "" {
		fail("an administrator's password is needed: -admin-password or AGORA_ADMIN_PASSWORD")
	}

	// HTTP/2 without TLS (h2c) for http:// addresses: gRPC and bidirectional streams need HTTP/2.
	transport := &http.Transport{Protocols: new(http.Protocols)}
	transport.Protocols.SetUnencryptedHTTP2(true)
	transport.Protocols.SetHTTP2(true)
	transport.Protocols.SetHTTP1(strings.HasPrefix(*server, "https://"))
	cfg := config{server: strings.TrimSuffix(*server, "/"), httpClient: &http.Client{Transport: transport}}
	switch *protocol {
	case "grpc":
		cfg.options = []connect.ClientOption{connect.WithGRPC()}
	case "grpcweb":
		cfg.options = []connect.ClientOption{connect.WithGRPCWeb()}
	case "connect":
	default:
		fail("unknown protocol %q", *protocol)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	suffix := randomHex(4)

	admin := cfg.signIn(ctx, *adminName, *adminPassword)
	ok("identity: signed in as %s over %s at %s", admin.name, *protocol, cfg.server)
	alice := cfg.register(ctx, "alice-"+suffix, "alice's long passphrase "+suffix)
	bob := cfg.register(ctx, "bob-"+suffix, "bob's long passphrase "+suffix)
	ok("identity: registered and signed in %s and %s", alice.name, bob.name)

	inventory(ctx, admin, alice, suffix)
	chat(ctx, alice, bob, suffix)
	fmt.Println("go example: all checks passed")
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		fail("random: %v", err)
	}
	return hex.EncodeToString(b)
}

func inventory(ctx context.Context, admin, user client, suffix string) {
	name := "Go example stapler " + suffix
	create := &inventoryv1.CreateProductRequest{
		Product: &inventoryv1.Product{
			Name:              name,
			Description:       "created by examples/go",
			Category:          inventoryv1.Category_CATEGORY_OFFICE,
			Quantity:          10,
			UnitPrice:         &typepb.Money{CurrencyCode: "EUR", Units: 12, Nanos: 500_000_000},
			LowStockThreshold: 3,
		},
		RequestId: "go-example-create-" + suffix,
	}
	product := must(admin.inv.CreateProduct(ctx, connect.NewRequest(create))).Msg.GetProduct()
	again := must(admin.inv.CreateProduct(ctx, connect.NewRequest(create))).Msg.GetProduct()
	if again.GetId() != product.GetId() {
		fail("a repeated CreateProduct with the same request_id made a second product (%s, %s)", product.GetId(), again.GetId())
	}
	ok("inventory: created %q (%s); a retry with the same request_id returned the same product", name, product.GetId())

	read := must(user.inv.GetProduct(ctx, connect.NewRequest(&inventoryv1.GetProductRequest{Id: product.GetId()}))).Msg.GetProduct()
	if read.GetName() != name || read.GetQuantity() != 10 {
		fail("GetProduct as %s returned %v", user.name, read)
	}
	_, err := user.inv.CreateProduct(ctx, connect.NewRequest(&inventoryv1.CreateProductRequest{Product: create.Product}))
	expectCode(err, connect.CodePermissionDenied, "CreateProduct by an ordinary user")
	ok("inventory: %s can read the product but not create one (permission_denied)", user.name)

	updated := must(admin.inv.UpdateProduct(ctx, connect.NewRequest(&inventoryv1.UpdateProductRequest{
		Id:         product.GetId(),
		Product:    &inventoryv1.Product{Description: "repriced by examples/go", UnitPrice: &typepb.Money{CurrencyCode: "EUR", Units: 9, Nanos: 990_000_000}},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"description", "unit_price"}},
		Etag:       product.GetEtag(),
	}))).Msg.GetProduct()
	if updated.GetUnitPrice().GetUnits() != 9 || updated.GetDescription() != "repriced by examples/go" || updated.GetEtag() == product.GetEtag() {
		fail("UpdateProduct returned %v", updated)
	}
	_, err = admin.inv.UpdateProduct(ctx, connect.NewRequest(&inventoryv1.UpdateProductRequest{
		Id:         product.GetId(),
		Product:    &inventoryv1.Product{Description: "lost update"},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"description"}},
		Etag:       product.GetEtag(),
	}))
	expectCode(err, connect.CodeAborted, "UpdateProduct with a stale etag")
	ok("inventory: updated description and price with the etag; the stale etag was refused (aborted)")

	found := 0
	listed := 0
	for token := ""; ; {
		page := must(user.inv.ListProducts(ctx, connect.NewRequest(&inventoryv1.ListProductsRequest{
			Category: inventoryv1.Category_CATEGORY_OFFICE, OrderBy: inventoryv1.ProductOrder_PRODUCT_ORDER_NAME, PageSize: 50, PageToken: token,
		}))).Msg
		for _, p := range page.GetProducts() {
			listed++
			if p.GetId() == product.GetId() {
				found++
			}
		}
		if token = page.GetNextPageToken(); token == "" {
			break
		}
	}
	if found != 1 {
		fail("ListProducts (office) showed our product %d times", found)
	}
	ok("inventory: listed %d office products page by page, ours once", listed)

	adjust := &inventoryv1.AdjustStockRequest{ProductId: product.GetId(), Delta: -8, Reason: "sale", RequestId: "go-example-sale-" + suffix}
	sold := must(admin.inv.AdjustStock(ctx, connect.NewRequest(adjust))).Msg
	if sold.GetProduct().GetQuantity() != 2 || !sold.GetProduct().GetLowStock() || sold.GetReplayed() {
		fail("AdjustStock -8 returned %v", sold)
	}
	replay := must(admin.inv.AdjustStock(ctx, connect.NewRequest(adjust))).Msg
	if replay.GetProduct().GetQuantity() != 2 || !replay.GetReplayed() {
		fail("a repeated AdjustStock was applied again: %v", replay)
	}
	_, err = admin.inv.AdjustStock(ctx, connect.NewRequest(&inventoryv1.AdjustStockRequest{
		ProductId: product.GetId(), Delta: -5, Reason: "sale", RequestId: "go-example-oversell-" + suffix,
	}))
	cerr := expectCode(err, connect.CodeFailedPrecondition, "AdjustStock below zero")
	available := ""
	for _, detail := range cerr.Details() {
		if value, derr := detail.Value(); derr == nil {
			if info, isInfo := value.(*rpcpb.ErrorInfo); isInfo {
				available = info.GetMetadata()["available_quantity"]
			}
		}
	}
	if available != "2" {
		fail("the ErrorInfo detail of the refused adjustment says available_quantity %q, expected 2", available)
	}
	movements := must(admin.inv.ListStockMovements(ctx, connect.NewRequest(&inventoryv1.ListStockMovementsRequest{ProductId: product.GetId()}))).Msg.GetMovements()
	if len(movements) != 1 || movements[0].GetDelta() != -8 || movements[0].GetQuantityAfter() != 2 {
		fail("ListStockMovements returned %v", movements)
	}
	ok("inventory: sold 8 (now 2, low stock), the retry was not applied twice, overselling was refused with available_quantity=2")

	current := must(admin.inv.GetProduct(ctx, connect.NewRequest(&inventoryv1.GetProductRequest{Id: product.GetId()}))).Msg.GetProduct()
	must(admin.inv.DeleteProduct(ctx, connect.NewRequest(&inventoryv1.DeleteProductRequest{Id: product.GetId(), Etag: current.GetEtag()})))
	_, err = user.inv.GetProduct(ctx, connect.NewRequest(&inventoryv1.GetProductRequest{Id: product.GetId()}))
	expectCode(err, connect.CodeNotFound, "GetProduct after DeleteProduct")
	ok("inventory: deleted the product; reading it now gives not_found")
}

// chatStream is one user's open Chat stream with its events arriving on a channel.
type chatStream struct {
	owner  client
	stream *connect.BidiStreamForClient[chatv1.ChatRequest, chatv1.ChatResponse]
	events chan *chatv1.ChatResponse
	done   chan error
}

func openChat(ctx context.Context, c client) *chatStream {
	s := &chatStream{owner: c, stream: c.chat.Chat(ctx), events: make(chan *chatv1.ChatResponse, 100), done: make(chan error, 1)}
	// Send the headers now: the server answers the opening with a heartbeat.
	if err := s.stream.Send(nil); err != nil {
		fail("open a Chat stream for %s: %v", c.name, err)
	}
	go func() {
		for {
			msg, err := s.stream.Receive()
			if err != nil {
				s.done <- err
				close(s.events)
				return
			}
			s.events <- msg
		}
	}()
	return s
}

func (s *chatStream) send(req *chatv1.ChatRequest) {
	if err := s.stream.Send(req); err != nil {
		fail("send on %s's Chat stream: %v", s.owner.name, err)
	}
}

// await returns the first event that matches, failing after a timeout or on an error event.
func (s *chatStream) await(what string, match func(*chatv1.ChatResponse) bool) *chatv1.ChatResponse {
	timeout := time.After(15 * time.Second)
	for {
		select {
		case msg, open := <-s.events:
			if !open {
				fail("%s's Chat stream ended while waiting for %s: %v", s.owner.name, what, <-s.done)
			}
			if e := msg.GetError(); e != nil {
				fail("%s's Chat stream answered %q with an error: %s %s", s.owner.name, msg.GetRef(), e.GetCode(), e.GetMessage())
			}
			if match(msg) {
				return msg
			}
		case <-timeout:
			fail("%s's Chat stream: timed out waiting for %s", s.owner.name, what)
		}
	}
}

func (s *chatStream) close() {
	if err := s.stream.CloseRequest(); err != nil {
		fail("close %s's Chat stream: %v", s.owner.name, err)
	}
	// The server ends the stream once the client has finished sending.
	select {
	case err := <-s.done:
		if err != nil && !errors.Is(err, io.EOF) {
			fail("%s's Chat stream ended with %v", s.owner.name, err)
		}
	case <-time.After(15 * time.Second):
		fail("%s's Chat stream did not end after the client closed it", s.owner.name)
	}
	_ = s.stream.CloseResponse()
}

func chat(ctx context.Context, alice, bob client, suffix string) {
	room := must(alice.chat.CreateRoom(ctx, connect.NewRequest(&chatv1.CreateRoomRequest{
		Name: "go-example-" + suffix, Visibility: chatv1.RoomVisibility_ROOM_VISIBILITY_PUBLIC,
	}))).Msg.GetRoom()
	ok("chat: %s created the public room %q", alice.name, room.GetName())

	streams := []*chatStream{openChat(ctx, alice), openChat(ctx, bob)}
	for _, s := range streams {
		s.await("the stream to open", func(m *chatv1.ChatResponse) bool { return m.GetHeartbeat() != nil })
		s.send(&chatv1.ChatRequest{Ref: "join", Command: &chatv1.ChatRequest_Join{Join: &chatv1.Cursor{ConversationId: room.GetId()}}})
		joined := s.await("the join to take effect", func(m *chatv1.ChatResponse) bool { return m.GetRef() == "join" && m.GetJoined() != nil })
		if joined.GetJoined().GetId() != room.GetId() {
			fail("%s joined room %s, expected %s", s.owner.name, joined.GetJoined().GetId(), room.GetId())
		}
	}
	ok("chat: %s and %s each opened a bidirectional Chat stream and joined the room", alice.name, bob.name)

	talk := func(from, to *chatStream, text string) {
		ref := "say-" + from.owner.name
		from.send(&chatv1.ChatRequest{Ref: ref, Command: &chatv1.ChatRequest_Send{Send: &chatv1.Outgoing{
			To:       &chatv1.Destination{Target: &chatv1.Destination_RoomId{RoomId: room.GetId()}},
			ClientId: ref + "-" + suffix,
			Text:     text,
		}}})
		sent := from.await("the send to be stored", func(m *chatv1.ChatResponse) bool { return m.GetRef() == ref && m.GetSent() != nil }).GetSent()
		got := to.await("the message of "+from.owner.name, func(m *chatv1.ChatResponse) bool {
			msg := m.GetMessage()
			return msg != nil && msg.GetKind() == chatv1.MessageKind_MESSAGE_KIND_TEXT && msg.GetSenderId() == from.owner.userID
		}).GetMessage()
		if got.GetText() != text || got.GetSequence() != sent.GetSequence() || got.GetConversationId() != room.GetId() {
			fail("%s received %v, expected %q with sequence %d", to.owner.name, got, text, sent.GetSequence())
		}
		ok("chat: %s saw %s's message #%d %q", to.owner.name, from.owner.name, got.GetSequence(), got.GetText())
	}
	talk(streams[0], streams[1], "hello "+bob.name+", this is "+alice.name)
	talk(streams[1], streams[0], "hi "+alice.name+", "+bob.name+" here")

	for _, s := range streams {
		s.close()
	}
	ok("chat: both streams closed cleanly")
}
