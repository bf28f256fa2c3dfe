"""The PoliteTenant operator. Rooms, lowest first; a room imports only from rooms below it
(``tests/unit/test_layers.py``):

- ``model``: what a tenant is (the pydantic model behind the CRD), the operator's configuration, the
  names children share, one list of reasons, and the status built from checks;
- ``render``: tenant spec -> every child object, pure;
- ``kube``: the small async Kubernetes client, idempotent apply, Secrets created once;
- ``keys``: the tenant's keys in Vault Transit or the local provider: create, rotate, shred;
- ``runtime`` (kopf handlers, reconcile, deletion, retries, metrics) and ``kubectl`` (the plug-in);
- ``cli``: ``polite-operator run | render | crd``.

It shares only ``politetenant.settings``, ``politetenant.regions`` and ``politetenant.crypto`` with the
rest of the project, and never imports the tracker.
"""
