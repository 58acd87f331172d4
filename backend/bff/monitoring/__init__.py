"""The monitoring pages: usage, cost, latency and errors charted in the browser from the usage API."""
