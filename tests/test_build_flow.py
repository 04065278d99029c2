"""mulfree build: the Vivado project folder, checked without Vivado.

The generated Tcl runs in ``tclsh`` against stubbed Vivado commands (``vivado_stub.tcl``),
which both parses it and records every call, so the tests assert on what Vivado would be told:
the part, the addresses, the DMA's widths, the products. The overlay is compiled with ``dtc``
and the wrapper with Icarus Verilog. ``tclsh``, ``dtc`` and ``iverilog`` come from
``scripts/setup.sh``; a missing one fails these tests, it does not skip them.
"""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mulfree.flows import build as build_flow
from mulfree.gen import build_folder, build_record, overlay, vivado_plan, vivado_project, vivado_run
from mulfree.gen.board import BOARDS, irq_f2p_spi
from mulfree.gen.build_folder import write_build
from mulfree.gen.build_record import BUILD_MARKER
from mulfree.gen.overlay import OVERLAY_SOURCE, ZYNQ_JSON
from mulfree.gen.vivado_plan import BuildError, estimate_resources, plan_build
from mulfree.params.config import ArrayConfig
from mulfree.params.core_config import CoreConfig
from mulfree.host.zynq import ZYNQ_DEFAULTS, ZynqConfig


STUB = Path(__file__).parent / "vivado_stub.tcl"
SMALL = CoreConfig(engine=ArrayConfig(rows=4, cols=4))


def _tool(name):
    path = shutil.which(name)
    assert path, f"{name} is not installed: run scripts/setup.sh (it installs it with apt-get)"
    return path


def run_tcl(folder, script="build.tcl", **env):
    """Run ``script`` of ``folder`` in tclsh over the stubs: ``(status, stdout, calls)``."""
    log = Path(folder) / ".stub.log"
    driver = f"source {{{STUB}}}\nstub_run {{{Path(folder) / script}}}\n"
    result = subprocess.run([_tool("tclsh")], input=driver, capture_output=True, text=True,
                            env={**os.environ, "STUB_LOG": str(log), **env}, cwd="/")
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    log.unlink()
    assert result.returncode != 99, f"Tcl error:\n{result.stderr}"
    return result.returncode, result.stdout, calls


def calls_of(calls, name):
    return [c[1:] for c in calls if c[0] == name]


