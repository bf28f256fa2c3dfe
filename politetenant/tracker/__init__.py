"""The tracker: one aiohttp application per tenant that serves beacons and redirects, and the API.

Rooms, lowest first; a room imports only from rooms below it (``tests/unit/test_layers.py``):

- ``storage`` (the database behind one interface), ``judging`` (the verdict on a request as it
  arrives), ``metrics`` (the worker's Prometheus registry);
- ``ingest``: accepted events -> buffer -> batches -> database, or the spool while it is down;
- ``http``: what every route builds on: errors, bearer-token auth, the OpenAPI operation lists and
  the worker's state;
- ``public`` (beacons and clicks) and ``messages`` (registering a message);
- ``privacy`` (subject rights, audit log, retention, reseal), then ``reports``;
- ``server``: assembling a worker from all of the above and running N of them;
- ``cli``: ``polite-tracker`` and the demo.

It shares only ``politetenant.settings`` (the contract the operator writes) and ``politetenant.crypto``
with the rest of the project, and never imports the operator.
"""
