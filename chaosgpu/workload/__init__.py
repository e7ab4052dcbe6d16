"""Probes that put bounded load on the lab workload and report its service level indicators."""
