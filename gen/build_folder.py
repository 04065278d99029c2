"""A build folder: a self-contained Vivado batch project that puts a core on a Zynq-7000 board.

:func:`write_build` writes one folder holding everything needed to make a bitstream on a
machine with Vivado and to load it on the board:

* ``<top>.v``, ``<top>.json``: the core's Verilog and manifest
  (:func:`~mulfree.gen.core_manifest.write_core_design`);
* ``<top>_bd.v``: a wrapper that renames the core's ports and gives them Vivado interface
  attributes (why: :func:`~mulfree.gen.vivado_project.wrapper_verilog`);
* ``constraints.xdc``: the PL constraints (none are needed, the file says why);
* ``block_design.tcl``: the project and the block design: PS7, AXI DMA in simple mode,
  interconnects, reset, interrupts and the address map of :class:`~mulfree.host.zynq.ZynqConfig`;
* ``build.tcl``: synthesis, implementation, bitstream, XSA and the ``.bit.bin`` the Linux FPGA
  manager loads; ``run_vivado.sh`` and ``Makefile`` hold the exact command
  (:mod:`mulfree.gen.vivado_project`);
* ``mulfree.dtso``: the device tree overlay (FPGA region, two UIO devices, the DMA buffer);
* ``zynq.json``: the :class:`ZynqConfig` the runtime uses (``mulfree run --zynq-config``)
  (:mod:`mulfree.gen.overlay`);
* ``README.txt`` (:func:`readme`); and, written last, ``build.json``: what was generated, with
  each file's SHA-256 (:mod:`mulfree.gen.build_record`). Its presence marks a finished folder.

The folder is generated in a temporary sibling and renamed into place, so a failed run never
leaves a half-written folder under the requested name.
:func:`~mulfree.gen.vivado_run.run_vivado` runs Vivado on a finished folder and records the
products.

Every address and name comes from :class:`ZynqConfig` (``mulfree.host.zynq``), the same object
the board runtime uses, so the hardware, the overlay and the runtime cannot disagree.
"""

import json
import os
import shutil
import tempfile
from pathlib import Path

from ..params.version import __version__
from ..params.safe_io import FileCheckError, check_output_dir
from .build_record import BUILD_KIND, BUILD_MARKER, read_build, sha256_file
from .overlay import OVERLAY_BLOB, OVERLAY_SOURCE, ZYNQ_JSON, overlay_dts, zynq_json
from .vivado_plan import IRQ_LINES, BuildError, plan_build
from .vivado_project import (VIVADO_ARGS, block_design_tcl, build_tcl, constraints_xdc,
                             format_mhz, hex_address, makefile, run_vivado_sh, vivado_command,
                             vivado_range, wrapper_verilog)


__all__ = ["readme", "check_build_output", "write_build"]


