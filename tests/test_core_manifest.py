"""The register map's host-facing forms: manifest section, C header, docs/interface.md table."""

import json
import re
from pathlib import Path

from mulfree.params.config import ArrayConfig
from mulfree.params.core_config import CoreConfig
import pytest

from mulfree.gen.core_manifest import c_header, markdown_table, write_regs_design
from mulfree.gen.manifest import check_ports, port_list
from mulfree.rtl.array import array_signature
from mulfree.rtl.core import core_signature
from mulfree.params import ports
from mulfree.params.manifest import registers_section
from mulfree.params.regmap import REG_ERRORS


DOC = Path(__file__).resolve().parent.parent / "docs" / "interface.md"


def test_interface_doc_table_matches_map():
    text = DOC.read_text()
    start = text.index("<!-- register table")
    start = text.index("-->\n", start) + 4
    end = text.index("<!-- end of register table -->")
    assert text[start:end] == markdown_table(CoreConfig().register_map), \
        "docs/interface.md's register table differs from the RegisterMap: regenerate it " \
        "with mulfree.gen.core_manifest.markdown_table(CoreConfig().register_map)"
    for name, (code, _) in REG_ERRORS.items():
        assert f"| {code} | {name} |" in text, f"error code {name} missing from the doc"
    assert "## Stream formats" in text


def test_registers_section():
    cfg = CoreConfig(engine=ArrayConfig(pe="mult", rows=4, cols=2), axil_addr_width=10)
    rmap = cfg.register_map
    section = json.loads(json.dumps(registers_section(rmap)))
    assert section["addr_width"] == 10
    assert [r["offset"] for r in section["registers"]] == [r.offset for r in rmap]
    regs = {r["name"]: r for r in section["registers"]}
    rows = next(f for f in regs["ARRAY"]["fields"] if f["name"] == "rows")
    assert rows["value"] == 4 and rows["bits"] == [15, 0] and rows["access"] == "RO"
    irq = next(f for f in regs["CONTROL"]["fields"] if f["name"] == "irq_enable")
    assert irq["allowed"] == [0, 1] and irq["access"] == "RW"
    assert regs["TERMS_LO"]["counter"] == {"name": "TERMS", "half": "lo"}
    # Offsets are unique, aligned and inside the address space.
    offsets = [r.offset for r in rmap]
    assert len(set(offsets)) == len(offsets) and all(o % 4 == 0 for o in offsets)
    assert rmap.size <= 1 << 10


def test_c_header_matches_map():
    rmap = CoreConfig().register_map
    defines = dict(re.findall(r"#define (MULFREE_REG_\w+) (0x[0-9A-F]+|\d+)u", c_header(rmap)))
    for r in rmap:
        assert int(defines[f"MULFREE_REG_{r.name}"], 0) == r.offset
        assert int(defines[f"MULFREE_REG_{r.name}_RESET"], 0) == r.reset
        for f in r.fields:
            base = f"MULFREE_REG_{r.name}_{f.name.upper()}"
            assert int(defines[f"{base}_SHIFT"], 0) == f.offset
            assert int(defines[f"{base}_MASK"], 0) == f.mask
    assert int(defines["MULFREE_REG_ERROR_BUSY"]) == REG_ERRORS["BUSY"][0]


def test_regs_design_written(tmp_path):
    cfg = CoreConfig()
    v_path, j_path = write_regs_design(cfg, tmp_path)
    doc = json.loads(j_path.read_text())
    assert doc["top"] == f"{cfg.top_name}_regs" and v_path.exists()
    names = {p["name"] for p in doc["ports"]}
    assert {"s_axil__awaddr", "s_axil__rdata", "control_soft_reset", "irq"} <= names


