"""Contract tests of the state ports, one module per port, on every backend of each."""
