"""``mulfree report --build DIR``: a Vivado build folder's core, board and measured figures.

A build folder (``mulfree build --board zc706 -o DIR``) names its core (``<top>.json``) and its
board in ``build.json``; once Vivado has run there (``run_vivado.sh`` or ``mulfree build
--run``) it also holds ``timing.rpt`` and ``utilization.rpt``. :func:`load_build_folder` reads
all of it as untrusted input (:func:`~mulfree.gen.build_record.read_build`,
:func:`~mulfree.host.runtime.load_manifest`, :func:`~mulfree.gen.vivado_reports.
read_vivado_reports`), and :func:`format_vivado` prints Vivado's placed-and-routed figures next
to the Yosys estimate of the same core: the clock the worst path meets, whether the build met
its constraint, and the LUT, register, block RAM and DSP sites used.
"""

from pathlib import Path

from ..gen.build_record import read_build
from ..gen.devices import ReportError
from ..gen.vivado_reports import TIMING_REPORT, UTILIZATION_REPORT, read_vivado_reports


__all__ = ["load_build_folder", "vivado_clock", "format_vivado"]

#: Rows of the side-by-side table: the resource key (Vivado's and Yosys's), its label.
_ROWS = (("lut", "LUT"), ("ff", "FF"), ("bram36", "BRAM36"), ("dsp", "DSP48E1"))


def load_build_folder(folder, param="build"):
    """The checked parts of a build folder.

    Parameters
    ----------
    folder : path-like
        A folder ``mulfree build`` wrote.
    param : str
        The option that named it, for messages.

    Returns
    -------
    dict
        ``record`` (``build.json``), ``manifest`` (the core's manifest path, inside the
        folder), ``board`` (its name), ``vivado`` (``{"timing", "utilization"}`` or ``None``
        when Vivado has not run there).

    Raises
    ------
    ReportError
        Not a folder, or no ``build.json`` (one line naming ``param``).
    mulfree.params.safe_io.FileCheckError
        A ``build.json`` or report that is not what mulfree and Vivado write.
    """
    from ..params.safe_io import inside
    folder = Path(folder)
    if not folder.is_dir():
        raise ReportError(param, f"{param} {str(folder)!r} is not a folder (a build folder of "
                                 f"mulfree build --board)")
    record = read_build(folder, param)
    if record is None:
        raise ReportError(param, f"{param} {str(folder)!r} holds no build.json: not a build "
                                 f"folder of mulfree build --board (or one not finished)")
    manifest = inside(folder, record["manifest"], param)
    return {"folder": folder, "record": record, "manifest": manifest,
            "board": record["board"]["name"], "vivado": read_vivado_reports(folder)}


def vivado_clock(build):
    """``{"mhz", "source"}``: the clock the worst routed path of ``build`` meets, or ``None``.

    ``build`` is what :func:`load_build_folder` returns. The clock is ``1000 / (period - WNS)``
    of Vivado's timing summary: the usual reading of a single-clock build's slack.
    """
    vivado = build["vivado"]
    if vivado is None:
        return None
    t = vivado["timing"]
    return {"mhz": round(t.fmax_mhz, 3),
            "source": f"placed and routed, Vivado {build['record']['part']} ({t.clock} "
                      f"constrained to {t.constrained_mhz:g} MHz, WNS {t.wns_ns:+.3f} ns; "
                      f"{build['folder'] / TIMING_REPORT})"}


def format_vivado(build, yosys=None):
    """Vivado's figures of ``build`` as text, beside the Yosys estimate ``yosys`` (the
    resources of :func:`~mulfree.gen.core_resources.core_resources`) when given."""
    folder = build["folder"]
    vivado = build["vivado"]
    if vivado is None:
        return (f"Vivado: no {TIMING_REPORT} / {UTILIZATION_REPORT} in {folder}: Vivado has not "
                f"run there yet (./run_vivado.sh or mulfree build --run); the figures above are "
                f"Yosys's estimate of the core alone")
    t, u = vivado["timing"], vivado["utilization"]
    verdict = "met" if t.met else "NOT met"
    lines = [f"Vivado, placed and routed ({build['record']['part']}, {folder}):",
             f"  clock {t.clock}: constrained to {t.constrained_mhz:g} MHz "
             f"({t.period_ns:g} ns), WNS {t.wns_ns:+.3f} ns, timing {verdict}; the worst path "
             f"meets {t.fmax_mhz:.2f} MHz",
             f"  {'':8} {'Vivado (whole design)':>24} {'share':>8}"
             + (f" {'Yosys (core alone)':>20}" if yosys is not None else "")]
    for key, label in _ROWS:
        used, avail = u.used[key], u.available[key]
        row = f"  {label:8} {used:>12,g} / {avail:<9,g} {u.share(key):>8.2%}"
        if yosys is not None:
            row += f" {yosys.get(key, 0):>20,g}"
        lines.append(row)
    lines.append("  (Vivado counts the whole design: the core, the DMA, the interconnect and "
                 "the processing system's glue)")
    return "\n".join(lines)
