// An own service for the testbed, in Go: an HTTP stage of the sync chain or an AMQP
// consumer of the async pipeline, configured only by the TESTBED_* environment the
// testbed starts it with (the contract: ../own-services.md).
package main

import (
	"context"
	"encoding/json"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

// Config is everything the testbed tells the program, read once at start.
type Config struct {
	Service, Role, Listen, LedgerPath string
	Work                              time.Duration // TESTBED_WORK_MS: simulated work per order
	Downstream                        string        // http_stage: next hop's proxy ("" at the last)
	Timeout                           time.Duration // http_stage: the whole downstream call
	AmqpURL, Exchange, Queue          string        // async_consumer
	Publishes                         string        // async_consumer: "" when it publishes nothing
	Prefetch                          int
}

// need reads a required variable; without it the program exits 2 and says which.
func need(name string) string {
	value := os.Getenv(name)
	if value == "" {
		log.Printf("%s is not set (the testbed sets it: see own-services.md)", name)
		os.Exit(2)
	}
	return value
}

// number reads a required, non-negative number of the given unit.
func number(name string, unit time.Duration) time.Duration {
	value, err := strconv.ParseFloat(need(name), 64)
	if err != nil || value < 0 {
		log.Printf("%s=%q is not a number >= 0", name, os.Getenv(name))
		os.Exit(2)
	}
	return time.Duration(value * float64(unit))
}

func readConfig() Config {
	c := Config{Service: need("TESTBED_SERVICE"), Role: need("TESTBED_ROLE"),
		Listen:     net.JoinHostPort(need("TESTBED_HOST"), need("TESTBED_PORT")),
		LedgerPath: need("TESTBED_LEDGER_PATH"), Work: number("TESTBED_WORK_MS", time.Millisecond)}
	switch c.Role {
	case "http_stage":
		if c.Downstream = os.Getenv("TESTBED_DOWNSTREAM_URL"); c.Downstream != "" {
			c.Timeout = number("TESTBED_TIMEOUT_S", time.Second) // only a call needs it
		}
	case "async_consumer":
		c.AmqpURL, c.Exchange, c.Queue = need("TESTBED_AMQP_URL"), need("TESTBED_EXCHANGE"), need("TESTBED_QUEUE")
		c.Publishes = os.Getenv("TESTBED_PUBLISHES")
		c.Prefetch = int(number("TESTBED_PREFETCH", 1))
	default:
		log.Printf("TESTBED_ROLE=%q: this program is an http_stage or an async_consumer", c.Role)
		os.Exit(2)
	}
	return c
}

func reply(w http.ResponseWriter, status int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(body)
}

func main() {
	log.SetFlags(log.LstdFlags | log.Lmicroseconds | log.Lmsgprefix) // stderr, a line an event
	log.SetPrefix("own-service: ")
	config := readConfig()
	log.SetPrefix("own-service " + config.Service + ": ")
	ledger, err := OpenLedger(config.LedgerPath)
	if err != nil {
		log.Fatalf("cannot open the ledger: %v", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	mux := http.NewServeMux()
	mux.HandleFunc("GET /ledger", func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusOK, map[string]any{"processed": ledger.Snapshot()})
	})
	ready := func() bool { return true } // an http_stage is ready once it listens
	var consumer *Consumer
	if config.Role == "http_stage" {
		mux.HandleFunc("POST /orders", NewStage(config, ledger).PlaceOrder)
	} else {
		consumer = NewConsumer(config, ledger)
		ready = consumer.Consuming // a consumer only while it is connected and consuming
	}
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		if ready() {
			reply(w, http.StatusOK, map[string]string{"status": "ok"})
		} else {
			reply(w, http.StatusServiceUnavailable, map[string]string{"status": "not consuming"})
		}
	})

	listener, err := net.Listen("tcp", config.Listen) // exactly TESTBED_HOST:TESTBED_PORT
	if err != nil {
		log.Fatalf("cannot listen: %v", err)
	}
	server := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- server.Serve(listener) }()
	log.Printf("started: %s on %s, %d order ids in the ledger", config.Role, config.Listen, len(ledger.Snapshot()))
	if consumer != nil {
		go consumer.Run(ctx)
	}

	select {
	case <-ctx.Done(): // SIGTERM: stop consuming and close the connection, then the server
	case err := <-served:
		log.Fatalf("the HTTP server failed: %v", err)
	}
	deadline, cancel := context.WithTimeout(context.Background(), 2500*time.Millisecond)
	defer cancel()
	if consumer != nil {
		select {
		case <-consumer.Done():
		case <-deadline.Done():
		}
	}
	server.Shutdown(deadline) // waits for requests in flight, until the deadline
	log.Printf("stopped")
}
