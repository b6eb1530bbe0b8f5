"""The simulated world the actors run against (all on the Trio clock, so a whole sled
runs in virtual time under MockClock): the downstairs network, VM devices, and - later -
zones, the hypervisor and Nexus."""
