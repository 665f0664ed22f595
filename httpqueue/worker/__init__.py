"""The Celery side: the delivery tasks, the launcher that runs callbacks, and the background loops.

* :mod:`~httpqueue.worker.tasks`: the Celery tasks (``deliver``, ``notify_failure``);
* :mod:`~httpqueue.worker.attempts`: one attempt's outcome and recording a message's outcomes;
* :mod:`~httpqueue.worker.launcher`: callbacks on I/O threads, each at its own time;
* :mod:`~httpqueue.worker.background`: how background loops repeat and back off;
* :mod:`~httpqueue.worker.promoter`: hands parked tasks to Celery just in time;
* :mod:`~httpqueue.worker.scheduler`: creates the tasks of due cron ticks.

This package's ``__init__`` imports nothing: the Celery app imports the
bootsteps, and a worker imports the task module through ``include=``.
"""
