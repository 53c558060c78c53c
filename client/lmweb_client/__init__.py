"""lmweb's Python client: `Client` for programs, the `lmweb` command for people."""

from .api import Client, ClientError, Settings

__all__ = ["Client", "ClientError", "Settings"]
__version__ = "0.1.0"
