"""The HTTP facade: Flask blueprints that validate requests and call the task service.

* :mod:`~httpqueue.api.app`: ``create_app``;
* :mod:`~httpqueue.api.compat`: the original Go httpqueue's ``/create``, ``/delete``, ``/query``;
* :mod:`~httpqueue.api.v1`, :mod:`~httpqueue.api.topics`, :mod:`~httpqueue.api.schedules`: ``/v1``;
* :mod:`~httpqueue.api.ops`: ``/health``, ``/ready``, ``/metrics``; :mod:`~httpqueue.api.dashboard`;
* :mod:`~httpqueue.api.schemas` (marshmallow), :mod:`~httpqueue.api.documents` (answers),
  :mod:`~httpqueue.api.errors` (JSON errors), :mod:`~httpqueue.api.auth` (bearer tokens).
"""
from httpqueue.api.app import create_app

__all__ = ["create_app"]
