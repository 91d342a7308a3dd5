"""Running teaprint as a service: doctor (what is wrong), metrics (Prometheus), install-service (systemd units)."""