def readme(plan):
    """``README.txt``: what each file is and the steps from here to a run on the board."""
    b, z, p = plan.board, plan.zynq, plan.products
    cfg = plan.cfg
    e = cfg.engine
    # A multi-engine core: "shift array + mult array (4 columns)".
    kinds = " + ".join(f"{x.pe} {x.arch}" + (f" ({cfg.physical_cols(k)} columns)"
                                               if cfg.folds(k) > 1 else "")
                       for k, x in enumerate(cfg.engines))
    return "\n".join([
        f"mulfree build for {b.title}, Vivado part {b.part}",
        f"core {plan.top}: {e.rows}x{e.cols} {kinds}, {plan.stream_width}-bit streams, "
        f"clock FCLK_CLK0 at {format_mhz(plan.clock_mhz)} MHz",
        "",
        "Files",
        f"  {plan.top}.v, {plan.top}.json  the core's Verilog and manifest",
        f"  {plan.top}_bd.v        wrapper giving the core's ports Vivado interface attributes",
        "  constraints.xdc        PL constraints (none needed; the file says why)",
        "  block_design.tcl       Vivado project + block design: PS7, AXI DMA (simple mode),",
        "                         interconnects, reset, interrupts, addresses",
        "  build.tcl              synthesis, implementation, bitstream, XSA, .bit.bin",
        "  run_vivado.sh, Makefile  the Vivado command",
        f"  {OVERLAY_SOURCE}           device tree overlay: FPGA region, UIO devices, u-dma-buf",
        f"  {ZYNQ_JSON}              the runtime's ZynqConfig (addresses, device names)",
        f"  {BUILD_MARKER}             what was generated (SHA-256 of each file); written last",
        "",
        "Address map (from mulfree.host.zynq.ZynqConfig)",
        f"  core registers  {hex_address(z.core_base)} +{vivado_range(plan.core_range)}  UIO "
        f"'{z.core_uio}', irq on IRQ_F2P[0]",
        f"  AXI DMA         {hex_address(z.dma_base)} +{vivado_range(plan.dma_range)}  "
        f"UIO '{z.dma_uio}', "
        "MM2S/S2MM irqs on IRQ_F2P[1]/[2]",
        f"  DMA buffer      u-dma-buf '{z.udmabuf}', {b.linux.udmabuf_size >> 20} MiB; "
        f"DMA on {b.hp_port}, registers on {b.gp_port}",
        "",
        "Steps",
        "  1. On a machine with Vivado 2020.2 or newer, in this folder:",
        f"       {vivado_command()}",
        "     (or ./run_vivado.sh, or make, or mulfree build ... --run); it",
        f"     writes {p['bit']}, {p['bin']} (for the FPGA manager) and {p['xsa']}.",
        "  2. The board runs Linux with the FPGA manager and configfs device tree overlays",
        "     (a Xilinx/PetaLinux kernel), a base device tree built with -@,",
        "     uio_pdrv_genirq.of_id=generic-uio on the kernel command line, the u-dma-buf",
        "     module, and Python 3 with NumPy and mulfree. Console: " + b.linux.console + ".",
        "  3. From this machine: mulfree deploy THIS_FOLDER --host root@BOARD",
        f"     copies {p['bin']}, {OVERLAY_BLOB}, {ZYNQ_JSON} and {plan.top}.json to "
        "/lib/firmware,",
        "     applies the overlay (which loads the bitstream) and checks the core's identity",
        "     registers. --dry-run prints every command first. On the board itself: omit",
        "     --host.",
        "  4. On the board:",
        f"       mulfree run --device zynq --zynq-config /lib/firmware/{ZYNQ_JSON} "
        f"--config /lib/firmware/{plan.top}.json ...",
        "",
        "Nothing here was checked on hardware or run through Vivado by the generator's tests;",
        "the scripts are checked by running them in tclsh against stubbed Vivado commands.",
        "",
    ])



def check_build_output(out_dir):
    """``out_dir`` as an absolute path, refused (:class:`BuildError`) unless a build may go there.

    Run before any long work: the folder (or its nearest existing ancestor) and the folder the
    temporary sibling goes in are probed with a real file; an existing folder must be empty
    or hold a valid earlier build (its ``build.json`` checked), which is replaced.
    """
    shown = str(out_dir)
    if not shown or "\0" in shown:
        raise BuildError("output", f"output must be a folder path, not {shown!r}")
    out_dir = Path(os.path.abspath(out_dir))
    for parent in (out_dir, *out_dir.parents):
        if os.path.lexists(parent) and not parent.is_dir():
            raise BuildError("output", f"output must be a folder, not the existing file "
                                       f"{str(parent)!r}")
        if parent.exists():
            break
    if os.path.islink(out_dir):
        # Replacing the folder renames the link, not the folder it points to.
        raise BuildError("output", f"output {shown!r} is a symbolic link; name the folder "
                                   f"itself ({os.path.realpath(out_dir)!r})")
    if out_dir == out_dir.parent:
        raise BuildError("output", f"output {shown!r} is the root folder; name a new folder")
    try:
        check_output_dir(out_dir, "output")
        # The new folder is made next to out_dir and renamed into place.
        check_output_dir(out_dir.parent, "output")
    except FileCheckError as exc:
        raise BuildError("output", str(exc).replace(f"output {str(out_dir)!r}",
                                                    f"output {shown!r}", 1)) from None
    if out_dir.is_dir() and any(out_dir.iterdir()):
        try:
            doc = read_build(out_dir, "output")
        except FileCheckError as exc:
            detail = " ".join(str(exc).split(": ", 1)[-1].split())
            raise BuildError("output", f"output {shown!r} exists and its {BUILD_MARKER} is not "
                                       f"one mulfree build wrote, so it is kept ({detail}); "
                                       f"choose a new folder or remove this one") from None
        if doc is None:
            raise BuildError("output", f"output {shown!r} exists and is not a mulfree build "
                                       f"folder (no {BUILD_MARKER}); choose a new folder or "
                                       f"empty this one")
    return out_dir


def _write_text(folder, name, text, mode=0o644):
    path = folder / name
    path.write_text(text)
    os.chmod(path, mode)
    return path


