"""hatchway: secure sessions for devices that cannot carry one alone.

Three flows share one server, one device SDK and one command line:

* cross-device login (``hatchway.login``),
* a secure-element channel through a web app (``hatchway.se``),
* message-level security after TLS (``hatchway.msgsec`` and ``hatchway.device``).
"""

__version__ = "0.1.0"
