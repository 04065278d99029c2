"""The errors of a device and of its inputs, below the runtime and the device lock."""


__all__ = ["DeviceError", "DeviceBusy", "DeviceMismatch", "DeviceTimeout", "CoreRunError",
           "BackendMissing", "InputError"]


class DeviceError(RuntimeError):
    """Something went wrong talking to an accelerator."""


class DeviceBusy(DeviceError):
    """Another process holds the device."""


class DeviceMismatch(DeviceError):
    """The device is not the core the manifest or the program describes."""


class DeviceTimeout(DeviceError, TimeoutError):
    """A run did not finish in time. ``status`` holds the registers read before the reset."""

    def __init__(self, message, status):
        super().__init__(message)
        self.status = status


class CoreRunError(DeviceError):
    """The core stopped a run with an error code (``ERROR.core_code``).

    ``code`` is the code, ``name`` its name in the manifest's ``registers.core_errors`` (the
    ``CORE_ERRORS`` of its interface: ``"DESCRIPTOR"``, ``"TOO_BIG"``, ... and, since
    interface 2.1, ``"ENGINE"`` (10) for a descriptor naming an engine the core does not
    have; since 2.2, ``"RESIDENT"`` (11) for a chaining flag the core cannot honour: the
    soft reset after it also leaves both feature-map banks invalid), ``status`` the registers
    read before the device's soft reset."""

    def __init__(self, message, code, name, status):
        super().__init__(message)
        self.code, self.name, self.status = code, name, status


class BackendMissing(DeviceError, ImportError):
    """A device kind's backend, or a package it needs, is not installed.

    The message is one line naming the extra to install (``pip install 'mulfree[sim]'``). A
    :class:`DeviceError` for the callers of :func:`mulfree.host.runtime.open_device`, and an
    ``ImportError`` for those that caught the missing module before.
    """


class InputError(ValueError):
    """Input arrays of the wrong shape, dtype or range."""

    def __init__(self, param, message):
        super().__init__(message)
        self.param = param
