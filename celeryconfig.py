"""Celery settings that override httpqueue's own (``httpqueue/celery.py``).

httpqueue configures Celery from its ``HTTPQUEUE_*`` settings. This module, if
it is importable (it is when you run from the project's directory), is applied
on top: put here any Celery setting you want to change for your deployment.
Leave the broker, acks and event settings alone unless you know why; the
timer's guarantees rely on them (see README, "How the timer works").
"""

# Left at Celery's default (False) on purpose: with True, a broker restart made
# the worker crash with "Unrecoverable error: AttributeError ... 'hostname'" while
# reconnecting (celery/celery#9250, seen in tests/faults). httpqueue does not need
# it: attempts run outside the pool, and a task whose worker lost it comes back
# when its lease runs out.
# worker_cancel_long_running_tasks_on_connection_loss = False

# With RabbitMQ (HTTPQUEUE_BROKER_URL=amqp://...), httpqueue sets quorum queues, a topic
# exchange and publisher confirms (httpqueue/rabbitmq.py). Changing the queue type or
# exchange type here turns native delayed delivery off: messages would then wait in worker
# memory, unacknowledged, until due (README, "RabbitMQ as broker"). Every API and worker
# must see the same queue settings.

# Examples:
# worker_max_memory_per_child = 200_000   # KiB, prefork pool only
# broker_pool_limit = 64