def props(calls, obj):
    return {k: v for k, v, o in calls_of(calls, "set_property") if o == obj}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A build folder of a 4x4 shift core for the ZC706, and its plan."""
    folder, plan = write_build(SMALL, "zc706", tmp_path_factory.mktemp("b") / "build")
    return folder, plan


@pytest.fixture(scope="module")
def small_calls(small):
    status, out, calls = run_tcl(small[0])
    assert status == 0, out
    return calls


# The folder ---------------------------------------------------------------------------------

def test_folder_holds_every_file_with_its_digest(small):
    folder, plan = small
    doc = json.loads((folder / BUILD_MARKER).read_text())
    names = set(doc["files"])
    assert names == {f"{plan.top}.v", f"{plan.top}.json", f"{plan.top}_bd.v",
                     "constraints.xdc", "block_design.tcl", "build.tcl", "run_vivado.sh",
                     "Makefile", OVERLAY_SOURCE, ZYNQ_JSON, "README.txt"}
    assert {p.name for p in folder.iterdir()} == names | {BUILD_MARKER}
    for name, entry in doc["files"].items():
        data = (folder / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], name
        assert len(data) == entry["bytes"], name
    assert doc["part"] == "xc7z045ffg900-2" and doc["board"]["name"] == "zc706"
    assert doc["addresses"] == {"core_base": ZYNQ_DEFAULTS.core_base, "core_range": 0x1000,
                                "dma_base": ZYNQ_DEFAULTS.dma_base,
                                "dma_range": ZYNQ_DEFAULTS.dma_size}
    assert doc["products"] == plan.products and doc["vivado"] is None
    # build.json is written last, then the folder is renamed into place: no temporary left.
    last = max((folder / n).stat().st_mtime_ns for n in names)
    assert (folder / BUILD_MARKER).stat().st_mtime_ns >= last
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]
    assert os.access(folder / "run_vivado.sh", os.X_OK)


def test_scripts_name_the_vivado_command(small):
    folder, plan = small
    command = "vivado " + " ".join(vivado_project.VIVADO_ARGS)
    assert command == "vivado -mode batch -nojournal -log vivado.log -source build.tcl"
    assert f'"${{VIVADO:-vivado}}" {" ".join(vivado_project.VIVADO_ARGS)}' in \
        (folder / "run_vivado.sh").read_text()
    assert f"$(VIVADO) {' '.join(vivado_project.VIVADO_ARGS)}" in (folder / "Makefile").read_text()
    assert command in (folder / "README.txt").read_text()


# The Tcl, run in tclsh ----------------------------------------------------------------------

def test_tcl_parses_and_adds_only_files_of_the_folder(small, small_calls):
    folder, plan = small
    assert calls_of(small_calls, "create_project")[0][2] == "xc7z045ffg900-2"
    added = calls_of(small_calls, "add_files")
    ours = [Path(f) for _, f in added if not f.endswith("system_wrapper.v")]
    assert {p.name for p in ours} == {f"{plan.top}.v", f"{plan.top}_bd.v", "constraints.xdc"}
    assert all(p.parent == folder and p.is_file() for p in ours)
    assert ("constrs_1", str(folder / "constraints.xdc")) in [tuple(a) for a in added]
    assert calls_of(small_calls, "exit") == []
    assert ["validate_bd_design"] in small_calls and ["save_bd_design"] in small_calls


def test_tcl_addresses_are_zynqconfig(small, small_calls):
    folder, plan = small
    manifest = json.loads((folder / f"{plan.top}.json").read_text())
    window = 1 << manifest["registers"]["addr_width"]
    seen = {seg: (space, off, rng) for space, seg, off, rng
            in calls_of(small_calls, "assign_bd_address")}
    space, off, rng = seen["core/s_axil/*"]
    assert space == "ps7/Data" and int(off, 0) == ZYNQ_DEFAULTS.core_base
    assert rng == "4K" and max(window, 0x1000) == 0x1000
    space, off, rng = seen["dma/S_AXI_LITE/Reg"]
    assert int(off, 0) == ZYNQ_DEFAULTS.dma_base and rng == "64K"
    assert ZYNQ_DEFAULTS.dma_size == 64 << 10
    for channel in ("MM2S", "S2MM"):
        assert seen["ps7/S_AXI_HP0/HP0_DDR_LOWOCM"] and any(
            s == f"dma/Data_{channel}" for s, *_ in calls_of(small_calls, "assign_bd_address"))


def test_tcl_dma_and_ps7(small, small_calls):
    folder, plan = small
    dma = props(small_calls, "dma")
    assert dma["CONFIG.c_include_sg"] == "0"
    assert int(dma["CONFIG.c_sg_length_width"]) == ZYNQ_DEFAULTS.dma_length_bits
    assert int(dma["CONFIG.c_m_axis_mm2s_tdata_width"]) == SMALL.stream_width
    assert int(dma["CONFIG.c_s_axis_s2mm_tdata_width"]) == SMALL.stream_width
    assert dma["CONFIG.c_m_axi_mm2s_data_width"] == dma["CONFIG.c_m_axi_s2mm_data_width"] == "64"
    ps7 = props(small_calls, "ps7")
    assert float(ps7["CONFIG.PCW_FPGA0_PERIPHERAL_FREQMHZ"]) == 100
    for key in ("PCW_USE_M_AXI_GP0", "PCW_USE_S_AXI_HP0", "PCW_USE_FABRIC_INTERRUPT",
                "PCW_IRQ_F2P_INTR", "PCW_EN_CLK0_PORT", "PCW_EN_RST0_PORT"):
        assert ps7[f"CONFIG.{key}"] == "1", key
    cells = {c[2]: c[1] for c in calls_of(small_calls, "create_bd_cell")}
    assert cells["core"] == plan.wrapper
    assert cells["dma"] == "xilinx.com:ip:axi_dma:7.1"
    assert cells["ps7"].startswith("xilinx.com:ip:processing_system7:")
    intf = [tuple(c) for c in calls_of(small_calls, "connect_bd_intf_net")]
    for link in (("dma/M_AXIS_MM2S", "core/s_axis"), ("core/m_axis", "dma/S_AXIS_S2MM"),
                 ("gp0_ic/M00_AXI", "core/s_axil"), ("gp0_ic/M01_AXI", "dma/S_AXI_LITE"),
                 ("ps7/M_AXI_GP0", "gp0_ic/S00_AXI"), ("hp0_ic/M00_AXI", "ps7/S_AXI_HP0"),
                 ("dma/M_AXI_MM2S", "hp0_ic/S00_AXI"), ("dma/M_AXI_S2MM", "hp0_ic/S01_AXI")):
        assert link in intf, link
    nets = {c[0]: c[1:] for c in calls_of(small_calls, "connect_bd_net")}
    assert "core/clk" in nets["ps7/FCLK_CLK0"] and "dma/m_axi_s2mm_aclk" in nets["ps7/FCLK_CLK0"]
    assert nets["rst_fclk0/peripheral_reset"] == ["core/rst"]
    # Interrupts in the order the overlay numbers them.
    for i, (pin, line) in enumerate(zip(("core/irq", "dma/mm2s_introut", "dma/s2mm_introut"),
                                        vivado_plan.IRQ_LINES)):
        assert nets[pin] == [f"irq_concat/In{i}"], line
    assert nets["irq_concat/dout"] == ["ps7/IRQ_F2P"]


def test_tcl_products(small, small_calls):
    folder, plan = small
    p = plan.products
    (platform,) = calls_of(small_calls, "write_hw_platform")
    assert platform[0] == str(folder / p["xsa"]) and {"-fixed", "-include_bit"} <= set(platform)
    (cfgmem,) = calls_of(small_calls, "write_cfgmem")
    assert cfgmem[:3] == [str(folder / p["bin"]), "bin", "SMAPx32"]
    assert cfgmem[3] == f"up 0x0 {folder / p['bit']}" and "-disablebitswap" in cfgmem
    (copy,) = calls_of(small_calls, "file_copy")
    assert copy[1] == str(folder / p["bit"])
    assert calls_of(small_calls, "launch_runs")[-1][:3] == ["impl_1", "-to_step",
                                                            "write_bitstream"]


def test_tcl_board_files_or_explicit_preset(small, small_calls):
    folder, _ = small
    board = BOARDS["zc706"]
    ps7 = props(small_calls, "ps7")
    for key, value in board.ps7_preset:
        assert ps7[f"CONFIG.{key}"] == value
    (auto,) = calls_of(small_calls, "apply_bd_automation")
    assert "apply_board_preset 0" in auto[1] and "FIXED_IO, DDR" in auto[1]
    status, _, calls = run_tcl(folder, STUB_BOARD_PART="xilinx.com:zc706:part0:1.4")
    assert status == 0
    assert props(calls, "project")["board_part"] == "xilinx.com:zc706:part0:1.4"
    assert "apply_board_preset 1" in calls_of(calls, "apply_bd_automation")[0][1]
    assert "CONFIG.PCW_UIPARAM_DDR_PARTNO" not in props(calls, "ps7")


def test_tcl_stops_with_an_error_line(small):
    folder, _ = small
    status, out, calls = run_tcl(folder, STUB_SLACK="-0.4")
    assert status == 1
    assert re.search(r"^ERROR: \[mulfree\] timing not met at 100 MHz: worst setup slack -0.4",
                     out, re.M)
    assert calls_of(calls, "write_cfgmem") == []
    status, out, _ = run_tcl(folder, STUB_PROGRESS="42%")
    assert status == 1 and "ERROR: [mulfree] synthesis failed" in out


def test_block_design_alone(small):
    status, _, calls = run_tcl(small[0], "block_design.tcl")
    assert status == 0 and calls_of(calls, "launch_runs") == []


@pytest.mark.parametrize("stream_width, mm_width", [(32, 64), (256, 256)])
def test_stream_width_and_clock(tmp_path, stream_width, mm_width):
    cfg = CoreConfig(engine=ArrayConfig(rows=4, cols=4), stream_width=stream_width)
    folder, plan = write_build(cfg, "arty_z7_20", tmp_path / "b", clock_mhz=125)
    status, _, calls = run_tcl(folder)
    assert status == 0
    assert calls_of(calls, "create_project")[0][2] == "xc7z020clg400-1"
    dma = props(calls, "dma")
    assert dma["CONFIG.c_m_axis_mm2s_tdata_width"] == str(stream_width)
    assert dma["CONFIG.c_s_axis_s2mm_tdata_width"] == str(stream_width)
    # The HP port is 64 bits; PG021: the memory-mapped side is at least as wide as the stream.
    assert dma["CONFIG.c_m_axi_mm2s_data_width"] == str(mm_width)
    assert dma["CONFIG.c_m_axi_s2mm_data_width"] == str(mm_width)
    assert float(props(calls, "ps7")["CONFIG.PCW_FPGA0_PERIPHERAL_FREQMHZ"]) == 125
    assert "assigned-clock-rates = <125000000>;" in (folder / OVERLAY_SOURCE).read_text()
    keep = stream_width // 8
    assert f"m_axis_tkeep = {{{keep}{{1'b1}}}}" in (folder / f"{plan.wrapper}.v").read_text()


# The wrapper, the overlay, zynq.json --------------------------------------------------------

def test_wrapper_compiles_and_wraps_the_core(small, tmp_path):
    folder, plan = small
    out = tmp_path / "a.out"
    result = subprocess.run([_tool("iverilog"), "-g2005", "-s", plan.wrapper, "-o", str(out),
                             str(folder / f"{plan.top}.v"), str(folder / f"{plan.wrapper}.v")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    text = (folder / f"{plan.wrapper}.v").read_text()
    assert f"module {plan.wrapper} (" in text
    for p in plan.manifest["ports"]:
        outer = p["name"].replace("__", "_")
        assert f".{p['name']}({outer})" in text, p["name"]
    for bus, vlnv in (("s_axil", "aximm"), ("s_axis", "axis"), ("m_axis", "axis")):
        assert f'"xilinx.com:interface:{vlnv}:1.0 {bus} TDATA"' in text or bus == "s_axil"
    assert '"xilinx.com:interface:aximm:1.0 s_axil AWADDR"' in text
    assert "ASSOCIATED_BUSIF s_axil:s_axis:m_axis" in text and "POLARITY ACTIVE_HIGH" in text


def _node(text, name):
    match = re.search(rf"\b{re.escape(name)}@([0-9a-f]+) \{{(.*?)\}};", text, re.S)
    assert match, name
    return int(match.group(1), 16), match.group(2)


def test_overlay_matches_zynqconfig_and_compiles(small, tmp_path):
    folder, plan = small
    text = (folder / OVERLAY_SOURCE).read_text()
    cfg = ZynqConfig(**json.loads((folder / ZYNQ_JSON).read_text()))
    for name, base, size in ((cfg.core_uio, cfg.core_base, 0x1000),
                             (cfg.dma_uio, cfg.dma_base, cfg.dma_size)):
        unit, body = _node(text, name)
        assert unit == base
        reg = re.search(r"reg = <(0x[0-9a-f]+) (0x[0-9a-f]+)>;", body)
        assert (int(reg.group(1), 16), int(reg.group(2), 16)) == (base, size)
        assert 'compatible = "generic-uio";' in body
    assert re.search(rf'{cfg.udmabuf} \{{\s*compatible = "ikwzm,u-dma-buf";\s*'
                     rf'device-name = "{cfg.udmabuf}";', text)
    assert f'firmware-name = "{plan.products["bin"]}";' in text
    assert f"interrupts = <0 {irq_f2p_spi(0)} 4>;" in _node(text, cfg.core_uio)[1]
    assert "assigned-clocks = <&clkc 15>;" in _node(text, cfg.core_uio)[1]
    assert "assigned-clock-rates = <100000000>;" in _node(text, cfg.core_uio)[1]
    dtbo = tmp_path / "o.dtbo"
    result = subprocess.run([_tool("dtc"), "-@", "-I", "dts", "-O", "dtb", "-o", str(dtbo),
                             str(folder / OVERLAY_SOURCE)], capture_output=True, text=True)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    back = subprocess.run([_tool("dtc"), "-I", "dtb", "-O", "dts", str(dtbo)],
                          capture_output=True, text=True).stdout
    assert "fpga_full = " in back and "amba = " in back       # fixups for the base tree


def test_zynq_json_round_trips(small):
    folder, plan = small
    doc = json.loads((folder / ZYNQ_JSON).read_text())
    cfg = ZynqConfig(**doc)
    assert cfg == ZynqConfig.for_manifest(plan.manifest) == plan.zynq
    assert cfg.as_dict() == doc
    assert (cfg.core_base, cfg.dma_base) == (ZYNQ_DEFAULTS.core_base, ZYNQ_DEFAULTS.dma_base)


# Fit, plan and refusals --------------------------------------------------------------------

def test_estimate_resources():
    from mulfree.gen.core_manifest import core_manifest
    res = estimate_resources(core_manifest(CoreConfig(engine=ArrayConfig(rows=16, cols=16))))
    # fmap 16 lanes x 4096x8 (2 each) in each of its 2 feature-map banks (interface 2.2),
    # weights 4096x64 (16), acc 256x400 (12), post table 512x32 (1), out 64x129 (4), shortcut
    # 1024x128 (8); the shift table (32 deep) is in LUTs.
    assert res["ramb18"] == 2 * 32 + 16 + 12 + 1 + 4 + 8 and res["dsp"] == 0
    one = core_manifest(CoreConfig(engine=ArrayConfig(rows=16, cols=16), fmap_banks=1))
    assert estimate_resources(one)["ramb18"] == 32 + 16 + 12 + 1 + 4 + 8
    mult = core_manifest(CoreConfig(engine=ArrayConfig(pe="mult", rows=8, cols=4)))
    assert estimate_resources(mult)["dsp"] == 32


def test_estimate_resources_of_engines():
    """A multi-engine core (interface 2.1) needs one DSP48E1 per physical mult PE: a 16x16
    shift core with a mult engine folded to 4 columns 64, unfolded 256, none without one."""
    from mulfree.gen.core_manifest import core_manifest
    shift = ArrayConfig(rows=16, cols=16)
    mult = ArrayConfig(pe="mult", rows=16, cols=16)
    adder = ArrayConfig(pe="adder", rows=16, cols=16)
    for extra, cols, dsp in (((mult,), (16, 4), 64), ((mult,), (), 256),
                             ((adder, mult), (16, 16, 2), 32), ((adder,), (), 0)):
        cfg = CoreConfig(engine=shift, extra_engines=extra, engine_cols=cols)
        assert estimate_resources(core_manifest(cfg))["dsp"] == dsp, (extra, cols)


def test_plan_refuses_a_core_that_does_not_fit():
    cfg = CoreConfig(engine=ArrayConfig(pe="mult", rows=32, cols=32))
    with pytest.raises(BuildError, match=r"DSP48E1: 1024 needed .* 900 on the device: "
                                         r"124 too many") as info:
        plan_build(cfg, "zc706")
    assert info.value.param == "board"
    big = CoreConfig(engine=ArrayConfig(rows=16, cols=16), fmap_vectors=1 << 18)
    with pytest.raises(BuildError, match=r"block RAM: about \d+ BRAM36 needed .* 545 on the "
                                         r"device: \d+ too many"):
        plan_build(big, "zc706")
    with pytest.raises(BuildError, match=r"clock_mhz must be a number in \[10, 250\]"):
        plan_build(SMALL, "zc706", clock_mhz=400)


def _entries(path):
    return sorted(p.name for p in Path(path).iterdir())


@pytest.mark.parametrize("argv, message", [
    (["--board", "zc7o6"],
     r"--board must be one of arty_z7_20, ecp5_5g_evn, ulx3s_85f, zc706, not 'zc7o6'"),
    (["--board", "zc706", "--pe", "mult", "--rows", "32", "--cols", "32"],
     r"does not fit zc706 \(xc7z045ffg900-2\): DSP48E1: 1024 needed \(32x32 mult PEs, one "
     r"each\), 900 on the device: 124 too many"),
    (["--board", "arty_z7_20", "--fmap-vectors", "65536"], r"block RAM: about \d+ BRAM36"),
    (["--board", "zc706", "--clock-mhz", "0"], r"--clock-mhz must be a number in \[10, 250\]"),
])
def test_cli_refusals_write_nothing(run_main, capsys, tmp_path, argv, message):
    status, out, err = run_main(["build", *argv, "-o", str(tmp_path / "b")], capsys)
    assert status == 2 and re.search(message, err), err
    assert len(err.strip().splitlines()) == 1
    assert _entries(tmp_path) == []


def test_cli_refuses_a_folder_that_is_not_a_build(run_main, capsys, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    status, _, err = run_main(["build", "--board", "zc706", "--rows", "4", "--cols", "4",
                               "-o", str(tmp_path / "mine")], capsys)
    assert status == 2
    assert "exists and is not a mulfree build folder (no build.json)" in err
    assert _entries(tmp_path) == ["mine"] and _entries(tmp_path / "mine") == ["notes.txt"]
    (tmp_path / "file").write_text("x")
    status, _, err = run_main(["build", "--board", "zc706", "-o", str(tmp_path / "file")],
                              capsys)
    assert status == 2 and "must be a folder" in err


def test_a_failure_while_writing_leaves_nothing(tmp_path, monkeypatch):
    def broken(plan):
        raise RuntimeError("disk full")
    monkeypatch.setattr(build_folder, "overlay_dts", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        write_build(SMALL, "zc706", tmp_path / "b")
    assert _entries(tmp_path) == []


def test_a_new_build_replaces_an_earlier_one(small, tmp_path):
    folder = tmp_path / "b"
    shutil.copytree(small[0], folder)
    (folder / "vivado.log").write_text("old run")
    cfg = CoreConfig(engine=ArrayConfig(rows=4, cols=4), stream_width=32)
    write_build(cfg, "zc706", folder)
    doc = json.loads((folder / BUILD_MARKER).read_text())
    assert doc["stream_width"] == 32 and not (folder / "vivado.log").exists()
    assert _entries(tmp_path) == ["b"]


def test_cli_config_from_a_manifest(run_main, capsys, tmp_path):
    status, _, err = run_main(["gen", "--core", "--rows", "4", "--cols", "4", "--name",
                               "mycore", "-o", str(tmp_path / "gen")], capsys)
    assert status == 0, err
    manifest = tmp_path / "gen" / "mycore.json"
    status, out, err = run_main(["build", "--board", "zc706", "--config", str(manifest),
                                 "-o", str(tmp_path / "b")], capsys)
    assert status == 0, err
    assert "next: cd" in out and "vivado -mode batch" in out
    doc = json.loads((tmp_path / "b" / BUILD_MARKER).read_text())
    assert doc["top"] == "mycore"
    assert json.loads((tmp_path / "b" / "mycore.json").read_text())["parameters"] == \
        json.loads(manifest.read_text())["parameters"]
    status, _, err = run_main(["build", "--board", "zc706", "--config", str(manifest),
                               "--rows", "8", "-o", str(tmp_path / "c")], capsys)
    assert status == 2 and "cannot be combined with --rows" in err
    status, _, err = run_main(["build", "--board", "zc706", "--config",
                               str(tmp_path / "b" / ZYNQ_JSON), "-o", str(tmp_path / "c")],
                              capsys)
    assert status == 2 and "--config must be a core manifest" in err
    assert not (tmp_path / "c").exists()


# --run --------------------------------------------------------------------------------------

def _fake_vivado(bin_dir, body):
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / "vivado"
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(0o755)
    return path


@pytest.fixture
def build_copy(small, tmp_path):
    folder = tmp_path / "b"
    shutil.copytree(small[0], folder)
    return folder


def test_run_without_vivado_says_what_to_run(run_main, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    argv = ["build", "--board", "zc706", "--rows", "4", "--cols", "4", "-o",
            str(tmp_path / "b")]
    status, out, err = run_main(argv + ["--run"], capsys)
    assert status == 1
    assert "vivado is not on PATH" in err
    assert (f"run in {tmp_path / 'b'}: vivado -mode batch -nojournal -log vivado.log "
            f"-source build.tcl") in err
    assert (tmp_path / "b" / BUILD_MARKER).is_file()
    status, out, err = run_main(argv, capsys)
    assert status == 0 and "next: cd" in out


def test_run_shows_vivados_first_error(build_copy, tmp_path, monkeypatch, capsys):
    _fake_vivado(tmp_path / "bin", (
        "import sys\n"
        "log = open('vivado.log', 'w')\n"
        "log.write('INFO: starting\\nWARNING: [Synth 8-1] meh\\n"
        "ERROR: [Synth 8-439] module \\'foo\\' not found\\nERROR: [Common 17-69] failed\\n')\n"
        "sys.exit(1)\n"))
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    with pytest.raises(vivado_run.VivadoFailed) as info:
        vivado_run.run_vivado(build_copy)
    assert info.value.error == "ERROR: [Synth 8-439] module 'foo' not found"
    assert "exit status 1" in str(info.value) and str(info.value).count("ERROR:") == 1
    assert json.loads((build_copy / BUILD_MARKER).read_text())["vivado"] is None


def test_run_collects_the_products(build_copy, tmp_path, monkeypatch):
    _fake_vivado(tmp_path / "bin", (
        "import json, sys\n"
        "assert sys.argv[1:] == " + repr(list(vivado_project.VIVADO_ARGS)) + "\n"
        "open('vivado.log', 'w').write('INFO: done\\n')\n"
        "for name in json.load(open('build.json'))['products'].values():\n"
        "    open(name, 'wb').write(name.encode())\n"))
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    products = vivado_run.run_vivado(build_copy)
    doc = json.loads((build_copy / BUILD_MARKER).read_text())
    assert set(products) == {"bit", "bin", "xsa"}
    for path in products.values():
        entry = doc["vivado"]["products"][path.name]
        assert entry["sha256"] == hashlib.sha256(path.name.encode()).hexdigest()


def test_run_without_products_fails(build_copy, tmp_path, monkeypatch):
    _fake_vivado(tmp_path / "bin", "open('vivado.log', 'w').write('INFO: nothing\\n')\n")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    with pytest.raises(vivado_run.VivadoFailed, match=r"it did not write .*\.bit.*no ERROR: "
                                                      r"line"):
        vivado_run.run_vivado(build_copy)


def test_cli_run_failure_prints_the_error_line(run_main, capsys, tmp_path, monkeypatch):
    _fake_vivado(tmp_path / "bin", (
        "import sys\nopen('vivado.log', 'w').write('ERROR: [Place 30-640] too many DSPs\\n')\n"
        "sys.exit(1)\n"))
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    status, _, err = run_main(["build", "--board", "zc706", "--rows", "4", "--cols", "4",
                               "--run", "-o", str(tmp_path / "b")], capsys)
    assert status == 1 and "ERROR: [Place 30-640] too many DSPs" in err


# Bad input: one line, exit status 2, nothing written -----------------------------------------

def _snapshot(folder):
    """``{relative path: bytes or link target}`` of everything under ``folder``."""
    snap = {}
    for root, dirs, names in os.walk(folder):
        for name in dirs + names:
            path = Path(root) / name
            rel = str(path.relative_to(folder))
            snap[rel] = (os.readlink(path) if path.is_symlink()
                         else path.read_bytes() if path.is_file() else None)
    return snap


@pytest.fixture
def inputs(tmp_path, small):
    """Input files in ``tmp_path/in`` (a manifest, a plain folder, a file, a link to a build);
    builds go to ``tmp_path/work``, which must stay empty when a build is refused."""
    src = tmp_path / "in"
    src.mkdir()
    (tmp_path / "work").mkdir()
    folder, plan = small
    shutil.copy(folder / f"{plan.top}.json", src / "core.json")
    (src / "notes").mkdir()
    (src / "notes" / "keep.txt").write_text("keep me")
    (src / "file").write_text("x")
    shutil.copytree(folder, src / "earlier")
    (src / "link").symlink_to(src / "earlier")
    return src


def _manifest(edit):
    def write(src):
        doc = json.loads((src / "core.json").read_text())
        edit(doc)
        (src / "m.json").write_text(json.dumps(doc))
        return str(src / "m.json")
    return write


def _raw(text):
    def write(src):
        (src / "m.json").write_bytes(text if isinstance(text, bytes) else text.encode())
        return str(src / "m.json")
    return write


def _param(key, value, engine=True):
    def edit(doc):
        params = doc["parameters"]["engine"] if engine else doc["parameters"]
        if value is None:
            del params[key]
        else:
            params[key] = value
    return edit


def _doc(key, value):
    def edit(doc):
        doc[key] = value
    return edit


BAD_BUILD = [
    # --board
    (["--board", "zc706;id"], "--board", "must be one of"),
    (["--board", ""], "--board", "must be one of"),
    (["--board", "../zc706"], "--board", "must be one of"),
    (["--board", "ZC706"], "--board", "must be one of"),
    # --clock-mhz: argparse makes a float of anything float() takes.
    (["--clock-mhz", "nan"], "--clock-mhz", "must be a number in [10, 250]"),
    (["--clock-mhz", "inf"], "--clock-mhz", "must be a number in [10, 250]"),
    (["--clock-mhz", "-100"], "--clock-mhz", "must be a number in [10, 250]"),
    (["--clock-mhz", "1e400"], "--clock-mhz", "must be a number in [10, 250]"),
    (["--clock-mhz", "250.001"], "--clock-mhz", "must be a number in [10, 250]"),
    (["--clock-mhz", "fast"], "--clock-mhz", "invalid float value"),
    (["--clock-mhz", "100;id"], "--clock-mhz", "invalid float value"),
    # --name: lands in Verilog, Tcl, the Makefile, the overlay and file names.
    (["--name", "a;b"], "--name", "Verilog identifier"),
    (["--name", "a b"], "--name", "Verilog identifier"),
    (["--name", "$(id)"], "--name", "Verilog identifier"),
    (["--name", "../x"], "--name", "Verilog identifier"),
    (["--name", 'x"y'], "--name", "Verilog identifier"),
    (["--name", "x\ny"], "--name", "Verilog identifier"),
    (["--name=-rf"], "--name", "Verilog identifier"),
    (["--name", "ünï"], "--name", "Verilog identifier"),
    (["--name", "module"], "--name", "keyword"),
    (["--name", "x" * 200], "--name", "at most 128"),
    # -o
    (["-o", "{in}/file/sub"], "-o/--output", "must be a folder, not the existing file"),
    (["-o", "{in}/file"], "-o/--output", "must be a folder, not the existing file"),
    (["-o", "/proc/mulfree-test-out"], "-o/--output", "cannot be written"),
    (["-o", ""], "-o/--output", "must be a folder path"),
    (["-o", "a\x00b"], "-o/--output", "must be a folder path"),
    (["-o", "{in}/notes"], "-o/--output", "is not a mulfree build folder"),
    (["-o", "{in}/link"], "-o/--output", "is a symbolic link"),
    (["-o", "/"], "-o/--output", "root folder"),
    # --config: the file, then each kind of bad content.
    (["--config", "{in}/missing.json"], "--config", "no such core manifest"),
    (["--config", "{in}/notes"], "--config", "is a folder, not a core manifest"),
    (["--config", _raw("{")], "--config", "not valid JSON"),
    (["--config", _raw("[]")], "--config", "must be a JSON object"),
    (["--config", _raw('{"kind": "core", "top": NaN}')], "--config", "not valid JSON"),
    (["--config", _raw('{"kind": "core", "kind": "core"}')], "--config", "appears twice"),
    (["--config", _raw("[" * 100 + "]" * 100)], "--config", "nests deeper"),
    (["--config", _raw(b'{"kind": "\xff"}')], "--config", "not UTF-8"),
    (["--config", _manifest(_doc("kind", "board"))], "--config", "must be a core manifest"),
    (["--config", _manifest(_doc("kind", ["core"]))], "--config", "must be a core manifest"),
    (["--config", _manifest(_doc("top", "a;touch X"))], "--config", "Verilog identifier"),
    (["--config", _manifest(_doc("top", "module"))], "--config", "keyword"),
    (["--config", _manifest(_doc("top", None))], "--config", "Verilog identifier"),
    (["--config", _manifest(_doc("parameters", 5))], "--config", "parameters must be"),
    (["--config", _manifest(_param("rows", "4"))], "--config", "rows must be an integer"),
    (["--config", _manifest(_param("rows", -1))], "--config", "rows must be an integer"),
    (["--config", _manifest(_param("rows", 10 ** 30))], "--config", "rows must be an integer"),
    (["--config", _manifest(_param("rows", 4.0))], "--config", "rows must be an integer"),
    (["--config", _manifest(_param("rows", True))], "--config", "rows must be an integer"),
    (["--config", _manifest(_param("pe", None))], "--config", "missing engine.pe"),
    (["--config", _manifest(_param("fmap_vectors", None, engine=False))], "--config",
     "missing fmap_vectors"),
    (["--config", _manifest(_param("bogus", 1, engine=False))], "--config", "bogus"),
    (["--config", _manifest(_param("engine", [], engine=False))], "--config",
     "parameters must be"),
    (["--config", _manifest(_param("stream_width", "64", engine=False))], "--config",
     "stream_width must be one of"),
    (["--config", _manifest(_param("max_k", 1e300))], "--config", "max_k must be an integer"),
]


@pytest.mark.parametrize("argv, option, fragment", BAD_BUILD,
                         ids=[f"{i}-{o}" for i, (_, o, _) in enumerate(BAD_BUILD)])
def test_bad_build_input_writes_nothing(run_main, capsys, tmp_path, inputs, monkeypatch, argv,
                                        option, fragment):
    def long_work(*args, **kwargs):
        raise AssertionError("the core was generated before the options were checked")
    from mulfree.gen import core_manifest
    monkeypatch.setattr(core_manifest, "write_core_design", long_work)
    if option == "-o/--output":
        # The output is checked before the core is even planned.
        monkeypatch.setattr(build_flow, "plan_build", long_work)
    argv = [a(inputs) if callable(a) else a.format(**{"in": inputs}) for a in argv]
    if "--board" not in argv:
        argv += ["--board", "zc706"]
    if "-o" not in argv:
        argv += ["-o", str(tmp_path / "work" / "b")]
    if "--config" not in argv:
        argv += ["--rows", "4", "--cols", "4"]
    before = _snapshot(inputs)
    status, out, err = run_main(["build", *argv], capsys)
    lines = err.splitlines()
    assert status == 2, (status, out, err)
    assert len(lines) == 1 and lines[0].startswith("mulfree build: error: "), err
    assert option in lines[0] and fragment in lines[0], lines[0]
    assert "Traceback" not in err and out == ""
    assert _entries(tmp_path / "work") == []
    assert _snapshot(inputs) == before
    assert not Path("/proc/mulfree-test-out").exists()


def test_an_unwritable_output_is_refused_before_any_work(run_main, capsys, tmp_path,
                                                          monkeypatch):
    """As root every folder is writable, so the probe's temporary file is made to fail."""
    import tempfile
    from mulfree.params import safe_io
    locked = tmp_path / "locked"
    (locked / "b").mkdir(parents=True)
    mkstemp = tempfile.mkstemp

    def refuse(*args, dir=None, **kwargs):
        if Path(dir) in (locked, locked / "b"):
            raise PermissionError(13, "Permission denied")
        return mkstemp(*args, dir=dir, **kwargs)

    def long_work(*args, **kwargs):
        raise AssertionError("work started before the output was checked")
    monkeypatch.setattr(safe_io.tempfile, "mkstemp", refuse)
    monkeypatch.setattr(build_flow, "plan_build", long_work)
    for out in (locked / "b", locked / "new" / "b"):
        status, _, err = run_main(["build", "--board", "zc706", "-o", str(out)], capsys)
        assert status == 2 and len(err.splitlines()) == 1, err
        assert "-o/--output" in err and "cannot be written: Permission denied" in err
    assert _snapshot(tmp_path) == {"locked": None, "locked/b": None}


