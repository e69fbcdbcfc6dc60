"""An example optc pass plugin: the ``remove-identity`` pass."""

from optc_example_plugin.remove_identity import RemoveIdentity

__all__ = ["RemoveIdentity"]
