"""Signed webhooks (Standard Webhooks) to the operators' systems, from a Redis-backed queue.

``Webhooks`` (events.py) queues events; ``WebhookWorker`` (worker.py) delivers them, in every broker
process, each delivery by one worker at a time. Keys: keys.py; atomic steps: lua/.
"""

from .events import EVENT_TYPES, Webhooks
from .worker import WebhookWorker

__all__ = ["EVENT_TYPES", "WebhookWorker", "Webhooks"]