def _bad_earlier(edit):
    def apply(folder):
        doc = json.loads((folder / BUILD_MARKER).read_text())
        edit(doc)
        (folder / BUILD_MARKER).write_text(json.dumps(doc))
    return apply


@pytest.mark.parametrize("edit, fragment", [
    (_bad_earlier(lambda d: d["products"].update(bin="../../../../etc/shadow")),
     "products.bin must be"),
    (_bad_earlier(lambda d: d.pop("kind")), "kind is missing"),
    (_bad_earlier(lambda d: d.update(files={"../../x": {"sha256": "0" * 64, "bytes": 1}})),
     "a name in files"),
    (_bad_earlier(lambda d: d.update(clock_mhz="fast")), "clock_mhz must be"),
    (lambda folder: (folder / BUILD_MARKER).write_text("{"), "not valid JSON"),
])
def test_an_earlier_folder_with_a_bad_build_json_is_kept(run_main, capsys, small, tmp_path,
                                                         edit, fragment):
    folder = tmp_path / "b"
    shutil.copytree(small[0], folder)
    edit(folder)
    before = _snapshot(tmp_path)
    status, _, err = run_main(["build", "--board", "zc706", "--rows", "4", "--cols", "4",
                               "-o", str(folder)], capsys)
    assert status == 2 and len(err.splitlines()) == 1
    assert "-o/--output" in err and "so it is kept" in err and fragment in err, err
    assert _snapshot(tmp_path) == before


