"""The long-running process and its outward interfaces: the daemon, the HTTP endpoint and
dashboard, metrics, outgoing webhooks, systemd notification and journal logging."""
