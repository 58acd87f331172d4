"""Clients for the services behind the BFF."""