# Failed or interrupted builds leave nothing half-written -------------------------------------

def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


@pytest.mark.parametrize("where", ["write_core_design", "overlay_dts", "install"])
def test_ctrl_c_during_a_build_leaves_nothing(run_main, capsys, small, tmp_path, monkeypatch,
                                              where):
    from mulfree.gen import core_manifest
    earlier = tmp_path / "earlier"
    shutil.copytree(small[0], earlier)
    before = _snapshot(tmp_path)
    if where == "write_core_design":
        monkeypatch.setattr(core_manifest, "write_core_design", _interrupt)
    elif where == "overlay_dts":
        monkeypatch.setattr(build_folder, "overlay_dts", _interrupt)
    else:
        rename = os.rename

        def swap(src, dst):
            if str(src).endswith(".tmp"):       # the finished folder moving into place
                raise KeyboardInterrupt
            rename(src, dst)
        monkeypatch.setattr(os, "rename", swap)
    argv = ["build", "--board", "zc706", "--rows", "4", "--cols", "4"]
    # A new folder under folders that do not exist yet: none of them may stay.
    status, _, err = run_main([*argv, "-o", str(tmp_path / "x" / "y" / "new")], capsys)
    assert status == 130 and "interrupted" in err
    assert _snapshot(tmp_path) == before
    # An earlier build at the same place is untouched.
    status, _, err = run_main([*argv, "-o", str(earlier)], capsys)
    assert status == 130
    assert _snapshot(tmp_path) == before


