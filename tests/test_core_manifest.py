"""The register map's host-facing forms: manifest section, C header, docs/interface.md table."""

import json
import re
from pathlib import Path

from mulfree.gen.config import ArrayConfig
from mulfree.gen.core_config import CoreConfig
from mulfree.gen.core_manifest import (c_header, markdown_table, registers_section,
                                       write_regs_design)
from mulfree.rtl.regs import REG_ERRORS


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
