package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Consumer is a stage of the async pipeline: consume the queue the testbed declared and
// bound (it declares nothing itself), record the order, publish this stage's event and
// wait for the broker's confirm, then ack: at least once. It reconnects by itself: the
// testbed cuts its link through Toxiproxy and stops the broker.
type Consumer struct {
	config    Config
	ledger    *Ledger
	consuming atomic.Bool // what /health reports
	done      chan struct{}
}

func NewConsumer(config Config, ledger *Ledger) *Consumer {
	return &Consumer{config: config, ledger: ledger, done: make(chan struct{})}
}

func (c *Consumer) Consuming() bool       { return c.consuming.Load() }
func (c *Consumer) Done() <-chan struct{} { return c.done }

// Run keeps a session up until ctx ends (SIGTERM). After a failed dial or a dropped
// session it waits 50 ms, doubling up to 500 ms, and tries again, forever.
func (c *Consumer) Run(ctx context.Context) {
	defer close(c.done)
	const first, most = 50 * time.Millisecond, 500 * time.Millisecond
	backoff := first
	for {
		consumed, err := c.session(ctx)
		c.consuming.Store(false)
		if ctx.Err() != nil {
			return
		}
		if consumed {
			backoff = first // it was up: a new outage starts the backoff again
		}
		log.Printf("AMQP: %v; reconnecting in %v", err, backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, most)
	}
}

// session is one connection: dial, a confirm-mode channel, basic.qos, basic.consume, then
// deliveries until the connection or the channel closes. It tells whether it consumed.
func (c *Consumer) session(ctx context.Context) (bool, error) {
	connection, err := amqp.DialConfig(c.config.AmqpURL, amqp.Config{
		Heartbeat: 10 * time.Second,
		Dial:      amqp.DefaultDial(5 * time.Second), // connect and handshake within 5 s
	})
	if err != nil {
		return false, fmt.Errorf("dial: %w", err)
	}
	defer func() { connection.CloseDeadline(time.Now().Add(time.Second)) }() // unacked ones go back
	channel, err := connection.Channel()
	if err != nil {
		return false, err
	}
	if err := channel.Confirm(false); err != nil {
		return false, err
	}
	if err := channel.Qos(c.config.Prefetch, 0, false); err != nil {
		return false, err
	}
	// A mandatory publish nobody is bound to comes back as basic.return, before its ack.
	returns := channel.NotifyReturn(make(chan amqp.Return, 16))
	deliveries, err := channel.Consume(c.config.Queue, c.config.Service, false, false, false, false, nil)
	if err != nil {
		return false, err
	}
	closed := channel.NotifyClose(make(chan *amqp.Error, 1)) // the connection's end closes it too
	c.consuming.Store(true)
	log.Printf("connected, consuming %s (prefetch %d)", c.config.Queue, c.config.Prefetch)
	for {
		select {
		case <-ctx.Done():
			c.consuming.Store(false)
			channel.Cancel(c.config.Service, true) // stop consuming, then close (deferred)
			return true, nil
		case reason := <-closed:
			return true, fmt.Errorf("channel closed: %v", reason)
		case delivery, open := <-deliveries:
			if !open {
				return true, errors.New("the broker ended the consumer")
			}
			if err := c.handle(ctx, channel, returns, delivery); err != nil {
				return true, err
			}
		}
	}
}

func (c *Consumer) handle(ctx context.Context, channel *amqp.Channel, returns <-chan amqp.Return, delivery amqp.Delivery) error {
	var order struct {
		OrderID string `json:"order_id"`
	}
	if json.Unmarshal(delivery.Body, &order) != nil || order.OrderID == "" {
		log.Printf("rejecting a message without an order_id: %.60q", delivery.Body)
		return delivery.Reject(false) // poison: dead-lettered if the queue says so
	}
	select {
	case <-ctx.Done(): // SIGTERM during the work: not acked, so the broker redelivers it
		return ctx.Err()
	case <-time.After(c.config.Work):
	}
	if err := c.ledger.Record(order.OrderID); err != nil {
		return err
	}
	if c.config.Publishes != "" {
		confirmation, err := channel.PublishWithDeferredConfirmWithContext(ctx, c.config.Exchange,
			c.config.Publishes, true, false, amqp.Publishing{ // mandatory
				ContentType: "application/json", DeliveryMode: amqp.Persistent, Body: delivery.Body})
		if err != nil {
			return err
		}
		// The channel closing settles the wait too (as not confirmed).
		confirmed, err := confirmation.WaitContext(ctx)
		if err != nil {
			return err
		}
		select {
		case returned := <-returns:
			log.Printf("order %s: %s routes nowhere (%s)", order.OrderID, c.config.Publishes, returned.ReplyText)
			confirmed = false
		default:
		}
		if !confirmed {
			log.Printf("order %s: publish not confirmed; nack, requeue", order.OrderID)
			time.Sleep(100 * time.Millisecond) // no hot loop while the broker refuses
			return delivery.Nack(false, true)
		}
	}
	return delivery.Ack(false)
}
