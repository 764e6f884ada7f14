package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"time"
)

// Stage is a hop of the sync chain: do its part of the order, record it, then call the
// next hop (through its Toxiproxy proxy) and wait for the answer.
type Stage struct {
	config Config
	ledger *Ledger
	client *http.Client
}

func NewStage(config Config, ledger *Ledger) *Stage {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConnsPerHost = 64 // keep connections to the one downstream under load
	// Timeout bounds the whole call: connect, request, headers and the body read.
	return &Stage{config, ledger, &http.Client{Timeout: config.Timeout, Transport: transport}}
}

// PlaceOrder is POST /orders: 400 on a bad body, 200 with the path on success, 504 when
// the downstream did not answer in time, 502 when it answered with a failure.
func (s *Stage) PlaceOrder(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	var order struct {
		OrderID string `json:"order_id"`
	}
	if err != nil || json.Unmarshal(body, &order) != nil || order.OrderID == "" {
		reply(w, http.StatusBadRequest, map[string]string{"error": "a JSON body with a string order_id, please"})
		return
	}
	time.Sleep(s.config.Work)
	// Recorded before the downstream call, as the testbed's stages do: an order that
	// fails further down was still processed here.
	if err := s.ledger.Record(order.OrderID); err != nil {
		log.Printf("ledger: %v", err)
		reply(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		return
	}
	path := []any{s.config.Service}
	if s.config.Downstream != "" {
		rest, status, err := s.call(body, r.Header.Get("X-Request-Deadline"))
		if err != nil {
			message := fmt.Sprintf("%s: order %s: %v", s.config.Service, order.OrderID, err)
			log.Print(message)
			reply(w, status, map[string]string{"error": message})
			return
		}
		path = append(path, rest...)
	}
	reply(w, http.StatusOK, map[string]any{"order_id": order.OrderID, "path": path})
}

// call POSTs the same body to the downstream's /orders and returns its "path".
func (s *Stage) call(body []byte, deadline string) ([]any, int, error) {
	request, err := http.NewRequest(http.MethodPost, s.config.Downstream+"/orders", bytes.NewReader(body))
	if err != nil {
		return nil, http.StatusInternalServerError, err
	}
	request.Header.Set("Content-Type", "application/json")
	if deadline != "" {
		request.Header.Set("X-Request-Deadline", deadline) // the caller's deadline travels on
	}
	response, err := s.client.Do(request)
	if err != nil { // refused, reset, or no answer within the timeout
		return nil, http.StatusGatewayTimeout, fmt.Errorf("downstream did not answer: %w", err)
	}
	defer response.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(response.Body, 1<<20))
	if err != nil { // cut off, or the timeout struck while the body came in
		return nil, http.StatusGatewayTimeout, fmt.Errorf("downstream's answer broke off: %w", err)
	}
	if response.StatusCode < 200 || response.StatusCode > 299 {
		return nil, http.StatusBadGateway, fmt.Errorf("downstream answered %d: %s",
			response.StatusCode, bytes.TrimSpace(raw))
	}
	var answer struct {
		Path []any `json:"path"`
	}
	if err := json.Unmarshal(raw, &answer); err != nil {
		return nil, http.StatusBadGateway, fmt.Errorf("downstream's answer is not JSON: %w", err)
	}
	return answer.Path, 0, nil
}
