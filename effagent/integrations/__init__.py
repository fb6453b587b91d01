"""Thin adapters between effagent's core and agent frameworks (importable as ``effagent.integrations``)."""
