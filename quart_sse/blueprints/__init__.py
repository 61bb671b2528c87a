"""One blueprint per resource: chat, streams, sessions, system."""
