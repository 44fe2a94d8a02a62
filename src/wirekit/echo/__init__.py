"""The echo service: any bytes in, the same bytes back, over TCP (optionally TLS) and UDP."""
