"""The rights of the individual and the platform's duties: data-subject requests (access, export,
rectify, erase, object), the hash-chained audit log, retention purges, re-sealing under the newest
key version, and API tokens as the audit log sees them (created, imported from the operator's Secret,
revoked). Imports ``messages`` (the API's shared field types), ``http`` and below.
"""
