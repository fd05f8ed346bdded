"""The daemon: settings, roles, lifecycle and the ``loom`` command line."""
