"""The sled agent over the wire: HTTP servers and clients for the agent, the simulated
hypervisor (Propolis) and the simulated Nexus, and the rack that runs them as processes.

The actors do not change: ``actors/ports.py`` is the seam; the clients here implement it
over HTTP, and the servers here serve the same actors the in-process world runs.
"""