def write_build(cfg, board, out_dir, *, clock_mhz=None, manifest=None,
                plan=None):
    """Write the build folder of ``cfg`` on ``board`` (see the module docstring).

    Parameters
    ----------
    cfg : CoreConfig
    board : Board or str
    out_dir : path
        Created if missing. An existing build folder (with ``build.json``) is replaced; an
        existing folder with other content is refused.
    clock_mhz : float, optional
    manifest : dict, optional
        The core's manifest when it is already at hand.
    plan : BuildPlan, optional
        A plan made by :func:`plan_build` (then ``cfg``, ``board``, ``clock_mhz`` and
        ``manifest`` are not used).

    Returns
    -------
    (Path, BuildPlan)
        The folder and its plan.

    Raises
    ------
    BuildError
        Before anything is written, for a core that does not fit, a bad clock, an unknown
        board or an output that is not a build folder.
    """
    out_dir = check_build_output(out_dir)
    if plan is None:
        plan = plan_build(cfg, board, clock_mhz, manifest)
    from .core_manifest import write_core_design
    # Folders made for out_dir are removed again if the build does not finish.
    made = [p for p in (out_dir.parent, *out_dir.parent.parents) if not os.path.lexists(p)]
    tmp = None
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.",
                                    suffix=".tmp"))
        v_path, j_path = write_core_design(plan.cfg, tmp)
        if json.loads(j_path.read_text())["top"] != plan.top:
            raise BuildError("config", f"the generated core is {j_path.stem}, the plan says "
                                       f"{plan.top}")
        files = [v_path.name, j_path.name]
        for name, text, mode in (
                (f"{plan.wrapper}.v", wrapper_verilog(plan), 0o644),
                ("constraints.xdc", constraints_xdc(plan), 0o644),
                ("block_design.tcl", block_design_tcl(plan), 0o644),
                ("build.tcl", build_tcl(plan), 0o644),
                ("run_vivado.sh", run_vivado_sh(plan), 0o755),
                ("Makefile", makefile(plan), 0o644),
                (OVERLAY_SOURCE, overlay_dts(plan), 0o644),
                (ZYNQ_JSON, zynq_json(plan), 0o644),
                ("README.txt", readme(plan), 0o644)):
            _write_text(tmp, name, text, mode)
            files.append(name)
        doc = {
            "mulfree_version": __version__,
            "kind": BUILD_KIND,
            "board": plan.board.as_dict(),
            "part": plan.board.part,
            "top": plan.top,
            "manifest": j_path.name,
            "clock_mhz": plan.clock_mhz,
            "stream_width": plan.stream_width,
            "addresses": {"core_base": plan.zynq.core_base, "core_range": plan.core_range,
                          "dma_base": plan.zynq.dma_base, "dma_range": plan.dma_range},
            "dma": {"mode": "simple", "length_bits": plan.zynq.dma_length_bits,
                    "stream_width": plan.stream_width, "mm_width": plan.dma_mm_width},
            "interrupts": {name: {"irq_f2p": i, "gic_spi": plan.irq_spi[name]}
                           for i, name in enumerate(IRQ_LINES)},
            "zynq": plan.zynq.as_dict(),
            "resources_estimate": {k: v for k, v in plan.resources.items() if k != "memories"},
            "overlay": {"source": OVERLAY_SOURCE, "blob": OVERLAY_BLOB},
            "products": plan.products,
            "vivado_command": ["vivado", *VIVADO_ARGS],
            "vivado": None,
            "files": {name: {"sha256": sha256_file(tmp / name),
                             "bytes": (tmp / name).stat().st_size}
                      for name in files},
        }
        _write_text(tmp, BUILD_MARKER, json.dumps(doc, indent=2) + "\n")
        os.chmod(tmp, 0o755)
        _install(tmp, out_dir)
    except BaseException:
        # Also on KeyboardInterrupt: neither the temporary sibling nor folders made for it stay.
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        for folder in made:
            try:
                os.rmdir(folder)
            except OSError:
                break
        raise
    return out_dir, plan


def _install(tmp, out_dir):
    """Put the finished ``tmp`` folder at ``out_dir``, replacing an earlier build there."""
    if not os.path.lexists(out_dir):
        os.rename(tmp, out_dir)
        return
    check_build_output(out_dir)         # again: it may have changed while we generated
    old = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.", suffix=".old"))
    os.rmdir(old)
    os.rename(out_dir, old)
    try:
        os.rename(tmp, out_dir)
    except BaseException:
        os.rename(old, out_dir)
        raise
    # The new build is in place; an interrupt now must not leave the old one half-deleted.
    interrupted = None
    while os.path.lexists(old):
        try:
            shutil.rmtree(old, ignore_errors=True)
            break
        except KeyboardInterrupt as exc:
            interrupted = exc
    if interrupted is not None:
        raise interrupted
