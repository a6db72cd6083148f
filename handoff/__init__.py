"""Escalation policy, routing, queues and agent assignment. Imports only ``sessions``."""
