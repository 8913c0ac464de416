"""Drivers: one piece of hardware, or a stand-in for it. No ZeroMQ here (README: the layers)."""