def test_interface_doc_core_errors_match():
    from mulfree.params.core_config import CORE_ERRORS
    text = DOC.read_text()
    start = text.index("<!-- core error table: generated from CORE_ERRORS -->")
    table = text[start:].split("\n", 1)[1]
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert rows == [f"| {c} | {n} | {m} |" for c, n, m in CORE_ERRORS], \
        "docs/interface.md's core error table differs from CORE_ERRORS"


def test_core_manifest_sections(tmp_path):
    from mulfree.gen.core_manifest import write_core_design
    from mulfree.params.core_config import PACKET_TYPES, CORE_ERRORS, DESC_FIELDS
    cfg = CoreConfig(engine=ArrayConfig(pe="adder", rows=3, cols=5, act_bits=6, max_k=64),
                     stream_width=32, fmap_vectors=64, weight_rows=32, acc_entries=8,
                     max_channels=16, out_vectors=4)
    v_path, j_path = write_core_design(cfg, tmp_path)
    doc = json.loads(j_path.read_text())
    assert doc["kind"] == "core" and doc["top"] == cfg.top_name
    assert CoreConfig.from_params(doc["parameters"]) == cfg
    st = doc["stream"]
    assert st["width"] == 32 and st["packet_types"] == PACKET_TYPES
    # Vector sizes from first principles: 3 activations of 6 bits, 5 codes of 6 bits.
    assert st["vector_bits"]["ACTS"] == 18 and st["vector_beats"]["ACTS"] == 1
    assert st["vector_bits"]["WEIGHTS"] == 30 and st["vector_bits"]["OUT"] == 30
    assert st["vector_beats"]["DESC"] == 8 and st["vector_bits"]["DESC"] == 256
    assert st["vector_bits"]["SHORTCUT"] == 30 and st["packet_types"]["SHORTCUT"] == 6
    assert [f["name"] for f in st["descriptor"]["fields"]] == [f[3] for f in DESC_FIELDS]
    signed = {f["name"] for f in st["descriptor"]["fields"] if f["signed"]}
    assert signed == {"clamp_lo", "clamp_hi", "res_shift", "pool_shift"}
    pool = next(f for f in st["descriptor"]["fields"] if f["name"] == "pool_shift")
    assert (pool["word"], pool["bits"]) == (6, [31, 24])
    res = next(f for f in st["descriptor"]["fields"] if f["name"] == "res_shift")
    assert (res["word"], res["bits"]) == (6, [23, 16])
    assert st["descriptor"]["flags"] == {"shift": 0, "reuse_weights": 1, "residual": 2,
                                         "res_relu": 3, "clamp": 4, "global_pool": 5,
                                         "in_bank": 6, "acts_resident": 7, "keep": 8,
                                         "quiet": 9, "short_resident": 10, "win_max": 11,
                                         "win_sum": 12, "depthwise": 13, "taps": 14}
    # a = 6: res_shift in [-6, 6 + 16], the sum 6 + 15 + 1 bits, the clamp in act_range;
    # the pool's sums of up to 4096 = 2^12 pixels 6 + 12 bits, pool_shift in [-6, 18].
    assert st["tail"] == {"res_max_shift": 15, "res_shift_range": [-6, 22],
                          "res_sum_width": 22, "clamp_range": [-32, 31],
                          "pool_shift_range": [-6, 18], "pool_sum_width": 18}
    assert {e["code"] for e in doc["registers"]["core_errors"].values()} == \
        {c for c, _, _ in CORE_ERRORS}
    ports = {p["name"] for p in doc["ports"]}
    assert {"s_axis__tdata", "s_axis__tlast", "m_axis__tready", "s_axil__awaddr",
            "irq"} <= ports, ports
    # 3x5: no layer chaining, one feature-map bank (a memory per lane: banks 3).
    assert doc["core"]["buffers"]["fmap"] == {"depth": 64, "width": 18, "banks": 3, "count": 1}
    assert doc["parameters"]["fmap_banks"] == 1
    # 3x5: no lane unit either (interface 2.3).
    assert doc["parameters"]["window_ops"] is False
    assert doc["core"]["window"] == {"lanes": 0, "latency": 2}
    assert doc["core"]["buffers"]["shortcut"] == {"depth": 1024, "width": 30}
    assert doc["parameters"]["shortcut_vectors"] == 1024
    # 16 channels in groups of 5 lanes: 4 words of 5 sums of 18 bits.
    assert doc["core"]["buffers"]["pool"] == {"depth": 4, "width": 90, "sum_width": 18}
    assert doc["parameters"]["pool_pixels"] == 4096 and doc["core"]["pool_latency"] == 4
    text = v_path.read_text()
    assert f"module {cfg.top_name}(" in text
    assert "MULFREE_CORE_ERROR_SHORT 4u" in c_header(cfg.register_map)


