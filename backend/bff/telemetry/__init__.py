"""One span per gateway request, exported off the request path to ClickHouse or OTLP."""
