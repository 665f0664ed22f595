"""Celery settings that override httpqueue's own (``httpqueue/celeryapp.py``).

httpqueue configures Celery from its ``HTTPQUEUE_*`` settings. This module, if
it is importable (it is when you run from the project's directory), is applied
on top: put here any Celery setting you want to change for your deployment.
Leave the broker, acks and event settings alone unless you know why; the
timer's guarantees rely on them (see README, "How the timer works").
"""

# Cancel attempts that were running when the broker connection dropped: their
# leases run out and the promoter re-issues them (Celery 5.x warns without this).
worker_cancel_long_running_tasks_on_connection_loss = True

# Examples:
# worker_max_memory_per_child = 200_000   # KiB, prefork pool only
# broker_pool_limit = 64
