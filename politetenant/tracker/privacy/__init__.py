"""The rights of the individual and the platform's duties: data-subject requests (access, export,
rectify, erase, object), the hash-chained audit log, retention purges and re-sealing under the newest
key version. Imports ``messages`` (the API's shared field types), ``http`` and below.
"""
