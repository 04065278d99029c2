"""Vivado's reports read back: the clock a build met and the resources it used.

A build folder's ``build.tcl`` (:mod:`mulfree.gen.vivado_project`) ends with
``report_utilization -file utilization.rpt`` and ``report_timing_summary -file timing.rpt``
after implementation. :func:`read_vivado_reports` reads them back, so ``mulfree report
--build DIR`` states the measured figures of a real build: the worst setup slack (WNS) of
the fabric clock, the period it was constrained to, the clock it would meet
(``1000 / (period - WNS)`` MHz) and the used and available LUT, register, block RAM and DSP
sites with their share.

The reports are untrusted text (a build folder is a file we read): each is read through
:func:`~mulfree.params.safe_io.inside` as a regular file of at most
:data:`MAX_REPORT_BYTES`, every number is parsed strictly and range-checked, and a report
without the table a field comes from is refused in one line naming the file and what is
missing (:class:`~mulfree.params.safe_io.FileCheckError`).

Formats: Vivado 2020.2 and later, 7-series devices (``report_utilization``'s "Slice Logic",
"Memory" and "DSP" tables; ``report_timing_summary``'s "Design Timing Summary" and "Clock
Summary" tables). UltraScale names ("CLB LUTs", "CLB Registers") are accepted too.
"""

import math
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from ..params.safe_io import FileCheckError, inside


__all__ = ["TIMING_REPORT", "UTILIZATION_REPORT", "MAX_REPORT_BYTES", "VivadoTiming",
           "VivadoUtilization", "parse_timing_report", "parse_utilization_report",
           "read_vivado_reports"]

TIMING_REPORT = "timing.rpt"
UTILIZATION_REPORT = "utilization.rpt"
#: A timing summary of a whole Zynq design is a few hundred kB; anything far larger is refused.
MAX_REPORT_BYTES = 64 << 20

#: Utilization rows: our key -> the site types Vivado names it by (7-series first).
_SITES = {"lut": ("Slice LUTs", "CLB LUTs"),
          "ff": ("Slice Registers", "CLB Registers"),
          "bram36": ("Block RAM Tile",),
          "dsp": ("DSPs",)}
_NUMBER = r"-?\d+(?:\.\d+)?"
_MAX_SITES = 10_000_000


@dataclass(frozen=True)
class VivadoTiming:
    """The setup timing of a routed design's clock.

    Attributes
    ----------
    clock : str
        The clock's name (``clk_fpga_0`` for a Zynq fabric clock).
    period_ns : float
        Its constrained period.
    wns_ns : float
        The worst negative slack of all setup paths (positive: met with margin).
    met : bool
        Whether every user timing constraint is met (the report's own verdict).
    """

    clock: str
    period_ns: float
    wns_ns: float
    met: bool

    @property
    def constrained_mhz(self):
        """The frequency the build was constrained to."""
        return 1000.0 / self.period_ns

    @property
    def fmax_mhz(self):
        """The clock the worst path would just meet: ``1000 / (period - WNS)``."""
        return 1000.0 / (self.period_ns - self.wns_ns)

    def as_dict(self):
        d = asdict(self)
        d.update(constrained_mhz=round(self.constrained_mhz, 3),
                 fmax_mhz=round(self.fmax_mhz, 3))
        return d


@dataclass(frozen=True)
class VivadoUtilization:
    """Used and available sites, by :data:`_SITES` key (``lut``, ``ff``, ``bram36``, ``dsp``)."""

    used: dict
    available: dict

    def share(self, key):
        """``used / available`` of ``key``."""
        return self.used[key] / self.available[key] if self.available[key] else 0.0

    def as_dict(self):
        return {"used": dict(self.used), "available": dict(self.available),
                "share": {k: round(self.share(k), 6) for k in self.used}}


def _fail(where, what):
    raise FileCheckError("build_dir", f"{where}: {what}")


def _number(text, where, field, lo, hi):
    try:
        value = float(text)
    except ValueError:
        _fail(where, f"{field} must be a number, not {text[:40]!r}")
    if not math.isfinite(value) or not lo <= value <= hi:
        _fail(where, f"{field} must lie in {lo}..{hi}, not {text[:40]!r}")
    return value


