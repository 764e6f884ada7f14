package main

import (
	"bufio"
	"os"
	"path/filepath"
	"sync"
)

// Ledger is which orders this service processed, and how often. Each processing is one
// line appended to TESTBED_LEDGER_PATH (one write per line, no buffer), so a killed and
// restarted service still knows its history: the testbed's loss/duplicate audit reads it.
type Ledger struct {
	mu     sync.Mutex
	counts map[string]int
	file   *os.File
}

func OpenLedger(path string) (*Ledger, error) {
	l := &Ledger{counts: map[string]int{}}
	if existing, err := os.Open(path); err == nil { // read back a previous life's lines
		scanner := bufio.NewScanner(existing)
		for scanner.Scan() {
			if id := scanner.Text(); id != "" {
				l.counts[id]++
			}
		}
		existing.Close()
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	file, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	l.file = file
	return l, err
}

// Record notes one processing of an order.
func (l *Ledger) Record(orderID string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.counts[orderID]++
	_, err := l.file.WriteString(orderID + "\n")
	return err
}

// Snapshot is what GET /ledger answers: {"<order_id>": times processed}.
func (l *Ledger) Snapshot() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	copied := make(map[string]int, len(l.counts))
	for id, n := range l.counts {
		copied[id] = n
	}
	return copied
}
