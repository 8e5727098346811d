"""What the long-running sidecar processes — `auditlock agent` and `auditlock capture` — share: the HTTP server of
their probes and metrics (`health`), and the crash points of their kill tests (`failpoints`). Neither imports the
other; both import this room, which imports neither."""
