"""Propolis as actors: the VM state driver (whose mailbox admission is the external
request queue) and the Crucible block backend. See shared/spec/propolis.md."""
