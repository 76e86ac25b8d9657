"""The hatchway server: two listeners (HTTPS and plain HTTP) as thin adapters over the flows."""
