"""Flows: each ties protocol cores to the store and PKI. No HTTP, MQTT or CLI here."""
