"""Exceptions that separate a broken harness or target (ERROR) from a stack deviation (FAIL)."""


class HarnessError(Exception):
    """The harness or the target broke; the case is an ERROR, never a FAIL."""


class LabError(HarnessError):
    """Building or tearing down the network lab failed."""


class TargetError(HarnessError):
    """The target could not be built, started, or died."""


class AgentError(HarnessError):
    """The agent's channel broke: it crashed, hung, or spoke out of protocol."""


class Unsupported(Exception):
    """The target cannot express what the case needs; the verdict is UNSUPPORTED."""
