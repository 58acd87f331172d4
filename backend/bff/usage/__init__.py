"""Usage and cost queries over the gateway's spans in ClickHouse."""
