"""Shared infrastructure below every other package: settings, the Redis connection, the event loop,
supervised child processes. It imports no other package of the project."""
