"""Sending callbacks: the HTTP exchange and its judgement, the SSRF guard, and signing.

* :mod:`~httpqueue.delivery.http`: one callback and the receiver's answer (codes 100/101);
* :mod:`~httpqueue.delivery.aio`: the worker's callback client (aiohttp on one event loop thread, guarded);
* :mod:`~httpqueue.delivery.ssrf`: where callbacks may go, checked at create and at connect time;
* :mod:`~httpqueue.delivery.signing`: Standard Webhooks signatures.

Delivery uses the store's records, never the API or the worker.
"""
