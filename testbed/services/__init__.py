"""Layer 3: the system under test. The same code runs under every runtime."""
