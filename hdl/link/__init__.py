"""Host link: UART, the framed-protocol bridge (spec: :mod:`golden.protocol`), test backend."""

from .bridge import (
    BUS_REQUEST,
    BUS_RESPONSE,
    Bridge,
    RegisterFile,
    UartBridge,
    UartBridgeTestTop,
    bus_signature,
)
from .uart import RX_BYTE, TX_BYTE, UartRx, UartTx

__all__ = ["BUS_REQUEST", "BUS_RESPONSE", "RX_BYTE", "TX_BYTE", "Bridge", "RegisterFile",
           "UartBridge", "UartBridgeTestTop", "UartRx", "UartTx",
           "bus_signature"]
