"""The sled agent, built from trioxide actors (instance manager, runners, monitors,
reservoir, notifier, zone cleanup, Propolis state driver, Crucible backend).

Until those land, this package holds the command-line entry point and the runtime demo.
"""
