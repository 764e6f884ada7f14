"""The real external components (Toxiproxy, RabbitMQ) and how the testbed runs them."""
