"""Task lifecycle events out of Redis into ClickHouse, Elasticsearch or MongoDB (``httpqueue export``).

With ``export_max_events`` set, every script that changes a task's state also
appends an event to its shard's Redis stream, in the same script run (see
``emit_event`` in ``store/lua/common.lua``). ``httpqueue export`` reads those
streams through one consumer group per sink and writes batches:

* :mod:`~httpqueue.export.events`: the event and its stable id;
* :mod:`~httpqueue.export.stream`: consumer-group reads, acknowledgements, claims, drop counts;
* :mod:`~httpqueue.export.pump`: one sink's loop (batch, write, acknowledge, back off);
* :mod:`~httpqueue.export.exporter`: the process (a thread per sink, ``/metrics``);
* :mod:`~httpqueue.export.sinks`: one module per destination.

The exporter depends on the store and the configuration; nothing of the task
pipeline imports it.
"""