@pytest.mark.parametrize("pe", ["shift", "adder", "mult"])
@pytest.mark.parametrize("arch", ["array", "tree"])
@pytest.mark.parametrize("rows,cols,act_bits", [(1, 1, 2), (3, 2, 8), (16, 16, 8), (5, 7, 12)])
def test_spec_ports_are_the_engine_signature(pe, arch, rows, cols, act_bits):
    """The manifest's ports (computed without Amaranth) equal the elaborated signature's."""
    cfg = ArrayConfig(pe=pe, arch=arch, rows=rows, cols=cols, act_bits=act_bits)
    assert ports.array_ports(cfg) == port_list(array_signature(cfg))


@pytest.mark.parametrize("stream_width", [32, 64, 128, 256])
@pytest.mark.parametrize("addr_width", [10, 12, 16])
def test_spec_ports_are_the_core_signature(stream_width, addr_width):
    cfg = CoreConfig(stream_width=stream_width, axil_addr_width=addr_width)
    assert ports.core_ports(cfg) == port_list(core_signature(cfg))


def test_generator_refuses_ports_that_differ_from_the_rtl():
    cfg = CoreConfig()
    wrong = ports.core_ports(cfg)
    wrong[-1] = dict(wrong[-1], width=2)
    with pytest.raises(RuntimeError, match="irq"):
        check_ports(wrong, core_signature(cfg), cfg.top_name)
    check_ports(ports.core_ports(cfg), core_signature(cfg), cfg.top_name)


@pytest.mark.parametrize("shortcut_vectors", [0, 1, 300])
def test_shortcut_buffer_and_post_latency(shortcut_vectors):
    """The manifest's shortcut buffer and post-processing latency are the RTL's: the core's
    PostProcess has the latency the manifest gives, and a shortcut memory of that depth
    exactly when shortcut_vectors > 0."""
    from amaranth.back import rtlil
    from mulfree.params.manifest import core_manifest
    from mulfree.rtl.core import LayerDatapath
    from mulfree.rtl.postproc import PostProcess
    cfg = CoreConfig(engine=ArrayConfig(pe="shift", rows=2, cols=3, max_k=16), stream_width=32,
                     fmap_vectors=16, weight_rows=16, acc_entries=4, max_channels=6,
                     out_vectors=2, shortcut_vectors=shortcut_vectors)
    core = core_manifest(cfg)["core"]
    assert core["buffers"]["shortcut"] == {"depth": shortcut_vectors, "width": 3 * 8}
    post = PostProcess(cfg.engine, channels=cfg.max_channels,
                       shortcut_vectors=cfg.shortcut_vectors)
    assert core["post_latency"] == post.latency == (7 if shortcut_vectors else 4)
    text = rtlil.convert(LayerDatapath(cfg))
    memories = re.findall(r"memory width (\d+) size (\d+) \\shortcut\n", text)
    assert memories == ([("24", str(shortcut_vectors))] if shortcut_vectors else []), memories
    assert ("s_addr" in rtlil.convert(post)) == bool(shortcut_vectors)


