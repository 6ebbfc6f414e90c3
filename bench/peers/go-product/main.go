// The Go peer of the GetProduct table (`go peer max`): connect-go serving
// agora.inventory.v1.InventoryService/GetProduct over gRPC (HTTP/2 without TLS)
// with pgx, answering with the SQL Agora runs (one prepared SELECT by primary
// key on inventory.products, a pool as large as Agora's) on the same PostgreSQL
// and the same data, as bench/peers/grpcjs-product.ts does in Node. No token
// check, validation, log or metrics: the limit of a Go server on this call.
// Usage: go-product -db <database url> -addr 127.0.0.1:0 (prints "listening <port>").
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"time"

	inventoryv1 "agora.example/client/gen/agora/inventory/v1"
	"agora.example/client/gen/agora/inventory/v1/inventoryv1connect"
	typepb "agora.example/client/gen/google/type"
	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/protobuf/types/known/timestamppb"
)

const getProduct = `select id::text, name, description, category, quantity, price_units, price_nanos, currency_code,
	low_stock_threshold, version, created_at, updated_at from inventory.products where id = $1 limit 1`

var uuidPattern = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

type server struct {
	inventoryv1connect.UnimplementedInventoryServiceHandler
	pool *pgxpool.Pool
}

func (s *server) GetProduct(ctx context.Context, req *connect.Request[inventoryv1.GetProductRequest]) (*connect.Response[inventoryv1.GetProductResponse], error) {
	id := req.Msg.GetId()
	if !uuidPattern.MatchString(id) {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("id must be a UUID"))
	}
	var (
		p                                 inventoryv1.Product
		category, quantity, nanos, low, v int32
		units                             int64
		currency                          string
		created, updated                  time.Time
	)
	err := s.pool.QueryRow(ctx, getProduct, id).Scan(&p.Id, &p.Name, &p.Description, &category, &quantity, &units, &nanos, &currency, &low, &v, &created, &updated)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("product %s not found", id))
	}
	if err != nil {
		return nil, connect.NewError(connect.CodeUnavailable, err)
	}
	p.Category = inventoryv1.Category(category)
	p.Quantity = quantity
	p.UnitPrice = &typepb.Money{CurrencyCode: currency, Units: units, Nanos: nanos}
	p.LowStockThreshold = low
	p.LowStock = quantity <= low
	p.Etag = strconv.Quote(strconv.Itoa(int(v)))
	p.CreateTime = timestamppb.New(created)
	p.UpdateTime = timestamppb.New(updated)
	return connect.NewResponse(&inventoryv1.GetProductResponse{Product: &p}), nil
}

func main() {
	db := flag.String("db", "", "PostgreSQL URL")
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	flag.Parse()
	config, err := pgxpool.ParseConfig(*db)
	if err != nil {
		log.Fatalf("database url: %v", err)
	}
	config.MaxConns = 10
	pool, err := pgxpool.NewWithConfig(context.Background(), config)
	if err != nil {
		log.Fatalf("database: %v", err)
	}
	lis, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatalf("listen: %v", err)
	}
	mux := http.NewServeMux()
	mux.Handle(inventoryv1connect.NewInventoryServiceHandler(&server{pool: pool}))
	protocols := new(http.Protocols)
	protocols.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: mux, Protocols: protocols}
	fmt.Printf("listening %d\n", lis.Addr().(*net.TCPAddr).Port)
	if err := srv.Serve(lis); err != nil {
		log.Fatalf("serve: %v", err)
	}
}