def test_printed_commands_quote_the_folder(run_main, capsys, tmp_path):
    folder = tmp_path / "my build; $(touch X)"
    status, out, err = run_main(["build", "--board", "zc706", "--rows", "4", "--cols", "4",
                                 "-o", str(folder)], capsys)
    assert status == 0, err
    import shlex
    assert f"next: cd {shlex.quote(str(folder))} && vivado" in out
    assert f"mulfree deploy {shlex.quote(str(folder))}" in out


# Vivado runs only what mulfree build wrote ---------------------------------------------------

def test_run_refuses_a_changed_folder(build_copy, tmp_path, monkeypatch):
    from mulfree.params.safe_io import FileCheckError
    marker = tmp_path / "vivado-ran"
    _fake_vivado(tmp_path / "bin", f"open({str(marker)!r}, 'w').write('ran')\n")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    with open(build_copy / "build.tcl", "a") as f:
        f.write("exec sh -c {touch /tmp/pwned}\n")
    with pytest.raises(FileCheckError, match="build.tcl does not match the SHA-256"):
        vivado_run.run_vivado(build_copy)
    assert not marker.exists()
    (build_copy / "build.tcl").unlink()
    (build_copy / "build.tcl").symlink_to("/etc/passwd")
    with pytest.raises(FileCheckError, match="leads outside"):
        vivado_run.run_vivado(build_copy)
    assert not marker.exists()


