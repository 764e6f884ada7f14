"""Layer 4: faults as inject/remove pairs with guaranteed removal and proof of effect."""

from testbed.faults.application import ErrorRate, FailFirst, RouteError
from testbed.faults.base import (
    Fault,
    FaultError,
    FaultNotEffective,
    FaultRemovalError,
    FaultSpecError,
    Verification,
    injected,
)
from testbed.faults.broker import (
    BrokerDown,
    ConsumerStall,
    MemoryAlarm,
    PoisonMessage,
    QueuePurge,
)
from testbed.faults.catalog import FAULTS, make_fault
from testbed.faults.network import LinkDown, ToxicFault
from testbed.faults.process import (
    CrashAt,
    CrashLoop,
    KillService,
    PauseService,
    RestartService,
)
from testbed.faults.schedule import Planned, Schedule
from testbed.faults.timeline import Event, Timeline

__all__ = [
    "FAULTS", "BrokerDown", "ConsumerStall", "CrashAt", "CrashLoop", "ErrorRate", "Event",
    "FailFirst",
    "Fault", "FaultError", "FaultNotEffective", "FaultRemovalError", "FaultSpecError",
    "KillService", "LinkDown", "MemoryAlarm", "PauseService", "Planned", "PoisonMessage",
    "QueuePurge", "RestartService", "RouteError", "Schedule", "Timeline", "ToxicFault",
    "Verification", "injected", "make_fault",
]
