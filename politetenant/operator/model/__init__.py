"""What a tenant is: the PoliteTenant pydantic model (the single source of the CRD, its docs and its
validation), the operator's configuration, the names and labels children share, one list of reasons
for conditions, Events and metrics, and the status built from checks. Pure; the lowest room of the
operator, importing only ``politetenant.settings``, ``regions`` and ``crypto``.
"""