def parse_timing_report(text, where=TIMING_REPORT):
    """The :class:`VivadoTiming` of a ``report_timing_summary`` text.

    Parameters
    ----------
    text : str
    where : str
        The file, for messages.

    Raises
    ------
    FileCheckError
        One line: no "Design Timing Summary" values row, no clock in the "Clock Summary"
        table, or a number out of range.
    """
    lines = text.splitlines()
    wns = None
    for i, line in enumerate(lines):
        if re.match(r"\s*WNS\(ns\)\s+TNS\(ns\)", line):
            # The header, a dashed rule, then the values.
            for row in lines[i + 1:i + 4]:
                fields = row.split()
                if fields and re.fullmatch(_NUMBER, fields[0]):
                    wns = _number(fields[0], where, "WNS(ns)", -1e4, 1e4)
                    break
            break
    if wns is None:
        _fail(where, "no 'Design Timing Summary' table with a WNS(ns) value (is it a "
                     "report_timing_summary of a routed design?)")
    clock = period = None
    for i, line in enumerate(lines):
        if re.match(r"\s*Clock\s+Waveform\(ns\)\s+Period\(ns\)\s+Frequency\(MHz\)", line):
            for row in lines[i + 2:i + 12]:
                m = re.match(r"\s*(\S+)\s+\{\s*" + _NUMBER + r"\s+" + _NUMBER + r"\s*\}\s+("
                             + _NUMBER + r")\s+(" + _NUMBER + r")\s*$", row)
                if m:
                    clock = m.group(1)
                    period = _number(m.group(2), where, "Period(ns)", 0.1, 1e4)
                    break
            break
    if clock is None:
        _fail(where, "no clock in its 'Clock Summary' table")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_./\[\]-]{0,127}", clock):
        _fail(where, f"clock name must be a plain name, not {clock[:40]!r}")
    if period - wns <= 0:
        _fail(where, f"WNS(ns) {wns} must be below the period {period} ns")
    met = "All user specified timing constraints are met." in text
    return VivadoTiming(clock=clock, period_ns=period, wns_ns=wns, met=met)


def parse_utilization_report(text, where=UTILIZATION_REPORT):
    """The :class:`VivadoUtilization` of a ``report_utilization`` text.

    Raises
    ------
    FileCheckError
        One line naming the site type whose row is missing or malformed.
    """
    used, available = {}, {}
    for key, names in _SITES.items():
        for name in names:
            m = re.search(r"^\|\s*" + re.escape(name) + r"\s*\|\s*(" + _NUMBER + r")\s*\|"
                          r"\s*(" + _NUMBER + r")\s*\|\s*(" + _NUMBER + r")\s*\|", text,
                          re.MULTILINE)
            if m:
                used[key] = _number(m.group(1), where, f"{name} used", 0, _MAX_SITES)
                available[key] = _number(m.group(3), where, f"{name} available", 0, _MAX_SITES)
                if used[key] > available[key]:
                    _fail(where, f"{name}: used {m.group(1)} exceeds available {m.group(3)}")
                break
        else:
            _fail(where, f"no '{names[0]}' row (Used | Fixed | Available | Util%)")
    # Block RAM tiles count halves (a RAMB18 is 0.5); the rest are whole sites.
    used = {k: (v if k == "bram36" else int(v)) for k, v in used.items()}
    available = {k: (v if k == "bram36" else int(v)) for k, v in available.items()}
    return VivadoUtilization(used=used, available=available)


def _read_report(folder, name):
    path = inside(folder, name, "build_dir")
    shown = f"build_dir {str(Path(folder) / name)!r}"
    if os.path.islink(Path(folder) / name) or not path.is_file():
        _fail(shown, "is not a regular file")
    size = path.stat().st_size
    if size > MAX_REPORT_BYTES:
        _fail(shown, f"is {size:,} bytes; a Vivado report is at most {MAX_REPORT_BYTES:,}")
    return path.read_bytes().decode("utf-8", errors="replace"), shown


def read_vivado_reports(folder):
    """The reports of a build folder that Vivado has run in, or ``None`` if it has not.

    Returns
    -------
    dict or None
        ``{"timing": VivadoTiming, "utilization": VivadoUtilization}`` when both
        :data:`TIMING_REPORT` and :data:`UTILIZATION_REPORT` exist; ``None`` when neither does.

    Raises
    ------
    FileCheckError
        One of them without the other, or either one unreadable (see the parsers).
    """
    folder = Path(folder)
    have = [n for n in (TIMING_REPORT, UTILIZATION_REPORT) if os.path.lexists(folder / n)]
    if not have:
        return None
    if len(have) == 1:
        missing = ({TIMING_REPORT, UTILIZATION_REPORT} - set(have)).pop()
        _fail(f"build_dir {str(folder)!r}", f"has {have[0]} but not {missing}: the Vivado run "
                                           f"did not finish (see vivado.log)")
    timing_text, where_t = _read_report(folder, TIMING_REPORT)
    util_text, where_u = _read_report(folder, UTILIZATION_REPORT)
    return {"timing": parse_timing_report(timing_text, where_t),
            "utilization": parse_utilization_report(util_text, where_u)}
