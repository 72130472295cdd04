"""Tenant resource provisioners: one module per backend behind one interface (:mod:`.base`).

The public surface:

* :class:`~pipeline.provisioners.base.TenantSpec`, :class:`~pipeline.provisioners.base.ResourcePlan`,
  :class:`~pipeline.provisioners.base.VerifyResult`, :class:`~pipeline.provisioners.base.DeleteResult`;
* :class:`~pipeline.provisioners.base.Provisioner` (``plan``/``apply``/``verify``/``delete``/``aclose``);
* :func:`~pipeline.provisioners.registry.build_provisioners` and friends;
* errors in :mod:`.errors` (``TransientError`` retry, ``PermanentError`` do not, ``UnsafeNameError``);
* tenant id rules in :mod:`.naming`, tier configuration in :mod:`.tiers`.

Backend modules are imported by :mod:`.registry`, not here, so that importing the value types stays cheap.
"""
