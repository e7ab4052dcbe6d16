"""Probes of Prometheus exporters (node_exporter, dcgm-exporter) as a scraper sees them."""