def test_run_writes_build_json_through_a_fresh_temporary(build_copy, tmp_path, monkeypatch):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (build_copy / f".{BUILD_MARKER}.tmp").symlink_to(victim)
    _fake_vivado(tmp_path / "bin", (
        "import json\n"
        "for name in json.load(open('build.json'))['products'].values():\n"
        "    open(name, 'wb').write(name.encode())\n"))
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    vivado_run.run_vivado(build_copy)
    assert victim.read_text() == "precious"
    assert build_record.read_build(build_copy)["vivado"]["returncode"] == 0


def test_generated_text_refuses_names_it_cannot_hold(small):
    """The overlay checks the names it writes itself, whatever made the plan's ZynqConfig."""
    import dataclasses
    import types
    from mulfree.params.safe_io import FileCheckError
    plan = small[1]
    overlay.overlay_dts(plan)
    for bad in ('x"; }; evil {', "a\nb", "a/b", "a@1", "a:b", "n" * 40, "", "-x", "ü"):
        for field in ("core_uio", "dma_uio", "udmabuf"):
            zynq = types.SimpleNamespace(**{**plan.zynq.as_dict(), field: bad})
            with pytest.raises(BuildError, match=f"zynq {field} must be a device tree node"):
                overlay.overlay_dts(dataclasses.replace(plan, zynq=zynq))
    manifest = {**plan.manifest, "top": 'x";\n/ { evil'}
    with pytest.raises(FileCheckError, match="Verilog identifier"):
        overlay.overlay_dts(dataclasses.replace(plan, manifest=manifest))
