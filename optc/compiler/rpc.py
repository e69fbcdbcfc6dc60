"""Where a remote device is found: a TVM RPC tracker address and the device's key."""

from __future__ import annotations

import dataclasses

from optc.errors import UserInputError


@dataclasses.dataclass(frozen=True)
class RpcTracker:
    """A device registered under ``key`` at the tracker ``host:port``."""

    host: str
    port: int
    key: str

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.key}@{host}:{self.port}"

    @staticmethod
    def parse(address: str, key: str) -> RpcTracker:
        """``"HOST:PORT"`` (``[::1]:9190`` for IPv6) and a key; bad text -> ``UserInputError``."""
        host, sep, port_text = address.strip().rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise UserInputError(f"RPC tracker address {address!r} is not HOST:PORT "
                                 "(e.g. 127.0.0.1:9190)")
        if not key.strip():
            raise UserInputError("the RPC key is empty; give the key the device's RPC server "
                                 "registered with (--key of tvm.exec.rpc_server)")
        return RpcTracker(host, int(port_text), key.strip())


def rpc_from_options(address: str | None, key: str | None) -> RpcTracker | None:
    """The tracker from the CLI's ``--rpc-tracker`` / ``--rpc-key``: both or neither."""
    if address is None and key is None:
        return None
    if address is None or key is None:
        given, missing = ("--rpc-tracker", "--rpc-key") if key is None else (
            "--rpc-key", "--rpc-tracker")
        raise UserInputError(f"{given} needs {missing} as well")
    return RpcTracker.parse(address, key)
