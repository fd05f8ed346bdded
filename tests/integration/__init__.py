"""Multi-process tests of the daemon on the real RabbitMQ and Redis."""
