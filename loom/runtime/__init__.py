"""The run machinery: runs, sessions, the agent loop, hooks and events."""