def test_gen_core_shortcut_vectors_option(tmp_path, capsys, monkeypatch):
    """``mulfree gen --core --shortcut-vectors N`` builds the core with that buffer (0: none);
    a value out of range is one line naming the option. The manifest is checked (the Verilog
    is not converted here: the shortcut buffer's runs in tests/test_core_shortcut_sim.py)."""
    from mulfree.flows import cli
    from mulfree.gen import core_manifest
    monkeypatch.setattr(core_manifest, "convert_core_verilog", lambda cfg: "// not converted\n")
    base = ["gen", "--core", "--pe", "adder", "--rows", "3", "--cols", "2", "--stream-width",
            "32", "--fmap-vectors", "64", "--weight-rows", "16", "--acc-entries", "8",
            "--max-channels", "8", "--out-vectors", "4"]
    for n in (0, 77):
        out = tmp_path / f"n{n}"
        assert cli.main(base + ["--shortcut-vectors", str(n), "-o", str(out)]) == 0
        cfg = CoreConfig(engine=ArrayConfig(pe="adder", rows=3, cols=2), stream_width=32,
                         fmap_vectors=64, weight_rows=16, acc_entries=8, max_channels=8,
                         out_vectors=4, shortcut_vectors=n)
        doc = json.loads((out / f"{cfg.top_name}.json").read_text())
        assert CoreConfig.from_params(doc["parameters"]) == cfg
        assert doc["core"]["buffers"]["shortcut"]["depth"] == n
    capsys.readouterr()
    for bad in ("-1", str((1 << 20) + 1)):
        out = tmp_path / "bad"
        assert cli.main(base + ["--shortcut-vectors", bad, "-o", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--shortcut-vectors" in err[0] and bad in err[0], err
        assert not out.exists()


@pytest.mark.parametrize("pool_pixels", [0, 1, 5, 4096])
def test_pool_buffer_and_latency(pool_pixels):
    """The manifest's pool sums are the RTL's: a memory of ceil(max_channels / cols) words of
    cols sums of pool_sum_width bits exactly when pool_pixels > 0, and the pool's latency is
    4 cycles, the sum's write and the unit's 3 stages (0 without a pool unit)."""
    from amaranth.back import rtlil
    from mulfree.params.core_config import pool_sum_width
    from mulfree.params.manifest import core_manifest
    from mulfree.rtl.core import LayerDatapath
    from mulfree.rtl.pool import GlobalPool
    cfg = CoreConfig(engine=ArrayConfig(pe="shift", rows=2, cols=3, max_k=16), stream_width=32,
                     fmap_vectors=16, weight_rows=16, acc_entries=4, max_channels=7,
                     out_vectors=2, shortcut_vectors=0, pool_pixels=pool_pixels)
    core = core_manifest(cfg)["core"]
    sw = pool_sum_width(8, pool_pixels) if pool_pixels else 0
    assert sw == {0: 0, 1: 8, 5: 11, 4096: 20}[pool_pixels]
    assert core["buffers"]["pool"] == {"depth": 3 if pool_pixels else 0, "width": 3 * sw,
                                       "sum_width": sw}
    assert GlobalPool.STAGES == 3
    assert core["pool_latency"] == (1 + GlobalPool.STAGES if pool_pixels else 0)
    text = rtlil.convert(LayerDatapath(cfg))
    memories = re.findall(r"memory width (\d+) size (\d+) \\sums\n", text)
    assert memories == ([(str(3 * sw), "3")] if pool_pixels else []), memories


def test_gen_core_pool_pixels_option(tmp_path, capsys):
    """``mulfree gen --core --pool-pixels N`` builds the core with that pool unit (0: none); a
    value out of range is one line naming the option."""
    from mulfree.flows import cli
    base = ["gen", "--core", "--pe", "adder", "--rows", "3", "--cols", "2", "--stream-width",
            "32", "--fmap-vectors", "64", "--weight-rows", "16", "--acc-entries", "8",
            "--max-channels", "8", "--out-vectors", "4", "--shortcut-vectors", "0"]
    for n in (0, 49):
        out = tmp_path / f"n{n}"
        assert cli.main(base + ["--pool-pixels", str(n), "-o", str(out)]) == 0
        cfg = CoreConfig(engine=ArrayConfig(pe="adder", rows=3, cols=2), stream_width=32,
                         fmap_vectors=64, weight_rows=16, acc_entries=8, max_channels=8,
                         out_vectors=4, shortcut_vectors=0, pool_pixels=n)
        doc = json.loads((out / f"{cfg.top_name}.json").read_text())
        assert CoreConfig.from_params(doc["parameters"]) == cfg
        assert doc["core"]["buffers"]["pool"]["depth"] == (4 if n else 0)
        regs = {r["name"]: r for r in doc["registers"]["registers"]}
        assert regs["POOL_PIXELS"]["offset"] == 0x68 and regs["POOL_PIXELS"]["reset"] == n
        assert ("sums" in (out / f"{cfg.top_name}.v").read_text()) == bool(n)
    capsys.readouterr()
    for bad in ("-1", str((1 << 16) + 1)):
        out = tmp_path / "bad"
        assert cli.main(base + ["--pool-pixels", bad, "-o", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--pool-pixels" in err[0] and bad in err[0], err
        assert not out.exists()


def _gen_engines(tmp_path, name, pe, *extra):
    from mulfree.flows import cli
    out = tmp_path / name
    args = ["gen", "--core", "--pe", pe, "--rows", "3", "--cols", "4", "--stream-width", "32",
            "--fmap-vectors", "64", "--weight-rows", "32", "--acc-entries", "8",
            "--max-channels", "8", "--out-vectors", "4", "--max-k", "48", *extra,
            "-o", str(out)]
    return cli.main(args), out


def test_gen_core_engines_option(tmp_path, capsys):
    """``mulfree gen --core --pe shift,mult:2``: a shift array and a mult engine folded to 2
    of 4 columns; ``--pe shift,mult::10`` an unfolded mult of 10-bit weights beside the shift
    array (two column modules, named apart); ``--arch tree --pe adder,mult`` an adder tree
    and a mult array. The manifest's engines section, from first principles."""
    rc, out = _gen_engines(tmp_path, "fold", "shift,mult:2")
    assert rc == 0
    [j_path] = out.glob("*.json")
    doc = json.loads(j_path.read_text())
    cfg = CoreConfig.from_params(doc["parameters"])
    assert [e.pe for e in cfg.engines] == ["shift", "mult"] and cfg.engine_cols == (4, 2)
    # shift: 4-bit codes, max_shift 6, 48 terms of 128 << 6 = 2^13: |sum| < 2^19, 20 bits;
    # mult: 8-bit weights, 48 terms of (-128)^2 = 2^14: |sum| < 2^20, 21 bits, the core's.
    eng = doc["engines"]
    assert eng["count"] == 2 and eng["code_width"] == 8 and eng["acc_width"] == 21
    assert eng["list"][0] == {"index": 0, "pe": "shift", "arch": "array", "weight_bits": 4,
                              "code_width": 4, "acc_width": 20, "physical_cols": 4,
                              "folds": 1, "latency": 3 + 2}
    assert eng["list"][1] == {"index": 1, "pe": "mult", "arch": "array", "weight_bits": 8,
                              "code_width": 8, "acc_width": 21, "physical_cols": 2,
                              "folds": 2, "latency": cfg.engine_latency(1)}
    assert doc["stream"]["vector_bits"]["WEIGHTS"] == 4 * 8
    assert doc["core"]["buffers"]["weights"]["width"] == 32
    text = (out / f"{cfg.top_name}.v").read_text()
    assert f"module {cfg.top_name}_column(" in text and "_column_mult" not in text
    assert cfg.top_name.endswith("_multc2_s32")

    rc, out = _gen_engines(tmp_path, "two", "shift,mult::10")
    assert rc == 0
    [j_path] = out.glob("*.json")
    doc = json.loads(j_path.read_text())
    cfg = CoreConfig.from_params(doc["parameters"])
    assert cfg.engine_cols == () and cfg.engines[1].weight_bits == 10
    # mult 8 x 10 bits: 48 terms of 2^16 -> 23 bits, the widest: PARAMS at its widths.
    assert doc["engines"]["acc_width"] == 23 and doc["engines"]["post_engine"] == 1
    assert doc["engines"]["code_width"] == 10
    assert doc["stream"]["params_vector"]["bias"] == [22, 0]
    text = (out / f"{cfg.top_name}.v").read_text()
    assert f"module {cfg.top_name}_column(" in text
    assert f"module {cfg.top_name}_column_mult(" in text

    rc, out = _gen_engines(tmp_path, "tree", "adder,mult", "--arch", "tree")
    assert rc == 0
    [j_path] = out.glob("*.json")
    doc = json.loads(j_path.read_text())
    assert [(e["pe"], e["arch"]) for e in doc["engines"]["list"]] == [("adder", "tree"),
                                                                      ("mult", "array")]
    text = (out / f"{doc['top']}.v").read_text()
    assert f"module {doc['top']}_column_mult(" in text
    assert f"module {doc['top']}_column(" not in text
    capsys.readouterr()


@pytest.mark.parametrize("pe,says", [
    ("shift,mult:3", "must divide"), ("shift:2,mult", "engine 0"), ("shift,foo", "'foo'"),
    ("shift,shift", "twice"), ("shift,mult,adder,mult", "at most 3"),
    ("shift,mult:2:40", "weight_bits"), ("shift,mult:x", "'x'"), ("adder,adder:4", "twice")])
def test_gen_core_engines_refused(tmp_path, capsys, pe, says):
    """A bad ``--pe`` list: one line naming --pe and the value, exit 2, nothing written."""
    rc, out = _gen_engines(tmp_path, "bad", pe)
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--pe {pe!r}" in err[0] and says in err[0], err
    assert not out.exists()


def test_engine_list_needs_a_core(tmp_path, capsys):
    """``mulfree gen`` of an engine (no --core) refuses a list in --pe."""
    from mulfree.flows import cli
    assert cli.main(["gen", "--pe", "shift,mult", "-o", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--pe 'shift,mult'" in err[0] and "--core" in err[0], err


@pytest.mark.parametrize("banks", [1, 2])
def test_fmap_banks_in_manifest_and_estimate(banks):
    """Interface 2.2: ``parameters.fmap_banks``, ``core.buffers.fmap.count`` and the block
    RAM estimate counting both banks (16 lanes of 2048 x 8 bits: one RAMB18 each, per bank),
    the registers' FMAP_BANKS at 0x07C with its reset value."""
    from mulfree.gen.vivado_plan import estimate_resources
    from mulfree.params.manifest import core_manifest
    cfg = CoreConfig(engine=ArrayConfig(pe="shift", rows=16, cols=16, max_k=1024),
                     fmap_vectors=2048, fmap_banks=banks)
    doc = core_manifest(cfg)
    assert doc["parameters"]["fmap_banks"] == banks
    assert doc["core"]["buffers"]["fmap"] == {"depth": 2048, "width": 128, "banks": 16,
                                              "count": banks}
    assert CoreConfig.from_params(doc["parameters"]) == cfg
    fmap = [m for m in estimate_resources(doc)["memories"] if m[0] == "fmap"]
    assert fmap == [("fmap", 2048, 8, 16 * banks)]
    [reg] = [r for r in doc["registers"]["registers"] if r["name"] == "FMAP_BANKS"]
    assert reg["offset"] == 0x07C and reg["reset"] == banks

