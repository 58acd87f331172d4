"""Who is calling: Open-WebUI session tokens, API keys and server-to-server identity."""
