"""A tenant's keys as the operator manages them: one ``TenantKeys`` interface, implemented for Vault
Transit (key, policy, Kubernetes-auth role) and for the local provider (a KEK in the operator's
namespace); the tenant's key Secret, rotation by annotation, and crypto-shredding. The tracker's
side (unwrapping at start) is ``politetenant.crypto``. Imports ``kube``, ``render`` and ``model``.
"""
