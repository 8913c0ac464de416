"""The dashboard: `view` (the picture of the bus), `web` (the page's server), `__main__` (the
process: config, the bus reader thread, serving). Run it as `python -m workers.dashboard`."""
